#ifndef FLOWGUARD_FUZZ_SHIMS_H
#define FLOWGUARD_FUZZ_SHIMS_H

#include <stddef.h>
#include <stdint.h>

/// memfd_create(2) with MFD_CLOEXEC: glibc declares it only under _GNU_SOURCE, which Swift's
/// Glibc module does not define. Returns the descriptor, or -1 with errno set.
int flowguard_fuzz_memfd_create(const char *name);

/// libFuzzer's driver (compiler-rt, LLVM 12 and later; linked by -sanitize=fuzzer). Each target's
/// own main() calls it, because SwiftPM renames an executable's main and links it as the
/// program's entry point, which leaves libFuzzer's main() unused.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));

#endif
