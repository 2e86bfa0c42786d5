#!/usr/bin/env python3
"""Benchmark: `flowguard lora merge BASE.gguf LORA OUT.gguf` (a LoRA merged into a Q8_0 GGUF, Q8_0 out).

The merge runs inside the GGUF writer: each block of base rows is decoded, receives its rows of
the delta and is quantized. Anchors measured in the same run, each the best of --reps:
  - `flowguard convert BASE.gguf OUT.gguf --dtype q8_0`: the same decode + re-quantize without a
    delta (what the merge adds is the delta's sgemm);
  - `cp` + `sync` of a file of the output's size (what writing the file at all costs).
At SD3.5-Medium size also the two-step way the merge replaced (merge into a float32 .safetensors
file, then convert it to GGUF), whose output must be byte-identical; at FLUX.1-dev size that
float32 file alone is 48 GB, so it is not run there.

Bases: synthetic checkpoints (`flowguard synth`, exact names and shapes) written as Q8_0 GGUF; the
adapter: a rank-32 kohya LoRA on every 2-d weight (random factors, made on the fly).
    python3 tools/bench/gguf_merge.py                # FLUX.1-dev and SD3.5-Medium (~55 GB of disk)
    python3 tools/bench/gguf_merge.py --only sd35    # SD3.5-Medium only (~20 GB of disk)
    python3 tools/bench/gguf_merge.py --tiny         # the same steps on the tiny fixtures (smoke run)
Not a test: run by hand on a quiet machine.
"""
import argparse
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from release_build import cpu_flags, measured, release_binary, remove  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_lora(base, path, prefix, rank=32):
    """A kohya LoRA (lora_down/lora_up/alpha) of rank `rank` on every 2-d .weight of `base`."""
    import numpy as np
    from safetensors.numpy import save_file
    with open(base, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    rng = np.random.default_rng(0)
    tensors = {}
    for key, value in sorted(header.items()):
        if key == "__metadata__" or not key.endswith(".weight") or len(value["shape"]) != 2:
            continue
        o, i = value["shape"]
        module = key[len(prefix):-len(".weight")] if key.startswith(prefix) else key[:-len(".weight")]
        k = "lora_unet_" + module.replace(".", "_")
        tensors[k + ".lora_down.weight"] = (rng.standard_normal((rank, i), dtype=np.float32) / np.sqrt(i)).astype(np.float32)
        tensors[k + ".lora_up.weight"] = (rng.standard_normal((o, rank), dtype=np.float32) * 0.01).astype(np.float32)
        tensors[k + ".alpha"] = np.array(float(rank), dtype=np.float32)
    save_file(tensors, path, metadata={"format": "pt"})


def best(cmd, label, reps, before):
    runs = []
    for _ in range(reps):
        before()
        runs.append(measured(cmd, label))
    return min(r[0] for r in runs), max(r[1] for r in runs)


def bench(binary, label, synth, prefix, folder, reps, two_step, python):
    bf16 = os.path.join(folder, f"{label}-bf16.safetensors")
    q8 = os.path.join(folder, f"{label}-q8_0.gguf")
    lora = os.path.join(folder, f"{label}-lora-r32.safetensors")
    out = os.path.join(folder, f"{label}-out.gguf")
    staged = os.path.join(folder, f"{label}-staged-f32.safetensors")
    copy = os.path.join(folder, "copy.bin")
    made = [q8, lora, out, staged, copy]
    try:
        if not os.path.exists(bf16):
            print(f"writing the synthetic {label} checkpoint (bf16) ...", file=sys.stderr, flush=True)
            subprocess.run([binary, "synth"] + synth + ["--layout", "original", "--dtype", "bf16", "--quiet", bf16], check=True)
        print(f"making the rank-32 LoRA and the Q8_0 GGUF ...", file=sys.stderr, flush=True)
        subprocess.run([python, "-c", f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                        f"from gguf_merge import make_lora; make_lora({bf16!r}, {lora!r}, {prefix!r})"], check=True)
        remove(q8)
        subprocess.run([binary, "convert", bf16, q8, "--dtype", "q8_0", "--quiet"], check=True, stdout=subprocess.DEVNULL)
        if label != "tiny-sd35" and label != "tiny-flux":
            remove(bf16)  # disk: the bf16 source is not needed any more
        subprocess.run(["cat", q8, lora], stdout=subprocess.DEVNULL, check=True)

        def clean():
            remove(out)
            remove(copy)
            remove(staged)

        merge_s, merge_mb = best([binary, "lora", "merge", q8, lora, out, "--quiet"], "lora merge -> gguf", reps, clean)
        merged = out + ".kept"
        os.replace(out, merged)
        made.append(merged)
        out_size = os.path.getsize(merged)
        conv_s, conv_mb = best([binary, "convert", q8, out, "--dtype", "q8_0", "--quiet"], "convert gguf -> q8_0", reps, clean)
        cp_s, _ = best(["sh", "-c", f"cp '{q8}' '{copy}' && truncate -s {out_size} '{copy}' && sync '{copy}'"], "cp + sync", reps, clean)
        print(f"{label}: LoRA r32 into Q8_0 GGUF ({os.path.getsize(q8) / 1e9:.2f} GB) -> Q8_0 GGUF "
              f"({out_size / 1e9:.2f} GB), {cpu_flags()}, best of {reps}")
        print(f"  cp + sync of the output size      {cp_s:8.2f} s")
        print(f"  flowguard convert (no delta)      {conv_s:8.2f} s   peak {conv_mb:7.0f} MB")
        print(f"  flowguard lora merge              {merge_s:8.2f} s   peak {merge_mb:7.0f} MB   "
              f"{merge_s / conv_s:.2f}x convert, {merge_s / cp_s:.2f}x cp+sync")
        if two_step:
            def clean_two():
                clean()

            def two():
                return measured(["sh", "-c", f"'{binary}' lora merge '{q8}' '{lora}' '{staged}' --dtype fp32 --quiet && "
                                 f"'{binary}' convert '{staged}' '{out}' --dtype q8_0 --quiet"], "two-step")
            runs = []
            for _ in range(reps):
                clean_two()
                runs.append(two())
            two_s, two_mb = min(r[0] for r in runs), max(r[1] for r in runs)
            same = subprocess.run(["cmp", "-s", out, merged]).returncode == 0
            print(f"  two-step (f32 .safetensors, then convert) {two_s:8.2f} s   peak {two_mb:7.0f} MB   "
                  f"the merge is {two_s / merge_s:.2f}x faster; outputs {'identical' if same else 'DIFFER'}")
            if not same:
                sys.exit("the direct merge and the two-step way differ")
    finally:
        for p in made:
            remove(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="flowguard binary (default: release build)")
    ap.add_argument("--python", default=os.environ.get("FG_VENV", "/opt/fg-venv") + "/bin/python",
                    help="a Python with numpy and safetensors (makes the LoRA)")
    ap.add_argument("--dir", default=os.path.join(ROOT, ".build", "bench-gguf-merge"))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--only", choices=["flux", "sd35"])
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    binary = release_binary(args.bin)
    os.makedirs(args.dir, exist_ok=True)
    if args.tiny:
        bench(binary, "tiny-sd35", ["--like", os.path.join(ROOT, "fixtures/sd35_tiny/original.safetensors")],
              "model.diffusion_model.", args.dir, 1, True, args.python)
        bench(binary, "tiny-flux", ["--like", os.path.join(ROOT, "fixtures/flux_tiny/original.safetensors")], "", args.dir, 1, True, args.python)
        return
    if args.only != "sd35":
        bench(binary, "flux1-dev", ["--variant", "flux-dev"], "", args.dir, args.reps, False, args.python)
    if args.only != "flux":
        bench(binary, "sd35-medium", ["--variant", "sd3.5-medium"], "model.diffusion_model.", args.dir, args.reps, True, args.python)


if __name__ == "__main__":
    main()
