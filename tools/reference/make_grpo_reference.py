"""Reference cases for FlowGuard's FlowMatching and GRPOGuard modules.

Implements design.md section 6 independently, in torch float64 (autograd for gradients), and
uses torch.optim.AdamW and torch.nn.utils.clip_grad_norm_ for the optimizer trajectories.
Writes fixtures/grpo_reference/reference.safetensors and its README.md.

Storage convention mirrored from the Swift code: inputs are float32; the step mean mu and the next
latent x' are stored as float32 (mu rounded first, then x' = float32(mu + s*eps)); log-probabilities
are evaluated in float64 on those stored float32 values.

Run:  /opt/fg-venv/bin/python tools/reference/make_grpo_reference.py
"""
import math
import os
import platform
import sys

import numpy as np
import safetensors
import torch
from safetensors.torch import save_file

SEED = 20250117
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(ROOT, "fixtures", "grpo_reference")
F64 = torch.float64
tensors = {}


def put(name, value, dtype=F64):
    # Python lists become float64 first (torch's default float32 would round them).
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float64))
    tensors[name] = t.detach().to(dtype).contiguous().clone()


# ---------------------------------------------------------------- schedule
def schedule(steps, shift):
    u = torch.linspace(1.0, 1.0 / steps, steps, dtype=F64)
    sig = shift * u / (1 + (shift - 1) * u)
    return torch.cat([sig, torch.zeros(1, dtype=F64)])


SCHEDULES = [(10, 3.0), (40, 3.0), (1, 3.0), (28, 1.0), (4, 4.5)]
for k, (T, shift) in enumerate(SCHEDULES):
    put(f"schedule.{k}.params", [T, shift])
    put(f"schedule.{k}.sigmas", schedule(T, shift))


# ---------------------------------------------------------------- SDE step
def coefficients(sigma, sigma_next, a, sigma_one):
    dt = sigma_next - sigma
    denominator = sigma_one if sigma == 1.0 else sigma
    std = a * math.sqrt(sigma / (1 - denominator))
    s = std * math.sqrt(-dt)
    cx = 1 + std * std * dt / (2 * sigma)
    cv = (1 + std * std * (1 - sigma) / (2 * sigma)) * dt
    return dt, std, s, cx, cv


def log_prob(next_latent, mean, s):
    """Per-sample mean over elements of the Gaussian log density (float64)."""
    per = -((next_latent - mean) ** 2) / (2 * s * s) - math.log(s) - 0.5 * math.log(2 * math.pi)
    return per.reshape(per.shape[0], -1).mean(dim=1)


g = torch.Generator().manual_seed(SEED)
s10 = schedule(10, 3.0)
SDE_CASES = [
    (1.0, float(s10[1]), 0.7, float(s10[1])),     # sigma = 1: sigma_1 in the denominator
    (float(s10[1]), float(s10[2]), 0.7, float(s10[1])),
    (0.5, 0.45, 0.7, float(s10[1])),
    (float(s10[9]), 0.0, 0.7, float(s10[1])),     # last step of the schedule
    (0.02, 0.0, 0.7, float(s10[1])),              # near zero
    (0.003, 0.001, 0.7, float(s10[1])),
    (0.8, 0.6, 1.0, float(s10[1])),               # another noise level
]
for k, (sigma, sigma_next, a, sigma_one) in enumerate(SDE_CASES):
    shape = (2, 4, 3, 3)
    x = torch.randn(shape, generator=g).float()
    v = torch.randn(shape, generator=g).float()
    eps = torch.randn(shape, generator=g).float()
    dt, std, s, cx, cv = coefficients(sigma, sigma_next, a, sigma_one)
    mean64 = cx * x.double() + cv * v.double()
    mean32 = mean64.float()
    next32 = (mean32.double() + s * eps.double()).float()
    mu = mean32.double().requires_grad_(True)
    lp = log_prob(next32.double(), mu, s)
    lp.sum().backward()
    put(f"sde.{k}.params", [sigma, sigma_next, a, sigma_one])
    put(f"sde.{k}.x", x, torch.float32)
    put(f"sde.{k}.v", v, torch.float32)
    put(f"sde.{k}.eps", eps, torch.float32)
    put(f"sde.{k}.coefficients", [dt, std, s, cx, cv])
    put(f"sde.{k}.mean", mean64)
    put(f"sde.{k}.next", next32, torch.float32)
    put(f"sde.{k}.logp", lp)
    put(f"sde.{k}.dlogp_dmean", mu.grad)
    put(f"sde.{k}.ode_next", x.double() + v.double() * dt)


