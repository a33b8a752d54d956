"""Check a `bella export` directory against PyTorch + PEFT, and a `bella predict` file against
the export and against NumPy.

usage: check_peft.py EXPORT_DIR X.safetensors PRED.safetensors
           [--base ORIGINAL_BASE.safetensors] [--particles K] [--r R] [--alpha A]
           [--targets L1,L2,...]

EXPORT_DIR holds base.safetensors (the frozen MLP, tensors `<stem><n>.weight [O, I]` and
optional `<stem><n>.bias [O]`, header metadata activation = relu | gelu) and particle_0 ...
particle_{K-1}, each a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors).
X holds `x [N, I]`; PRED is what `bella predict` wrote for x: logits [K, N, C], probs [N, C],
entropy [N], expected_entropy [N], mutual_info [N] (f32).

What is checked (any failure: a message per problem on stderr and exit status 1):
 1. base.safetensors follows the model-file rules; with --base, it holds exactly the
    original's tensors (names, shapes, values) and activation.
 2. the particle directories are particle_0 ... particle_{K-1} (K = --particles if given).
 3. each adapter_config.json: peft_type LORA, integer r > 0, lora_alpha, target_modules a
    list of distinct layer names of the base file, bias "none", lora_dropout 0, nothing that
    changes the math (rslora, DoRA, fan_in_fan_out, rank/alpha patterns, lora_bias,
    modules_to_save, layers_to_transform), no field PEFT's LoraConfig does not know (PEFT
    warns on loading such a file); PEFT's own LoraConfig.from_pretrained reads the same r,
    alpha and targets; --r/--alpha/--targets, if given, match.
 4. each adapter_model.safetensors holds exactly base_model.model.<L>.lora_A.weight [r, I_L]
    and base_model.model.<L>.lora_B.weight [O_L, r] (F32, finite) for every target L.
 5. PeftModel.from_pretrained(module, particle_k) on a torch module built from base.safetensors
    (linear layers under the file's names): no missing-key warning, the model's LoRA
    parameters are exactly the file's keys with exactly the file's values (from_pretrained is
    not strict: unexpected keys are dropped silently and missing ones keep their random init),
    the wrapped modules are exactly target_modules, scaling = lora_alpha / r. PEFT's own
    save_pretrained of the loaded model writes the same tensor names and values.
 6. the loaded PeftModel's logits on x, in float64 (module and adapters cast with .double()
    after the load check), match PRED's logits[k]: ||d|| / ||ref|| <= 1e-5 and
    max|d| <= 1e-5 * max|ref|; the same float64 forward written out by hand
    (x W0^T + b + (alpha/r) x A^T B^T, activation between layers) agrees with PEFT's to 1e-12,
    so a silently disabled adapter cannot pass.
 7. probs, entropy, expected_entropy, mutual_info in PRED match a float64 NumPy computation
    from PRED's logits (mean softmax over particles; its entropy in nats; the mean of the
    particles' entropies; their difference): max|d| <= 1e-5 * scale, scale = 1 for probs and
    max(1, max entropy) for the three entropies, and ||d|| / ||ref|| <= 1e-5 for probs,
    entropy and expected_entropy.
"""
import argparse
import json
import math
import os
import re
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

TOL = 1e-5
PREFIX = "base_model.model."

failures = []


def fail(msg):
    failures.append(msg)
    print(f"check_peft: FAIL: {msg}", file=sys.stderr)


class Fatal(Exception):
    pass


