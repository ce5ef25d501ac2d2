/* Host-side stand-in for libvirt's private virReportErrorHelper.
 *
 * A plugin reports errors by calling virReportErrorHelper (found with dlsym(RTLD_DEFAULT) by
 * lockmgr's plugins, or linked from libvirt.so.0 by libvirt's own). A host binary that exports
 * this definition (-Wl,--export-dynamic-symbol=virReportErrorHelper) captures those reports per
 * thread, formatted with the caller's format string, so loader-test can show them. It is C
 * because defining a variadic function is not stable Rust. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct captured_error {
    int set;
    int domain;
    int code;
    char message[2048];
};

static __thread struct captured_error last_error;

void virReportErrorHelper(int domcode, int errcode, const char *filename, const char *funcname,
                          size_t linenr, const char *fmt, ...)
{
    (void)filename;
    (void)funcname;
    (void)linenr;
    last_error.set = 1;
    last_error.domain = domcode;
    last_error.code = errcode;
    last_error.message[0] = '\0';
    if (fmt) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(last_error.message, sizeof(last_error.message), fmt, args);
        va_end(args);
    }
}

/* Takes (and clears) this thread's last captured error. Returns 1 if there was one. */
int lockmgr_host_take_error(int *domain, int *code, char *buf, size_t len)
{
    if (!last_error.set)
        return 0;
    last_error.set = 0;
    *domain = last_error.domain;
    *code = last_error.code;
    if (len > 0) {
        strncpy(buf, last_error.message, len - 1);
        buf[len - 1] = '\0';
    }
    return 1;
}
