#!/usr/bin/env python3
"""Benchmark: FlowGuard delta archive (`flowguard lora pack`) vs `zstd -3` vs ZipNN on a LoRA adapter.

Run by hand (not a test):  .build/test-venv/bin/python tools/bench/lora_pack.py [--adapter FILE] [--quick]

Needs Python 3 with numpy and safetensors — the test venv `bash tools/install-deps.sh` makes
(.build/test-venv) has both; a Python without them is told so and how to run it. Installs zipnn into .build/bench-venv (pip) when missing and runs it
there in a subprocess. Builds `flowguard` in release mode. Adapter: a trained one when given with
--adapter (the trainer's output), else random-normal in the SD3.5-Medium rank-32 layout of design
§6 (A ~ N(0, 1/1536), B ~ N(0, 0.01): "trained-like", non-zero B). The output says which.

Timing: wall time of whole commands (process start, mmap, fsync included), best (minimum) of --reps
runs, inputs in the page cache, each run writing a fresh output (the previous run's output is
removed before it, untimed, for every method alike): the machine this runs on is usually shared, and the minimum is the
run least disturbed by other work (zipnn and zstd are timed the same way). Throughput is also
measured on the same layout at rank 128 (4x the bytes) so start-up does not dominate. Next to the
wall time: codec MB/s (from `--json`: `codec_seconds`, everything but the final commit) and the
commit seconds (fsync, rename, fsync of the folder), each the best of the runs.
MB/s = raw file bytes / 1e6 / seconds.
"""
import argparse, json, math, os, shutil, statistics, subprocess, sys, time

try:
    import numpy as np
    import safetensors  # noqa: F401  (used when writing the adapter)
except ModuleNotFoundError as missing:
    sys.exit(f"tools/bench/lora_pack.py needs Python 3 with numpy and safetensors; {sys.executable} has no "
             f"'{missing.name}'. Run it with the test venv (made by `bash tools/install-deps.sh`):\n"
             f"  .build/test-venv/bin/python tools/bench/lora_pack.py")

from release_build import release_binary

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.path.join(ROOT, ".build", "bench-venv")
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
HIDDEN = 1536


def module_names():
    names = []
    for i in range(24):
        for t in TARGETS:
            if i == 23 and t == "to_add_out":  # last block is context-pre-only
                continue
            names.append(f"transformer.transformer_blocks.{i}.attn.{t}")
        if i <= 12:
            for t in TARGETS[:4]:
                names.append(f"transformer.transformer_blocks.{i}.attn2.{t}")
    return names


