//! Row-major GEMM for the CPU backend.
//!
//! - Inner dimension ≤ [`SMALL_INNER`] (the LoRA `s·h Bᵀ` and `s·g A` expansions): row
//!   updates in one pass over `c` ([`RowUpdate`]), hand-vectorised ([`super::simd`]).
//! - Otherwise, where the CPU has AVX-512: the `gemm` crate (sarah-ek), whose AVX-512
//!   microkernels it picks at run time. Tall products use the crate's threads; shorter
//!   ones are split into several column (or row) blocks per thread, spread by rayon's work
//!   stealing (see `gemm_with`). Elsewhere (AVX2 or older, non-x86): `matrixmultiply`
//!   with the rows of `c` split across rayon threads, which measured faster than the `gemm`
//!   crate's AVX2 kernels here.

use super::simd::{self, lanes, simd_dispatch, F32x16, Isa, LANES};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Fewest rows of `c` per parallel task on the `matrixmultiply` path: each task packs all of
/// `op(b)` again, so rows are split into one task per thread (no more), and only when each
/// gets at least this many.
const MIN_ROWS_PER_TASK: usize = 64;
/// Inner dimensions up to this (a LoRA rank) skip packing: see [`RowUpdate`].
pub const SMALL_INNER: usize = 16;
/// Rows from which the `gemm` crate's own threading is used (see `gemm_with`).
const TALL_ROWS: usize = 1024;
/// Fewest rows of `c` per block when the `gemm` crate's products are split by rows.
const ROW_BLOCK_MIN: usize = 128;
/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 18;

/// Which library computes the packed products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    GemmCrate,
    MatrixMultiply,
}

fn engine() -> Engine {
    if simd::isa() == Isa::Avx512 {
        Engine::GemmCrate
    } else {
        Engine::MatrixMultiply
    }
}

/// `op(x)` of a row-major matrix: element `(i, p)` at `i·rs + p·cs`.
#[derive(Clone, Copy)]
struct View {
    rs: usize,
    cs: usize,
}

fn view(rows: usize, cols: usize, trans: bool) -> View {
    if trans {
        View { rs: 1, cs: rows }
    } else {
        View { rs: cols, cs: 1 }
    }
}

/// `c[m,n] = alpha · op(a) · op(b) + beta · c`, all row-major. Stored `a` is `[m,k]`, or
/// `[k,m]` when `trans_a`; stored `b` is `[k,n]`, or `[n,k]` when `trans_b`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
) {
    assert!(c.len() >= m * n);
    let c = &mut c[..m * n];
    // SAFETY: an initialised f32 is a valid MaybeUninit<f32>, and everything written below
    // is an initialised f32.
    let c_uninit: &mut [MaybeUninit<f32>] = unsafe { &mut *(c as *mut [f32] as *mut _) };
    let start = if beta == 0.0 {
        Start::Zero
    } else {
        Start::Scaled(beta)
    };
    gemm_with(
        engine(),
        m,
        n,
        k,
        alpha,
        a,
        trans_a,
        b,
        trans_b,
        start,
        c_uninit,
    );
}

/// `c = alpha · op(a) · op(b)` into memory that need not be initialised; every element of
/// `c` (`m·n` of them) is written.
#[allow(clippy::too_many_arguments)]
pub fn gemm_uninit(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [MaybeUninit<f32>],
) {
    assert!(c.len() >= m * n);
    let c = &mut c[..m * n];
    gemm_with(
        engine(),
        m,
        n,
        k,
        alpha,
        a,
        trans_a,
        b,
        trans_b,
        Start::Zero,
        c,
    );
}

/// Where each output starts before the product is added.
#[derive(Clone, Copy)]
enum Start<'a> {
    /// From zero: the output may be uninitialised.
    Zero,
    /// From `beta ·` the output's own value (initialised).
    Scaled(f32),
    /// From the same element of this `[m, n]` matrix.
    From(&'a [f32]),
}

