"""Shared by the benchmarks: the release `flowguard` binary, built first, and running a command
that reports one JSON object."""
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_flags():
    """The SIMD flags that matter for FlowGuard's kernels, from /proc/cpuinfo, and the core count."""
    have = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    flags = " ".join(x for x in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16") if x in have)
    return f"{os.cpu_count()} cores; CPU flags: {flags or 'unknown'}"


def release_binary(given=None):
    """`given` when set, else builds flowguard in release mode (log on stderr) and returns its path."""
    if given:
        return given
    print("building flowguard (release)...", file=sys.stderr, flush=True)
    subprocess.run(["swift", "build", "-c", "release", "--product", "flowguard"], cwd=ROOT, check=True, stdout=sys.stderr)
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return os.path.join(out.stdout.strip(), "flowguard")


def run_json(cmd, env=None, label="", log=None, capture_stderr=False):
    """Runs a command that prints one JSON object last on stdout (stderr streams through unless
    `capture_stderr`, then its last lines go into the error). Returns (object or None, error text
    or None, wall seconds)."""
    if log:
        log(f"{label}: {' '.join(cmd)}")
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture_stderr else None,
                           text=True, env=env)
    except OSError as e:
        return None, f"{label}: cannot start: {e}", 0.0
    wall = time.perf_counter() - t
    lines = [line for line in r.stdout.strip().splitlines() if line.startswith("{")]
    obj = None
    if lines:
        try:
            obj = json.loads(lines[-1])
        except json.JSONDecodeError:
            obj = None
    if r.returncode != 0 or obj is None or "error" in obj:
        why = (obj or {}).get("error") or f"exit code {r.returncode}" + (" (crashed?)" if r.returncode < 0 else "")
        tail = "\n" + "\n".join(r.stderr.strip().splitlines()[-5:]) if capture_stderr and r.stderr.strip() else ""
        return None, f"{label} failed: {why}{tail}", wall
    return obj, None, wall


def measured(cmd, label):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS in MB)."""
    report = os.path.join(ROOT, ".build", f"time-{os.getpid()}.txt")
    os.makedirs(os.path.dirname(report), exist_ok=True)
    start = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"{label} failed:\n{r.stderr.decode()[-2000:]}")
    with open(report) as f:
        peak_kb = int(f.read().strip().splitlines()[-1])
    os.remove(report)
    return seconds, peak_kb / 1024


def remove(path):
    """Removes a file or a folder tree if it exists, then syncs: on a filesystem mounted with
    `discard`, freeing gigabytes issues discards at the next journal commit, which would
    otherwise land inside the next timed step."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    else:
        return
    os.sync()


def available_memory():
    """MemAvailable from /proc/meminfo, in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
