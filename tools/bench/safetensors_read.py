#!/usr/bin/env python3
"""Benchmark: header listing and full mapped read of a big safetensors file.

Makes a synthetic checkpoint-sized file on the fly (default 24 GB, FLUX-like: 780 bf16 tensors;
--size 4.9G for an SD3.5-Medium-sized one), then in one run on this machine times
  (1) `flowguard inspect --json FILE`  against  Python `safe_open` listing every name and shape,
  (2) `flowguard verify --read-data FILE` (every tensor byte read through the mapping, checksummed)
      against `dd if=FILE of=/dev/null bs=16M`,
and prints the ratios. Targets: inspect <= 50 ms; full read >= 0.6x dd.
Needs: a release build of flowguard (this script runs `swift build -c release` unless --bin),
python3 with safetensors (tools/install-deps.sh --test prints one).
Not a test: timings depend on the machine; run by hand.
"""
import argparse
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time

from release_build import release_binary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_file(path, size, tensors):
    """A valid safetensors file of about `size` bytes: `tensors` BF16 matrices, random bytes."""
    per = max(2, (size // tensors) // 2 * 2)
    cols = 3072
    entries, offset = {}, 0
    for i in range(tensors):
        rows = max(1, per // 2 // cols)
        nbytes = rows * cols * 2
        entries[f"blocks.{i}.linear.weight"] = {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    block = random.Random(1).randbytes(64 << 20)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        left = offset
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    return offset + 8 + len(header)


def timed(cmd, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            sys.exit(f"command failed: {' '.join(cmd)}\n{r.stderr.decode()}")
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="24G", help="file size (default 24G)")
    ap.add_argument("--tensors", type=int, default=780)
    ap.add_argument("--file", default=os.path.join(ROOT, ".build", "bench-read.safetensors"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic file")
    ap.add_argument("--bin", help="flowguard binary (default: release build)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    binary = release_binary(args.bin)

    size = parse_size(args.size)
    os.makedirs(os.path.dirname(args.file), exist_ok=True)
    print(f"writing a {size / 1e9:.1f} GB synthetic file with {args.tensors} tensors ...", file=sys.stderr)
    total = make_file(args.file, size, args.tensors)
    try:
        listing = ("from safetensors import safe_open\n"
                   f"f = safe_open({args.file!r}, 'np')\n"
                   "names = [(k, f.get_slice(k).get_shape()) for k in f.keys()]\n")
        ours_inspect = timed([binary, "inspect", "--json", args.file], args.repeat)
        ref_inspect = timed([args.python, "-c", listing], args.repeat)
        # Warm the page cache once, then alternate the full reads.
        subprocess.run(["dd", f"if={args.file}", "of=/dev/null", "bs=16M"], stderr=subprocess.DEVNULL, check=True)
        dd, ours_read = [], []
        for _ in range(max(2, args.repeat // 2)):
            dd.append(timed(["dd", f"if={args.file}", "of=/dev/null", "bs=16M"], 1)[0])
            ours_read.append(timed([binary, "verify", "--read-data", args.file], 1)[0])
        dd_best, read_best = min(dd), min(ours_read)
        gb = total / 1e9
        print(f"file: {gb:.2f} GB, {args.tensors} tensors; machine: {os.cpu_count()} cores")
        print(f"inspect   flowguard {ours_inspect[0] * 1000:8.1f} ms (median {ours_inspect[1] * 1000:.1f})   "
              f"python safe_open listing {ref_inspect[0] * 1000:8.1f} ms   ratio {ours_inspect[0] / ref_inspect[0]:.3f}x   target <= 50 ms")
        print(f"full read flowguard {read_best:8.2f} s  ({gb / read_best:5.1f} GB/s)   "
              f"dd bs=16M {dd_best:8.2f} s ({gb / dd_best:5.1f} GB/s)   ratio {dd_best / read_best:.2f}x of dd's throughput   target >= 0.6x")
    finally:
        if not args.keep:
            os.remove(args.file)


if __name__ == "__main__":
    main()
