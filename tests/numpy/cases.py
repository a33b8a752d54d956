"""The cases check_ops.py runs: inputs for every op, in the dtypes other tools write.

A case is (op, label, tensors, metadata). Tensors are NumPy arrays in their storage dtype
or `BF16` wrappers; the reference sees exactly the values the file holds. `Sizes` picks the
shapes: full ones go past common tiles (64, 128, 256); `--small` keeps them past one tile
but cheap enough for the PTX simulator.
"""
from dataclasses import dataclass, field

import numpy as np

import reference
from safetensors_io import BF16


@dataclass
class Case:
    op: str
    label: str
    tensors: dict
    metadata: dict = field(default=None)
    args: list = field(default_factory=list)  # extra `bella op` arguments (--dtype D)
    ref_tensors: dict = field(default=None)  # what the reference sees, if not the file's values
    expect: dict = field(default=None)  # the reference outputs, if not reference.OPS[op]
    tol: float = field(default=None)  # overrides --tol (0: exact)


class Sizes:
    def __init__(self, small):
        # m (rows), o (outputs), i (inputs), d (arena width), big k (many particles)
        if small:
            self.m, self.o, self.i, self.d, self.kbig = 37, 67, 70, 129, 33
        else:
            self.m, self.o, self.i, self.d, self.kbig = 67, 129, 300, 300, 67
        self.huge = not small


def _cast(a, dt):
    return BF16(a) if dt == "bf16" else np.asarray(a, dtype=dt)


def _rounder(dt):
    """float64 values -> the values of their rounding to dt (through f32, as bella's f32
    accumulation then rounds)."""
    if dt == "bf16":
        return lambda v: BF16(np.asarray(v, np.float32)).values.astype(np.float64)
    return lambda v: np.asarray(v, np.float32).astype(np.float16).astype(np.float64)


def _x_nonzero(a):
    """Keep activations off relu's kink at 0, where the derivative is a convention."""
    a = np.array(a)
    a[np.abs(a) < 1e-2] = 0.5
    return a


