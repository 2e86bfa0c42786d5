#!/usr/bin/env python3
"""Benchmark: streamed checkpoint conversion against its floors and the Python reference path.

In one run on this machine:
  1. writes a synthetic SD3.5-Medium checkpoint in the original (SAI) layout, bf16, exact real
     names and shapes (`flowguard synth`, 4.94 GB), and warms the page cache with it;
  2. times, each with its peak resident memory:
     (a) `cp FILE COPY && sync COPY` - the floor for writing a durable file of that size,
     (ours) `flowguard convert FILE OUT --layout diffusers` (temp file, fsync, rename),
     (b) the reference path: diffusers' `convert_sd3_transformer_checkpoint_to_diffusers` on
         `safetensors.torch.load_file` + `save_file` (no fsync), in the fixture venv;
  3. prints the ratios against (a) and (b). Targets: <= 1.2x (cp + sync), faster than (b),
     <= 512 MB peak.
With --flux it also writes a FLUX.1-dev-sized bf16 checkpoint (23.8 GB) and converts it to fp16
in the diffusers layout (target: completes with <= 1 GB peak; the reference path needs more
memory than the machine has and is not run).
Needs ~3x the checkpoint size of free disk under --dir. Not a test: run by hand.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from release_build import measured, release_binary, remove

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REFERENCE = r"""
import sys
from safetensors.torch import load_file, save_file
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
state = load_file(sys.argv[1])
converted = convert_sd3_transformer_checkpoint_to_diffusers(state)
save_file(converted, sys.argv[2], metadata={"format": "pt"})
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(ROOT, ".build", "bench-convert"))
    ap.add_argument("--bin", help="flowguard binary (default: release build)")
    ap.add_argument("--python", default=os.environ.get("FG_VENV", "/opt/fg-venv") + "/bin/python",
                    help="python with torch, diffusers, safetensors (tools/fixtures/setup_venv.sh)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--flux", action="store_true", help="also convert a FLUX.1-dev-sized file bf16 -> fp16")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    binary = release_binary(args.bin)
    os.makedirs(args.dir, exist_ok=True)
    src = os.path.join(args.dir, "sd35m-original-bf16.safetensors")
    copy = os.path.join(args.dir, "copy.safetensors")
    ours = os.path.join(args.dir, "ours-diffusers")
    ref = os.path.join(args.dir, "reference-diffusers.safetensors")
    try:
        if not os.path.exists(src):
            print("writing the synthetic SD3.5-Medium checkpoint ...", file=sys.stderr)
            subprocess.run([binary, "synth", "--variant", "sd3.5-medium", "--layout", "original", "--dtype", "bf16", src], check=True)
        size = os.path.getsize(src)
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # page cache warm, as in the reference numbers
        rows = []
        for trial in range(2):
            remove(copy)
            cp_s, cp_mb = measured(["sh", "-c", f"cp '{src}' '{copy}' && sync '{copy}'"], "cp + sync")
            remove(copy)
            remove(ours)
            our_s, our_mb = measured([binary, "convert", src, ours, "--layout", "diffusers"], "flowguard convert")
            rows.append((cp_s, cp_mb, our_s, our_mb))
        cp_s, cp_mb, our_s, our_mb = min(rows, key=lambda r: r[2])
        cp_best = min(r[0] for r in rows)
        ref_s = ref_mb = None
        if not args.skip_reference:
            remove(ref)
            ref_s, ref_mb = measured([args.python, "-c", REFERENCE, src, ref], "reference (diffusers + save_file)")
        gb = size / 1e9
        print(f"SD3.5-Medium original -> diffusers, bf16, {gb:.2f} GB, {os.cpu_count()} cores")
        print(f"  cp + sync (floor)           {cp_best:7.2f} s")
        print(f"  flowguard convert           {our_s:7.2f} s   peak {our_mb:7.0f} MB   {our_s / cp_best:.2f}x cp+sync (target <= 1.2x)   peak target <= 512 MB")
        if ref_s is not None:
            print(f"  diffusers + save_file       {ref_s:7.2f} s   peak {ref_mb:7.0f} MB   flowguard is {ref_s / our_s:.2f}x faster (target > 1x)")
        if args.flux:
            fsrc = os.path.join(args.dir, "flux-dev-original-bf16.safetensors")
            fout = os.path.join(args.dir, "flux-dev-diffusers-fp16")
            remove(ours); remove(copy); remove(ref)
            if not os.path.exists(fsrc):
                print("writing the synthetic FLUX.1-dev checkpoint ...", file=sys.stderr)
                subprocess.run([binary, "synth", "--variant", "flux-dev", "--layout", "original", "--dtype", "bf16", fsrc], check=True)
            remove(fout)
            f_s, f_mb = measured([binary, "convert", fsrc, fout, "--layout", "diffusers", "--dtype", "fp16"], "flux convert")
            print(f"FLUX.1-dev original bf16 -> diffusers fp16, {os.path.getsize(fsrc) / 1e9:.2f} GB: {f_s:.1f} s, peak {f_mb:.0f} MB (target <= 1024 MB)")
            if not args.keep:
                remove(fsrc); remove(fout)
    finally:
        if not args.keep:
            for p in (src, copy, ours, ref):
                remove(p)


if __name__ == "__main__":
    main()