# ---------------------------------------------------------------- objectives
def surrogate(ratio, adv, clip_range):
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.mean(torch.maximum(unclipped, clipped))


def midpoint_clip_range(ratio):
    dev = torch.sort((ratio - 1).abs()).values
    k = len(dev) // 2
    return float(0.5 * (dev[k - 1] + dev[k]))


# kind: 0 vanilla, 1 guard with one batch bias, 2 guard with per-sample bias
OBJECTIVE_CASES = [
    # (kind, sigma, sigma_next, perturbation/s, beta, reweight)
    (0, 0.6, 0.5, 0.05, 0.0, 1),
    (0, 0.3, 0.2, 0.05, 0.04, 1),
    (1, 0.6, 0.5, 0.3, 0.0, 1),
    (2, 0.6, 0.5, 0.3, 0.0, 1),
    (1, 0.05, 0.0, 0.3, 0.0, 1),
    (2, 0.25, 0.0, 0.3, 0.0, 0),
    (1, 1.0, float(s10[1]), 0.3, 0.02, 1),
]
for k, (kind, sigma, sigma_next, scale, beta, reweight) in enumerate(OBJECTIVE_CASES):
    a, sigma_one = 0.7, float(s10[1])
    shape = (8, 2, 3, 3)
    dt, std, s, cx, cv = coefficients(sigma, sigma_next, a, sigma_one)
    mean_old = torch.randn(shape, generator=g).float()
    next32 = (mean_old.double() + s * torch.randn(shape, generator=g, dtype=F64)).float()
    logp_old = log_prob(next32.double(), mean_old.double(), s)
    mean_theta = (mean_old.double() + scale * s * torch.randn(shape, generator=g, dtype=F64)).float()
    mean_ref = (mean_old.double() + 0.5 * s * torch.randn(shape, generator=g, dtype=F64)).float()
    adv = torch.clamp(torch.randn(shape[0], generator=g, dtype=F64) * 1.5, -5, 5)
    adv[0], adv[1] = abs(float(adv[0])) + 0.1, -abs(float(adv[1])) - 0.1

    mu = mean_theta.double().requires_grad_(True)
    lp = log_prob(next32.double(), mu, s)
    log_ratio = lp - logp_old
    ratio = torch.exp(log_ratio)
    delta = mu - mean_old.double()
    if kind == 2:
        bias = (delta ** 2).reshape(shape[0], -1).mean(dim=1) / (2 * s * s)
    else:
        bias = (delta ** 2).mean() / (2 * s * s)
    norm_ratio = torch.exp(s * (log_ratio + bias))
    clipped_on = ratio if kind == 0 else norm_ratio
    clip_range = midpoint_clip_range(clipped_on.detach())
    policy = surrogate(clipped_on, adv, clip_range)
    weight = 1.0 if (kind == 0 or not reweight) else 1.0 / (math.sqrt(-dt) ** 2)
    kl = ((mu - mean_ref.double()) ** 2).reshape(shape[0], -1).mean(dim=1) / (2 * std ** 2)
    kl = kl.mean()
    loss = weight * policy + beta * kl
    loss.backward()

    r = ratio.detach()
    rn = norm_ratio.detach()
    c = clipped_on.detach()
    kl, policy = kl.detach(), policy.detach()
    diag = [r.mean(), r.std(unbiased=False), rn.mean(), rn.std(unbiased=False),
            ((c - 1.0) > clip_range).double().mean(), ((1.0 - c) > clip_range).double().mean(),
            0.5 * (log_ratio.detach() ** 2).mean()]
    put(f"objective.{k}.params", [kind, sigma, sigma_next, a, sigma_one, clip_range, beta, reweight])
    put(f"objective.{k}.next", next32, torch.float32)
    put(f"objective.{k}.mean_old", mean_old, torch.float32)
    put(f"objective.{k}.mean", mean_theta, torch.float32)
    put(f"objective.{k}.mean_ref", mean_ref, torch.float32)
    put(f"objective.{k}.logp_old", logp_old)
    put(f"objective.{k}.advantages", adv)
    put(f"objective.{k}.loss", [loss.item(), policy.item(), kl.item(), weight])
    put(f"objective.{k}.grad", mu.grad)
    put(f"objective.{k}.ratios", r)
    put(f"objective.{k}.normalized_ratios", rn)
    put(f"objective.{k}.diagnostics", [float(d) for d in diag])


