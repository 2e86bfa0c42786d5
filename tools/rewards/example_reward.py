#!/usr/bin/env python3
"""A minimal FlowGuard external reward: reads JSON-line requests on stdin, answers on stdout.

The protocol is documented in docs/rewards.md. This scorer uses only the standard library and
rewards each sample with a simple statistic of its latent values, so it doubles as a template for
real reward models (decode the latents, score them, answer with the same id) and as the scorer the
Swift tests run.

    python3 tools/rewards/example_reward.py [--mode mean|std|sum] [--scale S] [--verbose]

mean: R = mean of the sample's values (equals FlowGuard's builtin:mean)
std:  R = population standard deviation of the sample's values (equals builtin:contrast)
sum:  R = sum of the sample's values
Every reward is multiplied by --scale (default 1).
"""

import argparse
import array
import json
import math
import struct
import sys


def read_latents(request):
    """The request's latents as a flat list of floats and the shape [B, ...]."""
    shape = [int(d) for d in request["shape"]]
    count = math.prod(shape)
    if "latents_f32_base64" in request:
        import base64

        raw = base64.b64decode(request["latents_f32_base64"], validate=True)
    elif "latents_path" in request:
        raw = read_safetensors_tensor(request["latents_path"], "latents", shape)
    else:
        raise ValueError("request has neither latents_f32_base64 nor latents_path")
    if len(raw) != 4 * count:
        raise ValueError(f"{len(raw)} bytes of latents for shape {shape} (need {4 * count})")
    values = array.array("f")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()  # the wire format is little-endian
    return values, shape


def read_safetensors_tensor(path, name, shape):
    """The bytes of F32 tensor `name` from a safetensors file, checking its shape."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        info = header[name]
        if info["dtype"] != "F32" or info["shape"] != shape:
            raise ValueError(f"{path}: tensor {name} is {info['dtype']} {info['shape']}, expected F32 {shape}")
        begin, end = info["data_offsets"]
        f.seek(8 + header_len + begin)
        return f.read(end - begin)


def score(values, shape, mode, scale):
    """One reward per sample."""
    batch = shape[0]
    per_sample = len(values) // batch if batch else 0
    rewards = []
    for b in range(batch):
        x = values[b * per_sample:(b + 1) * per_sample]
        mean = math.fsum(x) / len(x)
        if mode == "mean":
            r = mean
        elif mode == "std":
            r = math.sqrt(math.fsum((v - mean) ** 2 for v in x) / len(x))
        else:
            r = math.fsum(x)
        rewards.append(scale * r)
    return rewards


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["mean", "std", "sum"], default="mean")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--verbose", action="store_true", help="log each batch to stderr")
    args = parser.parse_args()

    # One request per line; end of input means FlowGuard is done.
    for line in iter(sys.stdin.readline, ""):
        if not line.strip():
            continue
        request = json.loads(line)
        batch_id = request.get("id")
        try:
            values, shape = read_latents(request)
            if len(request["prompts"]) != shape[0] or len(request["prompt_ids"]) != shape[0]:
                raise ValueError("prompts/prompt_ids do not match the batch size")
            reply = {"id": batch_id, "rewards": score(values, shape, args.mode, args.scale)}
            # allow_nan=False: NaN/Infinity are not JSON; report them instead of sending them.
            text = json.dumps(reply, allow_nan=False)
        except Exception as error:  # report, do not die: FlowGuard shows the message
            reply = {"id": batch_id, "error": f"{type(error).__name__}: {error}"}
            text = json.dumps(reply)
        if args.verbose:
            print(f"example_reward: batch {batch_id}: {reply}", file=sys.stderr, flush=True)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
