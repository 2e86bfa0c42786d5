#!/usr/bin/env python3
"""PyTorch side of the train-step benchmark (run with /opt/fg-venv/bin/python).

  reference.py make  --dir DIR [--seed 0]      writes DIR/model/ (diffusers folder: config.json +
                                                 diffusion_pytorch_model.safetensors, float32) and
                                                 DIR/prompts.safetensors (FlowGuard's prompt format)
  reference.py bench --dir DIR [--threads 2] [--reps 3] [--warmup 1] [...]
                                                 times one GRPO-Guard training step on them

One step = a rollout of G samples × T SDE steps (LoRA on, no gradients) + one optimizer step:
for each of the first ⌊0.99·T⌋ timesteps a forward+backward of the whole batch through the LoRA
(PEFT, r=32, α=64 on the attention projections), the GRPO-Guard objective (RatioNorm with the
batch-scalar bias, clipped surrogate on r̂ with ε = 2e-6, δ = 1/|dt| reweighting), gradients
averaged over timesteps, global grad-norm clip 1.0, AdamW (lr 1e-4, betas (0.9, 0.999),
eps 1e-8, weight decay 1e-4). Formulas: docs design §6 (the same as FlowGuard's Trainer).
Prints one JSON object on stdout (timings in seconds); progress on stderr.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

CONFIG = dict(sample_size=16, patch_size=2, in_channels=16, num_layers=4, attention_head_dim=64,
              num_attention_heads=4, joint_attention_dim=256, caption_projection_dim=256,
              pooled_projection_dim=256, out_channels=16, pos_embed_max_size=16,
              dual_attention_layers=(), qk_norm="rms_norm")
TEXT_TOKENS = 16
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


def log(msg):
    print(f"[reference.py] {msg}", file=sys.stderr, flush=True)


def make(args):
    from diffusers import SD3Transformer2DModel
    from safetensors.torch import save_file
    torch.manual_seed(args.seed)
    model = SD3Transformer2DModel(**CONFIG)
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or "norm_added" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    folder = os.path.join(args.dir, "model")
    model.save_pretrained(folder, safe_serialization=True)
    emb = torch.randn(1, TEXT_TOKENS, CONFIG["joint_attention_dim"], generator=g)
    pooled = torch.randn(1, CONFIG["pooled_projection_dim"], generator=g)
    save_file({"prompt_embeds": emb.contiguous(), "pooled_prompt_embeds": pooled.contiguous()},
              os.path.join(args.dir, "prompts.safetensors"),
              metadata={"flowguard.prompts": json.dumps(["a synthetic prompt"]), "flowguard.model_family": "sd3",
                        "format": "pt", "flowguard.encoder": "random N(0,1) embeddings (tools/bench/train-step)"})
    print(json.dumps({"model": folder, "prompts": os.path.join(args.dir, "prompts.safetensors")}))


def schedule(T, shift):
    u = torch.linspace(1, 1 / T, T, dtype=torch.float64)
    s = shift * u / (1 + (shift - 1) * u)
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).tolist()


def sde_coefficients(sigmas, i, a):
    sigma, nxt = sigmas[i], sigmas[i + 1]
    dt = nxt - sigma
    denom = 1 - (sigmas[1] if sigma == 1 else sigma)
    std = a * math.sqrt(sigma / denom)
    cx = 1 + std * std * dt / (2 * sigma)
    cv = (1 + std * std * (1 - sigma) / (2 * sigma)) * dt
    s = std * math.sqrt(-dt)
    return cx, cv, s, dt


def log_prob(x_next, mu, s):
    # mean over all latent elements per sample
    return (-(x_next - mu) ** 2 / (2 * s * s) - math.log(s) - 0.5 * math.log(2 * math.pi)).flatten(1).mean(1)


def bench(args):
    from diffusers import SD3Transformer2DModel
    from peft import LoraConfig
    torch.set_num_threads(args.threads)
    from safetensors.torch import load_file
    model = SD3Transformer2DModel.from_pretrained(os.path.join(args.dir, "model"), torch_dtype=torch.float32)
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=TARGETS, init_lora_weights=True))
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
    model.train(False)
    prompts = load_file(os.path.join(args.dir, "prompts.safetensors"))
    G, T, a, shift, eps_clip = args.group, args.steps, 0.7, 3.0, 2e-6
    emb = prompts["prompt_embeds"].expand(G, -1, -1).contiguous()
    pooled = prompts["pooled_prompt_embeds"].expand(G, -1).contiguous()
    sigmas = schedule(T, shift)
    trained = min(T, max(1, int(T * 0.99)))
    opt = torch.optim.AdamW(lora, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)
    n_params = sum(p.numel() for p in lora)
    n_modules = sum(1 for n, m in model.named_modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A")) > 0)

    def velocity(x, i):
        t = torch.full((x.shape[0],), 1000 * sigmas[i], dtype=torch.float32)
        return model(hidden_states=x, encoder_hidden_states=emb, pooled_projections=pooled, timestep=t,
                     return_dict=False)[0]

    def one_step(seed):
        g = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        # Rollout: SDE sampling with the current adapter, no gradients; keep x_j, μ_old, log p_old.
        with torch.no_grad():
            x = torch.randn(G, 16, CONFIG["sample_size"], CONFIG["sample_size"], generator=g)
            latents, means, logps = [x], [], []
            for i in range(T):
                cx, cv, s, dt = sde_coefficients(sigmas, i, a)
                v = velocity(x, i)
                mu = cx * x + cv * v
                x = mu + s * torch.randn(x.shape, generator=g)
                latents.append(x)
                means.append(mu)
                logps.append(log_prob(x, mu, s))
            rewards = x.flatten(1).mean(1).double()            # builtin:mean
            adv = ((rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-4)).clamp(-5, 5).float()
        t1 = time.perf_counter()
        # Update: per trained timestep forward+backward, GRPO-Guard objective, mean over timesteps.
        opt.zero_grad(set_to_none=True)
        diag = []
        for j in range(trained):
            cx, cv, s, dt = sde_coefficients(sigmas, j, a)
            xj = latents[j]
            v = velocity(xj, j)
            mu = cx * xj + cv * v
            lp = log_prob(latents[j + 1], mu, s)
            bias = ((mu - means[j]) ** 2).mean() / (2 * s * s)
            log_r_hat = s * (lp - logps[j] + bias)
            r_hat = torch.exp(log_r_hat)
            unclipped = -adv * r_hat
            clipped = -adv * torch.clamp(r_hat, 1 - eps_clip, 1 + eps_clip)
            loss = torch.maximum(unclipped, clipped).mean() / abs(dt)
            (loss / trained).backward()
            with torch.no_grad():
                diag.append(float(torch.exp(lp - logps[j]).mean()))
        norm = torch.nn.utils.clip_grad_norm_(lora, 1.0)
        opt.step()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, float(norm), float(rewards.mean())

    log(f"G={G} T={T} trained={trained} threads={args.threads} LoRA modules={n_modules} values={n_params}")
    for k in range(args.warmup):
        log(f"warm-up {k + 1}/{args.warmup}")
        one_step(1000 + k)
    rollouts, updates, totals = [], [], []
    for k in range(args.reps):
        r, u, norm, reward = one_step(k)
        rollouts.append(r)
        updates.append(u)
        totals.append(r + u)
        log(f"rep {k + 1}/{args.reps}: rollout {r:.3f} s, update {u:.3f} s, grad norm {norm:.3g}")
    print(json.dumps({"rollout_s": min(rollouts), "update_s": min(updates), "step_s": min(totals),
                      "rollout_all_s": rollouts, "update_all_s": updates, "lora_modules": n_modules,
                      "lora_values": n_params, "threads": args.threads, "torch": torch.__version__,
                      "group": G, "sampling_steps": T, "trained_timesteps": trained}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="job", required=True)
    m = sub.add_parser("make")
    m.add_argument("--dir", required=True)
    m.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench")
    b.add_argument("--dir", required=True)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--reps", type=int, default=3)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--group", type=int, default=8)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--rank", type=int, default=32)
    b.add_argument("--alpha", type=float, default=64)
    args = ap.parse_args()
    try:
        (make if args.job == "make" else bench)(args)
    except Exception as e:  # one JSON object either way, for run.py
        import traceback
        traceback.print_exc()
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)


if __name__ == "__main__":
    main()