# ---------------------------------------------------------------- advantages
def advantages(rewards, groups, global_std, eps=1e-4, clamp=5.0):
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = np.asarray(groups)
    out = np.zeros_like(rewards)
    for label in np.unique(groups):
        members = groups == label
        mean = rewards[members].mean()
        std = rewards.std() if global_std else rewards[members].std()   # numpy: biased
        out[members] = (rewards[members] - mean) / (std + eps)
    return np.clip(out, -clamp, clamp)


rng = np.random.default_rng(SEED)
ADV_CASES = []
r0 = rng.normal(size=24); ADV_CASES.append((r0, np.repeat(np.arange(4), 6), 0))
ADV_CASES.append((r0, np.repeat(np.arange(4), 6), 1))
r2 = np.concatenate([np.zeros(29), [1.0], np.full(4, 0.5), rng.normal(size=6)])
ADV_CASES.append((r2, np.concatenate([np.zeros(30), np.ones(4), np.full(6, 2)]), 0))    # clamp fires; a constant group
r3 = rng.uniform(size=12); ADV_CASES.append((r3, rng.permutation(np.repeat([7, 3, 5], 4)), 0))  # interleaved groups
ADV_CASES.append((r3, rng.permutation(np.repeat([7, 3, 5], 4)), 1))
for k, (rw, groups, global_std) in enumerate(ADV_CASES):
    put(f"advantages.{k}.rewards", rw)
    put(f"advantages.{k}.groups", groups.astype(np.float64))
    put(f"advantages.{k}.params", [global_std, 1e-4, 5.0])
    put(f"advantages.{k}.out", advantages(rw, groups, bool(global_std)))


