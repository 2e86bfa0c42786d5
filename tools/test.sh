#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWGUARD_PYTHON=$(bash tools/install-deps.sh --test | tail -n 1)
export FLOWGUARD_PYTHON
echo "reference peer: $FLOWGUARD_PYTHON" >&2
swift build --build-tests
swift test --skip-build
