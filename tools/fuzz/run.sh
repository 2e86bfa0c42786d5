#!/usr/bin/env bash
# Builds FlowGuard's libFuzzer targets (AddressSanitizer + libFuzzer) and runs one or all of them.
#
#   tools/fuzz/run.sh TARGET [SECONDS | -runs=N] [extra libFuzzer flags...]
#   tools/fuzz/run.sh all    [SECONDS | -runs=N]      (one target after another)
#   tools/fuzz/run.sh build                           (build only)
#   tools/fuzz/run.sh list                            (the target names)
#
# TARGET is safetensors-header, gguf-header, shard-index, lora-reader or delta-archive. The default is 60
# seconds. The committed seeds in tools/fuzz/corpus/TARGET are read but never written: new
# inputs go to .build/fuzz/corpus/TARGET (kept between runs), crashes to .build/fuzz/artifacts/.
# A crash, leak or sanitizer report makes the script exit non-zero.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scratch="${FLOWGUARD_FUZZ_SCRATCH:-$root/.build/fuzz}"
targets=(safetensors-header gguf-header shard-index lora-reader delta-archive)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

build() {
    # -parse-as-library: libFuzzer supplies main(); every module (the root package's too) is
    # instrumented for coverage and AddressSanitizer.
    swift build --package-path "$here" --scratch-path "$scratch" -c release \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library >&2
}

binary() { echo "$(swift build --package-path "$here" --scratch-path "$scratch" -c release --show-bin-path)/fuzz-$1"; }

run_one() {
    local name="$1"; shift
    local budget=(-max_total_time=60)
    if [[ $# -gt 0 ]]; then
        case "$1" in
            -runs=*) budget=("$1"); shift ;;
            ''|*[!0-9]*) ;;
            *) budget=(-max_total_time="$1"); shift ;;
        esac
    fi
    local work="$scratch/corpus/$name" artifacts="$scratch/artifacts/$name/"
    mkdir -p "$work" "$artifacts"
    local dict=()
    [[ -f "$here/dict/$name.dict" ]] && dict=(-dict="$here/dict/$name.dict")
    # The Swift runtime's own backtracer would run inside ASan after a crash and report itself.
    # OpenBLAS (ΔW in lora-reader) on one thread; ASan records shorter allocation stacks (the
    # unwinding dominated the cost of allocation-heavy targets).
    local env=(SWIFT_BACKTRACE=enable=no OPENBLAS_NUM_THREADS=1
               ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=8:detect_leaks=1}")
    [[ $name == delta-archive ]] && env+=(FLOWGUARD_FUZZ_DELTA_REFERENCE="$here/corpus-reference/delta-reference.safetensors")
    echo "== fuzz-$name ${budget[*]}" >&2
    env "${env[@]}" "$(binary "$name")" "$work" "$here/corpus/$name" "${dict[@]}" \
        -artifact_prefix="$artifacts" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${budget[@]}" "$@"
}

[[ $# -ge 1 ]] || usage
case "$1" in
    list) printf '%s\n' "${targets[@]}" ;;
    build) build ;;
    all)
        shift
        build
        for t in "${targets[@]}"; do run_one "$t" "$@"; done ;;
    safetensors-header|gguf-header|shard-index|lora-reader|delta-archive)
        t="$1"; shift
        build
        run_one "$t" "$@" ;;
    *) usage ;;
esac
