#!/usr/bin/env python3
"""The CPU backend against its peers on the same work: JAX (jit + vmap) and a NumPy loop
over particles, interleaved with `bella bench --backend cpu` in several rounds.

    cargo build --release
    python3 benches/cpu_peers.py [--bella target/release/bella] [--rounds 5]

Every case is the math of DESIGN.md's contract at `bella bench`'s CPU shapes:

- lora_forward  K=8 M=256 I=O=1024 r=8, shared x [M,I] and per-particle x [K,M,I]:
  h_k = x_k A_kᵀ, y_k = x_k Wᵀ + s·h_k B_kᵀ (no bias, as bella bench).
- lora_backward same shapes: g_k = dy_k B_k, dB_k = s·dy_kᵀ h_k, dA_k = s·g_kᵀ x_k,
  dx_k = dy_k W + s·g_k A_k; shared x: dx = Σ_k dx_k, which every implementation here
  (bella too) computes as (Σ_k dy_k) W + s·Σ_k g_k A_k: one base product, not K.
- svgd_step K=16 D=2^20: d_ij = Σ (θ_i − θ_j)² (differences, as the contract asks, not
  the ‖θ‖² expansion), median bandwidth h = med/ln(K+1), k = exp(−d/h),
  φ_i = (1/K) Σ_j k_ji (score_j + (2/h)(θ_i − θ_j)), then AdamW (step 10) with φ as the
  gradient, θ, m, v updated in place (JAX: donated buffers).

Before timing, each peer's outputs are checked once against `bella op` on the same inputs
(relative error ‖a − b‖/‖b‖ ≤ 1e-4), so the times are of the same work.

Peers and bella get the same budget as `bella bench` (2 warm-up runs, then at least 7 runs
and 1.5 s, at most 60; the median). A round runs JAX, NumPy and bella one after another
(the order rotates by round); the table shows medians over rounds of each time and of the
per-round ratios peer / bella (above 1: bella is faster). The load average is printed with
every round: this is a shared 2-core machine.
"""
import os

# These slow a current NumPy's OpenBLAS on this processor (in this script only).
os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

K, M, I, O, R, SCALE = 8, 256, 1024, 1024, 8, 2.0
SVGD_K, SVGD_D = 16, 1 << 20
LR, B1, B2, EPS, WD, STEP = 1e-3, 0.9, 0.999, 1e-8, 0.01, 10  # bella bench's ADAMW

CASES = [  # (key, bella op, bella shape label)
    ("lora_forward shared x", "lora_forward", f"K={K} M={M} I={I} O={O} r={R} shared x"),
    ("lora_forward per-particle x", "lora_forward", f"K={K} M={M} I={I} O={O} r={R} per-particle x"),
    ("lora_backward shared x", "lora_backward", f"K={K} M={M} I={I} O={O} r={R} shared x"),
    ("lora_backward per-particle x", "lora_backward", f"K={K} M={M} I={I} O={O} r={R} per-particle x"),
    ("svgd_step", "svgd_step", f"K={SVGD_K} D={SVGD_D}"),
]
TARGETS = {"svgd_step": ("JAX", 3.0)}  # others: ≥ 1 against the faster peer


# ------------------------------------------------------------------ JAX (jit + vmap)