#[allow(clippy::too_many_arguments)]
fn gemm_with(
    engine: Engine,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    start: Start,
    c: &mut [MaybeUninit<f32>],
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() == m * n);
    if m == 0 || n == 0 {
        return;
    }
    let (va, vb) = (view(m, k, trans_a), view(k, n, trans_b));
    if k <= SMALL_INNER {
        let bt = rows_of(b, vb, k, n);
        let u = RowUpdate {
            n,
            k,
            alpha,
            a,
            a_view: va,
            bt: &bt,
            start,
        };
        return u.run(c);
    }
    let beta = match start {
        Start::Zero => 0.0,
        Start::Scaled(beta) => beta,
        Start::From(_) => unreachable!("only row updates start from another matrix"),
    };
    // SAFETY (both arms): the views address only elements inside `a` and `b` (lengths
    // asserted above); `c` holds exactly m·n elements, row stride n; with beta = 0 neither
    // library reads `c`, otherwise it is initialised (`Start::Scaled`).
    match engine {
        Engine::GemmCrate => {
            // op(b) = Wᵀ of a row-major W ([n, k]) in a tall product: the crate, turning
            // the product around for a row-major c, would pack W element by element, once
            // per block of rows of a; one vectorised transpose first measured faster
            // (2048 × 1024 × 1024: about 7 %). For M = 256 in column blocks it was slower.
            let b_rows;
            let (b, vb) = if trans_b && m >= TALL_ROWS && n * k >= PARALLEL_WORK {
                b_rows = super::transpose::transpose(b, n, k);
                (&b_rows[..], view(k, n, false))
            } else {
                (b, vb)
            };
            // One block of c: rows r0..r0+mr, columns j0..j0+nc, single-threaded.
            let c_ptr = c.as_mut_ptr() as usize;
            let run = |r0: usize, mr: usize, j0: usize, nc: usize, par| unsafe {
                // The crate computes dst = alpha·dst + beta·lhs·rhs (its names), strides
                // given as (column, row).
                gemm::gemm(
                    mr,
                    nc,
                    k,
                    (c_ptr as *mut f32).add(r0 * n + j0),
                    1,
                    n as isize,
                    beta != 0.0,
                    a.as_ptr().add(r0 * va.rs),
                    va.cs as isize,
                    va.rs as isize,
                    b.as_ptr().add(j0 * vb.cs),
                    vb.cs as isize,
                    vb.rs as isize,
                    beta,
                    alpha,
                    false,
                    false,
                    false,
                    par,
                )
            };
            // Tall products (many rows: a stacked [K·M, I] input) use the crate's own
            // threads, which pack each operand once and share it. Shorter ones run as
            // several column (or row) blocks per thread, taken by work stealing: the crate
            // splits into one static share per thread, which measured slower here for
            // M = 256 (and one preempted thread on a shared machine stalls it), and each
            // column block packs only its own part of op(b). Inside a rayon task the
            // caller already runs in parallel (one particle per task, say).
            use gemm::Parallelism::{None as Serial, Rayon};
            let threads = rayon::current_num_threads();
            let parallel = m * n * k >= PARALLEL_WORK
                && threads > 1
                && rayon::current_thread_index().is_none();
            let col_blocks = (n / 64).min(4 * threads);
            // Each row block packs all of op(b) again (a transposing, scalar copy when b is
            // row-major [n, k]), so row blocks are kept at least ROW_BLOCK_MIN rows tall:
            // at 32 rows, h = x·A_catᵀ (256 × 64 × 1024) took twice as long as at 128.
            let row_blocks = (m / ROW_BLOCK_MIN).min(4 * threads);
            if parallel && m >= TALL_ROWS {
                run(0, m, 0, n, Rayon(threads));
            } else if parallel && col_blocks >= 2 {
                let nc = n.div_ceil(col_blocks).next_multiple_of(16);
                (0..n.div_ceil(nc))
                    .into_par_iter()
                    .for_each(|t| run(0, m, t * nc, nc.min(n - t * nc), Serial));
            } else if parallel && row_blocks >= 2 {
                let mr = m.div_ceil(row_blocks);
                (0..m.div_ceil(mr))
                    .into_par_iter()
                    .for_each(|t| run(t * mr, mr.min(m - t * mr), 0, n, Serial));
            } else {
                run(0, m, 0, n, Serial);
            }
        }
        Engine::MatrixMultiply => {
            let run = |row0: usize, c_rows: &mut [MaybeUninit<f32>]| {
                let rows = c_rows.len() / n;
                unsafe {
                    matrixmultiply::sgemm(
                        rows,
                        k,
                        n,
                        alpha,
                        a.as_ptr().add(row0 * va.rs),
                        va.rs as isize,
                        va.cs as isize,
                        b.as_ptr(),
                        vb.rs as isize,
                        vb.cs as isize,
                        beta,
                        c_rows.as_mut_ptr().cast::<f32>(),
                        n as isize,
                        1,
                    );
                }
            };
            let threads = rayon::current_num_threads();
            if m >= 2 * MIN_ROWS_PER_TASK && m * n * k > PARALLEL_WORK && threads > 1 {
                let rows = m.div_ceil(threads).max(MIN_ROWS_PER_TASK);
                c.par_chunks_mut(rows * n)
                    .enumerate()
                    .for_each(|(t, chunk)| run(t * rows, chunk));
            } else {
                run(0, c);
            }
        }
    }
}