def random_adapter(rank, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for m in module_names():
        out[f"{m}.lora_A.weight"] = (rng.standard_normal((rank, HIDDEN), dtype=np.float32) * (1 / math.sqrt(HIDDEN))).astype(np.float32)
        out[f"{m}.lora_B.weight"] = (rng.standard_normal((HIDDEN, rank), dtype=np.float32) * 0.01).astype(np.float32)
    return out


def to_bf16_bits(a):
    """float32 array -> uint16 bfloat16 bits, round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors, dtype, metadata):
    """dtype 'F32': python safetensors; 'BF16': bit-exact bf16 written by hand (numpy has no bf16)."""
    if dtype == "F32":
        from safetensors.numpy import save_file
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, path, metadata=metadata)
        return
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for k, v in tensors.items():
        bits = to_bf16_bits(v)
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [offset, offset + bits.nbytes]}
        offset += bits.nbytes
        blobs.append(bits.tobytes())
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors_f32(path):
    """Any F32/BF16/F16 safetensors -> dict of float32 arrays (for --adapter)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        raw = data[v["data_offsets"][0]:v["data_offsets"][1]]
        if v["dtype"] == "BF16":
            a = from_bf16_bits(np.frombuffer(raw, dtype=np.uint16))
        else:
            a = np.frombuffer(raw, dtype={"F32": np.float32, "F16": np.float16}[v["dtype"]]).astype(np.float32)
        out[k] = a.reshape(v["shape"])
    return out


def entropy_bound(path):
    """Order-0 entropy of each byte plane over the tensor data (+ the header counted raw), bytes."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    widths = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert len(widths) == 1
    w = {"F32": 4, "BF16": 2, "F16": 2}[widths.pop()]
    planes = data[: len(data) // w * w].reshape(-1, w)
    bits = 0.0
    for p in range(w):
        h = np.bincount(planes[:, p], minlength=256).astype(np.float64)
        h = h[h > 0] / planes.shape[0]
        bits += float(-(h * np.log2(h)).sum()) * planes.shape[0]
    return bits / 8 + 8 + n


def timed(cmd, reps, output):
    """Best (minimum) wall seconds of `reps` runs, and every run's standard output.

    `output` (the file the command writes) is removed before each run, outside the timing: every
    run writes a fresh file, as a first pack or unpack does. Replacing the previous run's output
    would add the kernel's work of freeing that file's pages (≈35 ms for 190 MB here) to the run."""
    times, outs = [], []
    for _ in range(reps):
        if os.path.exists(output):
            os.remove(output)
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
        outs.append(r.stdout)
    return min(times), outs


def same(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def ensure_zipnn():
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    if subprocess.run([py, "-c", "import zipnn"], capture_output=True).returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "-q", "numpy", "zipnn"], check=True)
    return py


ZIPNN_SNIPPET = r"""
import sys, time, json, warnings
warnings.filterwarnings("ignore")
import zipnn
path, dtype, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
orig = open(path, "rb").read()
pk, uk = [], []
for _ in range(reps):
    z = zipnn.ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
    buf = bytearray(orig)               # zipnn reorders a bytes input in place
    t = time.perf_counter(); c = z.compress(buf); pk.append(time.perf_counter() - t)
    z = zipnn.ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
    t = time.perf_counter(); r = z.decompress(c); uk.append(time.perf_counter() - t)
    assert bytes(r) == orig, "zipnn round trip differs"
print(json.dumps({"size": len(c), "pack": min(pk), "unpack": min(uk)}))
"""


def zipnn_measure(py, path, dtype, reps):
    r = subprocess.run([py, "-c", ZIPNN_SNIPPET, path, {"F32": "float32", "BF16": "bfloat16"}[dtype], str(reps)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("zipnn failed:\n" + r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def ours(fg, path, work, reps, threads, reference=None):
    arc = os.path.join(work, os.path.basename(path) + f".t{threads}.fgdelta")
    back = arc + ".out.safetensors"
    ref = ["--reference", reference] if reference else []
    tp, outs = timed([fg, "lora", "pack", path, arc, "--threads", str(threads), "--json"] + ref, reps, arc)
    runs = [json.loads(o) for o in outs]
    # (binaries from before codec/commit seconds were reported: the whole run counts as codec)
    codec_p = min(r.get("codec_seconds", r.get("elapsed_seconds", r.get("seconds"))) for r in runs)
    commit_p = min(r.get("commit_seconds", 0.0) for r in runs)
    tu, outs = timed([fg, "lora", "unpack", arc, back, "--threads", str(threads), "--json"] + ref, reps, back)
    runs = [json.loads(o) for o in outs]
    codec_u = min(r.get("codec_seconds", r.get("elapsed_seconds", r.get("seconds"))) for r in runs)
    commit_u = min(r.get("commit_seconds", 0.0) for r in runs)
    ok = same(path, back)
    os.remove(back)
    return {"size": os.path.getsize(arc), "pack": tp, "unpack": tu, "codec_pack": codec_p, "codec_unpack": codec_u,
            "commit_pack": commit_p, "commit_unpack": commit_u, "ok": ok, "archive": arc}


def zstd_measure(path, work, reps):
    z = os.path.join(work, os.path.basename(path) + ".zst")
    back = z + ".out"
    tp, _ = timed(["zstd", "-3", "-T1", "-q", "-f", path, "-o", z], reps, z)
    tu, _ = timed(["zstd", "-d", "-T1", "-q", "-f", z, "-o", back], reps, back)
    ok = same(path, back)
    os.remove(back)
    return {"size": os.path.getsize(z), "pack": tp, "unpack": tu, "ok": ok}


def mbs(nbytes, seconds):
    return nbytes / 1e6 / seconds if seconds > 0 else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", help="a trained adapter (.safetensors, F32/BF16) to use instead of random-normal")
    ap.add_argument("--work", default=os.path.join(ROOT, ".build", "bench-lora-pack"))
    ap.add_argument("--reps", type=int, default=5, help="runs per measurement; the best (minimum) time is kept")
    ap.add_argument("--big-rank", type=int, default=128, help="rank of the larger throughput adapter (0: skip)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--flowguard", help="a flowguard binary to measure instead of building this checkout (e.g. an older build)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)

    fg = release_binary(args.flowguard)
    zpy = ensure_zipnn()

    if args.adapter:
        base = read_safetensors_f32(args.adapter)
        source = f"trained adapter {args.adapter}"
    else:
        base = random_adapter(32)
        source = "random-normal (no trained adapter given): A ~ N(0, 1/1536), B ~ N(0, 0.01), rank 32"
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps({"r": 32, "lora_alpha": 64, "target_modules": TARGETS})}
    print(f"adapter: {source}; {len(base)} tensors, {sum(v.size for v in base.values())} values")
    print(f"machine: {os.cpu_count()} cores; zstd {subprocess.run(['zstd', '-V'], capture_output=True, text=True).stdout.strip()}")

    rows, checks = [], []
    for dtype in ("BF16", "F32"):
        path = os.path.join(args.work, f"adapter-r32-{dtype.lower()}.safetensors")
        write_safetensors(path, base, dtype, meta)
        raw = os.path.getsize(path)
        bound = entropy_bound(path)
        zs = zstd_measure(path, args.work, args.reps)
        zn = zipnn_measure(zpy, path, dtype, args.reps)
        o1 = ours(fg, path, args.work, args.reps, 1)
        o2 = ours(fg, path, args.work, args.reps, 2)
        big = None
        if args.big_rank and not args.adapter:
            bpath = os.path.join(args.work, f"adapter-r{args.big_rank}-{dtype.lower()}.safetensors")
            write_safetensors(bpath, random_adapter(args.big_rank, seed=1), dtype, meta)
            braw = os.path.getsize(bpath)
            b1 = ours(fg, bpath, args.work, args.reps, 1)
            b2 = ours(fg, bpath, args.work, args.reps, 2)
            bz = zipnn_measure(zpy, bpath, dtype, args.reps)
            big = (braw, b1, b2, bz)
        rows.append((dtype, raw, bound, zs, zn, o1, o2, big))

    print()
    print("size = archive bytes / raw file bytes; 'x bound' = archive / order-0 byte-plane entropy bound;")
    print("MB/s = raw bytes / wall seconds of the whole command, best of %d runs (shared machine);" % args.reps)
    print("codec = raw bytes / codec_seconds of --json (no process start-up, no commit); commit = fsync + rename seconds")
    hdr = f"{'dtype':5} {'method':24} {'bytes':>11} {'size':>7} {'x bound':>8} {'pack MB/s':>10} {'unpack MB/s':>12}  note"
    for dtype, raw, bound, zs, zn, o1, o2, big in rows:
        print()
        print(hdr)
        print(f"{dtype:5} {'raw safetensors':24} {raw:>11} {1:>7.4f} {raw / bound:>8.3f}")
        print(f"{dtype:5} {'order-0 plane bound':24} {int(bound):>11} {bound / raw:>7.4f} {1:>8.3f}")
        print(f"{dtype:5} {'zstd -3 -T1':24} {zs['size']:>11} {zs['size'] / raw:>7.4f} {zs['size'] / bound:>8.3f} "
              f"{mbs(raw, zs['pack']):>10.0f} {mbs(raw, zs['unpack']):>12.0f}  cmp {'ok' if zs['ok'] else 'DIFFERS'}")
        print(f"{dtype:5} {'zipnn (threads=1)':24} {zn['size']:>11} {zn['size'] / raw:>7.4f} {zn['size'] / bound:>8.3f} "
              f"{mbs(raw, zn['pack']):>10.0f} {mbs(raw, zn['unpack']):>12.0f}  in-process (no start-up/IO)")
        for label, o in (("fgdelta --threads 1", o1), ("fgdelta --threads 2", o2)):
            print(f"{dtype:5} {label:24} {o['size']:>11} {o['size'] / raw:>7.4f} {o['size'] / bound:>8.3f} "
                  f"{mbs(raw, o['pack']):>10.0f} {mbs(raw, o['unpack']):>12.0f}  cmp {'ok' if o['ok'] else 'DIFFERS'}; "
                  f"codec {mbs(raw, o['codec_pack']):.0f}/{mbs(raw, o['codec_unpack']):.0f} MB/s, commit {o['commit_pack']:.3f}/{o['commit_unpack']:.3f} s")
        if big:
            braw, b1, b2, bz = big
            for label, o in ((f"r{args.big_rank} fgdelta -t1", b1), (f"r{args.big_rank} fgdelta -t2", b2)):
                print(f"{dtype:5} {label:24} {o['size']:>11} {o['size'] / braw:>7.4f} {'':>8} "
                      f"{mbs(braw, o['pack']):>10.0f} {mbs(braw, o['unpack']):>12.0f}  cmp {'ok' if o['ok'] else 'DIFFERS'}; "
                      f"codec {mbs(braw, o['codec_pack']):.0f}/{mbs(braw, o['codec_unpack']):.0f} MB/s, commit {o['commit_pack']:.3f}/{o['commit_unpack']:.3f} s")
            print(f"{dtype:5} {f'r{args.big_rank} zipnn (threads=1)':24} {bz['size']:>11} {bz['size'] / braw:>7.4f} {'':>8} "
                  f"{mbs(braw, bz['pack']):>10.0f} {mbs(braw, bz['unpack']):>12.0f}")
        # Throughput targets are judged on the larger file when there is one.
        t1, t2, traw = (big[1], big[2], big[0]) if big else (o1, o2, raw)
        checks += [
            (f"{dtype} size within 3% of the order-0 bound", o1["size"] <= 1.03 * bound, f"{o1['size'] / bound:.4f} x bound"),
            (f"{dtype} size no larger than zipnn", o1["size"] <= zn["size"], f"{o1['size'] / zn['size']:.4f} x zipnn"),
            (f"{dtype} pack >= 1 GB/s, 1 thread (wall)", mbs(traw, t1["pack"]) >= 1000, f"{mbs(traw, t1['pack']):.0f} MB/s"),
            (f"{dtype} unpack >= 1.5 GB/s, 1 thread (wall)", mbs(traw, t1["unpack"]) >= 1500, f"{mbs(traw, t1['unpack']):.0f} MB/s"),
            (f"{dtype} faster with 2 threads (pack, unpack)", t2["pack"] < t1["pack"] and t2["unpack"] < t1["unpack"],
             f"{mbs(traw, t2['pack']):.0f} / {mbs(traw, t2['unpack']):.0f} MB/s"),
            (f"{dtype} 1 vs 2 threads: identical archive", same(o1["archive"], o2["archive"]), ""),
            (f"{dtype} every round trip byte-exact", o1["ok"] and o2["ok"], ""),
        ]

    # Successive checkpoints: W_{t+1} = W_t + N(0, 1e-3 * std(W_t)) (dense) or the same on a
    # random 1% of the elements (sparse); each step packed alone vs as XOR delta of the previous.
    print("\nsuccessive checkpoints (rank 32, %d steps after the first): total archive bytes of steps 1..%d" % (args.steps, args.steps))
    print(f"{'dtype':5} {'variant':8} {'alone':>11} {'xor delta':>11} {'delta/alone':>12}  round trip")
    rng = np.random.default_rng(7)
    for dtype in ("BF16", "F32"):
        for variant in ("dense", "sparse"):
            w = {k: v.copy() for k, v in base.items()}
            prev, alone, delta, ok = None, 0, 0, True
            for step in range(args.steps + 1):
                path = os.path.join(args.work, f"ckpt-{dtype.lower()}-{variant}-{step}.safetensors")
                write_safetensors(path, w, dtype, meta)
                if prev:
                    a = ours(fg, path, args.work, 1, 2)
                    d = ours(fg, path, args.work, 1, 2, reference=prev)
                    alone += a["size"]
                    delta += d["size"]
                    ok = ok and a["ok"] and d["ok"]
                prev = path
                for k, v in w.items():
                    noise = rng.standard_normal(v.shape, dtype=np.float32) * np.float32(1e-3 * float(v.std()))
                    if variant == "sparse":
                        noise *= rng.random(v.shape) < 0.01
                    w[k] = (v + noise).astype(np.float32)
                    if dtype == "BF16":   # training keeps bf16 weights: round each step
                        w[k] = from_bf16_bits(to_bf16_bits(w[k])).reshape(v.shape)
            print(f"{dtype:5} {variant:8} {alone:>11} {delta:>11} {delta / alone:>12.4f}  {'ok' if ok else 'DIFFERS'}")
            checks.append((f"{dtype} {variant} checkpoints: XOR delta round trips", ok, f"delta/alone {delta / alone:.4f}"))

    print("\ntargets")
    for name, met, value in checks:
        print(f"  [{'met' if met else 'NOT MET'}] {name}" + (f": {value}" if value else ""))


if __name__ == "__main__":
    main()
