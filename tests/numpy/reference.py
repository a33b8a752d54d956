"""Float64 NumPy reference of the ten ops of DESIGN.md, written from the spec alone.

Each function takes a dict of named input arrays (any dtype; converted to float64 or
int here) and returns a dict of named outputs, with the contract's names. Used by
check_ops.py to cross-check `bella op`; run this file to self-test it.
"""
import math

import numpy as np

F = np.float64


def _f(a):
    return np.asarray(a, dtype=F)


def _scalar(a):
    a = np.asarray(a)
    assert a.size == 1, f"scalar with shape {a.shape}"
    return a.reshape(()).item()


def _batch(x, k):
    """x shared [M,I] -> broadcast [K,M,I]; per-particle stays."""
    x = _f(x)
    return np.broadcast_to(x, (k,) + x.shape) if x.ndim == 2 else x


def lora_forward(t):
    a, b = _f(t["lora_a"]), _f(t["lora_b"])
    w, s = _f(t["weight"]), F(_scalar(t["scale"]))
    x = _batch(t["x"], a.shape[0])
    h = np.einsum("kmi,kri->kmr", x, a)
    y = np.einsum("kmi,oi->kmo", x, w) + s * np.einsum("kmr,kor->kmo", h, b)
    if "bias" in t:
        y = y + _f(t["bias"])
    return {"y": y, "h": h}


def lora_backward(t):
    a, b, w = _f(t["lora_a"]), _f(t["lora_b"]), _f(t["weight"])
    dy, h, s = _f(t["dy"]), _f(t["h"]), F(_scalar(t["scale"]))
    shared = np.asarray(t["x"]).ndim == 2
    x = _batch(t["x"], a.shape[0])
    g = np.einsum("kmo,kor->kmr", dy, b)
    d_b = s * np.einsum("kmo,kmr->kor", dy, h)
    d_a = s * np.einsum("kmr,kmi->kri", g, x)
    dx = np.einsum("kmo,oi->kmi", dy, w) + s * np.einsum("kmr,kri->kmi", g, a)
    if shared:
        dx = dx.sum(axis=0)
    return {"dx": dx, "d_lora_a": d_a, "d_lora_b": d_b}


def lora_backward_rounded(t, rnd):
    """lora_backward with all six inputs in one 16-bit type (bella's autocast contract): g
    rounded once to the type (`rnd`), and for a shared x the dy sum rounded once; the rest
    is the float64 math."""
    a, b, w = _f(t["lora_a"]), _f(t["lora_b"]), _f(t["weight"])
    dy, h, s = _f(t["dy"]), _f(t["h"]), F(_scalar(t["scale"]))
    shared = np.asarray(t["x"]).ndim == 2
    x = _batch(t["x"], a.shape[0])
    g = rnd(np.einsum("kmo,kor->kmr", dy, b))
    d_b = s * np.einsum("kmo,kmr->kor", dy, h)
    d_a = s * np.einsum("kmr,kmi->kri", g, x)
    rank = s * np.einsum("kmr,kri->kmi", g, a)
    if shared:
        dys = dy.sum(axis=0) if dy.shape[0] == 1 else rnd(dy.sum(axis=0))
        dx = dys @ w + rank.sum(axis=0)
    else:
        dx = np.einsum("kmo,oi->kmi", dy, w) + rank
    return {"dx": dx, "d_lora_a": d_a, "d_lora_b": d_b}


def matmul(t):
    a, b = _f(t["a"]), _f(t["b"])
    ta, tb = int(_scalar(t["trans_a"])), int(_scalar(t["trans_b"]))
    alpha = F(_scalar(t.get("alpha", 1.0)))
    oa = np.swapaxes(a, -1, -2) if ta else a
    ob = np.swapaxes(b, -1, -2) if tb else b
    return {"c": alpha * np.matmul(oa, ob)}  # matmul broadcasts a shared 2-D side


def pairwise_sqdist(t):
    th = _f(t["theta"])
    diff = th[:, None, :] - th[None, :, :]
    return {"sqdist": (diff * diff).sum(axis=-1)}


