#!/usr/bin/env python3
"""Runtime benchmark: FlowGuard's CPU transformer runtime vs raw sgemm and vs PyTorch/diffusers.

Run by hand (not a test):  python3 tools/bench/runtime/run.py [--parts a,b,c,d] [--threads 2] [--quick] [--json]

Parts (all measured in this one run, on this machine, with --threads threads everywhere):
  a  our linear layer (Graph.linear, f32 and bf16 weights) vs raw cblas_sgemm on the same shapes
  b  one SD3.5-Medium joint block with dual attention (1024 image + 154 text tokens, fp32):
     forward and forward+backward with a rank-32 LoRA, vs diffusers' JointTransformerBlock with
     the same weights (PyTorch CPU eager); outputs and LoRA gradients are checked to agree
  c  the full SD3.5-Medium transformer from a synthetic bf16 checkpoint: load, forward, peak RSS
     vs diffusers' SD3Transformer2DModel (float32) on the same values; outputs compared
  d  the block forward's achieved GFLOP/s as a share of the sgemm rate measured in the same process

Our Swift side runs twice: with the environment as is (this machine sets OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE) and with those two variables removed (OpenBLAS picks its own kernels). PyTorch
uses its own BLAS and runs once (torch.set_num_threads). The Python and Swift processes run one
after another (the diffusers forward peaks near 16 GB). Progress goes to stderr.
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
from release_build import ROOT, release_binary, run_json as shared_run_json  # noqa: E402

TORCH_PYTHON = "/opt/fg-venv/bin/python"
REFERENCE = os.path.join(HERE, "reference.py")
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
PARTS = ("a", "b", "c", "d")

# Earlier measurements of the reference stack on this kind of machine (shared/README.md), printed
# next to this run's own anchors for orientation; targets are judged on this run's anchors.
EARLIER = {"block_forward_s": 0.515, "block_forward_backward_s": 1.096, "full_forward_s": 11.1,
           "full_load_s": 20.8, "full_peak_rss_bytes": 16.1e9}


def log(msg):
    print(f"[run.py] {msg}", file=sys.stderr, flush=True)


def block_flops(n_img=1024, n_txt=154, dim=1536, ff_mult=4):
    """2·M·N·K per matmul of one dual-attention joint block forward (LoRA branches and the
    [1 × dim] adaLN projections excluded; attention counts QKᵀ and PV for every head)."""
    mm = lambda m, n, k: 2.0 * m * n * k
    n_all = n_img + n_txt
    return (4 * mm(n_img, dim, dim)            # attn to_q, to_k, to_v, to_out.0
            + 4 * mm(n_txt, dim, dim)          # attn add_q/k/v_proj, to_add_out
            + 2 * mm(n_all, n_all, dim)        # joint attention: QKᵀ and PV over all heads
            + 4 * mm(n_img, dim, dim)          # attn2 to_q, to_k, to_v, to_out.0
            + 2 * mm(n_img, n_img, dim)        # attn2 attention
            + 2 * mm(n_img, ff_mult * dim, dim)    # ff up and down
            + 2 * mm(n_txt, ff_mult * dim, dim))   # ff_context up and down


def run_json(cmd, env=None, label=""):
    return shared_run_json(cmd, env=env, label=label, log=log, capture_stderr=False)


def build_runtime_bench(given):
    if given:
        return given, None
    log("building runtime-bench (release)...")
    r = subprocess.run(["swift", "build", "-c", "release", "--product", "runtime-bench"], cwd=ROOT, stdout=sys.stderr)
    if r.returncode != 0:
        return None, "swift build --product runtime-bench failed (see stderr)"
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return os.path.join(out.stdout.strip(), "runtime-bench"), None


def settings_envs(which):
    base = dict(os.environ)
    out = []
    if "env" in which:
        label = ", ".join(f"{v}={base[v]}" for v in OPENBLAS_VARS if v in base) or "no OPENBLAS_* set"
        out.append(("env", f"environment as is ({label})", base))
    if "auto" in which:
        out.append(("auto", "OPENBLAS_CORETYPE/L2_SIZE removed (OpenBLAS picks)",
                    {k: v for k, v in base.items() if k not in OPENBLAS_VARS}))
    return out


def med(t):
    return t["median_s"] if t else None


def row(rows, setting, part, name, ours, anchor, ratio, target, met, unit="", note=""):
    rows.append({"setting": setting, "part": part, "measurement": name, "ours": ours, "anchor": anchor,
                 "ratio": ratio, "target": target, "met": met, "unit": unit, "note": note})


def fmt(x, unit):
    if x is None:
        return "—"
    if unit == "s":
        return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"
    if unit == "B":
        return f"{x / 1e9:.2f} GB"
    if unit == "GF":
        return f"{x:.0f} GF/s"
    if unit == "%":
        return f"{100 * x:.0f}%"
    if unit == "rel":
        return f"{x:.1e}"
    return f"{x:.3g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke test: no warm-up, one repetition")
    ap.add_argument("--reps", type=int, help="timed repetitions (default 3; 1 with --quick)")
    ap.add_argument("--full-reps", type=int, help="timed full-model forwards (default 2; 1 with --quick)")
    ap.add_argument("--settings", default="env,auto", help="OpenBLAS settings for our side: env, auto or both")
    ap.add_argument("--work", default="/tmp/fg-runtime-bench", help="scratch folder (the 10 GB of checkpoints go here)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints and block files")
    ap.add_argument("--runtime-bench", help="use this runtime-bench binary instead of building it")
    ap.add_argument("--flowguard", help="use this flowguard binary instead of building it")
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON on stdout (table on stderr)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        ap.error("--parts takes a comma-separated subset of a,b,c,d")
    reps = args.reps or (1 if args.quick else 3)
    warmup = 0 if args.quick else 1
    full_reps = args.full_reps or (1 if args.quick else 2)
    threads = str(args.threads)
    os.makedirs(args.work, exist_ok=True)
    settings = settings_envs(args.settings)

    errors, rows, raw = [], [], {"parts": parts, "threads": args.threads, "reps": reps, "warmup": warmup,
                                 "settings": {k: d for k, d, _ in settings}, "earlier_reference": EARLIER}
    bench, err = build_runtime_bench(args.runtime_bench)
    if err:
        errors.append(err)

    # --- PyTorch side of (b): writes the block's weights/LoRA/inputs/outputs, times the block.
    block_dir = os.path.join(args.work, "block")
    torch_block = None
    if "b" in parts or "d" in parts:
        cmd = [TORCH_PYTHON, REFERENCE, "block", "--dir", block_dir, "--threads", threads,
               "--warmup", str(warmup), "--reps", str(reps)]
        if "b" not in parts:
            cmd.append("--generate-only")
        torch_block, err, _ = run_json(cmd, label="PyTorch block")
        raw["torch_block"] = torch_block
        if err:
            errors.append(err)

    # --- (c): synthetic checkpoint (same seed: same values in both layouts), diffusers first.
    torch_full, ckpt_original, ckpt_diffusers, io_file = None, None, None, os.path.join(args.work, "full-io.safetensors")
    if "c" in parts:
        try:
            ckpt_original = os.path.join(args.work, "sd35m-original-bf16.safetensors")
            ckpt_diffusers = os.path.join(args.work, "sd35m-diffusers-bf16")
            fg = None
            for layout, path in (("original", ckpt_original), ("diffusers", ckpt_diffusers)):
                if not os.path.exists(path):   # kept from an earlier --keep run otherwise
                    fg = fg or release_binary(args.flowguard)
                    log(f"flowguard synth sd3.5-medium bf16 ({layout} layout) -> {path}")
                    subprocess.run([fg, "synth", "--variant", "sd3.5-medium", "--layout", layout, "--dtype", "bf16",
                                    "--seed", "0", path], check=True, stdout=sys.stderr)
        except (subprocess.CalledProcessError, OSError) as e:
            errors.append(f"(c) could not make the synthetic checkpoint: {e}")
            ckpt_original = ckpt_diffusers = None
        if ckpt_diffusers:
            for f in (ckpt_original, os.path.join(ckpt_diffusers, "diffusion_pytorch_model.safetensors")):
                subprocess.run(["cat", f], stdout=subprocess.DEVNULL)   # both files in the page cache
            torch_full, err, _ = run_json(
                [TORCH_PYTHON, REFERENCE, "full", "--folder", ckpt_diffusers, "--io", io_file, "--threads", threads,
                 "--warmup", str(warmup), "--reps", str(full_reps)], label="diffusers full")
            raw["torch_full"] = torch_full
            if err:
                errors.append(err)

    # --- Our side, once per OpenBLAS setting.
    raw["ours"] = {}
    for key, desc, env in settings:
        ours = raw["ours"].setdefault(key, {})
        if not bench:
            continue
        common = ["--threads", threads, "--warmup", str(warmup), "--reps", str(reps)]
        if "a" in parts:
            ours["linear"], err, _ = run_json([bench, "linear"] + common, env=env, label=f"[{key}] linear")
            if err:
                errors.append(f"[{key}] {err}")
        if ("b" in parts or "d" in parts) and torch_block:
            ours["block"], err, _ = run_json([bench, "block", "--dir", block_dir] + common, env=env,
                                             label=f"[{key}] block")
            if err:
                errors.append(f"[{key}] {err}")
        if "c" in parts and torch_full and ckpt_original:
            subprocess.run(["cat", ckpt_original], stdout=subprocess.DEVNULL)
            ours["full"], err, _ = run_json(
                [bench, "full", "--checkpoint", ckpt_original, "--io", io_file, "--threads", threads,
                 "--warmup", str(warmup), "--reps", str(full_reps)], env=env, label=f"[{key}] full")
            if err:
                errors.append(f"[{key}] {err}")

    # --- Rows.
    for key, desc, _ in settings:
        ours = raw["ours"].get(key, {})
        lin = ours.get("linear")
        if "a" in parts and lin:
            for s in lin["shapes"]:
                for kind in ("linear_f32", "linear_bf16"):
                    t_ours, t_raw = med(s[kind]), med(s["sgemm"])
                    ratio = t_raw / t_ours
                    row(rows, key, "a", f"{kind.replace('_', ' ')} {s['shape']} ({s['what']}), speed vs sgemm",
                        t_ours, t_raw, ratio, ">= 0.8x", ratio >= 0.8, "s")
        blk = ours.get("block")
        if blk:
            chk = blk["check"]
            agree = max(chk["out_hidden_rel_l2"], chk["out_context_rel_l2"], chk["lora_grad_worst_rel_l2"])
            row(rows, key, "b", "check vs PyTorch: worst rel. L2 (outputs, LoRA grads)", agree, None, None,
                "<= 1e-4", agree <= 1e-4, "rel",
                f"hidden {chk['out_hidden_rel_l2']:.1e}, context {chk['out_context_rel_l2']:.1e}, "
                f"{chk['lora_gradients']} grads {chk['lora_grad_worst_rel_l2']:.1e}")
        if "b" in parts and blk and torch_block and "forward" in torch_block:
            for name, k in (("block forward, no LoRA", "forward_plain"), ("block forward, LoRA r32", "forward"),
                            ("block forward+backward, LoRA r32", "forward_backward")):
                o, a = med(blk[k]), med(torch_block[k])
                row(rows, key, "b", f"{name} (median; min {fmt(blk[k]['min_s'], 's')} vs {fmt(torch_block[k]['min_s'], 's')})",
                    o, a, o / a, "<= 0.8x", o / a <= 0.8, "s")
        if "d" in parts and blk:
            flops = block_flops(blk["image_tokens"], blk["text_tokens"], blk["dim"])
            achieved = flops / med(blk["forward_plain"]) / 1e9
            rate = blk["sgemm"]["gflops"]
            row(rows, key, "d", f"block forward GFLOP/s ({flops / 1e9:.1f} GFLOP, no LoRA) vs in-process sgemm {blk['sgemm']['shape']}",
                achieved, rate, achieved / rate, ">= 60%", achieved / rate >= 0.6, "GF")
        full = ours.get("full")
        if "c" in parts and full and torch_full:
            o, a = med(full["forward"]), med(torch_full["forward"])
            row(rows, key, "c", "full SD3.5-M forward (median)", o, a, o / a, "<= 0.8x", o / a <= 0.8, "s",
                f"our first forward {fmt(med(full['first_forward']), 's')}")
            row(rows, key, "c", "load (open + build model)", full["load_s"], torch_full["load_s"],
                full["load_s"] / torch_full["load_s"], "<= 5 s", full["load_s"] <= 5, "s")
            row(rows, key, "c", "peak RSS of the process", full["peak_rss_bytes"], torch_full["peak_rss_bytes"],
                full["peak_rss_bytes"] / torch_full["peak_rss_bytes"], "<= 6.5 GB", full["peak_rss_bytes"] <= 6.5e9, "B")
            rel = full["output_rel_l2"]
            row(rows, key, "c", "check vs diffusers: output rel. L2", rel, None, None, "<= 1e-4", rel <= 1e-4, "rel",
                "bf16 weights widened to f32 on both sides")
    raw["rows"], raw["errors"] = rows, errors

    # --- Output.
    out = sys.stderr if args.json else sys.stdout
    print("", file=out)
    print(f"FlowGuard runtime benchmark — {args.threads} threads, {reps} timed reps after {warmup} warm-up"
          + (" (QUICK)" if args.quick else ""), file=out)
    if torch_block or torch_full:
        print(f"anchors: PyTorch {(torch_block or torch_full)['torch']} CPU eager, same run; earlier reference "
              f"(shared/README.md): block {EARLIER['block_forward_s'] * 1000:.0f} / {EARLIER['block_forward_backward_s'] * 1000:.0f} ms, "
              f"full {EARLIER['full_forward_s']} s forward, {EARLIER['full_load_s']} s load, {EARLIER['full_peak_rss_bytes'] / 1e9} GB", file=out)
    width = 92
    for key, desc, _ in settings:
        mine = [r for r in rows if r["setting"] == key]
        print(f"\n== our side: {desc}", file=out)
        print(f"{'measurement':{width}} {'ours':>10} {'anchor':>10} {'ratio':>7} {'target':>9}  met?", file=out)
        for r in mine:
            ratio = "—" if r["ratio"] is None else (f"{100 * r['ratio']:.0f}%" if r["part"] == "d" else f"{r['ratio']:.2f}x")
            print(f"({r['part']}) {r['measurement'][:width - 4]:{width - 4}} {fmt(r['ours'], r['unit']):>10} "
                  f"{fmt(r['anchor'], r['unit']):>10} {ratio:>7} {r['target']:>9}  {'yes' if r['met'] else 'NO'}"
                  + (f"  [{r['note']}]" if r["note"] else ""), file=out)
        if not mine:
            print("(no rows: see errors)", file=out)
    if errors:
        print("\nerrors:", file=out)
        for e in errors:
            print(f"  - {e}", file=out)
    if args.json:
        print(json.dumps(raw, indent=1))

    if not args.keep:
        for path in (ckpt_original, io_file):
            if path and os.path.exists(path):
                os.remove(path)
        for path in (ckpt_diffusers, block_dir):
            if path and os.path.exists(path):
                shutil.rmtree(path)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