def jax_peers():
    import jax
    import jax.numpy as jnp

    def fwd_particle(x_k, w, a_k, b_k, s):
        h = x_k @ a_k.T
        return x_k @ w.T + s * (h @ b_k.T), h

    # Shared x: x broadcast into the vmap, so XLA computes x Wᵀ once for all particles.
    fwd_shared = jax.jit(jax.vmap(fwd_particle, in_axes=(None, None, 0, 0, None)))
    fwd_pp = jax.jit(jax.vmap(fwd_particle, in_axes=(0, None, 0, 0, None)))

    def adapter_grads(dy_k, x_k, a_k, b_k, h_k, s):
        g = dy_k @ b_k
        return g, s * (g.T @ x_k), s * (dy_k.T @ h_k)

    @jax.jit
    def bwd_shared(dy, x, w, a, b, h, s):
        g, da, db = jax.vmap(adapter_grads, in_axes=(0, None, 0, 0, 0, None))(dy, x, a, b, h, s)
        dx = dy.sum(0) @ w + s * jnp.einsum("kmr,kri->mi", g, a)
        return dx, da, db

    @jax.jit
    def bwd_pp(dy, x, w, a, b, h, s):
        g, da, db = jax.vmap(adapter_grads, in_axes=(0, 0, 0, 0, 0, None))(dy, x, a, b, h, s)
        dx = jax.vmap(lambda dy_k, g_k, a_k: dy_k @ w + s * (g_k @ a_k))(dy, g, a)
        return dx, da, db

    def svgd_step(theta, score, m, v):
        k = theta.shape[0]
        d = jnp.sum((theta[:, None, :] - theta[None, :, :]) ** 2, axis=-1)
        iu = np.triu_indices(k, 1)
        h = jnp.median(d[iu]) / jnp.log(k + 1.0)
        h = jnp.where((h == 0) | ~jnp.isfinite(h), 1.0, h)
        kern = jnp.exp(-d / h)
        # φ_i = (1/K) [Σ_j k_ji score_j + (2/h)(Σ_j k_ji) θ_i − (2/h) Σ_j k_ji θ_j]
        phi = (kern.T @ score + (2.0 / h) * (kern.sum(0)[:, None] * theta - kern.T @ theta)) / k
        m = B1 * m + (1 - B1) * phi
        v = B2 * v + (1 - B2) * phi * phi
        m_hat, v_hat = m / (1 - B1 ** STEP), v / (1 - B2 ** STEP)
        theta = theta * (1 - LR * WD) - LR * m_hat / (jnp.sqrt(v_hat) + EPS)
        return theta, m, v

    svgd = jax.jit(svgd_step, donate_argnums=(0, 2, 3))
    return dict(fwd_shared=fwd_shared, fwd_pp=fwd_pp, bwd_shared=bwd_shared, bwd_pp=bwd_pp,
                svgd=svgd, put=jnp.asarray, ready=jax.block_until_ready,
                version=f"jax {jax.__version__} ({jax.devices()[0].platform})")


# ------------------------------------------------------------------ NumPy, loop over particles

def np_fwd_shared(x, w, a, b, s):
    base = x @ w.T  # once: x is shared
    y = np.empty((a.shape[0], x.shape[0], w.shape[0]), np.float32)
    h = np.empty((a.shape[0], x.shape[0], a.shape[1]), np.float32)
    for k in range(a.shape[0]):
        np.matmul(x, a[k].T, out=h[k])
        np.matmul(h[k], b[k].T, out=y[k])
        y[k] *= s
        y[k] += base
    return y, h


def np_fwd_pp(x, w, a, b, s):
    y = np.empty((a.shape[0], x.shape[1], w.shape[0]), np.float32)
    h = np.empty((a.shape[0], x.shape[1], a.shape[1]), np.float32)
    for k in range(a.shape[0]):
        np.matmul(x[k], w.T, out=y[k])
        np.matmul(x[k], a[k].T, out=h[k])
        y[k] += s * (h[k] @ b[k].T)
    return y, h


def np_bwd_shared(dy, x, w, a, b, h, s):
    dx = dy.sum(0) @ w
    da, db = np.empty_like(a), np.empty_like(b)
    for k in range(a.shape[0]):
        g = dy[k] @ b[k]
        np.matmul(dy[k].T, h[k], out=db[k])
        db[k] *= s
        np.matmul(g.T, x, out=da[k])
        da[k] *= s
        dx += s * (g @ a[k])
    return dx, da, db


def np_bwd_pp(dy, x, w, a, b, h, s):
    dx = np.empty_like(x)
    da, db = np.empty_like(a), np.empty_like(b)
    for k in range(a.shape[0]):
        g = dy[k] @ b[k]
        np.matmul(dy[k].T, h[k], out=db[k])
        db[k] *= s
        np.matmul(g.T, x[k], out=da[k])
        da[k] *= s
        np.matmul(dy[k], w, out=dx[k])
        dx[k] += s * (g @ a[k])
    return dx, da, db


