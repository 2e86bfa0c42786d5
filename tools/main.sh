#!/usr/bin/env bash
# The main job on the bundled default: installs what is missing, builds flowguard (release),
# then inspects and verifies the bundled SD3.5-style fixture checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
swift build -c release --product flowguard >&2
bin=$(swift build -c release --show-bin-path)/flowguard
set -x
"$bin" inspect --group fixtures/sd35_tiny/original.safetensors
"$bin" inspect fixtures/sd35_tiny/diffusers_sharded
"$bin" verify --read-data fixtures/sd35_tiny/original.safetensors fixtures/sd35_tiny/diffusers_sharded fixtures/flux_tiny/diffusers