def lora_cases(rng, s):
    n = rng.standard_normal
    out = []
    plans = [  # (label, K, M, O, I, r, shared x, bias, float dtype)
        ("shared x, past tiles, bias", 3, s.m, s.o, s.i, 8, True, True, np.float32),
        ("per-particle x, past tiles", 3, s.m, s.o, s.i, 5, False, False, np.float32),
        ("K=1 r=1 M=1, bias", 1, 1, 7, 9, 1, True, True, np.float32),
        ("K=1 r=1 M=1, per-particle", 1, 1, 5, 3, 1, False, False, np.float64),
        ("odd sizes f16", 2, 5, 17, 33, 3, True, False, np.float16),
        ("odd sizes f64 per-particle bias", 4, 3, 11, 13, 2, False, True, np.float64),
        ("bf16 shared bias", 2, 9, 19, 40, 4, True, True, "bf16"),
        ("bf16 per-particle", 3, 11, 24, 16, 8, False, False, "bf16"),
    ]
    for label, k, m, o, i, r, shared, bias, dt in plans:
        x = n((m, i)) if shared else n((k, m, i))
        t = {"x": x, "weight": n((o, i)) / np.sqrt(i), "lora_a": n((k, r, i)) / np.sqrt(i),
             "lora_b": n((k, o, r)), "scale": np.array(16.0 / r)}
        if bias:
            t["bias"] = n(o)
        fw = {kk: _cast(v, dt) for kk, v in t.items() if kk != "scale"}
        fw["scale"] = np.array(t["scale"], np.float32 if dt != np.float64 else np.float64)
        out.append(Case("lora_forward", label, fw))
        bw = {kk: v for kk, v in fw.items() if kk != "bias"}
        bw["dy"] = _cast(n((k, m, o)), dt)
        bw["h"] = _cast(n((k, m, r)), dt)
        bw_label = label.replace(", bias", "").replace(" bias", "")
        expect = None
        if dt in ("bf16", np.float16):
            # All six inputs 16-bit: the autocast contract, g (and a shared x's dy sum)
            # rounded once to the type, in the reference as in bella.
            rnd = _rounder(dt)
            vals = {kk: (v.values if isinstance(v, BF16) else v) for kk, v in bw.items()}
            expect = reference.lora_backward_rounded(vals, rnd)
            bw_label += ", 16-bit dy and h (rounded g)"
        out.append(Case("lora_backward", bw_label, bw, expect=expect))
    # Mixed dtypes in one file, scale as a 1-element tensor, PyTorch's metadata.
    t = {"x": n((4, 6)).astype(np.float16), "weight": n((5, 6)).astype(np.float64),
         "bias": n(5).astype(np.float32), "lora_a": n((2, 3, 6)).astype(np.float32),
         "lora_b": n((2, 5, 3)).astype(np.float16), "scale": np.array([0.5], np.float64)}
    out.append(Case("lora_forward", "mixed dtypes, 1-element scale", t, {"format": "pt"}))
    # f32 files, `--dtype`: bella rounds x, weight, lora_a, lora_b on the device (`cast`, bias
    # stays f32), the reference rounds them in NumPy.
    t = {"x": n((s.m, 24)), "weight": n((s.o, 24)) / 5, "bias": n(s.o),
         "lora_a": n((3, 4, 24)) / 5, "lora_b": n((3, s.o, 4)), "scale": np.array(2.0)}
    t = {kk: v.astype(np.float32) for kk, v in t.items()}
    for name, rnd in (("bf16", lambda x: BF16(x).values), ("f16", lambda x: x.astype(np.float16))):
        ref = {kk: (rnd(v) if kk in ("x", "weight", "lora_a", "lora_b") else v) for kk, v in t.items()}
        out.append(Case("lora_forward", f"f32 file, --dtype {name}", t, args=["--dtype", name],
                        ref_tensors=ref))
        bw = {kk: v for kk, v in t.items() if kk != "bias"}
        bw["dy"], bw["h"] = n((3, s.m, s.o)).astype(np.float32), n((3, s.m, 4)).astype(np.float32)
        ref = {kk: v for kk, v in ref.items() if kk != "bias"}
        ref["dy"], ref["h"] = bw["dy"], bw["h"]
        out.append(Case("lora_backward", f"f32 file, --dtype {name}", bw, args=["--dtype", name],
                        ref_tensors=ref))
    return out


