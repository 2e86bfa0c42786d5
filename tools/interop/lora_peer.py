#!/usr/bin/env python3
"""Opt-in interop check of FlowGuard's LoRA exports against diffusers and PEFT (not run by CI).

  /opt/fg-venv/bin/python tools/interop/lora_peer.py [--flowguard PATH]

The flowguard binary is --flowguard when given, else the release build the README makes
(`swift build -c release`; built here when missing), else a debug build. The fixture venv
(torch, diffusers, peft, safetensors: `bash tools/fixtures/setup_venv.sh`) is needed; another
Python is told so.

For each fixture model (fixtures/sd35_tiny, fixtures/flux_tiny) the fixture's diffusers adapter is
converted by `flowguard lora convert` along a chain that crosses both layouts
  diffusers -> kohya -> comfy -> peft -> diffusers      (each step with --base original.safetensors)
then:
  * our diffusers file is loaded with the pipeline's own `load_lora_weights` into the tiny fixture
    transformer, our PEFT folder with `PeftModel.from_pretrained`; the loaded LoRA parameters must be
    exactly the file's keys (none missing, none unexpected) and the forward on the inputs of
    lora/io_lora.safetensors must match its `output` (relative error <= 1e-5);
  * FLUX only: our kohya and ComfyUI files are read by diffusers' own kohya converter
    (FluxLoraLoaderMixin.lora_state_dict) and run the same way. diffusers' converter hard-codes the
    FLUX.1 width for single-block `linear1` (dims 3072,3072,3072,12288), so the full tiny adapter
    cannot go through it; a second run uses the adapter without single-block modules and compares
    against the same subset loaded in diffusers format.
Prints one line per check (ok, FAIL, n/a, or limit for the known diffusers width assertion) and
exits 1 if any check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    import diffusers  # noqa: F401
    import peft  # noqa: F401
except ModuleNotFoundError as missing:
    sys.exit(f"tools/interop/lora_peer.py needs the fixture venv (torch, diffusers, peft, safetensors); "
             f"{sys.executable} has no '{missing.name}'. Make it with `bash tools/fixtures/setup_venv.sh`, then run\n"
             f"  /opt/fg-venv/bin/python tools/interop/lora_peer.py")

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5
FAILURES = []


def report(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        FAILURES.append(name)


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def fixture_spec(name):
    from diffusers import FluxPipeline, FluxTransformer2DModel, SD3Transformer2DModel, StableDiffusion3Pipeline
    if name == "sd35_tiny":
        return SD3Transformer2DModel, StableDiffusion3Pipeline, ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep"]
    return FluxTransformer2DModel, FluxPipeline, ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids", "guidance"]


def fresh_model(name):
    cls, _, _ = fixture_spec(name)
    return cls.from_pretrained(ROOT / "fixtures" / name / "diffusers", local_files_only=True, torch_dtype=torch.float32).eval()


def forward(name, model, io):
    _, _, args = fixture_spec(name)
    with torch.no_grad():
        return model(**{k: io[k] for k in args}, return_dict=True).sample


def pipeline_load(name, model, folder, weight_name):
    from diffusers import FlowMatchEulerDiscreteScheduler
    import inspect
    _, pipe_cls, _ = fixture_spec(name)
    params = inspect.signature(pipe_cls.__init__).parameters
    kwargs = {k: None for k in params if k not in ("self", "args", "kwargs")}
    kwargs["transformer"] = model
    kwargs["scheduler"] = FlowMatchEulerDiscreteScheduler()
    pipe = pipe_cls(**kwargs)
    pipe.load_lora_weights(str(folder), weight_name=weight_name)


def loaded_lora_state(model):
    from peft.utils import get_peft_model_state_dict
    config = model.peft_config
    return get_peft_model_state_dict(model, adapter_name=next(iter(config)))


def compare_keys(name, loaded, file_sd, prefix):
    expected = {k[len(prefix):]: v for k, v in file_sd.items()}
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    same = not missing and not unexpected and all(torch.equal(loaded[k].float().cpu(), expected[k].float()) for k in expected)
    report(name, same, f"{len(loaded)} LoRA tensors loaded, {len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")


def flowguard(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"flowguard {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def chain(binary, name, source, out):
    base = str(ROOT / "fixtures" / name / "original.safetensors")
    paths = {"kohya": out / "kohya.safetensors", "comfy": out / "comfy.safetensors", "peft": out / "peft",
             "diffusers": out / "pytorch_lora_weights.safetensors"}
    prev = str(source)
    for fmt in ["kohya", "comfy", "peft", "diffusers"]:
        flowguard(binary, "lora", "convert", prev, str(paths[fmt]), "--to", fmt, "--base", base)
        prev = str(paths[fmt])
    return paths


def kohya_through_diffusers(name, path, reference_out, io, label):
    from diffusers import FluxPipeline
    try:
        sd = FluxPipeline.lora_state_dict(str(path))
        if isinstance(sd, tuple):
            sd = sd[0]
        model = fresh_model(name)
        model.load_lora_adapter(sd, prefix="transformer", adapter_name="k")
        out = forward(name, model, io)
        e = rel_err(out, reference_out)
        report(label, e <= TOL, f"diffusers' kohya converter read {len(sd)} tensors; rel err {e:.2e}")
    except Exception as exc:  # report diffusers' own error
        import traceback
        frames = [f.name for f in traceback.extract_tb(exc.__traceback__)]
        if isinstance(exc, AssertionError) and "_convert_to_ai_toolkit_cat" in frames:
            print(f"limit {label}: diffusers' converter asserts FLUX.1 width 3072 for single-block linear1 "
                  "(assert sum(dims) == up_weight.shape[0] in _convert_to_ai_toolkit_cat); not counted")
            return
        first = (str(exc).splitlines() or ["(no message)"])[0][:200]
        report(label, False, f"diffusers raised {type(exc).__name__}: {first}")


def run_fixture(binary, name):
    ldir = ROOT / "fixtures" / name / "lora"
    io = load_file(ldir / "io_lora.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        paths = chain(binary, name, ldir / "pytorch_lora_weights.safetensors", out)

        # diffusers file through the pipeline loader
        model = fresh_model(name)
        pipeline_load(name, model, out, "pytorch_lora_weights.safetensors")
        compare_keys(f"{name} diffusers export: keys", loaded_lora_state(model), load_file(paths["diffusers"]), "transformer.")
        e = rel_err(forward(name, model, io), io["output"])
        report(f"{name} diffusers export: forward", e <= TOL, f"rel err {e:.2e} vs io_lora output")

        # PEFT folder through PeftModel.from_pretrained
        from peft import PeftModel
        pm = PeftModel.from_pretrained(fresh_model(name), str(paths["peft"])).eval()
        compare_keys(f"{name} PEFT export: keys", loaded_lora_state(pm), load_file(paths["peft"] / "adapter_model.safetensors"), "")
        _, _, args = fixture_spec(name)
        with torch.no_grad():
            pout = pm(**{k: io[k] for k in args}, return_dict=True).sample
        e = rel_err(pout, io["output"])
        report(f"{name} PEFT export: forward", e <= TOL, f"rel err {e:.2e} vs io_lora output")

        if name != "flux_tiny":
            print(f"n/a  {name} kohya/comfy exports: diffusers has no kohya/ComfyUI converter for SD3 adapters")
            return
        for fmt in ["kohya", "comfy"]:
            kohya_through_diffusers(name, paths[fmt], io["output"], io, f"{name} {fmt} export via diffusers (full adapter)")

        # the subset without single blocks, which diffusers' converter can split at any width
        full = load_file(ldir / "pytorch_lora_weights.safetensors")
        with safe_open(str(ldir / "pytorch_lora_weights.safetensors"), "pt") as f:
            metadata = f.metadata()
        subset = {k: v for k, v in full.items() if "single_transformer_blocks" not in k}
        sub_dir = out / "subset"
        sub_dir.mkdir()
        save_file(subset, sub_dir / "pytorch_lora_weights.safetensors", metadata=metadata)
        ref_model = fresh_model(name)
        pipeline_load(name, ref_model, sub_dir, "pytorch_lora_weights.safetensors")
        ref_out = forward(name, ref_model, io)
        sub_paths = chain(binary, name, sub_dir / "pytorch_lora_weights.safetensors", sub_dir)
        for fmt in ["kohya", "comfy"]:
            kohya_through_diffusers(name, sub_paths[fmt], ref_out, io, f"{name} {fmt} export via diffusers (double blocks only)")


def find_flowguard(given):
    """`given` (which must exist), else the release build (built when missing), else the debug build."""
    if given:
        if not os.access(given, os.X_OK):
            sys.exit(f"no flowguard binary at {given}")
        return given
    release = ROOT / ".build" / "release" / "flowguard"
    if release.exists():
        return str(release)
    sys.path.insert(0, str(ROOT / "tools" / "bench"))
    from release_build import release_binary
    try:
        return release_binary()
    except (OSError, subprocess.CalledProcessError) as e:
        debug = ROOT / ".build" / "debug" / "flowguard"
        if debug.exists():
            print(f"(release build failed: {e}; using {debug})", file=sys.stderr)
            return str(debug)
        sys.exit(f"no flowguard binary: `swift build -c release` failed ({e}); pass --flowguard PATH")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flowguard", help="the flowguard binary (default: the release build, built when missing)")
    a = parser.parse_args()
    binary = find_flowguard(a.flowguard)
    torch.manual_seed(0)
    for name in ["sd35_tiny", "flux_tiny"]:
        run_fixture(binary, name)
    print(f"{len(FAILURES)} check(s) failed" if FAILURES else "all checks passed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
