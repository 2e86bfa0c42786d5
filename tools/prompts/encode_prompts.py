#!/usr/bin/env python3
"""Encode prompts into a FlowGuard prompt set (a .safetensors file the trainer reads).

FlowGuard trains on text-encoder outputs computed once, here, with diffusers' own pipelines, so
the Swift trainer needs no text encoders. The output holds (format: tools/prompts/README.md):

  prompt_embeds                  [P, T, joint_dim]   the transformer's encoder_hidden_states
  pooled_prompt_embeds           [P, pooled_dim]     its pooled_projections
  negative_prompt_embeds         [N, T, joint_dim]   optional, for classifier-free guidance (N = 1)
  negative_pooled_prompt_embeds  [N, pooled_dim]
  __metadata__: flowguard.prompts (JSON array of the P strings), flowguard.model_family
                (sd3 | flux), flowguard.negative_prompts, flowguard.encoder (provenance)

Real models (needs torch, transformers and diffusers; nothing is downloaded, the model folder must
be a local diffusers folder with model_index.json, tokenizers and text encoders):

  python tools/prompts/encode_prompts.py --model-dir ~/models/stable-diffusion-3.5-medium \\
      --prompts prompts.txt --output prompts.safetensors
  python tools/prompts/encode_prompts.py --model-dir ~/models/FLUX.1-dev --prompts prompts.json \\
      --output prompts.safetensors --dtype bf16

Fixtures (needs numpy only): seeded standard-normal embeddings of given sizes:

  python3 tools/prompts/encode_prompts.py --tiny --family sd3 --joint-dim 24 --pooled-dim 20 \\
      --tokens 7 --seed 0 --prompts prompts.txt --output fixtures/prompts/sd35_tiny_prompts.safetensors

--prompts is a text file with one prompt per line (blank lines skipped) or a .json file holding a
JSON array of strings.
"""

import argparse
import json
import os
import sys

FAMILIES = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="encode_prompts.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prompts", required=True, help="prompt file: one prompt per line, or a .json array of strings")
    parser.add_argument("--output", required=True, help="the .safetensors file to write")
    parser.add_argument("--family", choices=sorted(FAMILIES), help="model family; read from model_index.json when omitted (required with --tiny)")
    parser.add_argument("--negative-prompt", default="", help='negative prompt for CFG (default: "", as diffusers)')
    parser.add_argument("--no-negative", action="store_true", help="write no negative embeddings (default for FLUX, which uses guidance distillation)")
    parser.add_argument("--with-negative", action="store_true", help="write negative embeddings for FLUX too (true CFG)")
    real = parser.add_argument_group("real models")
    real.add_argument("--model-dir", help="local diffusers model folder (model_index.json, tokenizer*/, text_encoder*/)")
    real.add_argument("--max-sequence-length", type=int, help="T5 tokens (diffusers' defaults: SD3 256, FLUX 512)")
    real.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32", help="encoder compute and storage dtype (default f32)")
    real.add_argument("--device", default="cpu", help="torch device for the text encoders (default cpu)")
    real.add_argument("--batch-size", type=int, default=8, help="prompts encoded at once (default 8)")
    tiny = parser.add_argument_group("--tiny fixtures")
    tiny.add_argument("--tiny", action="store_true", help="write seeded random embeddings instead of running encoders")
    tiny.add_argument("--joint-dim", type=int, help="width of the token embeddings (joint_attention_dim)")
    tiny.add_argument("--pooled-dim", type=int, help="width of the pooled embeddings (pooled_projection_dim)")
    tiny.add_argument("--tokens", type=int, help="tokens per prompt (T)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of numpy's default_rng (default 0)")
    args = parser.parse_args(argv)
    if args.tiny:
        missing = [f"--{n.replace('_', '-')}" for n in ("family", "joint_dim", "pooled_dim", "tokens") if getattr(args, n) is None]
        if missing:
            parser.error("--tiny needs " + ", ".join(missing))
        if min(args.joint_dim, args.pooled_dim, args.tokens) <= 0:
            parser.error("--joint-dim, --pooled-dim and --tokens must be positive")
    elif not args.model_dir:
        parser.error("give --model-dir (a local diffusers folder) or --tiny")
    if args.no_negative and args.with_negative:
        parser.error("--no-negative and --with-negative exclude each other")
    return args


