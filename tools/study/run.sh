#!/usr/bin/env bash
# The over-optimization study (docs/study.md): installs what is missing, builds flowguard-study
# (release), pretrains the toy world's base model (reused when its settings are unchanged), runs
# every method × seed two at a time, and writes docs/study.md with its plots in docs/study/.
# Extra arguments go to `flowguard-study all` (e.g. --work DIR, --jobs N, --report FILE).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/install-deps.sh
swift build -c release --product flowguard-study >&2
bin=$(swift build -c release --show-bin-path)/flowguard-study
start=$(date +%s)
"$bin" all --config tools/study/study.json --work .build/study "$@"
echo "study: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s (after the build)"