def np_svgd(theta, score, m, v):
    """In place on theta, m, v, like bella and the donated JAX step."""
    k = theta.shape[0]
    d = np.zeros((k, k), np.float32)
    for i in range(k):
        for j in range(i + 1, k):
            diff = theta[i] - theta[j]
            d[i, j] = d[j, i] = diff @ diff
    h = np.median(d[np.triu_indices(k, 1)]) / np.log(k + 1.0)
    if h == 0 or not np.isfinite(h):
        h = 1.0
    kern = np.exp(-d / np.float32(h)).astype(np.float32)
    c = np.float32(2.0 / h)
    phi = kern.T @ score
    phi -= c * (kern.T @ theta)
    phi += (c * kern.sum(0))[:, None] * theta
    phi /= k
    m *= B1
    m += (1 - B1) * phi
    v *= B2
    v += (1 - B2) * phi * phi
    denom = np.sqrt(v / np.float32(1 - B2 ** STEP))
    denom += EPS
    theta *= np.float32(1 - LR * WD)
    theta -= np.float32(LR / (1 - B1 ** STEP)) * m / denom
    return theta, m, v


# ------------------------------------------------------------------ inputs, bella op, checks

def lora_inputs(rng, shared):
    u = lambda shape, a: rng.uniform(-a, a, shape).astype(np.float32)  # noqa: E731
    x = u((M, I) if shared else (K, M, I), 1.0)
    t = dict(x=x, weight=u((O, I), 0.05), lora_a=u((K, R, I), 0.05), lora_b=u((K, O, R), 0.05))
    t["dy"], t["h"] = u((K, M, O), 1.0), u((K, M, R), 1.0)
    return t


def svgd_inputs(rng, d):
    u = lambda shape, lo, hi: rng.uniform(lo, hi, shape).astype(np.float32)  # noqa: E731
    return dict(theta=u((SVGD_K, d), -0.1, 0.1), score=u((SVGD_K, d), -1, 1),
                m=u((SVGD_K, d), -0.01, 0.01), v=u((SVGD_K, d), 0, 0.01))


