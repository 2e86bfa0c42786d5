#!/usr/bin/env python3
"""Crash-consistency harness (outside CI): kill -9 flowguard commands at random moments and check
that what they leave on disk is always a complete old state or a complete new one.

    python3 tools/crash/run.py [--kills 52] [--seed 1] [--binary PATH] [--depth 6] [--keep]

Commands: `convert` (single file, new folder, existing folder), `lora pack`, `lora merge`,
`train` (with `--resume` after every kill). After each kill the destination must hold the old
state (what was placed there before: nothing or an old file/folder) or the new one, byte-identical
to an uninterrupted run's output (and `flowguard verify --read-data` clean), never a partial
file. Temporary files the killed run left in the destination folder are listed, and whether a
later run removed them. For `train`, every `step-*` checkpoint folder must be complete (same
bytes as the uninterrupted run's checkpoint of that step, whose archives were unpacked along
their reference chain and whose states were verified), `final/` absent or complete, and
`diagnostics.jsonl` whole lines; resuming after the kills must end with the uninterrupted run's
checkpoints, exports and diagnostics (apart from `seconds`).

Prints a summary table; exits 1 on any violation. See tools/crash/README.md.
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))
from release_build import release_binary  # noqa: E402

FIXTURE = os.path.join(ROOT, "fixtures", "sd35_tiny")
TRAIN_CONFIG = os.path.join(ROOT, "fixtures", "train", "sd35_tiny_demo.json")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class Harness:
    def __init__(self, binary, work, rng):
        self.bin = binary
        self.work = work
        self.rng = rng
        self.failures = []
        self.rows = []

    # ---- helpers ---------------------------------------------------------------------------

    def fg(self, *args, check=True, capture=True):
        r = subprocess.run([self.bin, *args], capture_output=capture, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"flowguard {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def fail(self, command, message):
        log(f"VIOLATION [{command}]: {message}")
        self.failures.append(f"{command}: {message}")

    @staticmethod
    def digest(path):
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha1").hexdigest()

    def tree_digest(self, path):
        """{relative path: sha1} of every file under a folder (or of the file itself)."""
        if os.path.isfile(path):
            return {"": self.digest(path)}
        out = {}
        for folder, dirs, files in os.walk(path):
            # Hidden entries are temporaries (counted separately), not part of the output.
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                full = os.path.join(folder, name)
                out[os.path.relpath(full, path)] = self.digest(full)
        return out

    def verify_read(self, path):
        """`flowguard verify --read-data` of a safetensors file, shard index or folder."""
        r = self.fg("verify", "--read-data", path, check=False)
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    @staticmethod
    def hidden(folder):
        try:
            return {n for n in os.listdir(folder) if n.startswith(".")}
        except FileNotFoundError:
            return set()

    @staticmethod
    def size_of(path):
        if os.path.isdir(path):
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    @staticmethod
    def remove(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)

    def run_and_kill(self, argv, delay, trigger=None):
        """Starts flowguard, SIGKILLs it after `delay` seconds — or, with `trigger` (a function
        returning True once a path of interest exists), `delay` seconds after the trigger fires,
        polled every millisecond. Returns (killed, exit status, stderr); a run that finished
        first must have succeeded."""
        p = subprocess.Popen([self.bin, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if trigger is not None:
            while p.poll() is None and not trigger():
                time.sleep(0.001)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stderr.close()
            return True, 0, ""
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
        return False, p.returncode, err

    def timed(self, argv):
        t = time.monotonic()
        self.fg(*argv)
        return time.monotonic() - t

    # ---- inputs ----------------------------------------------------------------------------

    def make_inputs(self, depth):
        """A depth-`depth` SD3.5-Medium-wide checkpoint (bf16, original layout), an adapter for
        it, and small 'old' outputs. Cached in the work folder across runs."""
        inputs = os.path.join(self.work, "inputs")
        os.makedirs(inputs, exist_ok=True)
        base = os.path.join(inputs, f"sd35m_depth{depth}_bf16.safetensors")
        if not os.path.exists(base):
            names = os.path.join(inputs, "sd35m_header.json")
            if not os.path.exists(names):
                # The names and shapes of SD3.5 Medium, kept; the 2.5 GB file is not.
                full = os.path.join(inputs, "sd35m_full_f8.safetensors")
                if not os.path.exists(full):
                    log("synthesizing SD3.5 Medium once for its names and shapes (f8, 2.5 GB, a few minutes)...")
                    self.fg("synth", "--variant", "sd3.5-medium", "--layout", "original", "--dtype", "f8_e4m3", "--seed", "3", full)
                with open(names, "w") as f:
                    json.dump(read_header(full), f)
                os.unlink(full)
            like = os.path.join(inputs, f"like_depth{depth}.safetensors")
            write_sparse_like(json.load(open(names)), like, depth)
            log(f"synthesizing a depth-{depth} SD3.5-Medium-wide bf16 checkpoint...")
            self.fg("synth", "--like", like, "--layout", "original", "--dtype", "bf16", "--seed", "7", base)
            os.unlink(like)
        adapter = os.path.join(inputs, f"adapter_depth{depth}.safetensors")
        if not os.path.exists(adapter):
            write_adapter(adapter, depth, width=1536, rank=16, seed=5)
        return base, adapter

    # ---- single-output commands (convert, pack, merge) -------------------------------------

    def output_series(self, command, variants, kills, reference_seconds):
        """`variants`: list of dicts with argv (with OUT last), dest, expected tree digest,
        old (path of an old file/folder to place, or None), verify (bool). Kills `kills` runs."""
        stats = dict(command=command, runs=0, kills=0, completed=0, old=0, new=0, none=0,
                     leftovers=0, leftover_bytes=0, left_after_next=0, failures=0, patterns=set())
        before_failures = len(self.failures)
        attempts = 0
        pending = []   # leftover temp paths of the previous run: does the next run remove them?
        while stats["kills"] < kills and attempts < kills * 3:
            attempts += 1
            v = variants[stats["runs"] % len(variants)]
            dest = v["dest"]
            place_old = v["old"] is not None and self.rng.random() < 0.5
            # Leftovers inside a destination folder go with it: no later run can be judged on them.
            pending = [p for p in pending if not p.startswith(dest.rstrip("/") + "/")]
            self.remove(dest)
            if place_old:
                if os.path.isdir(v["old"]):
                    shutil.copytree(v["old"], dest)
                else:
                    shutil.copyfile(v["old"], dest)
            folder = os.path.dirname(dest.rstrip("/"))
            watch = [folder] + ([dest] if place_old and os.path.isdir(dest) else [])
            hidden_before = {(w, n) for w in watch for n in self.hidden(w)}
            delay = self.rng.uniform(0.0, 1.1 * reference_seconds[v["name"]])
            killed, status, err = self.run_and_kill(v["argv"], delay)
            stats["runs"] += 1
            if killed:
                stats["kills"] += 1
            else:
                stats["completed"] += 1
                if status != 0:
                    self.fail(command, f"an uninterrupted run failed ({status}): {err.strip()}")
            # Leftovers of the previous run still there after this one?
            for path in pending:
                if os.path.lexists(path):
                    stats["left_after_next"] += 1
                self.remove(path)
            pending = []
            hidden_after = {(w, n) for w in watch for n in self.hidden(w)}
            for w, n in sorted(hidden_after - hidden_before):
                path = os.path.join(w, n)
                stats["patterns"].add(pattern(os.path.relpath(path, os.path.dirname(folder))))
                stats["leftovers"] += 1
                stats["leftover_bytes"] += self.size_of(path)
                pending.append(path)
                if not killed:
                    self.fail(command, f"a completed run left {path} behind")
            outcome = self.classify(command, v, place_old, delay)
            if outcome:
                stats[outcome] += 1
        # A last, uninterrupted run with the previous run's leftovers still present: they are harmless.
        v = variants[0]
        self.remove(v["dest"])
        r = self.fg(*v["argv"], check=False)
        if r.returncode != 0:
            self.fail(command, f"the uninterrupted run after the kills failed: {r.stderr.strip()}")
        elif self.tree_digest(v["dest"]) != v["expected"]:
            self.fail(command, "the uninterrupted run after the kills differs from the first one")
        for path in pending:
            if os.path.lexists(path):
                stats["left_after_next"] += 1
            self.remove(path)
        self.remove(v["dest"])
        stats["failures"] = len(self.failures) - before_failures
        self.rows.append(stats)

    def classify(self, command, v, place_old, delay):
        dest = v["dest"]
        where = f"{dest} (killed after {delay:.3f} s)"
        if not os.path.lexists(dest):
            if place_old:
                self.fail(command, f"{where}: the old output is gone and no new one is there")
                return None
            return "none"
        got = self.tree_digest(dest)
        if got == v["expected"]:
            if v["verify"]:
                ok, text = self.verify_read(dest)
                if not ok:
                    self.fail(command, f"{where}: matches the reference bytes but verify --read-data fails: {text}")
            return "new"
        if place_old and got == v["old_digest"]:
            return "old"
        if "" not in got:
            mixed = {k: ("new" if v["expected"].get(k) == h else "old" if v["old_digest"] and v["old_digest"].get(k) == h else "other")
                     for k, h in got.items()}
            self.fail(command, f"{where}: a mix of files: {mixed}")
        else:
            ok, text = self.verify_read(dest) if dest.endswith(".safetensors") else (False, "")
            self.fail(command, f"{where}: neither the old nor the new bytes ({self.size_of(dest)} bytes; verify: {text or 'n/a'})")
        return None

    # ---- train -----------------------------------------------------------------------------

    def train_args(self, out, steps):
        return ["train", "--config", TRAIN_CONFIG, "--output", out, "--steps", str(steps), "--group-size", "8",
                "--batch-size", "8", "--sampling-steps", "8", "--eval-steps", "8", "--latent-size", "16", "--checkpoint-every", "1",
                "--updates-per-rollout", "2", "--eval-prompts", "2", "--ema", "true", "--ema-interval", "1",
                "--lora-rank", "8", "--threads", "1"]

    def validate_reference_run(self, run):
        """TrainingCheckpoint.validate for every checkpoint of the uninterrupted run: checkpoint.json,
        state step, state verifies, archive unpacks along its reference chain (hashes checked)."""
        folder = os.path.join(run, "checkpoints")
        unpacked = {}
        scratch = os.path.join(self.work, "train", "unpacked")
        os.makedirs(scratch, exist_ok=True)
        for name in sorted(n for n in os.listdir(folder) if n.startswith("step-")):
            path = os.path.join(folder, name)
            info = json.load(open(os.path.join(path, "checkpoint.json")))
            if info["step"] != int(name[5:]):
                self.fail("train", f"reference {path}: checkpoint.json step {info['step']}")
            meta = json.loads(self.fg("inspect", "--json", os.path.join(path, "state.safetensors")).stdout)["files"][0]["metadata"]
            state = json.loads(meta["flowguard.training_state"])
            if state["step"] != info["step"]:
                self.fail("train", f"reference {path}: state is for step {state['step']}")
            ok, text = self.verify_read(os.path.join(path, "state.safetensors"))
            if not ok:
                self.fail("train", f"reference {path}: {text}")
            out = os.path.join(scratch, name + ".safetensors")
            args = ["lora", "unpack", os.path.join(path, "adapter.fgdelta"), out]
            if info.get("reference"):
                args += ["--reference", unpacked[os.path.dirname(info["reference"])]]
            r = self.fg(*args, check=False)
            if r.returncode != 0:
                self.fail("train", f"reference {path}: archive does not unpack: {r.stderr.strip()}")
            unpacked[name] = out
        final = os.path.join(run, "final")
        r = self.fg("lora", "unpack", os.path.join(final, "adapter.fgdelta"), os.path.join(scratch, "final.safetensors"), check=False)
        if r.returncode != 0 or self.digest(os.path.join(scratch, "final.safetensors")) != self.digest(os.path.join(final, "pytorch_lora_weights.safetensors")):
            self.fail("train", "reference final/adapter.fgdelta does not restore final/pytorch_lora_weights.safetensors")
        shutil.rmtree(scratch, ignore_errors=True)

    def check_run_folder(self, run, reference, where):
        """After a kill: every step-* folder equals the reference's, final/ absent or complete,
        diagnostics whole lines. Returns the names of hidden leftovers."""
        folder = os.path.join(run, "checkpoints")
        ok = True
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if not name.startswith("step-"):
                continue
            path, ref = os.path.join(folder, name), os.path.join(reference, "checkpoints", name)
            try:
                info = json.load(open(os.path.join(path, "checkpoint.json")))
                ref_info = json.load(open(os.path.join(ref, "checkpoint.json")))
                if info["step"] != int(name[5:]) or info["reference"] != ref_info["reference"]:
                    raise ValueError(f"checkpoint.json {info} vs {ref_info}")
                for f in ("state.safetensors", "adapter.fgdelta"):
                    if self.digest(os.path.join(path, f)) != self.digest(os.path.join(ref, f)):
                        raise ValueError(f"{f} differs from the uninterrupted run's")
            except Exception as e:  # noqa: BLE001
                self.fail("train", f"{where}: {path} incomplete or wrong: {e}")
                ok = False
        final = os.path.join(run, "final")
        if os.path.exists(final) and self.tree_digest(final) != self.tree_digest(os.path.join(reference, "final")):
            self.fail("train", f"{where}: {final} is incomplete or differs")
            ok = False
        config = os.path.join(run, "config.json")
        if os.path.exists(config):
            try:
                json.load(open(config))
            except ValueError:
                self.fail("train", f"{where}: config.json is partial ({os.path.getsize(config)} bytes; written in place with O_TRUNC)")
                ok = False
        diag = os.path.join(run, "diagnostics.jsonl")
        if os.path.exists(diag):
            text = open(diag, "rb").read()
            if text and not text.endswith(b"\n"):
                self.fail("train", f"{where}: diagnostics.jsonl ends in a partial line")
                ok = False
            for line in text.splitlines():
                try:
                    json.loads(line)
                except ValueError:
                    self.fail("train", f"{where}: diagnostics.jsonl holds a malformed line")
                    ok = False
                    break
        left = {os.path.join(run, n) for n in self.hidden(run)} | {os.path.join(folder, n) for n in self.hidden(folder)}
        if os.path.isdir(final):
            left |= {os.path.join(final, n) for n in self.hidden(final)}
        # (path, inode): a name removed and made anew by a later run is not "kept".
        return ok, {(p, os.lstat(p).st_ino) for p in left if os.path.lexists(p)}

    @staticmethod
    def diagnostics_without_seconds(path):
        out = []
        for line in open(path):
            d = json.loads(line)
            d.pop("seconds", None)
            out.append(d)
        return out

    def train_series(self, kills, steps):
        command = "train"
        stats = dict(command=command, runs=0, kills=0, completed=0, old=0, new=0, none=0,
                     leftovers=0, leftover_bytes=0, left_after_next=0, failures=0, patterns=set())
        before = len(self.failures)
        base = os.path.join(self.work, "train")
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        reference = os.path.join(base, "reference")
        t = self.timed(self.train_args(reference, steps))
        log(f"train: uninterrupted run {t:.2f} s ({steps} steps)")
        self.validate_reference_run(reference)
        ref_diag = self.diagnostics_without_seconds(os.path.join(reference, "diagnostics.jsonl"))
        chain = 0
        attempts = 0
        while stats["kills"] < kills and attempts < kills * 3:
            run = os.path.join(base, f"killed-{chain}")
            first = True
            seen_left = set()
            # One chain: a fresh start, then --resume after every kill, until a run completes
            # or the chain has had its share of kills; then an uninterrupted --resume.
            while stats["kills"] < kills and attempts < kills * 3:
                attempts += 1
                # Spread the kill over what is left to do: a resumed run starts at its newest
                # checkpoint (model loading and the export take about a quarter of a run).
                cks = os.path.join(run, "checkpoints")
                done = max([int(n[5:]) for n in os.listdir(cks) if n.startswith("step-")] if os.path.isdir(cks) else [0], default=0)
                left = 0.25 + 0.75 * (steps - done) / steps
                delay = self.rng.uniform(0.0, 1.05 * t * left)
                argv = self.train_args(run, steps) + ([] if first else ["--resume"])
                # Every third run is killed within 30 ms of a checkpoint or the export starting
                # (those windows are short: the time is in the training steps).
                trigger = None
                if stats["runs"] % 3 == 2:
                    delay = self.rng.uniform(0.0, 0.03)
                    if done >= steps - 1 or self.rng.random() < 0.4:
                        trigger = lambda: os.path.exists(os.path.join(run, ".final-tmp"))  # noqa: E731
                    else:
                        trigger = lambda: any(n.startswith(".tmp-step-") for n in os.listdir(cks)) if os.path.isdir(cks) else False  # noqa: E731
                killed, status, err = self.run_and_kill(argv, delay, trigger)
                stats["runs"] += 1
                where = f"{run} (run {stats['runs']}, killed after {delay:.3f} s)"
                if not killed and status != 0:
                    self.fail(command, f"{where}: a run failed ({status}): {err.strip()}")
                first = False
                ok, left = self.check_run_folder(run, reference, where)
                # Leftovers of an earlier run a later run (this one) did not remove.
                stats["left_after_next"] += len(seen_left & left)
                for path, _ in left - seen_left:
                    stats["patterns"].add(pattern(os.path.relpath(path, base)))
                    stats["leftovers"] += 1
                    stats["leftover_bytes"] += self.size_of(path)
                    log(f"train: left behind {os.path.relpath(path, base)}")
                seen_left = left
                if killed:
                    stats["kills"] += 1
                    stats["new" if os.path.isdir(os.path.join(run, "final")) else "old"] += 1
                else:
                    stats["completed"] += 1
                    break
            r = self.fg(*self.train_args(run, steps), "--resume", check=False)
            if r.returncode != 0:
                self.fail(command, f"{run}: the final --resume failed: {r.stderr.strip()}")
            ok, left = self.check_run_folder(run, reference, f"{run} after the final --resume")
            stats["left_after_next"] += len(seen_left & left)
            names = sorted(n for n in os.listdir(os.path.join(reference, "checkpoints")))
            mine = sorted(n for n in os.listdir(os.path.join(run, "checkpoints")) if not n.startswith("."))
            if names != mine:
                self.fail(command, f"{run}: checkpoints {mine} instead of {names}")
            if not os.path.isdir(os.path.join(run, "final")):
                self.fail(command, f"{run}: no final/ after the final --resume")
            if self.diagnostics_without_seconds(os.path.join(run, "diagnostics.jsonl")) != ref_diag:
                self.fail(command, f"{run}: diagnostics.jsonl differs from the uninterrupted run's (apart from seconds)")
            chain += 1
        stats["failures"] = len(self.failures) - before
        stats["chains"] = chain
        self.rows.append(stats)


def pattern(path):
    """A leftover's path with its process ids, random tags and step numbers as N."""
    return re.sub(r"\d+", "N", path)


