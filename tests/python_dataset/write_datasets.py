"""Write one dataset three ways for tests/dataset_load.rs: np.savez, np.savez_compressed and
safetensors.numpy.save_file, with mixed dtypes (f32/f64/f16 features, int64/int32/uint8
labels), a Fortran-ordered and a big-endian array in the .npz files. Values are
x[i, j] = ((7 i + 3 j + split) % 11) / 4 - 1 (exact in f16) and y[i] = (5 i + split) % 4.

usage: write_datasets.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROWS = {"train": 6, "test": 4, "shifted": 2, "ood": 5}
FEATURES = 3
X_DTYPE = {"train": np.float32, "test": np.float64, "shifted": np.float16, "ood": np.float32}
Y_DTYPE = {"train": np.int64, "test": np.int32, "shifted": np.uint8}


def x(split, k):
    i, j = np.meshgrid(np.arange(ROWS[split]), np.arange(FEATURES), indexing="ij")
    return (((7 * i + 3 * j + k) % 11) / 4 - 1).astype(X_DTYPE[split])


def y(split, k):
    return ((5 * np.arange(ROWS[split]) + k) % 4).astype(Y_DTYPE[split])


def tensors(numpy_layouts):
    out = {}
    for k, split in enumerate(ROWS):
        out[f"{split}.x"] = x(split, k)
        if split in Y_DTYPE:
            out[f"{split}.y"] = y(split, k)
    if numpy_layouts:
        out["shifted.x"] = np.asfortranarray(out["shifted.x"])
        out["ood.x"] = out["ood.x"].astype(">f4")
        assert np.isfortran(out["shifted.x"])
    return out


def main():
    d = Path(sys.argv[1])
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / "savez.npz", **tensors(True))
    np.savez_compressed(d / "savez_compressed.npz", **tensors(True))
    save_file(tensors(False), str(d / "data.safetensors"))
    np.savez(d / "inputs.npz", x=x("test", 1))


if __name__ == "__main__":
    main()
