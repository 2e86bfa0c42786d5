"""Shared by the benchmarks: the release `flowguard` binary, built first."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def release_binary(given=None):
    """`given` when set, else builds flowguard in release mode (log on stderr) and returns its path."""
    if given:
        return given
    print("building flowguard (release)...", file=sys.stderr, flush=True)
    subprocess.run(["swift", "build", "-c", "release", "--product", "flowguard"], cwd=ROOT, check=True, stdout=sys.stderr)
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return os.path.join(out.stdout.strip(), "flowguard")
