#!/usr/bin/env python3
"""Makes the fuzzers' seed corpora (tools/fuzz/corpus/<target>/) from the repository's fixtures.

Every seed is a real file trimmed small (a few KB): a handful of tensors of fixtures/sd35_tiny and
fixtures/flux_tiny, LoRA adapters cut down to a few modules in each dialect, shard indexes with a
few entries, and delta archives packed by `flowguard lora pack`. Deterministic: the same fixtures
and the same flowguard give the same bytes.

Usage: python3 tools/fuzz/make_corpus.py [path/to/flowguard]   (default .build/release/flowguard)
Only the standard library is used; kohya/ComfyUI seeds and archives need the flowguard binary.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ = os.path.join(ROOT, "tools", "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")


def read_st(path):
    """(header dict without __metadata__, metadata or None, data bytes) of a safetensors file."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    metadata = header.pop("__metadata__", None)
    return header, metadata, b[8 + n:]


def tensor_bytes(header, data, name):
    begin, end = header[name]["data_offsets"]
    return data[begin:end]


def write_st(path, tensors, metadata=None):
    """Writes tensors [(name, dtype, shape, bytes)] as the reference writer does (data order as given)."""
    h = {}
    if metadata is not None:
        h["__metadata__"] = metadata
    offset = 0
    blob = b""
    for name, dtype, shape, raw in tensors:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blob += raw
    text = json.dumps(h, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob)


def f32_to_bf16(raw):
    return b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))


def pick(path, names, rename=lambda n: n, metadata=None, bf16=False):
    header, meta, data = read_st(path)
    out = []
    for n in names:
        raw = tensor_bytes(header, data, n)
        dtype = header[n]["dtype"]
        if bf16 and dtype == "F32":
            raw, dtype = f32_to_bf16(raw), "BF16"
        out.append((rename(n), dtype, header[n]["shape"], raw))
    return out, meta if metadata is None else metadata


def target(name):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    return d


def trimmed_config(meta, keep=("transformer.r", "transformer.lora_alpha", "transformer.target_modules",
                               "transformer.use_rslora", "transformer.rank_pattern", "transformer.alpha_pattern",
                               "transformer.peft_type", "transformer.bias")):
    cfg = json.loads(meta["lora_adapter_metadata"])
    return json.dumps({k: v for k, v in cfg.items() if k in keep}, indent=2, sort_keys=True)


