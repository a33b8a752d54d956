"""Writing and reading safetensors by hand, for what NumPy cannot hold (bf16).

Files of plain NumPy dtypes are written with the `safetensors` package itself (that is
the interop being tested); this module only covers the bf16 files and reading them back.
"""
import json
import struct

import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class BF16:
    """A bf16 tensor: `bits` (uint16) and the exact values it holds (`values`, f32)."""

    def __init__(self, x):
        u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        # Round to nearest even on the 16 bits dropped.
        self.bits = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        self.values = (self.bits.astype(np.uint32) << 16).view(np.float32)
        self.shape = self.values.shape


def write(path, tensors, metadata=None):
    """Write {name: ndarray | BF16} as safetensors, header padded to 8 bytes."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        if isinstance(t, BF16):
            dtype, raw = "BF16", t.bits.astype("<u2").tobytes()
        else:
            a = np.asarray(t)
            dtype, raw = _NAMES[a.dtype], a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


def read(path):
    """Read any safetensors file into {name: ndarray}; bf16 becomes f32."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        raw = data[8 + n + a:8 + n + b]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"])
    return out
