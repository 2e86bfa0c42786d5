#!/usr/bin/env bash
# The main job on the bundled default: installs what is missing, builds flowguard (release), then
# fine-tunes a LoRA on the bundled tiny SD3.5-style model and prompt set with GRPO-Guard on a
# built-in reward (a few minutes on 2 cores), writes the delta archive, the diffusers/PEFT/kohya
# exports and an HTML report, and prints where they are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
swift build -c release --product flowguard >&2
bin=$(swift build -c release --show-bin-path)/flowguard
run=.build/demo-run
rm -rf "$run"
set -x
"$bin" train --config fixtures/train/sd35_tiny_demo.json --output "$run" \
    --steps 240 --sampling-steps 10 --eval-steps 40 --latent-size 16 --updates-per-rollout 2 \
    --learning-rate 0.01 --ema true --checkpoint-every 20 --threads 2
"$bin" report "$run"
"$bin" lora inspect "$run/final/adapter_kohya.safetensors"
"$bin" run --model fixtures/sd35_tiny/original.safetensors --inputs fixtures/sd35_tiny/io.safetensors \
    --output "$run/output_with_adapter.safetensors" --lora "$run/final/adapter_kohya.safetensors" --threads 2
{ set +x; } 2>/dev/null
echo
echo "GRPO-Guard demo run: $run"
echo "  report:      $run/report.html"
echo "  archive:     $run/final/adapter.fgdelta (zstd delta archive; flowguard lora unpack restores the safetensors)"
echo "  diffusers:   $run/final/pytorch_lora_weights.safetensors"
echo "  PEFT:        $run/final/peft"
echo "  kohya:       $run/final/adapter_kohya.safetensors"
echo "  diagnostics: $run/diagnostics.jsonl, checkpoints in $run/checkpoints"