def bella_op(bella, op, tensors, tmp):
    from safetensors.numpy import load_file, save_file
    inp, out = os.path.join(tmp, f"{op}_in.safetensors"), os.path.join(tmp, f"{op}_out.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, inp)
    subprocess.run([bella, "op", op, "--in", inp, "--out", out, "--backend", "cpu"],
                   check=True, capture_output=True, text=True)
    return load_file(out)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check(name, got, want, tol=1e-4):
    errs = {k: rel(g, w) for k, g, w in zip(want, got, want.values())}
    worst = max(errs.values())
    print(f"  check {name:36} " + "  ".join(f"{k} {e:.1e}" for k, e in errs.items()))
    if not worst <= tol:
        sys.exit(f"{name}: outputs differ from bella op by {worst:.2e} (> {tol}): not the same work")


def check_all(bella, jx, tmp):
    rng = np.random.default_rng(1)
    s = np.float32(SCALE)
    print("Outputs against `bella op --backend cpu` on the same inputs (relative error):")
    for shared in (True, False):
        t = lora_inputs(rng, shared)
        tag = "shared x" if shared else "per-particle x"
        f_in = {k: t[k] for k in ("x", "weight", "lora_a", "lora_b")}
        want = bella_op(bella, "lora_forward", dict(f_in, scale=np.array(SCALE, np.float32)), tmp)
        want = {"y": want["y"], "h": want["h"]}
        args = (t["x"], t["weight"], t["lora_a"], t["lora_b"], s)
        check(f"jax lora_forward {tag}", (jx["fwd_shared"] if shared else jx["fwd_pp"])(*args), want)
        check(f"numpy lora_forward {tag}", (np_fwd_shared if shared else np_fwd_pp)(*args), want)
        b_in = dict(f_in, dy=t["dy"], h=t["h"], scale=np.array(SCALE, np.float32))
        want = bella_op(bella, "lora_backward", b_in, tmp)
        want = {k: want[k] for k in ("dx", "d_lora_a", "d_lora_b")}
        args = (t["dy"], t["x"], t["weight"], t["lora_a"], t["lora_b"], t["h"], s)
        check(f"jax lora_backward {tag}", (jx["bwd_shared"] if shared else jx["bwd_pp"])(*args), want)
        check(f"numpy lora_backward {tag}", (np_bwd_shared if shared else np_bwd_pp)(*args), want)
    # The SVGD step through bella's three ops (D = 2^16: the math does not depend on D).
    t = svgd_inputs(rng, 1 << 16)
    kern = bella_op(bella, "rbf_kernel", {"theta": t["theta"]}, tmp)
    phi = bella_op(bella, "svgd_direction", dict(theta=t["theta"], score=t["score"],
                                                  kernel=kern["kernel"], bandwidth=kern["bandwidth"]), tmp)
    hp = dict(lr=np.array(LR, np.float32), beta1=np.array(B1, np.float32), beta2=np.array(B2, np.float32),
              eps=np.array(EPS, np.float32), weight_decay=np.array(WD, np.float32), step=np.array(STEP, np.int64))
    want = bella_op(bella, "adamw_step", dict(param=t["theta"], grad=phi["phi"], m=t["m"], v=t["v"], **hp), tmp)
    want = {"param": want["param"], "m": want["m"], "v": want["v"]}
    got = jx["svgd"](*(jx["put"](t[k]) for k in ("theta", "score", "m", "v")))
    check("jax svgd_step", got, want)
    got = np_svgd(*(t[k].copy() for k in ("theta", "score", "m", "v")))
    check("numpy svgd_step", got, want)


# ------------------------------------------------------------------ timing

def median_time(fn, warmup=2, min_runs=7, max_runs=60, min_time=1.5):
    """`bella bench`'s budget: warm-up, then ≥ min_runs and ≥ min_time (≤ max_runs); median s."""
    for _ in range(warmup):
        fn()
    times, spent = [], 0.0
    while len(times) < max_runs and (len(times) < min_runs or spent < min_time):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return statistics.median(times)


def peer_bodies(jx):
    """{case: {peer: zero-argument callable}}, inputs made once (and kept on the JAX device)."""
    rng = np.random.default_rng(2)
    s = np.float32(SCALE)
    out = {}
    for shared in (True, False):
        t = lora_inputs(rng, shared)
        tag = "shared x" if shared else "per-particle x"
        fa = (t["x"], t["weight"], t["lora_a"], t["lora_b"], s)
        ba = (t["dy"], t["x"], t["weight"], t["lora_a"], t["lora_b"], t["h"], s)
        jfa = tuple(jx["put"](v) for v in fa[:-1]) + (s,)
        jba = tuple(jx["put"](v) for v in ba[:-1]) + (s,)
        jf, jb = (jx["fwd_shared"], jx["bwd_shared"]) if shared else (jx["fwd_pp"], jx["bwd_pp"])
        nf, nb = (np_fwd_shared, np_bwd_shared) if shared else (np_fwd_pp, np_bwd_pp)
        out[f"lora_forward {tag}"] = {
            "JAX": lambda jf=jf, a=jfa: jx["ready"](jf(*a)),
            "NumPy": lambda nf=nf, a=fa: nf(*a)}
        out[f"lora_backward {tag}"] = {
            "JAX": lambda jb=jb, a=jba: jx["ready"](jb(*a)),
            "NumPy": lambda nb=nb, a=ba: nb(*a)}
    t = svgd_inputs(rng, SVGD_D)
    jstate = [jx["put"](t[k]) for k in ("theta", "m", "v")]
    jscore = jx["put"](t["score"])

    def jax_svgd():
        th, m, v = jx["svgd"](jstate[0], jscore, jstate[1], jstate[2])
        jx["ready"]((th, m, v))
        jstate[:] = [th, m, v]

    nstate = {k: t[k].copy() for k in t}
    out["svgd_step"] = {"JAX": jax_svgd,
                        "NumPy": lambda: np_svgd(nstate["theta"], nstate["score"], nstate["m"], nstate["v"])}
    return out


def bella_round(bella, tmp, seed):
    path = os.path.join(tmp, "bench.json")
    ops = ",".join(dict.fromkeys(op for _, op, _ in CASES))
    cmd = [bella, "bench", "--backend", "cpu", "--op", ops, "--json", path, "--seed", str(seed)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    with open(path) as f:
        report = json.load(f)
    by = {(r["op"], r["shape"]): r["median_s"] for r in report["results"]}
    comps = {c["name"]: c["ratio"] for c in report.get("comparisons", [])}
    return {key: by[(op, shape)] for key, op, shape in CASES}, comps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bella", default="target/release/bella")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-check", action="store_true")
    args = ap.parse_args()
    jx = jax_peers()
    print(f"peers: {jx['version']}, numpy {np.__version__} "
          f"({np.show_config(mode='dicts')['Build Dependencies']['blas']['name']}); "
          f"bella: {args.bella}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    tmp = tempfile.mkdtemp(prefix="bella_peers_")
    if not args.skip_check:
        check_all(args.bella, jx, tmp)
    bodies = peer_bodies(jx)
    times = {key: {"JAX": [], "NumPy": [], "bella": []} for key, _, _ in CASES}
    comps_all = {}
    for rnd in range(args.rounds):
        load0 = os.getloadavg()[0]
        order = ["JAX", "NumPy", "bella"]
        order = order[rnd % 3:] + order[:rnd % 3]
        for who in order:
            if who == "bella":
                got, comps = bella_round(args.bella, tmp, seed=100 + rnd)
                for key, t in got.items():
                    times[key]["bella"].append(t)
                for name, r in comps.items():
                    comps_all.setdefault(name, []).append(r)
            else:
                for key, _, _ in CASES:
                    times[key][who].append(median_time(bodies[key][who]))
        line = "  ".join(f"{key.replace('lora_', '').replace('per-particle', 'pp')}: "
                         f"J {times[key]['JAX'][-1] / times[key]['bella'][-1]:.2f} "
                         f"N {times[key]['NumPy'][-1] / times[key]['bella'][-1]:.2f}"
                         for key, _, _ in CASES)
        print(f"round {rnd + 1}/{args.rounds} (order {','.join(order)}; load average "
              f"{load0:.2f} -> {os.getloadavg()[0]:.2f}): peer/bella {line}", flush=True)

    med = statistics.median
    print(f"\nMedians over {args.rounds} rounds (ratio = peer time / bella time, per round, then the median):\n")
    print("| case | JAX ms | NumPy ms | bella ms | JAX / bella | NumPy / bella | target |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for key, _, _ in CASES:
        t = times[key]
        rj = med([j / b for j, b in zip(t["JAX"], t["bella"])])
        rn = med([n / b for n, b in zip(t["NumPy"], t["bella"])])
        if key in TARGETS:
            peer, want = TARGETS[key]
            got = rj if peer == "JAX" else rn
            target = f"≥ {want:g}× {peer}: {'met' if got >= want else 'miss'}"
        else:
            got = min(rj, rn)
            target = f"≥ 1× the faster peer: {'met' if got >= 1.0 else 'miss'}"
        print(f"| {key} | {1e3 * med(t['JAX']):.2f} | {1e3 * med(t['NumPy']):.2f} | "
              f"{1e3 * med(t['bella']):.2f} | {rj:.2f} | {rn:.2f} | {target} |")
    if comps_all:
        print("\nbella bench comparisons in the same runs (median over rounds): " +
              ", ".join(f"{n} {med(v):.2f}" for n, v in comps_all.items()))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