def median_bandwidth(d):
    k = d.shape[0]
    iu = np.triu_indices(k, 1)
    vals = np.sort(d[iu])
    if vals.size == 0:
        return 1.0
    n = vals.size
    med = vals[n // 2] if n % 2 else 0.5 * (vals[n // 2 - 1] + vals[n // 2])
    h = med / math.log(k + 1)
    return h if (h != 0 and math.isfinite(h)) else 1.0


def rbf_kernel(t):
    d = pairwise_sqdist(t)["sqdist"]
    h = F(_scalar(t["bandwidth"])) if "bandwidth" in t else F(median_bandwidth(d))
    return {"kernel": np.exp(-d / h), "bandwidth": np.array([h])}


def svgd_direction(t):
    th, sc, kern = _f(t["theta"]), _f(t["score"]), _f(t["kernel"])
    h = F(_scalar(t["bandwidth"]))
    k = th.shape[0]
    # phi_i = 1/K sum_j k_ji score_j + (2/h) k_ji (theta_i - theta_j)
    drive = kern.T @ sc
    ksum = kern.sum(axis=0)  # sum_j k_ji
    repulse = (2.0 / h) * (ksum[:, None] * th - kern.T @ th)
    return {"phi": (drive + repulse) / k}


def adamw_step(t):
    p, g, m, v = (_f(t[n]) for n in ("param", "grad", "m", "v"))
    lr, b1, b2, eps, wd = (F(_scalar(t[n])) for n in ("lr", "beta1", "beta2", "eps", "weight_decay"))
    step = _scalar(t["step"])
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mh = m / (1 - b1**step)
    vh = v / (1 - b2**step)
    p = p * (1 - lr * wd) - lr * mh / (np.sqrt(vh) + eps)
    return {"param": p, "m": m, "v": v}


def adamw_term_sizes(t):
    """|a| + |b| per element for the outputs that are a difference a - b of two rounded
    terms: `m` = b1·m + (1 − b1)·g and `param` = p·(1 − lr·wd) − lr·m̂/(√v̂ + eps). Where the
    terms cancel, f32 holds the result only to an ulp of the terms, not of itself (one
    element at -2e-5 from terms near 0.1 failed a relative check on wgpu): the checker
    judges these outputs against the terms' size. Without cancellation it is ‖ref‖ itself."""
    p, g, m, v = (_f(t[n]) for n in ("param", "grad", "m", "v"))
    lr, b1, b2, eps, wd = (F(_scalar(t[n])) for n in ("lr", "beta1", "beta2", "eps", "weight_decay"))
    step = _scalar(t["step"])
    m_new = b1 * m + (1 - b1) * g
    v_new = b2 * v + (1 - b2) * g * g
    update = lr * (m_new / (1 - b1**step)) / (np.sqrt(v_new / (1 - b2**step)) + eps)
    return {"m": np.abs(b1 * m) + np.abs((1 - b1) * g), "param": np.abs(p * (1 - lr * wd)) + np.abs(update)}


def svgd_step_term_sizes(t):
    """`adamw_term_sizes` of the AdamW half of `svgd_step` (its `m` and `theta`)."""
    a = {n: t[n] for n in ("m", "v", "lr", "beta1", "beta2", "eps", "weight_decay", "step")}
    a.update(param=t["theta"], grad=F(_scalar(t["grad_scale"])) * svgd_direction(t)["phi"])
    r = adamw_term_sizes(a)
    return {"m": r["m"], "theta": r["param"]}


def svgd_step(t):
    # svgd_direction, then adamw_step with the gradient grad_scale * phi
    phi = svgd_direction(t)["phi"]
    g = F(_scalar(t["grad_scale"])) * phi
    a = {n: t[n] for n in ("m", "v", "lr", "beta1", "beta2", "eps", "weight_decay", "step")}
    a.update(param=t["theta"], grad=g)
    r = adamw_step(a)
    return {"theta": r["param"], "m": r["m"], "v": r["v"]}


def relu_forward(t):
    x = _f(t["x"])
    return {"y": np.where(x > 0, x, 0.0)}


def relu_backward(t):
    x, dy = _f(t["x"]), _f(t["dy"])
    return {"dx": np.where(x > 0, dy, 0.0)}


_C = math.sqrt(2.0 / math.pi)
_A = 0.044715


def gelu_forward(t):
    x = _f(t["x"])
    return {"y": 0.5 * x * (1.0 + np.tanh(_C * (x + _A * x**3)))}


def gelu_backward(t):
    x, dy = _f(t["x"]), _f(t["dy"])
    th = np.tanh(_C * (x + _A * x**3))
    d = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * _C * (1.0 + 3.0 * _A * x * x)
    return {"dx": dy * d}


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax_xent(t):
    z = _f(t["logits"])
    lab = np.asarray(t["labels"]).reshape(-1)
    labi = lab.astype(np.int64)
    assert np.all(labi == lab) and np.all((labi >= 0) & (labi < z.shape[-1]))
    k, m, c = z.shape
    ls = _log_softmax(z)
    loss = -ls[:, np.arange(m), labi].mean(axis=1)
    onehot = np.zeros((m, c))
    onehot[np.arange(m), labi] = 1.0
    return {"loss": loss, "dlogits": (np.exp(ls) - onehot) / m}


def _entropy(p, logp):
    return -(p * logp).sum(axis=-1)  # exp(logp) * logp is 0 when p underflows, not NaN


def ensemble_stats(t):
    ls = _log_softmax(_f(t["logits"]))
    p = np.exp(ls)
    probs = p.mean(axis=0)
    with np.errstate(divide="ignore"):
        lp = np.where(probs > 0, np.log(probs), 0.0)
    ent = _entropy(probs, lp)
    exp_ent = _entropy(p, ls).mean(axis=0)
    return {"probs": probs, "entropy": ent, "expected_entropy": exp_ent, "mutual_info": ent - exp_ent}


OPS = {f.__name__: f for f in (
    lora_forward, lora_backward, matmul, pairwise_sqdist, rbf_kernel, svgd_direction,
    adamw_step, svgd_step, relu_forward, relu_backward, gelu_forward, gelu_backward, softmax_xent,
    ensemble_stats)}


# ---------------------------------------------------------------- self-test

def _fd(f, x, eps=1e-6):
    """Central differences of scalar f at x (float64)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        hi = f()
        x[i] = old - eps
        lo = f()
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


def _close(a, b, tol, what):
    err = np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-300)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol}"


def _naive_lora_forward(t):
    x, w, a, b, s = t["x"], t["weight"], t["lora_a"], t["lora_b"], float(t["scale"])
    k, r, i_dim = a.shape
    o_dim = w.shape[0]
    m = x.shape[-2]
    y = np.zeros((k, m, o_dim))
    h = np.zeros((k, m, r))
    for kk in range(k):
        xk = x if x.ndim == 2 else x[kk]
        for mm in range(m):
            for rr in range(r):
                h[kk, mm, rr] = sum(xk[mm, ii] * a[kk, rr, ii] for ii in range(i_dim))
            for oo in range(o_dim):
                acc = sum(xk[mm, ii] * w[oo, ii] for ii in range(i_dim))
                acc += s * sum(h[kk, mm, rr] * b[kk, oo, rr] for rr in range(r))
                y[kk, mm, oo] = acc + (t["bias"][oo] if "bias" in t else 0.0)
    return y, h


def _self_test():
    rng = np.random.default_rng(0)
    # Hand-computed cases.
    th = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    d = pairwise_sqdist({"theta": th})["sqdist"]
    assert np.allclose(d, [[0, 25, 1], [25, 0, 18], [1, 18, 0]])
    # pairs {25, 1, 18}: odd count, median 18.
    out = rbf_kernel({"theta": th})
    assert np.isclose(out["bandwidth"][0], 18 / math.log(4))
    # K=4 on a line at 0,1,3,7: 6 pairs {1,4,9,16,36,49}, even count, median (9+16)/2.
    th4 = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert np.isclose(rbf_kernel({"theta": th4})["bandwidth"][0], 12.5 / math.log(5))
    assert np.allclose(rbf_kernel({"theta": np.ones((1, 3))})["kernel"], [[1.0]])
    assert rbf_kernel({"theta": np.ones((3, 2))})["bandwidth"][0] == 1.0  # h=0 -> 1
    assert rbf_kernel({"theta": th, "bandwidth": np.float32(2.0)})["kernel"][0, 2] == math.exp(-0.5)
    # SVGD by the per-pair loop of the spec.
    kk, dd = 4, 3
    th, sc = rng.normal(size=(kk, dd)), rng.normal(size=(kk, dd))
    kern = rng.uniform(size=(kk, kk))
    phi = svgd_direction({"theta": th, "score": sc, "kernel": kern, "bandwidth": np.array([0.7])})["phi"]
    want = np.zeros((kk, dd))
    for i in range(kk):
        for j in range(kk):
            want[i] += kern[j, i] * sc[j] + (2 / 0.7) * kern[j, i] * (th[i] - th[j])
    _close(phi, want / kk, 1e-12, "svgd loop")
    # Repulsion pushes particle 0 away from particle 1 when the score is 0.
    p2 = svgd_direction({"theta": np.array([[0.0], [1.0]]), "score": np.zeros((2, 1)),
                         "kernel": np.ones((2, 2)), "bandwidth": 1.0})["phi"]
    assert p2[0, 0] < 0 < p2[1, 0]
    # AdamW first step: m̂ = g, v̂ = g², so p -= lr * g/(|g|+eps) after decay.
    o = adamw_step({"param": np.array([1.0, -2.0]), "grad": np.array([0.5, -0.25]), "m": np.zeros(2),
                    "v": np.zeros(2), "lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                    "weight_decay": 0.01, "step": 1})
    assert np.allclose(o["param"], [1.0 * 0.999 - 0.1, -2.0 * 0.999 + 0.1])
    assert np.allclose(o["m"], [0.05, -0.025]) and np.allclose(o["v"], [0.00025, 0.0000625])
    # GELU tanh at known points (PyTorch approximate="tanh": gelu(1) = 0.8411920).
    assert abs(gelu_forward({"x": np.array([1.0])})["y"][0] - 0.8411919906082768) < 1e-12
    assert relu_forward({"x": np.array([-1.0, 2.0])})["y"].tolist() == [0.0, 2.0]
    # softmax_xent: uniform logits -> loss ln C; huge logits stay finite.
    o = softmax_xent({"logits": np.zeros((2, 3, 4)), "labels": np.array([0, 1, 3])})
    assert np.allclose(o["loss"], math.log(4))
    o = softmax_xent({"logits": np.array([[[1000.0, 0.0]]]), "labels": np.array([1])})
    assert np.isclose(o["loss"][0], 1000.0) and np.all(np.isfinite(o["dlogits"]))
    # ensemble_stats: identical particles -> zero mutual information; opposite ones -> ln 2.
    z = rng.normal(size=(1, 5, 3))
    o = ensemble_stats({"logits": np.concatenate([z, z])})
    assert np.allclose(o["mutual_info"], 0.0, atol=1e-12)
    o = ensemble_stats({"logits": np.array([[[80.0, 0.0]], [[0.0, 80.0]]])})
    assert np.isclose(o["entropy"][0], math.log(2)) and np.isclose(o["mutual_info"][0], math.log(2))
    # matmul against explicit transposes, shared and batched.
    a, b = rng.normal(size=(3, 4, 5)), rng.normal(size=(6, 5))
    c = matmul({"a": a, "b": b, "trans_a": 0, "trans_b": 1, "alpha": 2.0})["c"]
    _close(c, 2 * np.stack([a[i] @ b.T for i in range(3)]), 1e-12, "matmul")
    c = matmul({"a": np.swapaxes(a, 1, 2).copy(), "b": b.T.copy(), "trans_a": 1, "trans_b": 0,
                "alpha": 1.0})["c"]
    _close(c, np.stack([a[i] @ b.T for i in range(3)]), 1e-12, "matmul ta")
    # lora_forward against a loop, shared and per-particle x, with and without bias.
    for xs in ((3, 4), (2, 3, 4)):
        t = {"x": rng.normal(size=xs), "weight": rng.normal(size=(5, 4)), "bias": rng.normal(size=5),
             "lora_a": rng.normal(size=(2, 2, 4)), "lora_b": rng.normal(size=(2, 5, 2)), "scale": 0.5}
        for with_bias in (True, False):
            if not with_bias:
                t.pop("bias")
            y, h = _naive_lora_forward(t)
            o = lora_forward(t)
            _close(o["y"], y, 1e-12, "lora y")
            _close(o["h"], h, 1e-12, "lora h")
    # Finite differences: backward ops against their forwards.
    for xs in ((3, 4), (2, 3, 4)):
        t = {"x": rng.normal(size=xs), "weight": rng.normal(size=(5, 4)),
             "lora_a": rng.normal(size=(2, 2, 4)), "lora_b": rng.normal(size=(2, 5, 2)), "scale": 0.7}
        dy = rng.normal(size=(2, 3, 5))
        loss = lambda: float((lora_forward(t)["y"] * dy).sum())
        o = lora_backward(dict(t, dy=dy, h=lora_forward(t)["h"]))
        for name, key in (("dx", "x"), ("d_lora_a", "lora_a"), ("d_lora_b", "lora_b")):
            _close(o[name], _fd(loss, t[key]), 1e-7, f"fd {name} x{xs}")
    x = rng.normal(size=(4, 7))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from relu's kink
    dy = rng.normal(size=x.shape)
    for fw, bw in ((relu_forward, relu_backward), (gelu_forward, gelu_backward)):
        g = _fd(lambda: float((fw({"x": x})["y"] * dy).sum()), x)
        _close(bw({"x": x, "dy": dy})["dx"], g, 1e-7, f"fd {bw.__name__}")
    z = rng.normal(size=(2, 3, 4))
    lab = np.array([2, 0, 3])
    g = _fd(lambda: float(softmax_xent({"logits": z, "labels": lab})["loss"].sum()), z)
    _close(softmax_xent({"logits": z, "labels": lab})["dlogits"], g, 1e-7, "fd dlogits")
    print("reference.py self-test: ok")


if __name__ == "__main__":
    _self_test()
