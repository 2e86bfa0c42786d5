#!/usr/bin/env python3
"""Benchmark (issue 17, must-show 5): merging non-low-rank adapters with `flowguard lora merge`.

Run by hand on a quiet machine (not a test):
    python3 tools/bench/lora_merge_kinds.py              # full size: FLUX.1-dev bf16 (23.8 GB) + SD3.5-M
    python3 tools/bench/lora_merge_kinds.py --tiny       # the same steps on the tiny fixtures (smoke run)

What it does, per base:
  1. `flowguard synth` writes a synthetic base (FLUX.1-dev bf16, original layout; SD3.5 Medium bf16).
  2. Two adapters are made on the fly for every 2-d weight whose sizes divide by 16, in kohya naming
     (`lora_unet_<module, dots→_>`): a LyCORIS LoKr with factor 16 (lokr_w1 [16, 16] and a full
     lokr_w2 [out/16, in/16], scale 1) and a rank-32 DoRA LoRA (lora_down/lora_up/alpha + dora_scale
     [out, 1]).
  3. Anchor: `cp BASE OUT && sync` (what writing the file at all costs).
  4. `flowguard lora merge BASE ADAPTER OUT` for each adapter; wall time and peak RSS
     (/usr/bin/time -f %M), ratio to the anchor (FLUX target: <= 1.3x, peak RSS <= 1 GB).
  5. SD3.5-M only: the Python way, a load-everything merge as LyCORIS / ComfyUI do it (torch,
     safetensors load_file, W + kron(w1, w2) or the DoRA formula per module, save_file), with its
     wall time and peak RSS.
Each timing is the best of --reps runs (outputs removed between runs, untimed).
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))


def timed(cmd, env=None):
    """(seconds, peak RSS bytes) of one command run under /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.monotonic() - start
        if r.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
        return elapsed, int(rss.read().strip().splitlines()[-1]) * 1024


def best(cmd, reps, cleanup):
    runs = []
    for _ in range(reps):
        cleanup()
        runs.append(timed(cmd))
    return min(r[0] for r in runs), max(r[1] for r in runs)


def linear_weights(path):
    """(name, [out, in]) of every 2-d .weight tensor, read from the safetensors header."""
    import json, struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    out = []
    for k, v in header.items():
        if k == "__metadata__" or not k.endswith(".weight") or len(v["shape"]) != 2:
            continue
        o, i = v["shape"]
        if o % 16 == 0 and i % 16 == 0:
            out.append((k[: -len(".weight")], o, i))
    return out


