"""Write a user's model and dataset the way a NumPy user would, for tests/user_data.rs.

usage: make_user_data.py OUTDIR SEED

- model.safetensors: a 12 -> 24 -> 24 -> 4 ReLU MLP in PyTorch's layout (`net.0`, `net.2`,
  `net.4`), random weights: the frozen base.
- data.safetensors and data.npz (the same arrays): train.x [200, 12] f32, train.y [200] int64,
  test.x/test.y [80], shifted.x/shifted.y (test rows plus noise), ood.x [60] (rows from
  another distribution). Labels come from a random linear teacher, so adapters can learn them
  and the base (random) cannot.
- x.safetensors: x [37, 12] for `bella predict`.
"""
import sys

import numpy as np
from safetensors.numpy import save_file

out, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
I, H, C = 12, 24, 4

model = {}
for name, (o, i) in {"net.0": (H, I), "net.2": (H, H), "net.4": (C, H)}.items():
    model[f"{name}.weight"] = (rng.normal(size=(o, i)) / np.sqrt(i)).astype(np.float32)
    model[f"{name}.bias"] = (0.1 * rng.normal(size=o)).astype(np.float32)
save_file(model, f"{out}/model.safetensors", metadata={"activation": "relu"})

teacher = rng.normal(size=(I, C))


def rows(n):
    x = rng.normal(size=(n, I)).astype(np.float32)
    return x, np.argmax(x @ teacher, axis=1).astype(np.int64)


train_x, train_y = rows(200)
test_x, test_y = rows(80)
data = {
    "train.x": train_x,
    "train.y": train_y,
    "test.x": test_x,
    "test.y": test_y,
    "shifted.x": (test_x + 0.5 * rng.normal(size=test_x.shape)).astype(np.float32),
    "shifted.y": test_y,
    "ood.x": (3.0 + rng.normal(size=(60, I))).astype(np.float32),
}
save_file(data, f"{out}/data.safetensors")
np.savez(f"{out}/data.npz", **data)
save_file({"x": rows(37)[0]}, f"{out}/x.safetensors")
