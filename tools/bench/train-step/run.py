#!/usr/bin/env python3
"""Train-step benchmark: one GRPO-Guard training step, FlowGuard (`flowguard train`) vs PyTorch.

Run by hand (not a test):  python3 tools/bench/train-step/run.py [--threads 2] [--reps 3] [--json]

One step = a rollout of G = 8 samples × T = 10 SDE steps (LoRA on, no gradients) + one optimizer
step (forward+backward of the 8 samples at each of the 9 trained timesteps, GRPO-Guard objective,
grad clip, AdamW), on a small SD3.5-style transformer (width 256, 4 joint blocks, head dim 64,
16×16 latents → 64 image tokens, 16 text tokens) with a rank-32 LoRA (α 64) on the attention
projections. Both sides load the same weights (a diffusers folder written by reference.py) and the
same prompt embeddings, and use the same thread count.

Ours: `flowguard train` with a config for exactly one step; the step's time is the `seconds` field
of its diagnostics line (rollout + update, model loading and export excluded). The rollout/update
split is derived from a second run training a single timestep (--timestep-fraction 0.1):
update(9) = (step(9) − step(1)) · 9/8, rollout = step(9) − update(9).
PyTorch: reference.py times the rollout and the update directly.
Best of --reps for every number; the sides alternate within each repetition (PyTorch, ours with
each OpenBLAS setting), so that other load on the machine hits both alike. Progress on stderr.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from release_build import release_binary, run_json as shared_run_json  # noqa: E402

TORCH_PYTHON = "/opt/fg-venv/bin/python"
REFERENCE = os.path.join(HERE, "reference.py")
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def log(msg):
    print(f"[run.py] {msg}", file=sys.stderr, flush=True)


def run_json(cmd, env=None, label=""):
    return shared_run_json(cmd, env=env, label=label, log=log, capture_stderr=True)


def config(work, threads):
    path = os.path.join(work, "train.json")
    cfg = {"model": "model", "prompts": "prompts.safetensors", "reward": "builtin:mean", "output": "run",
           "seed": 0, "steps": 1, "prompts_per_step": 1, "group_size": 8, "batch_size": 0, "sampling_steps": 10,
           "timestep_fraction": 0.99, "eval_steps": 1, "latent_size": 16, "shift": 3, "noise_level": 0.7,
           "objective": "grpo-guard", "lora_rank": 32, "lora_alpha": 64, "learning_rate": 1e-4,
           "checkpoint_every": 0, "threads": threads}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    return path


def ours_step(fg, cfg, work, env, fraction, label):
    """One `flowguard train` run of one step; returns (step seconds, wall seconds, error)."""
    out = os.path.join(work, "run")
    shutil.rmtree(out, ignore_errors=True)
    obj, err, wall = run_json([fg, "train", "--config", cfg, "--output", out, "--timestep-fraction", str(fraction), "--json"],
                              env=env, label=label)
    if err:
        return None, wall, err
    with open(os.path.join(out, "diagnostics.jsonl")) as f:
        record = json.loads(f.readline())
    return record["seconds"], wall, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per side (best of)")
    ap.add_argument("--settings", default="env,auto",
                    help="OpenBLAS settings for our side: env (environment as is), auto (OPENBLAS_CORETYPE/L2_SIZE removed), or both")
    ap.add_argument("--work", default="/tmp/fg-train-step-bench")
    ap.add_argument("--flowguard", help="use this flowguard binary instead of building it")
    ap.add_argument("--skip-torch", action="store_true", help="time only our side")
    ap.add_argument("--json", action="store_true", help="print the result as JSON on stdout (table on stderr)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    errors, result = [], {"threads": args.threads, "reps": args.reps}
    try:
        fg = release_binary(args.flowguard)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"error: could not build the release flowguard: {e}", file=sys.stderr)
        sys.exit(1)

    if not os.path.exists(os.path.join(args.work, "model", "config.json")):
        made, err, _ = run_json([TORCH_PYTHON, REFERENCE, "make", "--dir", args.work], label="make weights")
        if err:
            print(err, file=sys.stderr)
            sys.exit(1)
    cfg = config(args.work, args.threads)

    base = dict(os.environ)
    envs = []
    if "env" in args.settings:
        envs.append(("env", base))
    if "auto" in args.settings:
        envs.append(("auto", {k: v for k, v in base.items() if k not in OPENBLAS_VARS}))
    # Rounds interleave the sides, so that load from other work on the machine hits both alike.
    torch_runs, full, single, walls = [], {n: [] for n, _ in envs}, {n: [] for n, _ in envs}, {n: [] for n, _ in envs}
    failed = set()
    for k in range(args.reps):
        if not args.skip_torch and "torch" not in failed:
            obj, err, _ = run_json([TORCH_PYTHON, REFERENCE, "bench", "--dir", args.work, "--threads", str(args.threads),
                                    "--reps", "1", "--warmup", "1"], label=f"PyTorch {k + 1}/{args.reps}")
            if err:
                errors.append(err)
                failed.add("torch")
            else:
                torch_runs.append(obj)
                log(f"PyTorch: step {obj['step_s']:.3f} s (rollout {obj['rollout_s']:.3f} s, update {obj['update_s']:.3f} s)")
        for name, env in envs:
            if name in failed:
                continue
            s9, wall, err = ours_step(fg, cfg, args.work, env, 0.99, f"ours[{name}] 9 timesteps {k + 1}/{args.reps}")
            s1, _, err1 = (None, 0, None) if err else ours_step(fg, cfg, args.work, env, 0.1, f"ours[{name}] 1 timestep {k + 1}/{args.reps}")
            if err or err1:
                errors.append(err or err1)
                failed.add(name)
                continue
            full[name].append(s9)
            single[name].append(s1)
            walls[name].append(wall)
            log(f"ours[{name}]: step {s9:.3f} s (1 trained timestep: {s1:.3f} s), process {wall:.2f} s")
    torch = None
    if torch_runs:
        torch = dict(torch_runs[0])
        for key in ("rollout_s", "update_s", "step_s"):
            torch[key] = min(r[key] for r in torch_runs)
        torch["rollout_all_s"] = [r["rollout_s"] for r in torch_runs]
        torch["update_all_s"] = [r["update_s"] for r in torch_runs]
    result["torch"] = torch
    result["ours"] = {}
    for name, _ in envs:
        if full[name]:
            step, one = min(full[name]), min(single[name])
            update = max(0.0, (step - one) * 9 / 8)
            result["ours"][name] = {"step_s": step, "rollout_s": step - update, "update_s": update,
                                    "one_timestep_step_s": one, "process_wall_s": min(walls[name]),
                                    "step_all_s": full[name], "one_timestep_all_s": single[name]}

    rows = []
    for name, o in result["ours"].items():
        for key, label in (("step_s", "whole step"), ("rollout_s", "rollout (G=8 × T=10)"), ("update_s", "update (9 timesteps fwd+bwd, AdamW)")):
            t = torch[key] if torch else None
            rows.append({"setting": name, "measurement": label, "ours_s": o[key], "torch_s": t,
                         "ratio": (o[key] / t) if t else None})
    result["rows"] = rows
    result["errors"] = errors

    out = sys.stderr if args.json else sys.stdout
    print(f"train-step benchmark: one GRPO-Guard step, {args.threads} threads, best of {args.reps} (indicative: shared machine)", file=out)
    if torch:
        print(f"PyTorch {torch['torch']}: {torch['lora_modules']} LoRA modules, {torch['lora_values']} values", file=out)
    print(f"{'setting':8} {'measurement':40} {'ours':>9} {'PyTorch':>9} {'ours/PT':>8}  target ≤ 1.0", file=out)
    for r in rows:
        t = f"{r['torch_s']:.3f} s" if r["torch_s"] else "—"
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] else "—"
        met = "" if r["ratio"] is None else ("met" if r["ratio"] <= 1.0 else "NOT met")
        print(f"{r['setting']:8} {r['measurement']:40} {r['ours_s']:7.3f} s {t:>9} {ratio:>8}  {met}", file=out)
    print("ours: rollout/update split derived from a 1-timestep run (see README)", file=out)
    for e in errors:
        print(f"error: {e}", file=out)
    if args.json:
        print(json.dumps(result))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