def header_seeds():
    d = target("safetensors-header")
    sd = os.path.join(ROOT, "fixtures/sd35_tiny/original.safetensors")
    header, _, _ = read_st(sd)
    small = sorted((n for n in header if len(header[n]["shape"]) == 1), key=lambda n: n)[:4]
    tensors, _ = pick(sd, small)
    write_st(os.path.join(d, "sd35_tiny_original_4.safetensors"), tensors, {"format": "pt"})
    fx = os.path.join(ROOT, "fixtures/flux_tiny/diffusers/diffusion_pytorch_model.safetensors")
    header, _, _ = read_st(fx)
    small = sorted(n for n in header if len(header[n]["shape"]) == 1)[:3]
    tensors, _ = pick(fx, small, bf16=True)
    write_st(os.path.join(d, "flux_tiny_diffusers_3_bf16.safetensors"), tensors)
    # One tiny tensor of every dtype, in the writer's order; scalar, zero-sized and sub-byte shapes.
    kinds = [("U64", 64), ("I64", 64), ("F64", 64), ("C64", 64), ("F32", 32), ("U32", 32), ("I32", 32),
             ("BF16", 16), ("F16", 16), ("U16", 16), ("I16", 16), ("F8_E5M2FNUZ", 8), ("F8_E4M3FNUZ", 8),
             ("F8_E8M0", 8), ("F8_E4M3", 8), ("F8_E5M2", 8), ("I8", 8), ("U8", 8), ("F6_E3M2", 6),
             ("F6_E2M3", 6), ("F4", 4), ("BOOL", 8)]
    tensors = []
    for i, (dtype, bits) in enumerate(kinds):
        count = 4 if bits in (6, 4) else 2
        tensors.append(("t.%s" % dtype.lower(), dtype, [count], bytes((i * 7 + k) & 0xFF for k in range(count * bits // 8))))
    tensors.append(("scalar", "F32", [], struct.pack("<f", 1.5)))
    tensors.append(("empty", "F16", [0, 3], b""))
    write_st(os.path.join(d, "every_dtype.safetensors"), tensors, {"a": "1", "\u00e9\\\"\n": "x\u0001y"})
    with open(os.path.join(d, "empty_header.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 8) + b"{}      ")


def shard_seeds():
    d = target("shard-index")
    for family in ("sd35_tiny", "flux_tiny"):
        path = os.path.join(ROOT, "fixtures", family, "diffusers_sharded/diffusion_pytorch_model.safetensors.index.json")
        with open(path) as f:
            index = json.load(f)
        names = sorted(index["weight_map"])[:6]
        index["weight_map"] = {n: index["weight_map"][n] for n in names}
        with open(os.path.join(d, family + ".index.json"), "w") as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    with open(os.path.join(d, "float_total_and_extra.index.json"), "w") as f:
        f.write('{"metadata":{"total_size":1234.0,"format":"pt","nested":{"a":[1,2.5,null,true]}},'
                '"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b\\u00e9":"model-00002-of-00002.safetensors"}}')
    with open(os.path.join(d, "null_metadata.index.json"), "w") as f:
        f.write('{"metadata":null,"weight_map":{}}\n')


def lora_seeds(flowguard, work):
    d = target("lora-reader")
    sd = os.path.join(ROOT, "fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
    fx = os.path.join(ROOT, "fixtures/flux_tiny/lora/pytorch_lora_weights.safetensors")
    _, sd_meta, _ = read_st(sd)
    _, fx_meta, _ = read_st(fx)
    qkv = ["transformer.transformer_blocks.0.attn.to_%s.lora_%s.weight" % (p, f) for p in "qkv" for f in "AB"]
    out = {}
    # diffusers: q/k/v of a joint block (fused to qkv when converted to the original layout).
    tensors, _ = pick(sd, qkv)
    out["sd35_diffusers_qkv"] = (tensors, {"format": "pt", "lora_adapter_metadata": trimmed_config(sd_meta)})
    # PEFT-prefixed file (no config: α = r).
    tensors, _ = pick(sd, qkv[:2] + ["transformer.transformer_blocks.0.attn.add_k_proj.lora_%s.weight" % f for f in "AB"],
                      rename=lambda n: "base_model.model." + n[len("transformer."):], bf16=True)
    out["sd35_peft_prefix_bf16"] = (tensors, {"format": "pt"})
    # FLUX single block: q/k/v + proj_mlp (fused into linear1).
    single = ["transformer.single_transformer_blocks.0.attn.to_%s.lora_%s.weight" % (p, f) for p in "qkv" for f in "AB"]
    single += ["transformer.single_transformer_blocks.0.proj_mlp.lora_%s.weight" % f for f in "AB"]
    tensors, _ = pick(fx, single, bf16=True)
    out["flux_diffusers_single"] = (tensors, {"format": "pt", "lora_adapter_metadata": trimmed_config(fx_meta)})
    # FLUX double block q/k/v (fused to img_attn.qkv): the source of the kohya/ComfyUI FLUX seeds.
    tensors, _ = pick(fx, [n.replace("transformer_blocks.0", "transformer_blocks.1") for n in qkv], bf16=True)
    out["flux_diffusers_double"] = (tensors, {"format": "pt"})
    for name, (tensors, meta) in out.items():
        write_st(os.path.join(d, name + ".safetensors"), tensors, meta)
    # XLabs: an image-stream qkv and a single block's qkv, shapes as in flux_tiny.
    fx_header, _, fx_data = read_st(fx)
    a = tensor_bytes(fx_header, fx_data, "transformer.transformer_blocks.0.attn.to_q.lora_A.weight")
    b = tensor_bytes(fx_header, fx_data, "transformer.transformer_blocks.0.attn.to_q.lora_B.weight")
    xl = [("double_blocks.0.processor.qkv_lora1.down.weight", "F32", [4, 32], a),
          ("double_blocks.0.processor.qkv_lora1.up.weight", "F32", [96, 4], b * 3),
          ("single_blocks.1.processor.qkv_lora.down.weight", "F32", [4, 32], a),
          ("single_blocks.1.processor.qkv_lora.up.weight", "F32", [96, 4], b * 3)]
    write_st(os.path.join(d, "flux_xlabs_bf16.safetensors"), [(n, "BF16", s, f32_to_bf16(r)) for n, _, s, r in xl])
    # kohya and ComfyUI: converted by flowguard itself from the trimmed diffusers seeds.
    if flowguard:
        for name, base in (("sd35_diffusers_qkv", "fixtures/sd35_tiny/original.safetensors"),
                           ("flux_diffusers_double", "fixtures/flux_tiny/original.safetensors")):
            for fmt in ("kohya", "comfy"):
                dst = os.path.join(d, "%s_%s.safetensors" % (name.split("_")[0], fmt))
                subprocess.run([flowguard, "lora", "convert", os.path.join(d, name + ".safetensors"), dst,
                                "--to", fmt, "--base", os.path.join(ROOT, base)], check=True, stdout=subprocess.DEVNULL)


def delta_seeds(flowguard, work):
    d = target("delta-archive")
    lora = os.path.join(CORPUS, "lora-reader")
    header = os.path.join(CORPUS, "safetensors-header")
    runs = [("sd35_diffusers_qkv.fgdelta", os.path.join(lora, "sd35_diffusers_qkv.safetensors"), []),
            ("sd35_peft_prefix_bf16_no_planes.fgdelta", os.path.join(lora, "sd35_peft_prefix_bf16.safetensors"), ["--no-byte-planes"]),
            ("flux_diffusers_single_match_search.fgdelta", os.path.join(lora, "flux_diffusers_single.safetensors"), ["--match-search", "--level", "1"]),
            ("every_dtype.fgdelta", os.path.join(header, "every_dtype.safetensors"), [])]
    for name, src, args in runs:
        subprocess.run([flowguard, "lora", "pack", src, os.path.join(d, name), "--threads", "1"] + args,
                       check=True, stdout=subprocess.DEVNULL)
    # XOR deltas: the reference is the qkv seed; the archived file has a few bytes changed.
    reference = os.path.join(FUZZ, "corpus-reference", "delta-reference.safetensors")
    with open(os.path.join(lora, "sd35_diffusers_qkv.safetensors"), "rb") as f:
        ref = f.read()
    with open(reference, "wb") as f:
        f.write(ref)
    changed = bytearray(ref)
    for k in range(len(changed) - 64, len(changed), 5):
        changed[k] ^= 0x01
    src = os.path.join(work, "changed.safetensors")
    with open(src, "wb") as f:
        f.write(bytes(changed))
    subprocess.run([flowguard, "lora", "pack", src, os.path.join(d, "sd35_xor_reference.fgdelta"), "--threads", "1",
                    "--reference", reference], check=True, stdout=subprocess.DEVNULL)
    # The target's second encoding (see IndexedInput.swift): index JSON, 0x00, the frames.
    for name in sorted(os.listdir(d)):
        if not name.endswith(".fgdelta"):
            continue
        with open(os.path.join(d, name), "rb") as f:
            archive = f.read()
        offset, length = struct.unpack("<QQ", archive[-32:-16])
        index = subprocess.run(["zstd", "-d", "-c", "-q"], input=archive[offset:offset + length],
                               check=True, stdout=subprocess.PIPE).stdout
        with open(os.path.join(d, name[:-len(".fgdelta")] + ".indexed"), "wb") as f:
            f.write(index + b"\0" + archive[16:offset])


def gguf_seeds():
    """The GGUF fixtures gguf-py wrote (fixtures/gguf, each under 16 KB), and a metadata-only file."""
    d = target("gguf-header")
    src = os.path.join(ROOT, "fixtures", "gguf")
    for name in sorted(os.listdir(src)):
        if name.endswith(".gguf"):
            with open(os.path.join(src, name), "rb") as f, open(os.path.join(d, name), "wb") as g:
                g.write(f.read())
    key = b"general.architecture"
    value = b"flux"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value
    with open(os.path.join(d, "metadata_only.gguf"), "wb") as f:
        f.write(header + b"\0" * (-len(header) % 32))


def main():
    flowguard = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build/release/flowguard")
    if not os.access(flowguard, os.X_OK):
        sys.exit("flowguard not found at %s (swift build -c release --product flowguard)" % flowguard)
    with tempfile.TemporaryDirectory() as work:
        header_seeds()
        gguf_seeds()
        shard_seeds()
        lora_seeds(flowguard, work)
        delta_seeds(flowguard, work)
    for t in sorted(os.listdir(CORPUS)):
        files = sorted(os.listdir(os.path.join(CORPUS, t)))
        print("%s: %d seeds, %d bytes" % (t, len(files), sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in files)))


if __name__ == "__main__":
    main()