/// `op(b)` as `k` contiguous rows of `n` (borrowed when it already is).
fn rows_of(b: &[f32], vb: View, k: usize, n: usize) -> std::borrow::Cow<'_, [f32]> {
    if vb.cs == 1 {
        (&b[..k * n]).into()
    } else {
        let mut rows = vec![0.0f32; k * n];
        for (p, row) in rows.chunks_exact_mut(n).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = b[p * vb.rs + j * vb.cs];
            }
        }
        rows.into()
    }
}

/// `y = x Wᵀ + s · h Bᵀ`-style updates with a tiny inner dimension `k`: each row of the
/// output is its start (zero, `beta ·` itself, or a row of another matrix) plus `k` scaled
/// rows of `bt`, finished in registers 64 columns at a time and written once. A packed GEMM
/// spends more on packing and on its `c` update than on the products here; this moves the
/// output once.
pub struct RowUpdate<'a> {
    /// Output width.
    pub n: usize,
    /// Inner dimension, ≤ [`SMALL_INNER`].
    pub k: usize,
    /// Coefficient of `bt` row p in output row i: `alpha · a[i·rs + p·cs]`.
    pub alpha: f32,
    a: &'a [f32],
    a_view: View,
    /// `[k, n]`, row-major.
    pub bt: &'a [f32],
    start: Start<'a>,
}

impl<'a> RowUpdate<'a> {
    /// Output row i = `base` row i + `alpha · Σ_p coef[i·k + p] · bt[p]` (`coef` row-major
    /// `[rows, k]`, `base` `[rows, n]`, `bt` `[k, n]`).
    pub fn with_base(
        n: usize,
        k: usize,
        alpha: f32,
        coef: &'a [f32],
        bt: &'a [f32],
        base: &'a [f32],
    ) -> Self {
        assert!(k <= SMALL_INNER && bt.len() >= k * n);
        RowUpdate {
            n,
            k,
            alpha,
            a: coef,
            a_view: View { rs: k, cs: 1 },
            bt,
            start: Start::From(base),
        }
    }

    /// Output row i += `alpha · Σ_p coef[i·k + p] · bt[p]`, in place (see [`Self::add_rows`]).
    pub fn in_place(n: usize, k: usize, alpha: f32, coef: &'a [f32], bt: &'a [f32]) -> Self {
        assert!(k <= SMALL_INNER && bt.len() >= k * n);
        RowUpdate {
            n,
            k,
            alpha,
            a: coef,
            a_view: View { rs: k, cs: 1 },
            bt,
            start: Start::Scaled(1.0),
        }
    }

    /// Writes rows `row0..` (whole rows) of a [`Self::with_base`] update into `out`, on the
    /// calling thread.
    pub fn write_rows(&self, row0: usize, out: &mut [MaybeUninit<f32>]) {
        assert!(matches!(self.start, Start::From(_)) && out.len().is_multiple_of(self.n));
        if let Start::From(base) = self.start {
            assert!(base.len() >= row0 * self.n + out.len());
        }
        row_update(self, row0, out)
    }

