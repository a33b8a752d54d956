//! Row-major GEMM over `matrixmultiply`, with the rows of `c` split across rayon threads.

use rayon::prelude::*;

/// Fewest rows of `c` per parallel task: each task packs all of `op(b)` again, so rows are
/// split into one task per thread (no more), and only when each gets at least this many.
const MIN_ROWS_PER_TASK: usize = 64;
/// Inner dimensions up to this (a LoRA rank) skip packing: see [`small_inner`].
const SMALL_INNER: usize = 8;

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
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k <= SMALL_INNER {
        return small_inner(m, n, k, alpha, a, trans_a, b, trans_b, beta, c);
    }
    // Element (i, p) of op(a) sits at i*rsa + p*csa; likewise for b.
    let (rsa, csa) = if trans_a { (1, m) } else { (k, 1) };
    let (rsb, csb) = if trans_b { (1, k) } else { (n, 1) };
    let run = |row0: usize, c_rows: &mut [f32]| {
        let rows = c_rows.len() / n;
        // SAFETY: the strides above address only elements inside `a` and `b` (lengths
        // asserted) for rows row0..row0+rows, and `c_rows` holds exactly `rows * n`.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                alpha,
                a.as_ptr().add(row0 * rsa),
                rsa as isize,
                csa as isize,
                b.as_ptr(),
                rsb as isize,
                csb as isize,
                beta,
                c_rows.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    let c = &mut c[..m * n];
    let work = m * n * k.max(1);
    let threads = rayon::current_num_threads();
    if m >= 2 * MIN_ROWS_PER_TASK && work > 1 << 18 && threads > 1 {
        let rows = m.div_ceil(threads).max(MIN_ROWS_PER_TASK);
        c.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(t, chunk)| run(t * rows, chunk));
    } else {
        run(0, c);
    }
}

/// `c = alpha·op(a)·op(b) + beta·c` for a tiny inner dimension (the `s·h Bᵀ` expansion of a
/// LoRA forward): each row of `c` is `k` axpys of rows of `op(b)`, done in L1 in one pass
/// over `c`. A packed GEMM spends more on packing and on its `c` update than on the
/// products here; this moves `c` once.
#[allow(clippy::too_many_arguments)]
fn small_inner(
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
    // op(b) as k contiguous rows of n.
    let b_rows: std::borrow::Cow<[f32]> = if trans_b {
        (0..k * n)
            .map(|t| b[(t % n) * k + t / n])
            .collect::<Vec<_>>()
            .into()
    } else {
        (&b[..k * n]).into()
    };
    let a_at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let row = |(i, c_row): (usize, &mut [f32])| {
        if beta == 0.0 {
            c_row.fill(0.0);
        } else if beta != 1.0 {
            c_row.iter_mut().for_each(|v| *v *= beta);
        }
        for p in 0..k {
            let s = alpha * a_at(i, p);
            for (c, &bv) in c_row.iter_mut().zip(&b_rows[p * n..(p + 1) * n]) {
                *c += s * bv;
            }
        }
    };
    let c = &mut c[..m * n];
    if m * n > 1 << 15 && rayon::current_num_threads() > 1 {
        c.par_chunks_mut(n)
            .enumerate()
            .with_min_len(8)
            .for_each(row);
    } else {
        c.chunks_mut(n).enumerate().for_each(row);
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

    #[test]
    fn gemm_matches_naive_all_transposes() {
        let mut rng = crate::rng::Rng::new(7);
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (130, 17, 33),
            (257, 9, 1),
            (300, 150, 8),
        ] {
            let a = rng.normal_vec(m * k);
            let b = rng.normal_vec(k * n);
            for ta in [false, true] {
                for tb in [false, true] {
                    let want = naive(m, n, k, &a, ta, &b, tb);
                    let mut got = vec![0.0; m * n];
                    gemm(m, n, k, 1.0, &a, ta, &b, tb, 0.0, &mut got);
                    let err = crate::testing::rel_err(&got, &want);
                    assert!(err < 1e-5, "m{m} n{n} k{k} ta{ta} tb{tb}: {err}");
                }
            }
        }
    }
}
