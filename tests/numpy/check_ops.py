#!/usr/bin/env python3
"""Cross-check `bella op` against the float64 NumPy reference of DESIGN.md.

Writes every case's inputs with the `safetensors` package (bf16 files by hand), runs
`bella op NAME --in IN --out OUT --backend B`, and compares each output by relative
error ‖out − ref‖/‖ref‖ ≤ tol, the reference computed on the values the file holds.

    python3 tests/numpy/check_ops.py --bella target/debug/bella --backend cpu [--small]
    python3 tests/numpy/check_ops.py --probe --backend wgpu   # exit 0 iff the backend runs

Exit 0: every case passed; 1: some failed; 3: --probe found the backend unusable.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file, save_file

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402
import safetensors_io  # noqa: E402
from cases import Case, all_cases  # noqa: E402
from safetensors_io import BF16  # noqa: E402


def write_inputs(path, case):
    if any(isinstance(t, BF16) for t in case.tensors.values()):
        safetensors_io.write(path, case.tensors, case.metadata)  # NumPy has no bf16
    else:
        save_file({k: np.ascontiguousarray(v) for k, v in case.tensors.items()}, path, case.metadata)


def read_outputs(path):
    try:
        return load_file(path)
    except Exception as e:  # the package's NumPy side cannot hold bf16 outputs
        with open(path, "rb") as f:
            if b'"BF16"' not in f.read(1 << 16):
                raise RuntimeError(f"the safetensors package cannot read bella's output: {e}")
        return safetensors_io.read(path)


def rel_err(out, ref, floor=0.0):
    """‖out − ref‖/‖ref‖, with ‖ref‖ taken as at least `floor`."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    nref = max(np.linalg.norm(ref), floor)
    if nref == 0:  # e.g. the mutual information of one particle: compare RMS instead
        return float(np.linalg.norm(out) / np.sqrt(max(out.size, 1)))
    return float(np.linalg.norm(out - ref) / nref)


def floor_for(op, name, want, inputs):
    """mutual_info = entropy − expected_entropy cancels when the particles agree (K=1: it is
    0 up to rounding, a few f32 ulps of the entropy): judge it against 1% of the entropy at
    least. Random particles have MI well above that, so there the floor does not act.
    AdamW's `m` and `param` (`svgd_step`'s `m` and `theta`) are judged against the size of
    the two terms they are the difference of (`reference.adamw_term_sizes`)."""
    if name == "mutual_info":
        return 1e-2 * float(np.linalg.norm(want["entropy"]))
    if name in ("param - param_in", "theta - theta_in"):
        # f32 `param` holds the step only to an ulp of param: judge the step against 1% of
        # ‖param‖ at least (still 100x tighter than the check of `param` itself).
        base = name.split(" ")[0]
        return 1e-2 * float(np.linalg.norm(np.asarray(inputs[base], np.float64)))
    sizes = {"adamw_step": reference.adamw_term_sizes, "svgd_step": reference.svgd_step_term_sizes}
    if op in sizes:
        terms = sizes[op](inputs)
        if name in terms:
            return float(np.linalg.norm(terms[name]))
    return 0.0


def compare(op, got, want, tol, inputs):
    """Problems (strings) between bella's outputs and the reference's."""
    problems, worst = [], {}
    for name, ref in want.items():
        if name not in got:
            problems.append(f"output `{name}` missing (got {sorted(got)})")
            continue
        out = got[name]
        shape_ok = out.shape == ref.shape or (name == "bandwidth" and out.size == ref.size == 1)
        if not shape_ok:
            problems.append(f"`{name}` shape {list(out.shape)}, expected {list(ref.shape)}")
            continue
        if not np.all(np.isfinite(out)):
            problems.append(f"`{name}` has non-finite values")
            continue
        e = rel_err(out, ref, floor_for(op, name, want, inputs))
        worst[name] = e
        if not e <= tol:
            i = np.unravel_index(np.argmax(np.abs(out.astype(np.float64) - ref)), ref.shape) if ref.ndim else ()
            i = tuple(int(j) for j in i)
            problems.append(f"`{name}` rel err {e:.3e} > {tol:g} (worst at {list(i)}: "
                            f"got {float(out[i]):.7g}, want {float(ref[i]):.7g})")
    return problems, worst