def read_prompts(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        prompts = json.loads(text)
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            sys.exit(f"{path}: must hold a JSON array of strings")
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        sys.exit(f"{path}: no prompts")
    return prompts


def wants_negative(args, family):
    if args.no_negative:
        return False
    return family == "sd3" or args.with_negative


def metadata(family, prompts, negative_prompts, encoder):
    m = {
        "format": "pt",
        "flowguard.model_family": family,
        "flowguard.prompts": json.dumps(prompts, ensure_ascii=False),
        "flowguard.encoder": encoder,
    }
    if negative_prompts is not None:
        m["flowguard.negative_prompts"] = json.dumps(negative_prompts, ensure_ascii=False)
    return m


def publish(tmp, path):
    """Gives the finished temporary file ordinary permissions and renames it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_numpy(path, tensors, meta):
    """Writes float32 arrays as safetensors with the standard library, deterministically: metadata
    keys sorted, tensors in name order, header padded with spaces to a multiple of 8 (the safetensors
    package writes metadata in hash order, which would make fixtures differ run to run)."""
    import struct

    header = {"__metadata__": dict(sorted(meta.items()))}
    data, offset = [], 0
    for name in sorted(tensors):
        raw = tensors[name].astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        data.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in data:
            f.write(raw)
    publish(tmp, path)


def encode_tiny(args, prompts):
    import numpy as np

    rng = np.random.default_rng(args.seed)
    p, t = len(prompts), args.tokens
    # Draw order (part of the fixture's definition): embeds, pooled, negative embeds, negative pooled.
    tensors = {
        "prompt_embeds": rng.standard_normal((p, t, args.joint_dim), dtype=np.float32),
        "pooled_prompt_embeds": rng.standard_normal((p, args.pooled_dim), dtype=np.float32),
    }
    negatives = None
    if wants_negative(args, args.family):
        tensors["negative_prompt_embeds"] = rng.standard_normal((1, t, args.joint_dim), dtype=np.float32)
        tensors["negative_pooled_prompt_embeds"] = rng.standard_normal((1, args.pooled_dim), dtype=np.float32)
        negatives = [args.negative_prompt]
    encoder = (f"encode_prompts.py --tiny: numpy {np.__version__} default_rng({args.seed}).standard_normal float32, "
               f"T={t}, joint_dim={args.joint_dim}, pooled_dim={args.pooled_dim}")
    write_numpy(args.output, tensors, metadata(args.family, prompts, negatives, encoder))


def detect_family(model_dir):
    with open(os.path.join(model_dir, "model_index.json"), encoding="utf-8") as f:
        name = json.load(f).get("_class_name", "")
    for family, pipeline in FAMILIES.items():
        if name == pipeline:
            return family
    sys.exit(f"{model_dir}/model_index.json: pipeline {name!r} is neither {' nor '.join(FAMILIES.values())}; give --family")


def encode_real(args, prompts):
    import torch
    import diffusers

    family = args.family or detect_family(args.model_dir)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    pipeline_class = getattr(diffusers, FAMILIES[family])
    # Only tokenizers and text encoders are needed: skip the transformer and the VAE.
    pipe = pipeline_class.from_pretrained(args.model_dir, transformer=None, vae=None, torch_dtype=dtype, local_files_only=True)
    pipe.to(args.device)
    max_len = args.max_sequence_length or (256 if family == "sd3" else 512)
    negative = wants_negative(args, family)

    embeds, pooled = [], []
    neg_embeds = neg_pooled = None
    with torch.no_grad():
        for start in range(0, len(prompts), args.batch_size):
            chunk = prompts[start:start + args.batch_size]
            if family == "sd3":
                # encode_prompt returns (prompt_embeds, negative_prompt_embeds, pooled, negative_pooled);
                # the negative is encoded once per batch element, identically: keep one row.
                e, ne, p, np_ = pipe.encode_prompt(
                    prompt=chunk, prompt_2=None, prompt_3=None, device=args.device, num_images_per_prompt=1,
                    do_classifier_free_guidance=negative, negative_prompt=args.negative_prompt if negative else None,
                    max_sequence_length=max_len)
                if negative and neg_embeds is None:
                    neg_embeds, neg_pooled = ne[:1], np_[:1]
            else:
                # FLUX: encode_prompt returns (prompt_embeds, pooled_prompt_embeds, text_ids); text_ids
                # are zeros [T, 3] that FlowGuard builds itself.
                e, p, _ = pipe.encode_prompt(prompt=chunk, prompt_2=None, device=args.device,
                                             num_images_per_prompt=1, max_sequence_length=max_len)
                if negative and neg_embeds is None:
                    ne, np_, _ = pipe.encode_prompt(prompt=[args.negative_prompt], prompt_2=None, device=args.device,
                                                    num_images_per_prompt=1, max_sequence_length=max_len)
                    neg_embeds, neg_pooled = ne, np_
            embeds.append(e)
            pooled.append(p)
            print(f"encoded {min(start + args.batch_size, len(prompts))}/{len(prompts)} prompts", file=sys.stderr, flush=True)

    tensors = {"prompt_embeds": torch.cat(embeds), "pooled_prompt_embeds": torch.cat(pooled)}
    if negative:
        tensors["negative_prompt_embeds"] = neg_embeds
        tensors["negative_pooled_prompt_embeds"] = neg_pooled
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    check_against_transformer(args.model_dir, tensors)

    from safetensors.torch import save_file

    encoder = (f"diffusers {diffusers.__version__} {FAMILIES[family]}.encode_prompt, model "
               f"{os.path.basename(os.path.normpath(args.model_dir))}, max_sequence_length={max_len}, dtype={args.dtype}")
    tmp = args.output + ".tmp"
    save_file(tensors, tmp, metadata=metadata(family, prompts, [args.negative_prompt] if negative else None, encoder))
    publish(tmp, args.output)


def check_against_transformer(model_dir, tensors):
    """Compares the embedding widths with transformer/config.json, when the folder has one."""
    path = os.path.join(model_dir, "transformer", "config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    joint, pooled = tensors["prompt_embeds"].shape[-1], tensors["pooled_prompt_embeds"].shape[-1]
    if config.get("joint_attention_dim", joint) != joint or config.get("pooled_projection_dim", pooled) != pooled:
        sys.exit(f"{path}: the transformer takes joint_attention_dim={config.get('joint_attention_dim')} and "
                 f"pooled_projection_dim={config.get('pooled_projection_dim')}, but the encoders gave {joint} and {pooled}")


def main(argv=None):
    args = parse_args(argv)
    prompts = read_prompts(args.prompts)
    if args.tiny:
        encode_tiny(args, prompts)
    else:
        encode_real(args, prompts)
    print(f"wrote {args.output}: {len(prompts)} prompts", file=sys.stderr)


if __name__ == "__main__":
    main()