def matmul_cases(rng, s):
    n = rng.standard_normal
    out = []
    m, k, p = s.m, s.i, s.o  # c is [m, p], inner k
    flag_types = [np.uint8, np.int64, np.int32, np.bool_, np.float32]
    i = 0
    for ba, bb in ((False, False), (True, False), (False, True), (True, True)):
        for ta in (0, 1):
            for tb in (0, 1):
                kb = 3
                sa = (k, m) if ta else (m, k)
                sb = (p, k) if tb else (k, p)
                a = n(((kb,) if ba else ()) + sa).astype(np.float32)
                b = n(((kb,) if bb else ()) + sb).astype(np.float32)
                ft = flag_types[i % len(flag_types)]
                i += 1
                t = {"a": a, "b": b, "trans_a": np.array(ta, ft), "trans_b": np.array([tb], ft),
                     "alpha": np.array(0.75 if i % 2 else 1.0, np.float64)}
                dims = f"{'3' if ba else '2'}-D x {'3' if bb else '2'}-D"
                out.append(Case("matmul", f"{dims} ta={ta} tb={tb} flags {np.dtype(ft).name}", t))
    one = {"a": n((1, 1, 1)).astype(np.float16), "b": n((1, 1)).astype(np.float16),
           "trans_a": np.array(0, np.int8), "trans_b": np.array(0, np.int8),
           "alpha": np.array(2.0, np.float32)}
    out.append(Case("matmul", "1x1x1 f16", one))
    t = {"a": BF16(n((2, 7, 5))), "b": BF16(n((2, 9, 5))), "trans_a": np.array(0, np.uint8),
         "trans_b": np.array(1, np.uint8), "alpha": np.array(1.5, np.float32)}
    out.append(Case("matmul", "bf16 batched tb=1", t))
    # Both operands one 16-bit type, a·bᵀ with K % 8 == 0: kept 16-bit, tensor cores on PTX.
    for name, wrap in (("bf16", BF16), ("f16", lambda a: a.astype(np.float16))):
        t = {"a": wrap(n((3, m, 40))), "b": wrap(n((p, 40))), "trans_a": np.array(0, np.uint8),
             "trans_b": np.array(1, np.uint8), "alpha": np.array(0.5, np.float32)}
        out.append(Case("matmul", f"{name} a.bT K=40 (tensor cores on PTX)", t))
        t = {"a": wrap(n((m, 24))), "b": wrap(n((24, p))), "trans_a": np.array(0, np.uint8),
             "trans_b": np.array(0, np.uint8), "alpha": np.array(1.0, np.float32)}
        out.append(Case("matmul", f"{name} a.b (widened on the device)", t))
    # f32 files, `--dtype`: bella rounds a and b on the device (`cast`), the reference in NumPy.
    a, b = n((2, m, 32)).astype(np.float32), n((p, 32)).astype(np.float32)
    t = {"a": a, "b": b, "trans_a": np.array(0, np.uint8), "trans_b": np.array(1, np.uint8),
         "alpha": np.array(1.0, np.float32)}
    for name, rnd in (("bf16", lambda x: BF16(x).values), ("f16", lambda x: x.astype(np.float16))):
        ref = dict(t, a=rnd(a), b=rnd(b))
        out.append(Case("matmul", f"f32 file, --dtype {name}", t, args=["--dtype", name], ref_tensors=ref))
    return out


def cast_cases(rng, s):
    """`bella op cast --dtype D`: round to nearest even (ties, subnormals), exact widening.
    The reference rounds with NumPy (float16) and BF16's own bit arithmetic."""
    n = rng.standard_normal
    ties = [1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2.0 ** -25,
            3 * 2.0 ** -25, 0.75 * 2.0 ** -14, 65504.0, 65519.0, -0.0, 0.0, 1e-40]
    x = np.concatenate([np.array(ties), n(s.m * 3) * 10.0 ** rng.integers(-8, 4, s.m * 3)])
    x = x.astype(np.float32)
    out = [Case("cast", "f32 -> bf16 (ties, subnormals)", {"x": x}, args=["--dtype", "bf16"],
                expect={"y": BF16(x).values}, tol=0.0),
           Case("cast", "f32 -> f16 (ties, subnormals)", {"x": x[: x.size - 1]}, args=["--dtype", "f16"],
                expect={"y": x[: x.size - 1].astype(np.float16).astype(np.float32)}, tol=0.0)]
    h = BF16(n((3, 7)))
    out.append(Case("cast", "bf16 -> f32 (exact)", {"x": h}, args=["--dtype", "f32"],
                    expect={"y": h.values}, tol=0.0))
    f = (n((5, 3)) * 100).astype(np.float16)
    out.append(Case("cast", "f16 -> bf16 (through f32)", {"x": f}, args=["--dtype", "bf16"],
                    expect={"y": BF16(f.astype(np.float32)).values}, tol=0.0))
    return out


