#include <corosync/corotypes.h>
#include <corosync/votequorum.h>
#include <corosync/cpg.h>
