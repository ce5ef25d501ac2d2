#include <corosync/corotypes.h>
#include <corosync/votequorum.h>
