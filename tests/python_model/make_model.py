"""Write an MLP the way a Python user would (safetensors + NumPy), in f32 and f16, and the
logits of an independent float64 NumPy forward of the same weights, for
tests/model_load_python.rs.

usage: make_model.py OUT_DIR SEED
"""
import sys

import numpy as np
from safetensors.numpy import save_file


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def forward(layers, x, act):
    h = x.astype(np.float64)
    for n, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64).T
        if b is not None:
            h = h + b.astype(np.float64)
        if n + 1 < len(layers):
            h = np.maximum(h, 0.0) if act == "relu" else gelu_tanh(h)
    return h


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    widths = [10, 32, 16, 5]
    layers = []
    for n, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        w = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
        # The last layer has no bias: biases are optional.
        b = rng.standard_normal(o).astype(np.float32) if n + 1 < len(widths) - 1 else None
        layers.append((w, b))
    x = rng.standard_normal((7, widths[0])).astype(np.float32)
    expected = {"x": x}
    # f32 as nn.Sequential(Linear, ReLU, Linear, ReLU, Linear) under `layers.`, no metadata
    # (ReLU by default); f16 with bare indices and the GELU activation in the metadata.
    for dtype, prefix, act in [(np.float32, "layers.", "relu"), (np.float16, "", "gelu")]:
        tensors, cast = {}, []
        for n, (w, b) in enumerate(layers):
            wc = w.astype(dtype)
            bc = None if b is None else b.astype(dtype)
            tensors[f"{prefix}{2 * n}.weight"] = wc
            if bc is not None:
                tensors[f"{prefix}{2 * n}.bias"] = bc
            cast.append((wc, bc))
        name = np.dtype(dtype).name
        meta = None if act == "relu" else {"activation": act}
        save_file(tensors, f"{out}/model_{name}.safetensors", metadata=meta)
        expected[f"logits_{name}"] = forward(cast, x, act).astype(np.float32)
    save_file(expected, f"{out}/expected.safetensors")


if __name__ == "__main__":
    main()