def particle_cases(rng, s):
    """pairwise_sqdist, rbf_kernel, svgd_direction."""
    n = rng.standard_normal
    out = []
    thetas = [("K=1", n((1, 9))), ("K=5 D past tile", n((5, s.d))),
              ("many particles", n((s.kbig, 129)) * 0.3), ("K=2 D=1", n((2, 1)))]
    for label, th in thetas:
        out.append(Case("pairwise_sqdist", label, {"theta": th.astype(np.float32)}))
    # Far from the origin: ‖a‖²+‖b‖²−2a·b would lose every digit; differences keep them.
    far = 100.0 + 0.01 * n((6, 64))
    out.append(Case("pairwise_sqdist", "far from origin (cancellation)", {"theta": far.astype(np.float32)}))
    out.append(Case("pairwise_sqdist", "f16", {"theta": n((4, 33)).astype(np.float16)}))
    out.append(Case("pairwise_sqdist", "bf16", {"theta": BF16(n((3, 21)))}))
    # rbf: pair counts K(K-1)/2: K=3 -> 3 (odd), K=4 -> 6 (even), K=6 -> 15 (odd), K=5 -> 10 (even)
    for k, d in ((1, 4), (2, 7), (3, 11), (4, s.d), (5, 3), (6, 40), (s.kbig, 17)):
        out.append(Case("rbf_kernel", f"median, K={k} ({k * (k - 1) // 2} pairs)",
                        {"theta": n((k, d)).astype(np.float32)}))
    out.append(Case("rbf_kernel", "median of zeros -> h=1", {"theta": np.ones((4, 5), np.float32)}))
    out.append(Case("rbf_kernel", "bandwidth 0-d f64", {"theta": n((5, 30)).astype(np.float32),
                                                          "bandwidth": np.array(7.5)}))
    out.append(Case("rbf_kernel", "bandwidth [1] f32, f16 theta", {"theta": n((4, 8)).astype(np.float16),
                                                                   "bandwidth": np.array([3.0], np.float32)}))
    for label, k, d in (("K=1", 1, 5), ("K=5 D past tile", 5, s.d), ("many particles", s.kbig, 65)):
        th = n((k, d))
        diff = th[:, None] - th[None]
        kern = np.exp(-(diff ** 2).sum(-1) / d)
        t = {"theta": th, "score": n((k, d)), "kernel": kern, "bandwidth": np.array(float(d))}
        out.append(Case("svgd_direction", label, {a: np.asarray(b, np.float32) for a, b in t.items()}))
    # The contract sums k_ji: an asymmetric kernel tells k_ji from k_ij.
    t = {"theta": n((4, 9)), "score": n((4, 9)), "kernel": rng.uniform(0.1, 1, (4, 4)),
         "bandwidth": np.array([0.8])}
    out.append(Case("svgd_direction", "asymmetric kernel (k_ji, not k_ij)",
                    {a: np.asarray(b, np.float32) for a, b in t.items()}))
    t = {"theta": BF16(n((3, 10))), "score": n((3, 10)).astype(np.float16),
         "kernel": BF16(rng.uniform(0.1, 1, (3, 3))), "bandwidth": np.array(2.0, np.float64)}
    out.append(Case("svgd_direction", "bf16/f16 mixed", t))
    return out


def adamw_cases(rng, s):
    n = rng.standard_normal
    out = []
    plans = [("[K,D] past tile, step int64", (3, s.d), np.array(1, np.int64), np.float32),
             ("1 element, step int32", (1, 1), np.array([7], np.int32), np.float32),
             ("many rows, step u16 1000", (s.kbig, 129), np.array(1000, np.uint16), np.float32),
             ("f64, step as float 3.0", (2, 17), np.array(3.0, np.float64), np.float64),
             ("1-D, step uint8", (45,), np.array(2, np.uint8), np.float16)]
    for label, shape, step, dt in plans:
        t = {"param": n(shape), "grad": n(shape), "m": 0.1 * n(shape), "v": 0.01 * rng.uniform(size=shape)}
        t = {a: b.astype(dt) for a, b in t.items()}
        t.update(lr=np.array(1e-2, np.float32), beta1=np.array(0.9, np.float32),
                 beta2=np.array([0.999], np.float64), eps=np.array(1e-8, np.float32),
                 weight_decay=np.array(0.05, np.float32), step=step)
        out.append(Case("adamw_step", label, t))
    # svgd_step: the fused PTX kernel (K <= 64) and the two ops past it; m, v non-zero and
    # steps past the first (at step 1 from zeros AdamW moves by lr * sign(g)).
    for label, k, d, step in (("K=1", 1, 5, 2), ("K=5 D past tile", 5, s.d, 3),
                              ("many particles", s.kbig, 65, 10), ("K=80 two ops", 80, 9, 4)):
        th = 0.3 * n((k, d))
        diff = th[:, None] - th[None]
        kern = np.exp(-(diff ** 2).sum(-1) / d)
        t = {"theta": th, "score": n((k, d)), "kernel": kern, "m": 0.1 * n((k, d)),
             "v": 0.01 + 0.1 * rng.uniform(size=(k, d))}
        t = {a: np.asarray(b, np.float32) for a, b in t.items()}
        t.update(bandwidth=np.array(float(d), np.float32), grad_scale=np.array(-0.25, np.float32),
                 lr=np.array(1e-2, np.float32), beta1=np.array(0.9, np.float32),
                 beta2=np.array(0.999, np.float32), eps=np.array(1e-8, np.float32),
                 weight_decay=np.array(0.0, np.float32), step=np.array(step, np.int64))
        out.append(Case("svgd_step", label, t))
    return out


