#!/usr/bin/env bash
# The test suite under a sanitizer, built in its own scratch folder (.build/asan, .build/tsan) so
# the normal build is untouched. Outside CI for now; timings at the end of this comment.
#
#   bash tools/sanitize.sh address            # the whole suite under AddressSanitizer (+ LeakSanitizer)
#   bash tools/sanitize.sh thread             # the multithreaded parts under ThreadSanitizer
#   bash tools/sanitize.sh thread --no-build  # reuse the last build of that mode
#   bash tools/sanitize.sh address -- --filter LoRATests   # extra arguments for `swift test`
#
# The `flowguard` binary the CLI tests run is the sanitized one (it sits beside the test bundle
# in the scratch folder). Every process writes its sanitizer reports to files under
# .build/<mode>/reports/ (log_path), so a report from a child process the tests start is not
# lost in captured output; the script lists them and exits 1 when there is any, or when a
# test fails.
#
# Thread mode runs the suites that exercise threads — TensorRuntime (parallel kernels, per-head
# attention workers), Transformers (forward/backward with threads), the delta archive (pack /
# unpack / verify workers), ExternalReward (scorer process, stderr thread, timeouts), the
# trainer, the hostile-input suites (the SIGBUS guard's lock-free tables, concurrent writers of
# one output) and the CLI — and then drives the sanitized binary on a file large enough for
# several chunks: `verify --read-data` (the SafeTensors scan with its prefetch thread, which no
# test reaches) and `lora pack/unpack --threads 2`.
#
# Timings on the 2-core build machine (fresh scratch folder): address 133 s build + 83 s tests
# (305 s + 235 s with two fuzzers busy on both cores); thread 180–194 s build + 130–210 s tests.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-address}
shift || true
build=1
if [ "${1:-}" = "--no-build" ]; then build=0; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi

case "$mode" in
  address) flag=address; scratch=.build/asan ;;
  thread)  flag=thread;  scratch=.build/tsan ;;
  *) echo "usage: tools/sanitize.sh address|thread [--no-build] [-- swift-test-arguments...]" >&2; exit 2 ;;
esac

FLOWGUARD_PYTHON=$(bash tools/install-deps.sh --test | tail -n 1)
export FLOWGUARD_PYTHON
echo "reference peer: $FLOWGUARD_PYTHON" >&2

reports="$PWD/$scratch/reports"
mkdir -p "$reports"
rm -f "$reports"/*
# Leaks of the toolchain's own libraries, not FlowGuard's (each seen in a run of this suite):
# XCTest's bookkeeping of test cases and runs (and the weak reference it forms in
# awaitUsingExpectation), Foundation.Process.run's weak side table, and swift-foundation's
# readBytesFromFile, which mallocs a 4 KiB buffer for a zero-length file and drops it
# (FileManager.contents(atPath:) of an empty file). The patterns name the allocating frames, so
# a leak in FlowGuard code called from a test is still reported.
suppressions="$PWD/$scratch/lsan.supp"
cat > "$suppressions" <<'SUPP'
leak:XCTest0A4CaseC4name11testClosure
leak:name11testClosureACSS_y6XCTest
leak:XCTest0A7CaseRunC4test
leak:XCTest0A8SuiteRunC4test
leak:XCTest21awaitUsingExpectation
leak:Foundation7ProcessC3run
leak:FoundationEssentials17readBytesFromFile
SUPP
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$suppressions:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# halt_on_error=0 for ThreadSanitizer: collect every race of the run, not just the first.
export TSAN_OPTIONS="log_path=$reports/tsan:halt_on_error=0:second_deadlock_stack=1:history_size=4${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

started=$(date +%s)
if [ $build = 1 ]; then
  swift build --build-tests --scratch-path "$scratch" -Xswiftc -sanitize="$flag"
fi
built=$(date +%s)

status=0
# Tests with a wall-clock bound measure the sanitizer's slowdown, not FlowGuard: skipped here.
timed='manyTinyTensorsOpenInLinearTime'
if [ "$mode" = address ]; then
  if [ $# -gt 0 ]; then
    swift test --skip-build --scratch-path "$scratch" "$@" || status=$?
  else
    swift test --skip-build --scratch-path "$scratch" --skip "$timed" || status=$?
  fi
else
  filter='TensorRuntimeTests|TransformersTests|DeltaArchiveTests|LoRATests\.HostileAdapterConfigTests|GRPOGuardTests\.(ExternalRewardTests|TrainerTests)|SafeTensorsTests\.HostileInputTests|FlowGuardCLITests\.(TrainCLITests|LoRAPackCLITests|RunCLITests|HostileInputCLITests)'
  if [ $# -gt 0 ]; then
    swift test --skip-build --scratch-path "$scratch" "$@" || status=$?
  else
    swift test --skip-build --scratch-path "$scratch" --filter "$filter" --skip "$timed" || status=$?
  fi
  # The scan's prefetch thread and the archive workers, on a ~150 MB file (3 scan chunks).
  bin="$(swift build --scratch-path "$scratch" --show-bin-path)/flowguard"
  work=$(mktemp -d "${TMPDIR:-/tmp}/flowguard-tsan.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  "$FLOWGUARD_PYTHON" - "$work/big.safetensors" <<'EOF'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(1)
tensors = {f"t{i}": rng.standard_normal(9_000_000, dtype=np.float32).astype(np.float16) for i in range(8)}
header, offset = {}, 0
for name, a in tensors.items():
    header[name] = {"dtype": "F16", "shape": [a.size], "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for a in tensors.values():
        f.write(a.tobytes())
EOF
  for run in "verify --read-data $work/big.safetensors" \
             "lora pack --threads 2 $work/big.safetensors $work/big.fgdelta" \
             "lora unpack --threads 2 $work/big.fgdelta $work/back.safetensors"; do
    echo "tsan: flowguard $run" >&2
    # shellcheck disable=SC2086
    "$bin" $run >/dev/null || status=$?
  done
  cmp "$work/big.safetensors" "$work/back.safetensors" || status=1
fi
finished=$(date +%s)

echo "sanitize $mode: build $((built - started)) s, tests $((finished - built)) s, total $((finished - started)) s" >&2
shopt -s nullglob
found=("$reports"/*)
if [ ${#found[@]} -gt 0 ]; then
  echo "sanitize $mode: ${#found[@]} report file(s) in $reports:" >&2
  for f in "${found[@]}"; do
    echo "== $f" >&2
    grep -E '^(==[0-9]+==ERROR|WARNING: ThreadSanitizer|SUMMARY)' "$f" >&2 || head -5 "$f" >&2
  done
  status=1
fi
exit $status
