"""Halve a checkpoint for transfer, and restore it: f32 tensors of a safetensors file to f16
and back (the device call carries at most 64 MiB; MiniLM's f32 weights are 87 MB).

  python3 half_weights.py pack   model.safetensors  model.f16.safetensors   (stdlib only)
  python3 half_weights.py unpack model.f16.safetensors model.safetensors    (stdlib only)

The restored weights are the f16-rounded ones, in f32: both arms of a precision check start
from them, so the check compares like with like.
"""
import array
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        return header, f.read()


def write(path, header, chunks):
    offset = 0
    for name, (dtype, data) in chunks.items():
        header[name]["dtype"] = dtype
        header[name]["data_offsets"] = [offset, offset + len(data)]
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, data in chunks.values():
            f.write(data)


def convert(src, dst, from_dtype, to_dtype):
    header, body = read(src)
    meta = header.pop("__metadata__", None)
    chunks = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        start, end = info["data_offsets"]
        data = body[start:end]
        if info["dtype"] == from_dtype:
            if to_dtype == "F16":
                values = array.array("f", data)
                data = struct.pack(f"<{len(values)}e", *values)
            else:
                values = struct.unpack(f"<{len(data) // 2}e", data)
                data = array.array("f", values).tobytes()
            chunks[name] = (to_dtype, data)
        else:
            chunks[name] = (info["dtype"], data)
    if meta is not None:
        header["__metadata__"] = meta
    write(dst, header, chunks)


if __name__ == "__main__":
    mode, src, dst = sys.argv[1:4]
    if mode == "pack":
        convert(src, dst, "F32", "F16")
    else:
        convert(src, dst, "F16", "F32")
