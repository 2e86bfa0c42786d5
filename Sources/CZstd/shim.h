// ZSTD_compressSequences (used for literals-only frames) is in zstd's stable-ABI-but-"experimental"
// section, exported by the shared library since 1.5.0.
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>