# ---- input files -----------------------------------------------------------------------------

def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def write_safetensors_header(path, header, data_bytes):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + data_bytes)   # sparse: zeros, no disk space


def write_sparse_like(header, out, depth, positions=64):
    """SD3.5 Medium's `header` (original layout) with joint blocks 0..depth-2, the last block
    renumbered depth-1 and a positional table of positions² entries (instead of 384²), as a
    sparse file of zeros: for `synth --like`."""
    header = dict(header)
    header.pop("__metadata__", None)
    pos = header["model.diffusion_model.pos_embed"]
    header["model.diffusion_model.pos_embed"] = dict(pos, shape=[1, positions * positions, pos["shape"][2]])
    prefix = "model.diffusion_model.joint_blocks."
    last = max(int(k[len(prefix):].split(".")[0]) for k in header if k.startswith(prefix))
    kept = {}
    for name, info in header.items():
        if name.startswith(prefix):
            i = int(name[len(prefix):].split(".")[0])
            rest = name[len(prefix):].split(".", 1)[1]
            if i < depth - 1:
                kept[name] = info
            elif i == last:
                kept[f"{prefix}{depth - 1}.{rest}"] = info
        else:
            kept[name] = info
    sizes = {"F8_E4M3": 1, "BF16": 2, "F16": 2, "F32": 4}
    offset = 0
    out_header = {}
    for name in sorted(kept):
        info = kept[name]
        n = sizes[info["dtype"]]
        for d in info["shape"]:
            n *= d
        out_header[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + n]}
        offset += n
    write_safetensors_header(out, out_header, offset)


