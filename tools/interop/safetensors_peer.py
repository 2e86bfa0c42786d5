#!/usr/bin/env python3
"""The reference safetensors implementation (pip `safetensors`) as a peer for FlowGuard's tests.

  safetensors_peer.py dump FILE          print the file as JSON: metadata and every tensor's
                                         dtype, shape and data (hex), read by safetensors' own reader
  safetensors_peer.py verdicts FILE...   one line per file: "ok" or "error <message>"
  safetensors_peer.py write SPEC OUT     write OUT with safetensors' own writer from a JSON spec
                                         {"metadata": {...} | null, "tensors": [{"name", "dtype",
                                         "shape", "hex"}]} (dtype in header spelling)
Exit status 0 on success; on a reader error, 3 and the error text on stderr.
"""
import ctypes
import json
import sys

from safetensors import TensorSpec, deserialize, serialize_file

# Header spelling -> the constructor names TensorSpec accepts.
TORCH_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16",
    "BF16": "bfloat16", "F32": "float32", "F64": "float64", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu", "F4": "float4_e2m1fn_x2",
}


def dump(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        tensors = deserialize(data)
    except Exception as exc:  # the reference's own error
        print(str(exc), file=sys.stderr)
        sys.exit(3)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    out = {"metadata": header.get("__metadata__"), "tensors": []}
    for name, t in tensors:
        out["tensors"].append({"name": name, "dtype": t["dtype"], "shape": list(t["shape"]),
                               "hex": bytes(t["data"]).hex()})
    out["tensors"].sort(key=lambda t: t["name"])
    json.dump(out, sys.stdout, sort_keys=True)


def write(spec_path, out_path):
    with open(spec_path) as f:
        spec = json.load(f)
    keep = []
    specs = {}
    for t in spec["tensors"]:
        raw = bytes.fromhex(t["hex"])
        buf = ctypes.create_string_buffer(raw, max(len(raw), 1))
        keep.append(buf)
        shape = list(t["shape"])
        if t["dtype"] == "F4":  # TensorSpec takes the packed storage shape and doubles the last dim
            shape[-1] //= 2
        specs[t["name"]] = TensorSpec(dtype=TORCH_NAMES[t["dtype"]], shape=shape,
                                      data_ptr=ctypes.addressof(buf), data_len=len(raw))
    serialize_file(specs, out_path, metadata=spec.get("metadata"))


def verdicts(paths):
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            deserialize(data)
            print("ok")
        except Exception as exc:
            print("error " + " ".join(str(exc).split()))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) >= 2 and sys.argv[1] == "verdicts":
        verdicts(sys.argv[2:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
