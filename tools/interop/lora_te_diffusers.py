#!/usr/bin/env python3
"""Opt-in interop check (issue 17 must-show 2): text-encoder modules that `flowguard lora convert
--to diffusers` writes are taken by diffusers' own loader, and the fused text encoder's weights
change by exactly the ΔW of the source adapter.

    /opt/fg-venv/bin/python tools/interop/lora_te_diffusers.py [flowguard binary]

Uses fixtures/lora_dialects/flux_kohya_te.safetensors (kohya, CLIP-L modules as lora_te1_) and
its te_expected file; the CLIP text model is a tiny transformers CLIPTextModel of the fixture's
sizes (hidden 16, MLP 64, 2 layers), so only the LoRA part is compared.
"""
import os, subprocess, sys, tempfile
import torch
from safetensors.torch import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build", "debug", "flowguard")
src = os.path.join(ROOT, "fixtures/lora_dialects/flux_kohya_te.safetensors")
expected = load_file(os.path.join(ROOT, "fixtures/lora_dialects/flux_kohya_te.te_expected.safetensors"))

from diffusers.loaders import FluxLoraLoaderMixin
from transformers import CLIPTextConfig, CLIPTextModel

with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "te.safetensors")
    subprocess.run([binary, "lora", "convert", src, out, "--to", "diffusers", "--base",
                    os.path.join(ROOT, "fixtures/flux_tiny/original.safetensors")], check=True, stdout=subprocess.DEVNULL)
    state, alphas = FluxLoraLoaderMixin.lora_state_dict(out, return_alphas=True)
    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=8, hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=8)).eval()
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    FluxLoraLoaderMixin.load_lora_into_text_encoder(state, alphas, text_encoder=clip, prefix="text_encoder",
                                                     adapter_name="fg")
    from peft.tuners.tuners_utils import BaseTunerLayer
    for module in clip.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    after = clip.state_dict()
    worst = 0.0
    for key, delta in expected.items():
        module = key[len("text_encoder."):-len(".delta")]
        name = next(k for k in after if k.endswith(module.replace("text_model.", "", 1) + ".base_layer.weight") or k.endswith(module + ".base_layer.weight"))
        plain = name.replace(".base_layer", "")
        d = after[name] - before[plain]
        rel = ((d - delta).norm() / delta.norm()).item()
        worst = max(worst, rel)
        print(f"{module}: rel L2 {rel:.2e}")
    print("ok" if worst <= 1e-5 else "MISMATCH")
    sys.exit(0 if worst <= 1e-5 else 1)
