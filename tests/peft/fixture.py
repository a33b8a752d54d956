"""The PyTorch + PEFT side of tests/peft_python.rs: a frozen MLP, a small data set and LoRA
adapters written by PEFT itself, the way a user would make them.

usage: fixture.py OUT_DIR SEED

Writes, under OUT_DIR:
  base.safetensors        nn.Sequential(Linear(10,16), ReLU, Linear(16,16), ReLU, Linear(16,3))
                          state_dict (`0.weight`, `0.bias`, `2.*`, `4.*`), metadata activation=relu
  data.safetensors        train.x [60,10] f32, train.y [60] i64, test.*, shifted.*, ood.x
  data.npz                the same arrays through np.savez
  x.safetensors           x [25,10] f32: the inputs for `bella predict`
  peft_0, peft_1, peft_2  PEFT LoRA adapters (r=4, lora_alpha=8, every linear layer,
                          init_lora_weights=False so B is non-zero), each from its own torch seed
  peft_logits.safetensors logits [3,25,3] f32: PeftModel.from_pretrained(base, peft_k)(x), in f32
  gelu/                   the same for a GELU-tanh model whose layers are `net.0`, `net.2`,
                          `net.4` (a wrapper module with `self.net = nn.Sequential(...)`):
                          base.safetensors, peft_0, peft_1, peft_logits.safetensors
  bad_wide                a PEFT adapter for a model of other widths (Linear(10,20), ...),
                          same layer names: lora shapes that do not fit base.safetensors
  bad_target              a PEFT adapter on a deeper model, target_modules ["6"]: a layer
                          base.safetensors does not have
  bad_rank                a valid r=8 adapter for base.safetensors (unusable with r=4 ones)
  bad_noconfig            peft_0 without its adapter_config.json

Every adapter is loaded back with PeftModel.from_pretrained and checked to hold the saved
tensors (from_pretrained is not strict), so the fixture itself cannot be silently wrong.
"""
import copy
import os
import shutil
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file, save_file

I, H, C = 10, 16, 3
N_TRAIN, N_TEST, N_SHIFTED, N_OOD, N_X = 60, 30, 30, 20, 25
R, ALPHA = 4, 8


def mlp(widths, act):
    mods = []
    for n, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(nn.Linear(i, o))
        if n + 1 < len(widths) - 1:
            mods.append(nn.ReLU() if act == "relu" else nn.GELU(approximate="tanh"))
    return nn.Sequential(*mods)


class Wrapped(nn.Module):
    """A user's module whose linear layers are `net.0`, `net.2`, ..."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def make_adapter(base, targets, r, alpha, seed, out):
    """PEFT's own adapter on a copy of `base`, saved with save_pretrained; returns the PeftModel."""
    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False
    )
    pm = get_peft_model(copy.deepcopy(base), cfg)
    pm.eval()
    pm.save_pretrained(out)
    return pm


def loaded_strictly(base, adapter_dir):
    """PeftModel.from_pretrained, failing unless every saved lora tensor is in the model, equal,
    and the model has no other lora tensors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir)
    for w in caught:
        if "adapter keys" in str(w.message):
            sys.exit(f"fixture: {adapter_dir}: {w.message}")
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    params = {
        n.replace(".default.", "."): p for n, p in pm.named_parameters() if "lora_" in n
    }
    if set(params) != set(saved):
        sys.exit(f"fixture: {adapter_dir}: model lora {sorted(params)} != file {sorted(saved)}")
    for k, v in saved.items():
        if not torch.equal(params[k].detach(), v):
            sys.exit(f"fixture: {adapter_dir}: {k} differs after loading")
    pm.eval()
    return pm


def dataset(rng):
    means = rng.standard_normal((C, I)) * 2.0

    def split(n, shift=0.0, scale=1.0):
        y = rng.integers(0, C, n)
        x = means[y] * scale + shift + rng.standard_normal((n, I))
        return x.astype(np.float32), y.astype(np.int64)

    d = {}
    d["train.x"], d["train.y"] = split(N_TRAIN)
    d["test.x"], d["test.y"] = split(N_TEST)
    d["shifted.x"], d["shifted.y"] = split(N_SHIFTED, shift=0.7, scale=0.8)
    d["ood.x"] = (rng.standard_normal((N_OOD, I)) * 3.0 + 4.0).astype(np.float32)
    return d


def base_and_adapters(out, base, targets, act, seed, k, x):
    """Save `base` as base.safetensors, k PEFT adapters and their f32 logits on x."""
    os.makedirs(out, exist_ok=True)
    sd = {n: t.detach().contiguous() for n, t in base.state_dict().items()}
    save_file(sd, os.path.join(out, "base.safetensors"), metadata={"activation": act})
    logits, logits64 = [], []
    for p in range(k):
        d = os.path.join(out, f"peft_{p}")
        made = make_adapter(base, targets, R, ALPHA, seed * 10 + p, d)
        pm = loaded_strictly(base, d)
        with torch.no_grad():
            z = pm(x)
            z_made = made(x)
            pm64 = copy.deepcopy(pm).double()
            z64 = pm64(x.double())
            base_z = base(x)
        if not torch.equal(z, z_made):
            sys.exit(f"fixture: {d}: loaded adapter gives other logits than the saved model")
        if torch.allclose(z, base_z, atol=1e-3):
            sys.exit(f"fixture: {d}: the adapter does not change the logits (B zero?)")
        err = (z.double() - z64).norm() / z64.norm()
        if err > 1e-6:
            sys.exit(f"fixture: {d}: f32 and f64 PEFT forwards differ by {err:.2e}")
        logits.append(z)
        logits64.append(z64)
    save_file(
        {"logits": torch.stack(logits).contiguous(), "logits_f64": torch.stack(logits64).contiguous()},
        os.path.join(out, "peft_logits.safetensors"),
    )


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)  # tiny tensors; the Rust tests run several of these at once
    print(f"fixture seed {seed}")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    d = dataset(rng)
    save_np(d, os.path.join(out, "data.safetensors"))
    np.savez(os.path.join(out, "data.npz"), **d)
    x = rng.standard_normal((N_X, I)).astype(np.float32)
    x[: N_X // 2] += d["test.x"][: N_X // 2]  # some in-distribution rows, some not
    save_np({"x": x}, os.path.join(out, "x.safetensors"))

    # ReLU, nn.Sequential names 0, 2, 4; adapters on every linear layer.
    relu = mlp([I, H, H, C], "relu").eval()
    xt = torch.from_numpy(x)
    base_and_adapters(out, relu, ["0", "2", "4"], "relu", seed, 3, xt)

    # GELU (tanh), names net.0, net.2, net.4.
    gelu = Wrapped(mlp([I, H, H, C], "gelu")).eval()
    base_and_adapters(os.path.join(out, "gelu"), gelu, ["net.0", "net.2", "net.4"], "gelu", seed + 1, 2, xt)

    # Adapters that do not fit base.safetensors.
    make_adapter(mlp([I, 20, H, C], "relu"), ["0", "2", "4"], R, ALPHA, seed + 2, os.path.join(out, "bad_wide"))
    make_adapter(mlp([I, H, H, H, C], "relu"), ["6"], R, ALPHA, seed + 3, os.path.join(out, "bad_target"))
    make_adapter(relu, ["0", "2", "4"], 8, ALPHA, seed + 4, os.path.join(out, "bad_rank"))
    nc = os.path.join(out, "bad_noconfig")
    shutil.copytree(os.path.join(out, "peft_0"), nc, dirs_exist_ok=True)
    os.remove(os.path.join(nc, "adapter_config.json"))


if __name__ == "__main__":
    main()