def reference_inputs(case):
    tensors = case.ref_tensors if case.ref_tensors is not None else case.tensors
    return {k: (v.values if isinstance(v, BF16) else v) for k, v in tensors.items()}


def run_case(bella, backend, case, tmp, idx, timeout, tol):
    inp, out = os.path.join(tmp, f"{idx:03d}_in.safetensors"), os.path.join(tmp, f"{idx:03d}_out.safetensors")
    write_inputs(inp, case)
    cmd = [bella, "op", case.op, "--in", inp, "--out", out, "--backend", backend] + case.args
    tol = case.tol if case.tol is not None else tol
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [f"timed out after {timeout}s: {' '.join(cmd)}"], {}, time.time() - t0
    dt = time.time() - t0
    if p.returncode != 0 or "panicked" in p.stderr:
        return [f"exit {p.returncode}: {p.stderr.strip()[-600:]}"], {}, dt
    if case.expect is not None:
        want = {k: np.asarray(v, np.float64) for k, v in case.expect.items()}
    else:
        want = reference.OPS[case.op](reference_inputs(case))
    try:
        got = read_outputs(out)
    except Exception as e:
        return [f"reading output: {e}"], {}, dt
    if case.op in ("adamw_step", "svgd_step"):
        # The step itself is small beside `param` (`theta`): check it on its own too.
        name = "param" if case.op == "adamw_step" else "theta"
        p0 = np.asarray(reference_inputs(case)[name], np.float64)
        want[f"{name} - {name}_in"] = want[name] - p0
        if name in got:
            got[f"{name} - {name}_in"] = got[name].astype(np.float64) - p0
    problems, errs = compare(case.op, got, want, tol, reference_inputs(case))
    return problems, errs, dt


def probe(bella, backend, tmp):
    """0 if the backend runs an op at all (wrong numbers are for the full run to report)."""
    case = Case("relu_forward", "probe", {"x": np.array([-1.0, 2.0], np.float32)})
    problems, errs, _ = run_case(bella, backend, case, tmp, 0, 120, 2e-4)
    if problems and not errs:  # no outputs compared: bella failed or timed out
        print(f"backend {backend} unusable: {problems[0]}")
        return 3
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bella", default=os.environ.get("BELLA_BIN", "target/debug/bella"))
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--small", action="store_true", help="smaller shapes, for slow backends (ptx-sim)")
    ap.add_argument("--only", default="", help="comma list of ops to run")
    ap.add_argument("--seed", type=int, default=None, help="default: fresh, printed")
    ap.add_argument("--tol", type=float, default=2e-4)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per bella invocation")
    ap.add_argument("--keep", default=None, help="keep the files in this folder")
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="bella_numpy_")
    os.makedirs(tmp, exist_ok=True)
    rc = probe(args.bella, args.backend, tmp)  # one line instead of a failure per case
    if args.probe or rc:
        if not args.keep:
            shutil.rmtree(tmp)
        return rc
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    cases = all_cases(np.random.default_rng(seed), args.small)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - set(reference.OPS) - {"cast"}
        if unknown:
            ap.error(f"unknown ops {sorted(unknown)}")
        cases = [c for c in cases if c.op in wanted]
    print(f"bella op vs NumPy float64 reference: backend {args.backend}, seed {seed}, "
          f"{len(cases)} cases{' (small)' if args.small else ''}, tol {args.tol:g}")
    failed, t_all = [], time.time()
    for i, case in enumerate(cases):
        problems, errs, dt = run_case(args.bella, args.backend, case, tmp, i, args.timeout, args.tol)
        status = "FAIL" if problems else "ok"
        if problems or args.verbose:
            worst = max(errs.values(), default=0.0)
            print(f"  {status:4} {case.op:16} {case.label:42} rel err {worst:.2e}  {dt:5.2f}s")
            if args.verbose and len(errs) > 1:
                print("         " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
        for p in problems:
            print(f"         {p}")
        if problems:
            failed.append(case)
    done = len(cases) - len(failed)
    kept = bool(failed or args.keep)
    print(f"{done}/{len(cases)} cases passed in {time.time() - t_all:.1f}s (seed {seed}"
          + (f", files kept in {tmp})" if kept else ")"))
    if not kept:
        shutil.rmtree(tmp)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
