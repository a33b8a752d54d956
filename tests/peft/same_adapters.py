"""Are two PEFT LoRA adapter directories the same adapter? (For `bella export` of a run started
with --init-from-peft and --epochs 0, against the adapters PEFT wrote.)

usage: same_adapters.py GOT_DIR WANT_DIR [GOT_DIR WANT_DIR ...]

Same, here: adapter_model.safetensors has the same tensor names, dtypes, shapes and bitwise
values; adapter_config.json has the same peft_type, r, lora_alpha (as numbers), bias,
lora_dropout and target_modules (as a set: PEFT itself writes them in set order). Exit 1
with a message per difference.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file


def main():
    pairs = sys.argv[1:]
    if not pairs or len(pairs) % 2:
        sys.exit("usage: same_adapters.py GOT_DIR WANT_DIR [GOT_DIR WANT_DIR ...]")
    bad = []
    for got, want in zip(pairs[0::2], pairs[1::2]):
        g = load_file(os.path.join(got, "adapter_model.safetensors"))
        w = load_file(os.path.join(want, "adapter_model.safetensors"))
        if sorted(g) != sorted(w):
            bad.append(f"{got}: tensors {sorted(g)}, {want} has {sorted(w)}")
        for key in sorted(set(g) & set(w)):
            a, b = g[key], w[key]
            if a.dtype != b.dtype or a.shape != b.shape:
                bad.append(f"{got}: `{key}` is {a.dtype} {list(a.shape)}, {want} has {b.dtype} {list(b.shape)}")
            elif not torch.equal(a, b):
                d = (a.double() - b.double()).abs().max().item()
                bad.append(f"{got}: `{key}` differs from {want} (max |d| {d:.3e}; expected bitwise equal)")
        with open(os.path.join(got, "adapter_config.json")) as f:
            gc = json.load(f)
        with open(os.path.join(want, "adapter_config.json")) as f:
            wc = json.load(f)
        for key in ["peft_type", "r", "bias", "lora_dropout"]:
            if gc.get(key) != wc.get(key):
                bad.append(f"{got}: config {key} = {gc.get(key)!r}, {want} has {wc.get(key)!r}")
        if float(gc.get("lora_alpha", "nan")) != float(wc["lora_alpha"]):
            bad.append(f"{got}: lora_alpha {gc.get('lora_alpha')!r}, {want} has {wc['lora_alpha']!r}")
        if set(gc.get("target_modules") or []) != set(wc["target_modules"]):
            bad.append(f"{got}: target_modules {gc.get('target_modules')!r}, {want} has {wc['target_modules']!r}")
        print(f"{got} vs {want}: {len(g)} tensors compared")
    for b in bad:
        print(f"same_adapters: FAIL: {b}", file=sys.stderr)
    if bad:
        sys.exit(1)
    print("same_adapters: identical")


if __name__ == "__main__":
    main()