def write_adapter(path, depth, width, rank, seed):
    """A diffusers-named LoRA (float32) on the attention projections of every joint block:
    A ~ N(0, 0.02), B ~ N(0, 0.02), α = r by default."""
    rng = random.Random(seed)
    header, blobs, offset = {}, [], 0
    for block in range(depth):
        for module in ("to_q", "to_k", "to_v", "to_out.0"):
            for part, shape in (("lora_A", [rank, width]), ("lora_B", [width, rank])):
                count = shape[0] * shape[1]
                blob = struct.pack(f"<{count}f", *(rng.gauss(0.0, 0.02) for _ in range(count)))
                header[f"transformer.transformer_blocks.{block}.attn.{module}.{part}.weight"] = {
                    "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
                blobs.append(blob)
                offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)


# ---- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=52, help="kills in all, spread over the four commands (default 52)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the kill moments and old-state choices")
    ap.add_argument("--binary", help="a release flowguard to use (default: build it)")
    ap.add_argument("--work", default=os.path.join(ROOT, ".build", "crash"), help="work folder (default .build/crash)")
    ap.add_argument("--depth", type=int, default=4, help="joint blocks of the SD3.5-Medium-wide test checkpoint (default 4, ≈0.77 GB bf16)")
    ap.add_argument("--train-steps", type=int, default=12, help="training steps of each train run (default 12: a keyframe archive at step 9)")
    ap.add_argument("--only", help="comma-separated subset: convert,pack,merge,train")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (inputs are always kept for the next run)")
    args = ap.parse_args()

    binary = os.path.abspath(release_binary(args.binary))
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    rng = random.Random(args.seed)
    h = Harness(binary, work, rng)
    started = time.monotonic()
    commands = args.only.split(",") if args.only else ["convert", "pack", "merge", "train"]
    share = {c: args.kills // len(commands) + (1 if i < args.kills % len(commands) else 0) for i, c in enumerate(commands)}

    if set(commands) & {"convert", "pack", "merge"}:
        base, adapter = h.make_inputs(args.depth)
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        refs = os.path.join(work, "reference")
        shutil.rmtree(refs, ignore_errors=True)
        os.makedirs(refs)
        old_file = os.path.join(FIXTURE, "original.safetensors")
        old_folder = os.path.join(FIXTURE, "diffusers")

        def variant(name, argv_without_out, dest, old, verify=True, ref_dest=None):
            ref_dest = ref_dest or os.path.join(refs, os.path.basename(dest.rstrip("/")))
            seconds = h.timed(argv_without_out + [ref_dest])
            expected = h.tree_digest(ref_dest)
            if verify:
                ok, text = h.verify_read(ref_dest)
                if not ok:
                    h.fail(name, f"the uninterrupted output does not verify: {text}")
            log(f"{name}: uninterrupted run {seconds:.2f} s, {h.size_of(ref_dest) / 1e9:.2f} GB")
            old_digest = h.tree_digest(old) if old else None
            # --force: the old output placed at dest is to be replaced (whole or not at all).
            return dict(name=name, argv=argv_without_out + [dest, "--force"], dest=dest, expected=expected, old=old,
                        old_digest=old_digest, verify=verify, seconds=seconds)

        if "convert" in commands:
            conv = ["convert", base, "--layout", "diffusers", "--dtype", "fp16"]
            vs = [variant("convert-file", conv, os.path.join(out, "converted.safetensors"), old_file),
                  variant("convert-folder", conv, os.path.join(out, "converted-folder"), old_folder)]
            h.output_series("convert", vs, share["convert"], {v["name"]: v["seconds"] for v in vs})
        if "pack" in commands:
            pack = ["lora", "pack", "--threads", "2", base]
            v = variant("pack", pack, os.path.join(out, "packed.fgdelta"), old_file, verify=False)
            restored = os.path.join(refs, "restored.safetensors")
            h.fg("lora", "unpack", os.path.join(refs, "packed.fgdelta"), restored)
            if h.digest(restored) != h.digest(base):
                h.fail("pack", "the uninterrupted archive does not restore the input")
            os.unlink(restored)
            h.output_series("pack", [v], share["pack"], {"pack": v["seconds"]})
        if "merge" in commands:
            merge = ["lora", "merge", base, adapter, "--dtype", "fp16"]
            v = variant("merge", merge, os.path.join(out, "merged.safetensors"), old_file)
            h.output_series("merge", [v], share["merge"], {"merge": v["seconds"]})
        if not args.keep:
            shutil.rmtree(refs, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
    if "train" in commands:
        h.train_series(share["train"], args.train_steps)
        if not args.keep:
            shutil.rmtree(os.path.join(work, "train"), ignore_errors=True)

    print()
    print(f"{'command':<9} {'runs':>5} {'kills':>5} {'done':>5} {'old':>4} {'new':>4} {'none':>5} "
          f"{'temps left':>10} {'MB left':>8} {'kept by next run':>16} {'failures':>8}")
    for r in h.rows:
        print(f"{r['command']:<9} {r['runs']:>5} {r['kills']:>5} {r['completed']:>5} {r['old']:>4} {r['new']:>4} {r['none']:>5} "
              f"{r['leftovers']:>10} {r['leftover_bytes'] / 1e6:>8.1f} {r['left_after_next']:>16} {r['failures']:>8}")
    print("\ntemp entries left behind by killed runs (digits shown as N):")
    for r in h.rows:
        for p in sorted(r["patterns"]):
            print(f"  {r['command']:<9} {p}")
    total = sum(r["kills"] for r in h.rows)
    print(f"\n{total} kills in {time.monotonic() - started:.0f} s; "
          f"{'no violations' if not h.failures else str(len(h.failures)) + ' violation(s):'}")
    for f in h.failures:
        print("  " + f)
    sys.exit(1 if h.failures else 0)


if __name__ == "__main__":
    main()
