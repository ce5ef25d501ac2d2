/* libdlm.h uses mode_t without including <sys/types.h>. */
#include <sys/types.h>
#include <libdlm.h>
