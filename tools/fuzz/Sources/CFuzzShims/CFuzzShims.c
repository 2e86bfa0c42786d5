#define _GNU_SOURCE
#include <sys/mman.h>
#include "CFuzzShims.h"

int flowguard_fuzz_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}
