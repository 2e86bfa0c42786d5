#!/usr/bin/env bash
# The main job on the bundled default: installs what is missing, builds flowguard (release),
# then inspects, verifies, converts (original -> diffusers, bf16) and diffs the bundled fixtures,
# and runs both fixture transformers forward (one with a LoRA) on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
swift build -c release --product flowguard >&2
bin=$(swift build -c release --show-bin-path)/flowguard
set -x
"$bin" inspect --group fixtures/sd35_tiny/original.safetensors
"$bin" inspect fixtures/sd35_tiny/diffusers_sharded
"$bin" verify --read-data fixtures/sd35_tiny/original.safetensors fixtures/sd35_tiny/diffusers_sharded fixtures/flux_tiny/diffusers
out=$(mktemp -d)
"$bin" convert fixtures/sd35_tiny/original.safetensors "$out/sd35_tiny_diffusers" --layout diffusers --dtype bf16
"$bin" diff --map-layouts --tolerance 0.01 fixtures/sd35_tiny/original.safetensors "$out/sd35_tiny_diffusers"
"$bin" run --model "$out/sd35_tiny_diffusers" --inputs fixtures/sd35_tiny/io.safetensors --output "$out/sd35_tiny_output.safetensors" --lora fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors --threads 2
"$bin" run --model fixtures/flux_tiny/original.safetensors --config fixtures/flux_tiny/diffusers/config.json --inputs fixtures/flux_tiny/io.safetensors --output "$out/flux_tiny_output.safetensors" --threads 2
rm -rf "$out"