def read_st(path):
    """All tensors (as torch tensors, original dtype) and the header metadata."""
    try:
        with safe_open(path, "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - any reader error is a failed check
        raise Fatal(f"{path}: cannot read safetensors ({e})")


def parse_layers(tensors, path):
    """[(name, weight, bias or None)] in increasing layer number, by bella's model-file rules."""
    stem, layers = None, {}
    for key, t in tensors.items():
        if key.endswith(".weight"):
            module, kind = key[: -len(".weight")], "w"
        elif key.endswith(".bias"):
            module, kind = key[: -len(".bias")], "b"
        else:
            raise Fatal(f"{path}: tensor `{key}` is not `<stem><n>.weight` or `<stem><n>.bias`")
        m = re.fullmatch(r"(.*?)(\d+)", module)
        if not m:
            raise Fatal(f"{path}: tensor `{key}`: `{module}` does not end in a layer number")
        if stem is None:
            stem = m.group(1)
        elif stem != m.group(1):
            raise Fatal(f"{path}: layers under two stems `{stem}` and `{m.group(1)}`")
        n = int(m.group(2))
        entry = layers.setdefault(n, {"name": module})
        if entry["name"] != module:
            raise Fatal(f"{path}: `{entry['name']}` and `{module}` are both layer {n}")
        entry[kind] = t
    out = []
    for n in sorted(layers):
        e = layers[n]
        if "w" not in e:
            raise Fatal(f"{path}: layer `{e['name']}` has a bias but no weight")
        w, b = e["w"], e.get("b")
        if w.dim() != 2:
            raise Fatal(f"{path}: `{e['name']}.weight` has shape {list(w.shape)}, not 2-D")
        if b is not None and list(b.shape) != [w.shape[0]]:
            raise Fatal(f"{path}: `{e['name']}.bias` has shape {list(b.shape)}, not [{w.shape[0]}]")
        if out and out[-1][1].shape[0] != w.shape[1]:
            raise Fatal(f"{path}: `{e['name']}` takes {w.shape[1]} inputs, the layer before gives {out[-1][1].shape[0]}")
        out.append((e["name"], w, b))
    if not out:
        raise Fatal(f"{path}: no layers")
    return out


class Mlp(nn.Module):
    """nn.Linear layers registered under the base file's dotted names (`0`, `net.4`, `fc1`),
    so PEFT addresses them as `base_model.model.<name>`; the activation after every layer
    but the last. Layers are looked up by name at every call, so PEFT's wrapped ones are used."""

    def __init__(self, layers, activation):
        super().__init__()
        self.layer_names = [name for name, _, _ in layers]
        self.activation = activation
        for name, w, b in layers:
            parent = self
            parts = name.split(".")
            if any(p == "" for p in parts):
                raise Fatal(f"layer name `{name}` has an empty part")
            for p in parts[:-1]:
                if p not in parent._modules:
                    parent.add_module(p, nn.Module())
                parent = parent._modules[p]
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            with torch.no_grad():
                lin.weight.copy_(w.float())
                if b is not None:
                    lin.bias.copy_(b.float())
            parent.add_module(parts[-1], lin)

    def forward(self, x):
        for n, name in enumerate(self.layer_names):
            x = self.get_submodule(name)(x)
            if n + 1 < len(self.layer_names):
                x = F.relu(x) if self.activation == "relu" else F.gelu(x, approximate="tanh")
        return x


def hand_forward(layers, activation, adapters, scale, x):
    """float64 LoRA forward from the raw tensors, independent of PEFT."""
    h = x.double()
    for n, (name, w, b) in enumerate(layers):
        y = h @ w.double().T
        if b is not None:
            y = y + b.double()
        if name in adapters:
            a, bb = adapters[name]
            y = y + scale * (h @ a.double().T) @ bb.double().T
        h = y
        if n + 1 < len(layers):
            h = torch.relu(h) if activation == "relu" else F.gelu(h, approximate="tanh")
    return h


def compare(what, got, ref, tol=TOL, scale=None, normwise=True):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        fail(f"{what}: shape {list(got.shape)}, expected {list(ref.shape)}")
        return
    if not np.all(np.isfinite(got)):
        fail(f"{what}: non-finite values")
        return
    d = got - ref
    maxref = float(np.max(np.abs(ref))) if ref.size else 0.0
    s = maxref if scale is None else scale
    maxd = float(np.max(np.abs(d))) if d.size else 0.0
    msg = f"{what}: max|d| {maxd:.2e} (scale {s:.3g})"
    if normwise:
        nref = float(np.linalg.norm(ref))
        rel = float(np.linalg.norm(d)) / nref if nref > 0 else float(np.linalg.norm(d))
        msg += f", ||d||/||ref|| {rel:.2e}"
        if rel > tol:
            fail(f"{what}: norm-wise relative error {rel:.3e} > {tol:g}")
    if maxd > tol * s:
        i = np.unravel_index(np.argmax(np.abs(d)), d.shape)
        fail(f"{what}: element {list(map(int, i))} is {got[i]!r}, expected {ref[i]!r} (max|d| {maxd:.3e} > {tol:g} * {s:.3g})")
    print(f"  {msg}")


# Config fields that change the LoRA math away from y = x W0^T + b + (alpha/r) x A^T B^T,
# with the values that leave it alone (absent is fine too).
NEUTRAL = {
    "use_rslora": [False],
    "use_dora": [False],
    "fan_in_fan_out": [False],
    "lora_bias": [False],
    "rank_pattern": [{}, None],
    "alpha_pattern": [{}, None],
    "modules_to_save": [None, []],
    "layers_to_transform": [None],
    "target_parameters": [None, []],
    "exclude_modules": [None, []],
}


def check_config(cfg, path, layer_names, args):
    """The config fields the export promises; returns (r, alpha, targets) or raises Fatal."""
    def need(key):
        if key not in cfg:
            raise Fatal(f"{path}: no `{key}`")
        return cfg[key]

    if need("peft_type") != "LORA":
        fail(f"{path}: peft_type {cfg['peft_type']!r}, expected \"LORA\"")
    r = need("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise Fatal(f"{path}: r = {r!r} is not a positive integer")
    alpha = need("lora_alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise Fatal(f"{path}: lora_alpha = {alpha!r} is not a number")
    targets = need("target_modules")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        # A string would be a regex to PEFT, not a list of names.
        raise Fatal(f"{path}: target_modules = {targets!r} is not a list of layer names")
    if len(set(targets)) != len(targets) or not targets:
        fail(f"{path}: target_modules {targets} is empty or repeats a name")
    unknown = [t for t in targets if t not in layer_names]
    if unknown:
        raise Fatal(f"{path}: target_modules {unknown} are not layers of base.safetensors {layer_names}")
    if need("bias") != "none":
        fail(f"{path}: bias {cfg['bias']!r}, expected \"none\"")
    if need("lora_dropout") != 0:
        fail(f"{path}: lora_dropout {cfg['lora_dropout']!r}, expected 0.0")
    for key, ok in NEUTRAL.items():
        if key in cfg and cfg[key] not in ok:
            fail(f"{path}: {key} = {cfg[key]!r} changes the LoRA math (expected one of {ok} or absent)")
    if args.r is not None and r != args.r:
        fail(f"{path}: r = {r}, the run asked for {args.r}")
    if args.alpha is not None and float(alpha) != args.alpha:
        fail(f"{path}: lora_alpha = {alpha}, the run asked for {args.alpha}")
    if args.targets is not None and set(targets) != set(args.targets.split(",")):
        fail(f"{path}: target_modules {sorted(targets)}, the run asked for {sorted(args.targets.split(','))}")
    return r, alpha, targets


def check_particle(k, pdir, layers, activation, x, pred_logits):
    from peft import LoraConfig, PeftModel
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import load_file

    print(f"particle_{k}:")
    layer_names = [n for n, _, _ in layers]
    shapes = {n: tuple(w.shape) for n, w, _ in layers}
    cpath = os.path.join(pdir, "adapter_config.json")
    mpath = os.path.join(pdir, "adapter_model.safetensors")
    for p in (cpath, mpath):
        if not os.path.isfile(p):
            raise Fatal(f"{p} is missing")
    try:
        with open(cpath) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise Fatal(f"{cpath}: not JSON ({e})")
    r, alpha, targets = check_config(cfg, cpath, layer_names, ARGS)

    try:
        pc = LoraConfig.from_pretrained(pdir)
    except Exception as e:  # noqa: BLE001
        raise Fatal(f"{cpath}: PEFT's LoraConfig.from_pretrained rejects it ({e})")
    if pc.r != r or float(pc.lora_alpha) != float(alpha) or set(pc.target_modules) != set(targets):
        fail(f"{cpath}: PEFT reads r {pc.r}, alpha {pc.lora_alpha}, targets {pc.target_modules}")

    saved, _ = read_st(mpath)
    want = {}
    for t in targets:
        o, i = shapes[t]
        want[f"{PREFIX}{t}.lora_A.weight"] = (r, i)
        want[f"{PREFIX}{t}.lora_B.weight"] = (o, r)
    keys_ok = set(saved) == set(want)
    if not keys_ok:
        fail(f"{mpath}: keys {sorted(saved)}; PEFT's save_pretrained writes exactly {sorted(want)}")
    for key, t in saved.items():
        if key in want and tuple(t.shape) != want[key]:
            raise Fatal(f"{mpath}: `{key}` has shape {list(t.shape)}, expected {list(want[key])}")
        if t.dtype != torch.float32:
            fail(f"{mpath}: `{key}` is {t.dtype}, PEFT writes an f32 module's adapters as F32")
        if not torch.isfinite(t).all():
            fail(f"{mpath}: `{key}` has non-finite values")

    module = Mlp(layers, activation).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pm = PeftModel.from_pretrained(module, pdir)
        except Exception as e:  # noqa: BLE001
            raise Fatal(f"{pdir}: PeftModel.from_pretrained fails ({type(e).__name__}: {e})")
    for w in caught:
        msg = str(w.message)
        if "missing adapter keys" in msg:
            fail(f"{pdir}: PEFT did not load every LoRA weight: {msg}")
        elif "unexpected keyword arguments" in msg.lower():
            fail(f"{cpath}: fields PEFT {__import__('peft').__version__}'s LoraConfig does not know (PEFT warns on load): {msg[:200]}")
    pm.eval()

    # The loaded LoRA parameters, under the file's names, against the file.
    params = {}
    for n, p in pm.named_parameters():
        if "lora_" in n:
            params[n.replace(".default.", ".", 1)] = p.detach()
    if set(params) != set(saved):
        fail(f"{pdir}: PEFT's model has LoRA parameters {sorted(params)}, the file {sorted(saved)}")
    for key, t in saved.items():
        if key in params and not torch.equal(params[key], t.float()):
            fail(f"{pdir}: `{key}` in the loaded model differs from the file (not loaded)")
    wrapped = {}
    for n, m in pm.named_modules():
        if isinstance(m, LoraLayer):
            wrapped[n[len(PREFIX):] if n.startswith(PREFIX) else n] = m
    if sorted(wrapped) != sorted(targets):
        fail(f"{pdir}: PEFT wrapped {sorted(wrapped)}, target_modules is {sorted(targets)}")
    for n, m in wrapped.items():
        s = m.scaling.get("default")
        if s is None or abs(s - float(alpha) / r) > 1e-12 * max(1.0, abs(float(alpha) / r)):
            fail(f"{pdir}: `{n}` scaling {s}, expected lora_alpha / r = {float(alpha) / r}")

    # PEFT's own writer on what it loaded gives the same file contents.
    with tempfile.TemporaryDirectory() as tmp:
        pm.save_pretrained(tmp)
        resaved = load_file(os.path.join(tmp, "adapter_model.safetensors"))
    if set(resaved) != set(saved):
        fail(f"{pdir}: PEFT's save_pretrained writes {sorted(resaved)}, the export has {sorted(saved)}")
    else:
        for key in saved:
            if resaved[key].dtype != saved[key].dtype or not torch.equal(resaved[key], saved[key]):
                fail(f"{pdir}: `{key}` differs between the export and PEFT's save_pretrained")

    if not keys_ok:
        raise Fatal(f"{pdir}: logits not compared, the adapter's keys are wrong")

    # Logits in float64 against bella's.
    pm = pm.double()
    with torch.no_grad():
        z = pm(x.double())
    adapters = {t: (saved[f"{PREFIX}{t}.lora_A.weight"], saved[f"{PREFIX}{t}.lora_B.weight"]) for t in targets}
    with torch.no_grad():
        zh = hand_forward(layers, activation, adapters, float(alpha) / r, x)
    if z.dtype != torch.float64:
        fail(f"{pdir}: PEFT's forward ran in {z.dtype}, not float64")
    e = float((z - zh).norm() / zh.norm().clamp_min(1e-300))
    if e > 1e-12:
        fail(f"{pdir}: PEFT's float64 forward and the hand-written LoRA forward differ ({e:.2e})")
    compare(f"particle_{k} logits (bella predict vs PEFT)", pred_logits, z.numpy())
    return z.numpy()


def ensemble_stats(logits):
    """float64: probs = mean softmax, entropy of probs, mean entropy, their difference (nats)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    lp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    p = np.exp(lp)
    ent_k = -(p * lp).sum(axis=-1)  # [K, N]
    probs = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=-1)
    exp_ent = ent_k.mean(axis=0)
    return probs, ent, exp_ent, ent - exp_ent


def main(argv):
    global ARGS
    ap = argparse.ArgumentParser(prog="check_peft.py")
    ap.add_argument("export_dir")
    ap.add_argument("x")
    ap.add_argument("pred")
    ap.add_argument("--base")
    ap.add_argument("--particles", type=int)
    ap.add_argument("--r", type=int)
    ap.add_argument("--alpha", type=float)
    ap.add_argument("--targets")
    ARGS = ap.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors; the Rust tests run several checks at once
    print(f"check_peft: torch {torch.__version__}, peft {__import__('peft').__version__}; reference forward in float64")

    bpath = os.path.join(ARGS.export_dir, "base.safetensors")
    base, meta = read_st(bpath)
    activation = meta.get("activation")
    if activation not in ("relu", "gelu"):
        raise Fatal(f"{bpath}: metadata activation {activation!r}, expected \"relu\" or \"gelu\"")
    layers = parse_layers(base, bpath)
    print(f"base: {[(n, list(w.shape), b is not None) for n, w, b in layers]}, {activation}")
    if ARGS.base:
        orig, ometa = read_st(ARGS.base)
        if sorted(orig) != sorted(base):
            fail(f"{bpath}: tensors {sorted(base)}, the original {ARGS.base} has {sorted(orig)}")
        for key in orig:
            if key in base and (orig[key].shape != base[key].shape or not torch.equal(orig[key].double(), base[key].double())):
                fail(f"{bpath}: `{key}` differs from the original base")
        if ometa.get("activation", "relu") != activation:
            fail(f"{bpath}: activation {activation}, the original's is {ometa.get('activation', 'relu')}")

    pdirs = {}
    for e in os.listdir(ARGS.export_dir):
        m = re.fullmatch(r"particle_(\d+)", e)
        if m and os.path.isdir(os.path.join(ARGS.export_dir, e)):
            pdirs[int(m.group(1))] = os.path.join(ARGS.export_dir, e)
    k_count = len(pdirs)
    if sorted(pdirs) != list(range(k_count)) or k_count == 0:
        raise Fatal(f"{ARGS.export_dir}: particle directories {sorted(pdirs)}, expected particle_0 ... particle_{{K-1}}")
    if ARGS.particles is not None and k_count != ARGS.particles:
        fail(f"{ARGS.export_dir}: {k_count} particles, the run had {ARGS.particles}")

    xs, _ = read_st(ARGS.x)
    if "x" not in xs:
        raise Fatal(f"{ARGS.x}: no tensor `x`")
    x = xs["x"].float()
    pred, _ = read_st(ARGS.pred)
    n, i = x.shape
    c = layers[-1][1].shape[0]
    shapes = {"logits": [k_count, n, c], "probs": [n, c], "entropy": [n], "expected_entropy": [n], "mutual_info": [n]}
    for key, shape in shapes.items():
        if key not in pred:
            raise Fatal(f"{ARGS.pred}: no tensor `{key}`")
        if list(pred[key].shape) != shape:
            raise Fatal(f"{ARGS.pred}: `{key}` has shape {list(pred[key].shape)}, expected {shape}")
        if pred[key].dtype != torch.float32:
            fail(f"{ARGS.pred}: `{key}` is {pred[key].dtype}, expected f32")
    if i != layers[0][1].shape[1]:
        raise Fatal(f"{ARGS.x}: x has {i} features, the base takes {layers[0][1].shape[1]}")

    logits = pred["logits"].double().numpy()
    for k in range(k_count):
        try:
            check_particle(k, pdirs[k], layers, activation, x, logits[k])
        except Fatal as e:
            fail(str(e))

    print("ensemble stats (PRED vs NumPy from PRED's logits):")
    probs, ent, exp_ent, mi = ensemble_stats(logits)
    s = max(1.0, float(np.max(np.abs(ent))), float(np.max(np.abs(exp_ent))))
    compare("probs", pred["probs"].double().numpy(), probs, scale=1.0)
    compare("entropy", pred["entropy"].double().numpy(), ent, scale=s)
    compare("expected_entropy", pred["expected_entropy"].double().numpy(), exp_ent, scale=s)
    compare("mutual_info", pred["mutual_info"].double().numpy(), mi, scale=s, normwise=False)


def run(argv):
    """All checks on argv (the command line without the program name); the failures found."""
    failures.clear()
    try:
        main(argv)
    except Fatal as e:
        fail(str(e))
    return list(failures)


ARGS = None

if __name__ == "__main__":
    if run(sys.argv[1:]):
        print(f"check_peft: {len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("check_peft: all checks passed")
