#!/usr/bin/env bash
# Installs what FlowGuard needs and is missing: the C libraries (Debian packages) and, with
# --test, the Python reference peer (pip `safetensors`, numpy) the interop tests drive.
# Idempotent: does nothing when everything is present. Prints the Python to use on stdout
# (last line) when called with --test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in "libzstd:libzstd-dev" "json-c:libjson-c-dev" "openblas:libopenblas-dev"; do
  module=${pair%%:*}; package=${pair##*:}
  if ! pkg-config --exists "$module" 2>/dev/null; then need_apt+=("$package"); fi
done
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >&2
fi

if [ "${1:-}" = "--test" ]; then
  want='import safetensors, numpy, sys; sys.exit(0 if safetensors.__version__.startswith("0.8") else 1)'
  python=""
  for candidate in "${FLOWGUARD_PYTHON:-}" python3 .build/test-venv/bin/python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$want" >/dev/null 2>&1; then
      python=$(command -v "$candidate"); break
    fi
  done
  if [ -z "$python" ]; then
    echo "installing the Python reference peer (safetensors 0.8, numpy) into .build/test-venv" >&2
    mkdir -p .build
    if ! python3 -m venv .build/test-venv >&2 2>/dev/null; then
      sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
      $sudo_cmd apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv python3-pip >&2
      python3 -m venv .build/test-venv >&2
    fi
    .build/test-venv/bin/pip install --quiet "safetensors==0.8.*" numpy >&2
    python=$PWD/.build/test-venv/bin/python
  fi
  echo "$python"
fi