    /// Applies an [`Self::in_place`] update to rows `row0..` held in `out`, on the calling
    /// thread.
    pub fn add_rows(&self, row0: usize, out: &mut [f32]) {
        assert!(matches!(self.start, Start::Scaled(_)) && out.len().is_multiple_of(self.n));
        // SAFETY: as in `gemm`: initialised f32 in, initialised f32 out.
        row_update(self, row0, unsafe {
            &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>])
        })
    }

    fn run(&self, c: &mut [MaybeUninit<f32>]) {
        let n = self.n;
        assert!(n > 0 && c.len().is_multiple_of(n));
        let rows = c.len() / n;
        if let Start::From(base) = self.start {
            assert!(base.len() >= rows * n);
        }
        if rows * n > 1 << 15 && rayon::current_num_threads() > 1 {
            let per = rows.div_ceil(4 * rayon::current_num_threads()).max(4);
            c.par_chunks_mut(per * n)
                .enumerate()
                .for_each(|(t, part)| row_update(self, t * per, part));
        } else {
            row_update(self, 0, c);
        }
    }
}

simd_dispatch!(fn row_update, row_update_with => row_update_generic(
    u: &RowUpdate, row0: usize, out: &mut [MaybeUninit<f32>]
));

/// Rows `row0..` of a [`RowUpdate`] into `out` (whole rows).
#[inline(always)]
fn row_update_generic<V: F32x16>(u: &RowUpdate, row0: usize, out: &mut [MaybeUninit<f32>]) {
    const VECS: usize = 4;
    const TILE: usize = VECS * LANES;
    let (n, k) = (u.n, u.k);
    let full = n / TILE * TILE;
    let vec_end = n / LANES * LANES;
    for (r, out) in out.chunks_exact_mut(n).enumerate() {
        let i = row0 + r;
        let mut coef = [0.0f32; SMALL_INNER];
        for (p, c) in coef[..k].iter_mut().enumerate() {
            *c = u.alpha * u.a[i * u.a_view.rs + p * u.a_view.cs];
        }
        let coef = &coef[..k];
        let base = match u.start {
            Start::From(b) => Some(&b[i * n..(i + 1) * n]),
            _ => None,
        };
        for j in (0..full).step_by(TILE) {
            let mut acc = [V::zero(); VECS];
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = start_at::<V>(u.start, base, out, j + v * LANES);
            }
            for (p, &cp) in coef.iter().enumerate() {
                let cp = V::splat(cp);
                let row = &u.bt[p * n + j..][..TILE];
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = cp.madd(V::load(lanes(row, v * LANES)), *acc);
                }
            }
            for (v, acc) in acc.into_iter().enumerate() {
                let o: &mut [MaybeUninit<f32>; LANES] =
                    (&mut out[j + v * LANES..][..LANES]).try_into().unwrap();
                acc.store_uninit(o);
            }
        }
        for j in (full..vec_end).step_by(LANES) {
            let mut acc = start_at::<V>(u.start, base, out, j);
            for (p, &cp) in coef.iter().enumerate() {
                acc = V::splat(cp).madd(V::load(lanes(u.bt, p * n + j)), acc);
            }
            acc.store_uninit((&mut out[j..][..LANES]).try_into().unwrap());
        }
        for j in vec_end..n {
            scalar_column::<V>(u, coef, base, out, j);
        }
    }
}

/// Column `j` of one [`RowUpdate`] output row (`coef` already scaled by `alpha`).
#[inline(always)]
fn scalar_column<V: F32x16>(
    u: &RowUpdate,
    coef: &[f32],
    base: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
    j: usize,
) {
    let mut acc = match (u.start, base) {
        (_, Some(b)) => b[j],
        // SAFETY: `Start::Scaled` is only built over initialised outputs.
        (Start::Scaled(beta), _) => beta * unsafe { out[j].assume_init() },
        _ => 0.0,
    };
    for (p, &cp) in coef.iter().enumerate() {
        acc = simd::madd::<V>(cp, u.bt[p * u.n + j], acc);
    }
    out[j].write(acc);
}

