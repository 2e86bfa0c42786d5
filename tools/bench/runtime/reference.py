#!/usr/bin/env python3
"""PyTorch CPU eager reference for the runtime benchmark (run with /opt/fg-venv/bin/python).

Two jobs, each printing one JSON object on stdout (progress on stderr):

  block --dir D   Builds diffusers' `JointTransformerBlock` at SD3.5-Medium width with dual
                  attention and RMS q/k norm, fills it with seeded random weights, injects a rank-32
                  PEFT LoRA (B non-zero) on the attention projections, and writes to D:
                    weights.safetensors    block weights, diffusers names `transformer_blocks.0.…`
                    lora.safetensors       `transformer_blocks.0.<module>.lora_A/B.weight`, alpha in metadata
                    inputs.safetensors     hidden [1,1024,1536], context [1,154,1536], temb [1,1536],
                                           w_hidden, w_context (the loss weights)
                    reference.safetensors  out_hidden, out_context, loss and every LoRA factor's gradient
                  then times forward (no_grad) and forward+backward of loss = Σ out·w (LoRA factors
                  only require gradients). --generate-only skips the timing.

  full --folder F Loads an SD3Transformer2DModel diffusers folder as float32 (load time), runs the
                  forward on seeded inputs at 1024 image + 154 text tokens (timed), reports the peak
                  RSS of the process, and writes inputs/outputs to --io so FlowGuard can be compared.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


def log(msg):
    print(f"[reference] {msg}", file=sys.stderr, flush=True)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def timings(fn, warmup, reps, label):
    for i in range(warmup):
        t = time.perf_counter()
        fn()
        log(f"{label} warm-up {i + 1}/{warmup}: {time.perf_counter() - t:.3f} s")
    out = []
    for i in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        log(f"{label} run {i + 1}/{reps}: {out[-1]:.3f} s")
    return {"median_s": statistics.median(out), "min_s": min(out), "runs_s": out}


def block_job(args):
    import torch
    from diffusers.models.attention import JointTransformerBlock
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    os.makedirs(args.dir, exist_ok=True)
    dim, heads, head_dim, n_img, n_txt = 1536, 24, 64, args.image_tokens, args.text_tokens
    gen = torch.Generator().manual_seed(args.seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    block = JointTransformerBlock(dim=dim, num_attention_heads=heads, attention_head_dim=head_dim,
                                  context_pre_only=False, qk_norm="rms_norm", use_dual_attention=True)
    block.eval()
    with torch.no_grad():
        for name, p in sorted(block.named_parameters()):
            if name.endswith("bias"):
                p.copy_(randn(*p.shape, std=0.02))
            elif p.dim() == 1:          # RMS q/k norm weights
                p.copy_(1 + randn(*p.shape, std=0.1))
            else:
                p.copy_(randn(*p.shape, std=1 / math.sqrt(p.shape[1])))
    weights = {f"transformer_blocks.0.{k}": v.detach().clone().contiguous() for k, v in block.state_dict().items()}
    plain_inputs = None
    if not args.generate_only:   # the block without LoRA, timed before the adapter is injected
        g = torch.Generator().manual_seed(args.seed + 1)
        plain_inputs = (torch.randn(1, n_img, dim, generator=g), torch.randn(1, n_txt, dim, generator=g),
                        torch.randn(1, dim, generator=g))

        def forward_plain():
            with torch.no_grad():
                block(*plain_inputs)
        plain = timings(forward_plain, args.warmup, args.reps, "block forward (no LoRA)")

    rank, alpha = args.rank, 2 * args.rank
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=TARGETS, init_lora_weights=True)
    block = inject_adapter_in_model(config, block)
    lora, lora_params = {}, {}
    with torch.no_grad():
        for name, p in sorted(block.named_parameters()):
            if "lora_A" in name:
                p.copy_(randn(*p.shape, std=1 / math.sqrt(p.shape[1])))
            elif "lora_B" in name:
                p.copy_(randn(*p.shape, std=0.02))
    for name, p in block.named_parameters():
        is_lora = "lora_" in name
        p.requires_grad_(is_lora)
        if is_lora:   # "attn.to_q.lora_A.default.weight" -> "transformer_blocks.0.attn.to_q.lora_A.weight"
            ours = "transformer_blocks.0." + name.replace(".default", "")
            lora[ours] = p.detach().clone().contiguous()
            lora_params[ours] = p
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in lora})
    log(f"LoRA on {len(modules)} modules: {', '.join(m.split('transformer_blocks.0.')[1] for m in modules)}")

    inputs = {
        "hidden": randn(1, n_img, dim), "context": randn(1, n_txt, dim), "temb": randn(1, dim),
        "w_hidden": randn(1, n_img, dim), "w_context": randn(1, n_txt, dim),
    }

    def loss_of(ctx_out, hid_out):
        return (hid_out * inputs["w_hidden"]).sum() + (ctx_out * inputs["w_context"]).sum()

    for p in lora_params.values():
        p.grad = None
    ctx_out, hid_out = block(inputs["hidden"], inputs["context"], inputs["temb"])
    loss = loss_of(ctx_out, hid_out)
    loss.backward()
    reference = {"out_hidden": hid_out.detach().contiguous(), "out_context": ctx_out.detach().contiguous(),
                 "loss": loss.detach().reshape(1)}
    for k, p in lora_params.items():
        reference["grad." + k] = p.grad.detach().clone().contiguous()

    meta = {"rank": str(rank), "alpha": str(alpha), "seed": str(args.seed)}
    save_file(weights, os.path.join(args.dir, "weights.safetensors"), metadata=meta)
    save_file(lora, os.path.join(args.dir, "lora.safetensors"), metadata=meta)
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(args.dir, "inputs.safetensors"), metadata=meta)
    save_file(reference, os.path.join(args.dir, "reference.safetensors"), metadata=meta)
    log(f"wrote {args.dir}: {len(weights)} weights, {len(lora)} LoRA factors, loss {loss.item():.6g}")

    result = {"job": "block", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "lora_modules": len(modules), "rank": rank, "alpha": alpha, "loss": loss.item()}
    if args.generate_only:
        print(json.dumps(result))
        return

    def forward():
        with torch.no_grad():
            block(inputs["hidden"], inputs["context"], inputs["temb"])

    def forward_backward():
        for p in lora_params.values():
            p.grad = None
        c, h = block(inputs["hidden"], inputs["context"], inputs["temb"])
        loss_of(c, h).backward()

    result["forward_plain"] = plain
    result["forward"] = timings(forward, args.warmup, args.reps, "block forward")
    result["forward_backward"] = timings(forward_backward, args.warmup, args.reps, "block forward+backward")
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


def full_job(args):
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    side = int(round(math.sqrt(args.image_tokens))) * 2   # latent side: patch 2
    inputs = {
        "hidden_states": torch.randn(1, 16, side, side, generator=gen),
        "encoder_hidden_states": torch.randn(1, args.text_tokens, 4096, generator=gen),
        "pooled_projections": torch.randn(1, 2048, generator=gen),
        "timestep": torch.tensor([args.timestep], dtype=torch.float32),
    }
    log("importing diffusers")
    from diffusers import SD3Transformer2DModel
    rss_before = peak_rss_bytes()
    log(f"loading {args.folder} as float32")
    t = time.perf_counter()
    model = SD3Transformer2DModel.from_pretrained(args.folder, torch_dtype=torch.float32, local_files_only=True)
    model.eval()
    load_s = time.perf_counter() - t
    log(f"loaded in {load_s:.2f} s")

    out = {}

    def forward():
        with torch.no_grad():
            out["sample"] = model(**inputs, return_dict=False)[0]

    result = {"job": "full", "torch": torch.__version__, "threads": torch.get_num_threads(), "load_s": load_s,
              "peak_rss_before_load_bytes": rss_before}
    result["forward"] = timings(forward, args.warmup, args.reps, "full forward")
    result["peak_rss_bytes"] = peak_rss_bytes()
    if args.io:
        save_file({k: v.contiguous() for k, v in inputs.items()} | {"out_sample": out["sample"].contiguous()}, args.io)
        log(f"wrote inputs and output to {args.io}")
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="job", required=True)
    b = sub.add_parser("block")
    b.add_argument("--dir", required=True)
    b.add_argument("--generate-only", action="store_true")
    b.add_argument("--rank", type=int, default=32)
    f = sub.add_parser("full")
    f.add_argument("--folder", required=True)
    f.add_argument("--io", help="write inputs and the output here (.safetensors)")
    f.add_argument("--timestep", type=float, default=500.0)
    for p in (b, f):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--reps", type=int, default=3)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--image-tokens", type=int, default=1024)
        p.add_argument("--text-tokens", type=int, default=154)
    args = ap.parse_args()
    block_job(args) if args.job == "block" else full_job(args)


if __name__ == "__main__":
    main()