def make_adapters(base, folder, prefix_strip):
    import numpy as np
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    lokr, dora = {}, {}
    for name, o, i in linear_weights(base):
        module = name[len(prefix_strip):] if name.startswith(prefix_strip) else name
        k = "lora_unet_" + module.replace(".", "_")
        lokr[k + ".lokr_w1"] = rng.standard_normal((16, 16), dtype=np.float32) * 0.1
        lokr[k + ".lokr_w2"] = rng.standard_normal((o // 16, i // 16), dtype=np.float32) * 0.01
        lokr[k + ".alpha"] = np.array(1.0, dtype=np.float32)
        dora[k + ".lora_down.weight"] = rng.standard_normal((32, i), dtype=np.float32) / np.sqrt(i)
        dora[k + ".lora_up.weight"] = rng.standard_normal((o, 32), dtype=np.float32) * 0.01
        dora[k + ".alpha"] = np.array(32.0, dtype=np.float32)
        dora[k + ".dora_scale"] = (1 + 0.1 * rng.standard_normal((o, 1), dtype=np.float32)).astype(np.float32)
    paths = {}
    for label, tensors in [("lokr16", lokr), ("dora32", dora)]:
        p = os.path.join(folder, f"adapter_{label}.safetensors")
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, p, metadata={"format": "pt"})
        paths[label] = p
    return paths


PYTHON_MERGE = r'''
import sys, torch
from safetensors.torch import load_file, save_file
base, adapter, out, prefix = sys.argv[1:5]
sd = load_file(base)
lo = load_file(adapter)
mods = sorted({k.split(".")[0] for k in lo})
names = {k[len(prefix):-len(".weight")].replace(".", "_"): k for k in sd if k.startswith(prefix) and k.endswith(".weight")}
for m in mods:
    key = names[m[len("lora_unet_"):]]
    w = sd[key].float()
    if m + ".lokr_w1" in lo:
        w = w + torch.kron(lo[m + ".lokr_w1"], lo[m + ".lokr_w2"])          # both factors full: scale 1
    else:
        d = lo[m + ".lora_up.weight"] @ lo[m + ".lora_down.weight"] * (lo[m + ".alpha"] / 32)
        w = w + d
        w = w * (lo[m + ".dora_scale"] / (w.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps))
    sd[key] = w.to(sd[key].dtype)
save_file(sd, out)
'''


def bench_base(flowguard, label, synth_args, folder, reps, python_way, prefix):
    base = os.path.join(folder, f"{label}.safetensors")
    out = os.path.join(folder, f"{label}.out.safetensors")
    if not os.path.exists(base):
        subprocess.run([flowguard, "synth"] + synth_args + ["--layout", "original", "--dtype", "bf16", "--quiet", base], check=True)
    size = os.path.getsize(base)
    adapters = make_adapters(base, folder, prefix)

    def clean():
        from release_build import remove
        remove(out)  # and sync: the freed blocks' discards stay outside the timed step

    anchor, anchor_rss = best(["sh", "-c", f"cp '{base}' '{out}' && sync"], reps, clean)
    print(f"{label}: base {size / 1e9:.2f} GB; cp + sync {anchor:.2f} s")
    for kind, adapter in adapters.items():
        t, rss = best([flowguard, "lora", "merge", base, adapter, out, "--quiet"], reps, clean)
        print(f"  flowguard merge {kind}: {t:.2f} s = {t / anchor:.2f}x cp+sync, peak RSS {rss / 2**20:.0f} MiB")
        if python_way:
            py = sys.executable
            tp, rssp = best([py, "-c", PYTHON_MERGE, base, adapter, out, prefix], reps, clean)
            print(f"  python load-all merge {kind}: {tp:.2f} s, peak RSS {rssp / 2**20:.0f} MiB; flowguard is {tp / t:.2f}x faster")
    clean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="smoke run on the tiny fixtures (no synth of big files)")
    ap.add_argument("--binary", help="flowguard binary (default: a release build)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=["flux", "sd35"], help="run one base only")
    ap.add_argument("--workdir", default=os.path.join(ROOT, ".build", "bench-lora-merge-kinds"))
    args = ap.parse_args()
    if args.binary:
        flowguard = args.binary
    else:
        from release_build import release_binary
        flowguard = release_binary()
    os.makedirs(args.workdir, exist_ok=True)
    from release_build import cpu_flags
    print(f"machine: {cpu_flags()}; timings are the best of {args.reps} run(s)")
    if args.tiny:
        bench_base(flowguard, "flux_tiny", ["--like", os.path.join(ROOT, "fixtures/flux_tiny/original.safetensors")],
                   args.workdir, args.reps, python_way=False, prefix="")
        bench_base(flowguard, "sd35_tiny", ["--like", os.path.join(ROOT, "fixtures/sd35_tiny/original.safetensors")],
                   args.workdir, args.reps, python_way=True, prefix="model.diffusion_model.")
    else:
        if args.only != "sd35":
            bench_base(flowguard, "flux1_dev", ["--variant", "flux-dev"], args.workdir, args.reps, python_way=False, prefix="")
        if args.only != "flux":
            bench_base(flowguard, "sd35_medium", ["--variant", "sd3.5-medium"], args.workdir, args.reps, python_way=True,
                       prefix="model.diffusion_model.")


if __name__ == "__main__":
    main()
