#!/usr/bin/env python3
"""Benchmark: two flowguard binaries side by side on the format layer's hot paths.

Made for build-setting changes (e.g. building the parsing modules with checks on instead of
-Ounchecked): both binaries run the same jobs on the same synthetic SD3.5-Medium bf16 checkpoint
(4.94 GB, exact real names and shapes, written once by `flowguard synth`, page cache warm),
interleaved A, B, A, B, ... so machine noise hits both alike; the best of --reps runs is kept.

Jobs, each whole-command wall time:
  inspect        `inspect --json FILE`           header parse and validation (mapped, no data read)
  inspect-stats  `inspect --stats --json FILE`   every value decoded (bf16 -> float) and summarised
  convert        `convert FILE OUT --layout diffusers`               layout change, bytes copied
  convert-fp16   `convert FILE OUT --layout diffusers --dtype fp16`  every value converted
Prints a table with B / A per job (above 1: B is slower) and the CPU flags of this machine.
Not a test. Needs ~15 GB free under --dir. Run it while nothing else runs.
"""
import argparse
import os
import subprocess
import sys
import time

from release_build import cpu_flags, remove

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def timed(cmd):
    """Wall seconds of one run; exits with the command's stderr when it fails."""
    start = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr.decode()[-2000:]}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="first flowguard binary (the anchor)")
    ap.add_argument("--b", required=True, help="second flowguard binary")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(ROOT, ".build", "bench-compare"))
    ap.add_argument("--jobs", default="inspect,inspect-stats,convert,convert-fp16")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic checkpoint")
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    src = os.path.join(args.dir, "sd35m-original-bf16.safetensors")
    out = os.path.join(args.dir, "out")
    if not os.path.exists(src):
        print("writing the synthetic SD3.5-Medium checkpoint ...", file=sys.stderr, flush=True)
        subprocess.run([args.a, "synth", "--variant", "sd3.5-medium", "--layout", "original", "--dtype", "bf16", src],
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)

    jobs = {
        "inspect": lambda b: [b, "inspect", "--json", src],
        "inspect-stats": lambda b: [b, "inspect", "--stats", "--json", src],
        "convert": lambda b: [b, "convert", src, out, "--layout", "diffusers"],
        "convert-fp16": lambda b: [b, "convert", src, out, "--layout", "diffusers", "--dtype", "fp16"],
    }
    chosen = [j.strip() for j in args.jobs.split(",") if j.strip()]
    best = {}
    try:
        for job in chosen:
            if job not in jobs:
                sys.exit(f"unknown job '{job}' (choose from {', '.join(jobs)})")
            for rep in range(args.reps):
                for label, binary in ((args.label_a, args.a), (args.label_b, args.b)):
                    remove(out)  # each timed run writes a fresh output; the removal is not timed
                    s = timed(jobs[job](binary))
                    key = (job, label)
                    best[key] = min(best.get(key, float("inf")), s)
                    print(f"  {job:14s} {label:12s} run {rep + 1}: {s:7.3f} s", file=sys.stderr, flush=True)
    finally:
        remove(out)
        if not args.keep:
            remove(src)

    print(f"SD3.5-Medium original bf16 ({cpu_flags()}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}), best of {args.reps}")
    print(f"  {'job':14s} {args.label_a:>12s} {args.label_b:>12s}   {args.label_b} / {args.label_a}")
    for job in chosen:
        a, b = best[(job, args.label_a)], best[(job, args.label_b)]
        print(f"  {job:14s} {a:10.3f} s {b:10.3f} s   {b / a:6.3f}x")


if __name__ == "__main__":
    main()