# ---------------------------------------------------------------- AdamW + clipping
ADAM_CASES = [
    # lr, beta1, beta2, eps, weight_decay, max_norm, gradient scales per step
    (1e-2, 0.9, 0.999, 1e-8, 0.1, 1.0, [3.0, 0.05, 1.0, 0.2, 5.0, 0.01]),
    (1e-4, 0.9, 0.999, 1e-8, 1e-4, 1.0, [0.1, 2.0, 0.1, 0.3, 10.0]),
]
SHAPES = [(4, 3), (5,), (2, 2, 2)]
for k, (lr, b1, b2, eps, wd, max_norm, scales) in enumerate(ADAM_CASES):
    params = [torch.randn(sh, generator=g).float() for sh in SHAPES]
    for i, p in enumerate(params):
        put(f"adamw.{k}.init.{i}", p, torch.float32)
    live = [torch.nn.Parameter(p.double()) for p in params]
    opt = torch.optim.AdamW(live, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    norms = []
    for t, sc in enumerate(scales):
        grads = [(torch.randn(sh, generator=g) * sc).float() for sh in SHAPES]
        for i, (p, gr) in enumerate(zip(live, grads)):
            put(f"adamw.{k}.grad.{t}.{i}", gr, torch.float32)
            p.grad = gr.double().clone()
        norms.append(float(torch.nn.utils.clip_grad_norm_(live, max_norm)))
        opt.step()
        opt.zero_grad()
        for i, p in enumerate(live):
            put(f"adamw.{k}.after.{t}.{i}", p.detach())
    put(f"adamw.{k}.config", [lr, b1, b2, eps, wd, max_norm, len(scales), len(SHAPES)])
    put(f"adamw.{k}.norms", norms)


# ---------------------------------------------------------------- EMA (flow_grpo semantics)
steps, decay, interval = 24, 0.9, 8
trajectory = torch.randn((steps, 4), generator=g).float()
average = trajectory[0].double().clone()     # the average starts as a copy of the parameters
after = []
for step in range(steps):
    d = min((1 + step) / (10 + step), decay)
    if (step + 1) % interval == 0:
        average = average + (1 - d) * (trajectory[step].double() - average)
    after.append(average.clone())
put("ema.params", trajectory, torch.float32)
put("ema.config", [decay, interval])
put("ema.after", torch.stack(after))


os.makedirs(OUT_DIR, exist_ok=True)
path = os.path.join(OUT_DIR, "reference.safetensors")
save_file(tensors, path, metadata={"generator": "tools/reference/make_grpo_reference.py", "seed": str(SEED)})
os.chmod(path, 0o644)

readme = f"""# GRPO reference cases

`reference.safetensors` holds the reference values that `Tests/FlowMatchingTests` and
`Tests/GRPOGuardTests` compare against (to 1e-6). Generated by
`tools/reference/make_grpo_reference.py`; do not edit by hand (this README is generated too).

Regenerate (deterministic, CPU):

```
/opt/fg-venv/bin/python tools/reference/make_grpo_reference.py
```

Provenance: python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__},
safetensors {safetensors.__version__}; torch generator seed {SEED}, numpy `default_rng({SEED})`.

What the script computes (independently of the Swift code, from design.md section 6):
- `schedule.K.*`: shifted flow-match sigmas for (T, shift) in {SCHEDULES}.
- `sde.K.*`: SDE steps at sigma = 1 (sigma_1 substituted), mid-range, the last schedule step and
  near 0; float32 x, v, eps; float64 mu, log p per sample and d log p/d mu (autograd); the stored
  float32 mu and x' convention is described at the top of the script. `ode_next` is the Euler step.
- `objective.K.*`: Flow-GRPO (kind 0, with and without KL) and GRPO-Guard (kind 1: one bias over
  batch and elements, kind 2: per-sample bias; with and without 1/|dt| reweighting) on random
  batches of 8; loss and d loss/d mu_theta by torch autograd (maximum/clamp), ratios and
  diagnostics. The clip range of each case is the midpoint between the two middle |ratio - 1|
  values, so half the samples lie outside it.
- `advantages.K.*`: group-relative advantages (numpy, biased std, per group or global, +1e-4,
  clamp 5), including an interleaved grouping, a constant group and a clamped outlier.
- `adamw.K.*`: torch.optim.AdamW trajectories (float64 parameters from float32 starts) with
  torch.nn.utils.clip_grad_norm_(max_norm) before every step; `norms` are the pre-clip norms.
- `ema.*`: flow_grpo's EMA rule (decay min((1+k)/(10+k), 0.9), update when (k+1) % 8 == 0).

{len(tensors)} tensors, {os.path.getsize(path)} bytes.
"""
with open(os.path.join(OUT_DIR, "README.md"), "w") as f:
    f.write(readme)
print(f"wrote {path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes", file=sys.stderr)