/// Where column `j` of a [`RowUpdate`] output row starts, read before anything of the row
/// is written. A function (inlined into each ISA's copy), not a closure: a closure does not
/// inherit its caller's target features, so its vector loads compiled to out-of-line calls
/// (about 7 % of the shared-x forward's time went there).
#[inline(always)]
fn start_at<V: F32x16>(
    start: Start,
    base: Option<&[f32]>,
    out: &[MaybeUninit<f32>],
    j: usize,
) -> V {
    match (start, base) {
        (_, Some(b)) => V::load(lanes(b, j)),
        (Start::Scaled(beta), _) => {
            // SAFETY: `Start::Scaled` is only built over initialised outputs.
            let o: &[f32; LANES] = unsafe { &*(out[j..j + LANES].as_ptr() as *const [f32; LANES]) };
            V::splat(beta).madd(V::load(o), V::zero())
        }
        _ => V::zero(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av as f64 * bv as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    /// Both engines, every transpose, beta 0 / 1 / other, sizes past the row-update width
    /// and the parallel split.
    #[test]
    fn gemm_matches_naive_all_transposes() {
        let mut rng = crate::rng::Rng::new(7);
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (130, 17, 33),
            (257, 9, 1),
            (300, 150, 8),
            (70, 131, 16),
            (257, 300, 129),
            (600, 40, 64),
            (1100, 70, 40),
            // Tall with a big op(b): the transposed-b path (`TALL_ROWS`, `PARALLEL_WORK`).
            (1030, 260, 1010),
        ] {
            let a = rng.normal_vec(m * k);
            let b = rng.normal_vec(k * n);
            let c0 = rng.normal_vec(m * n);
            for engine in [Engine::GemmCrate, Engine::MatrixMultiply] {
                for ta in [false, true] {
                    for tb in [false, true] {
                        let prod = naive(m, n, k, &a, ta, &b, tb);
                        for beta in [0.0f32, 1.0, -0.5] {
                            let want: Vec<f32> =
                                (0..m * n).map(|t| 1.5 * prod[t] + beta * c0[t]).collect();
                            let mut got = if beta == 0.0 {
                                vec![f32::NAN; m * n]
                            } else {
                                c0.clone()
                            };
                            let start = if beta == 0.0 {
                                Start::Zero
                            } else {
                                Start::Scaled(beta)
                            };
                            // SAFETY: f32 to MaybeUninit<f32>, as in `gemm`.
                            let c = unsafe { &mut *(got.as_mut_slice() as *mut [f32] as *mut _) };
                            gemm_with(engine, m, n, k, 1.5, &a, ta, &b, tb, start, c);
                            let err = crate::testing::rel_err(&got, &want);
                            assert!(
                                err < 1e-5,
                                "{engine:?} m{m} n{n} k{k} ta{ta} tb{tb} beta{beta}: {err}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Row updates on every instruction set this CPU has, every start, ragged widths.
    #[test]
    fn row_updates_match_naive_on_every_isa() {
        let mut rng = crate::rng::Rng::new(11);
        for &(rows, n, k) in &[
            (1, 1, 1),
            (3, 15, 2),
            (5, 64, 8),
            (9, 100, 16),
            (2, 1047, 5),
        ] {
            let coef = rng.normal_vec(rows * k);
            let bt = rng.normal_vec(k * n);
            let base = rng.normal_vec(rows * n);
            let prod = naive(rows, n, k, &coef, false, &bt, false);
            for isa in Isa::available() {
                let want: Vec<f32> = (0..rows * n).map(|t| base[t] + 0.5 * prod[t]).collect();
                let mut out = vec![MaybeUninit::uninit(); rows * n];
                let u = RowUpdate::with_base(n, k, 0.5, &coef, &bt, &base);
                row_update_with(isa, &u, 0, &mut out);
                let got: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
                assert!(crate::testing::rel_err(&got, &want) < 1e-6, "{isa:?} base");
                let mut inplace = base.clone();
                let u = RowUpdate {
                    n,
                    k,
                    alpha: 0.5,
                    a: &coef,
                    a_view: View { rs: k, cs: 1 },
                    bt: &bt,
                    start: Start::Scaled(1.0),
                };
                let c = unsafe { &mut *(inplace.as_mut_slice() as *mut [f32] as *mut _) };
                row_update_with(isa, &u, 0, c);
                assert!(
                    crate::testing::rel_err(&inplace, &want) < 1e-6,
                    "{isa:?} add"
                );
            }
        }
    }
}
