#!/usr/bin/env python3
"""gguf-py (pip `gguf`, the reference GGUF implementation) as a peer for FlowGuard's GGUF files.
Run by hand (not by the test suite): python3 -m venv V && V/bin/pip install gguf numpy safetensors.

  gguf_peer.py dump FILE.gguf
        print the file as gguf-py's GGUFReader reads it, as JSON: version, alignment, data
        offset, every metadata entry (types and value) and every tensor (type, row-major shape,
        absolute data offset, byte count, sha256 of its bytes and of its dequantized float32 values)
  gguf_peer.py check FILE.gguf SOURCE.safetensors [--prefix P]
        the check of issue 18's "bytes equal gguf-py's quantizer and gguf-py reads it back": for
        every tensor of FILE whose name (with P prepended) is in SOURCE, quantize the source
        values (read as float32) with gguf.quants.quantize to the tensor's type and compare the
        bytes with FILE's; print one line per tensor and a summary
  gguf_peer.py compare FILE.gguf EXPECTED.safetensors
        dequantize every tensor of FILE with gguf.quants.dequantize and compare it bit for bit
        with the float32 tensor of the same name in EXPECTED (e.g. FlowGuard's GGUF → fp32 output)

Exit status 0 when everything matches, 1 on a mismatch, 3 when gguf-py cannot read FILE.
"""
import hashlib
import json
import sys
import warnings

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file

warnings.simplefilter("ignore", RuntimeWarning)   # numpy's NaN/overflow casts, as gguf-py makes them

PLAIN = {T.I8, T.I16, T.I32, T.I64, T.F64}


def read(path):
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # gguf-py's own refusal
        print(f"gguf-py cannot read {path}: {exc}", file=sys.stderr)
        sys.exit(3)


def shape(t):
    return [int(d) for d in reversed(t.shape.tolist())]


def values(t):
    data = np.asarray(t.data)
    v = data.astype(np.float32) if t.tensor_type in PLAIN else dequantize(data, t.tensor_type)
    return np.array(v.reshape(shape(t)), dtype=np.float32, order="C")


def jsonable(v):
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return repr(v)
    return v


def dump(path):
    r = read(path)
    out = {"alignment": int(r.alignment), "data_offset": int(r.data_offset), "metadata": [], "tensors": []}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            if key == "GGUF.version":
                out["version"] = int(field.parts[0][0])
            continue
        out["metadata"].append({"key": key, "types": [t.name for t in field.types], "value": jsonable(field.contents())})
    for t in r.tensors:
        raw = np.asarray(t.data).tobytes()
        out["tensors"].append({
            "name": t.name, "type": t.tensor_type.name, "shape": shape(t), "offset": int(t.data_offset),
            "bytes": int(t.n_bytes), "sha256": hashlib.sha256(raw).hexdigest(),
            "values_sha256": hashlib.sha256(values(t).tobytes()).hexdigest(),
        })
    print(json.dumps(out, indent=1, ensure_ascii=False))


def check(path, source_path, prefix=""):
    r = read(path)
    source = load_file(source_path)
    checked = mismatched = 0
    for t in r.tensors:
        name = prefix + t.name
        if name not in source:
            print(f"skip  {t.name}: not in {source_path}")
            continue
        if t.tensor_type in PLAIN:
            print(f"skip  {t.name}: {t.tensor_type.name} is not written by a quantizer")
            continue
        x = source[name].astype(np.float32)
        want = quantize(x, t.tensor_type).tobytes()
        got = np.asarray(t.data).tobytes()
        checked += 1
        if want == got:
            print(f"ok    {t.name}: {t.tensor_type.name}, {len(got)} bytes equal gguf-py's quantizer")
        else:
            mismatched += 1
            first = next(i for i, (a, b) in enumerate(zip(want, got)) if a != b) if len(want) == len(got) else min(len(want), len(got))
            print(f"DIFF  {t.name}: {t.tensor_type.name}, first difference at byte {first} of {len(want)}")
    print(f"{checked} tensors checked, {mismatched} differ; gguf-py read {len(r.tensors)} tensors and {len(r.fields) - 3} metadata entries")
    sys.exit(1 if mismatched else 0)


def compare(path, expected_path):
    r = read(path)
    expected = load_file(expected_path)
    bad = 0
    for t in r.tensors:
        if t.name not in expected:
            print(f"MISSING {t.name}")
            bad += 1
            continue
        want = values(t)
        got = expected[t.name]
        same = want.shape == got.shape and np.array_equal(want.view(np.uint32), got.astype(np.float32).view(np.uint32))
        print(f"{'ok  ' if same else 'DIFF'}  {t.name}: {t.tensor_type.name} {list(want.shape)}")
        bad += 0 if same else 1
    sys.exit(1 if bad else 0)


def main(argv):
    if len(argv) >= 2 and argv[0] == "dump":
        dump(argv[1])
    elif len(argv) >= 3 and argv[0] == "check":
        prefix = argv[argv.index("--prefix") + 1] if "--prefix" in argv else ""
        check(argv[1], argv[2], prefix)
    elif len(argv) == 3 and argv[0] == "compare":
        compare(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
