/*
 * libvirt's own config parser as a test oracle for lockmgr-conf (conf/tests/libvirt_oracle.rs).
 *
 * Reads file paths from stdin, one per line. For each it parses the file with libvirt's
 * virConfReadFile(path, 0), the call libvirt's QEMU driver and lock plugins make, and prints
 *
 *     OK                      then one line per entry: KEY <TAB> VALUE
 *     ERR <line> <TAB> <libvirt's message>
 *
 * followed by a line "END". VALUE is i<decimal> for an integer, s<hex bytes> for a string and
 * [v,v,...] for a list.
 *
 * virConf* are private libvirt symbols (LIBVIRT_PRIVATE_<version>), so nothing here comes from a
 * header: the prototypes and the virConfValue layout below are those of libvirt 11.3
 * (src/util/virconf.h). The Rust side checks the layout with a known file before trusting this.
 *
 * Build: cc -o virconf_oracle virconf_oracle.c -l:libvirt.so.0
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    VIR_CONF_NONE = 0,
    VIR_CONF_LLONG,
    VIR_CONF_ULLONG,
    VIR_CONF_STRING,
    VIR_CONF_LIST,
} virConfType;

typedef struct _virConfValue virConfValue;
struct _virConfValue {
    virConfType type;
    virConfValue *next;
    long long l;
    char *str;
    virConfValue *list;
};

typedef struct _virConf virConf;
typedef int (*virConfWalkCallback)(const char *name, virConfValue *value, void *opaque);

int virInitialize(void);
const char *virGetLastErrorMessage(void);
void virResetLastError(void);
virConf *virConfReadFile(const char *filename, unsigned int flags);
int virConfWalk(virConf *conf, virConfWalkCallback callback, void *opaque);
int virConfFree(virConf *conf);

static void print_value(const virConfValue *value)
{
    switch (value->type) {
    case VIR_CONF_LLONG:
    case VIR_CONF_ULLONG:
        printf("i%lld", value->l);
        break;
    case VIR_CONF_STRING:
        putchar('s');
        for (const unsigned char *c = (const unsigned char *)value->str; c && *c; c++)
            printf("%02x", *c);
        break;
    case VIR_CONF_LIST:
        putchar('[');
        for (const virConfValue *element = value->list; element; element = element->next) {
            print_value(element);
            if (element->next)
                putchar(',');
        }
        putchar(']');
        break;
    default:
        printf("?%d", (int)value->type);
    }
}

static int print_entry(const char *name, virConfValue *value, void *opaque)
{
    (void)opaque;
    printf("%s\t", name);
    print_value(value);
    putchar('\n');
    return 0;
}

/* libvirt's message reads "...: <path>:<line>: <what>"; returns <line>, or 0. */
static long error_line(const char *message, const char *path)
{
    const char *at = strstr(message, path);
    if (!at || at[strlen(path)] != ':')
        return 0;
    return strtol(at + strlen(path) + 1, NULL, 10);
}

int main(void)
{
    char path[4096];

    if (virInitialize() < 0) {
        fprintf(stderr, "virInitialize failed\n");
        return 1;
    }
    while (fgets(path, sizeof(path), stdin)) {
        path[strcspn(path, "\n")] = '\0';
        virConf *conf = virConfReadFile(path, 0);
        if (conf) {
            printf("OK\n");
            virConfWalk(conf, print_entry, NULL);
            virConfFree(conf);
        } else {
            const char *message = virGetLastErrorMessage();
            printf("ERR %ld\t", error_line(message, path));
            for (const char *c = message; *c; c++)
                putchar(*c == '\n' ? ' ' : *c);
            putchar('\n');
            virResetLastError();
        }
        printf("END\n");
        fflush(stdout);
    }
    return 0;
}