def activation_cases(rng, s):
    n = rng.standard_normal
    out = []
    for label, shape, dt in (("1 element", (1,), np.float32), ("2-D past tile", (s.m, s.o), np.float32),
                             ("3-D odd", (3, 5, 7), np.float64), ("f16 wide range", (9, 31), np.float16),
                             ("bf16", (4, 13), "bf16")):
        x = _x_nonzero(n(shape) * (4 if "wide" in label else 1.5))
        dy = n(shape)
        for act in ("relu", "gelu"):
            out.append(Case(f"{act}_forward", label, {"x": _cast(x, dt)}))
            out.append(Case(f"{act}_backward", label, {"x": _cast(x, dt), "dy": _cast(dy, dt)}))
    if s.huge:
        # Past 65535 workgroups of 256 in one dimension: a 1-D dispatch must fold to 2-D.
        x = _x_nonzero(n(65535 * 256 + 3).astype(np.float32))
        out.append(Case("gelu_forward", "past 65535x256 elements", {"x": x}))
        out.append(Case("relu_backward", "past 65535x256 elements", {"x": x, "dy": n(x.size).astype(np.float32)}))
    return out


def classify_cases(rng, s):
    n = rng.standard_normal
    out = []
    plans = [("K=1 M=1 C=2, labels int64", 1, 1, 2, np.int64, 1.0),
             ("past tiles, labels int32", 3, s.m, s.o, np.int32, 2.0),
             ("wide C, labels int16", 2, 5, 300 if s.o > 100 else 150, np.int16, 2.0),
             ("large logits, labels uint8", 2, 7, 10, np.uint8, 1000.0),
             ("K=4, labels as f32 integral", 4, 3, 5, np.float32, 1.0)]
    for label, k, m, c, lt, scale in plans:
        z = (n((k, m, c)) * scale).astype(np.float32)
        labels = rng.integers(0, c, m)
        labels[0] = c - 1  # the last class is a valid label
        out.append(Case("softmax_xent", label, {"logits": z, "labels": labels.astype(lt)}))
        if scale > 100:
            # Sharp softmaxes have entropies below f32's reach; test stability by a shift.
            z = (n((k, m, c)) * 2 + 1000).astype(np.float32)
        out.append(Case("ensemble_stats", label.split(",")[0], {"logits": z}))
    out.append(Case("softmax_xent", "f16 logits, u64 labels",
                    {"logits": n((2, 4, 6)).astype(np.float16), "labels": np.array([0, 5, 2, 3], np.uint64)}))
    out.append(Case("ensemble_stats", "bf16", {"logits": BF16(n((3, 4, 6)) * 2)}))
    return out


def all_cases(rng, small):
    s = Sizes(small)
    out = []
    for f in (lora_cases, matmul_cases, cast_cases, particle_cases, adamw_cases, activation_cases,
              classify_cases):
        out += f(rng, s)
    return out
