//! `matmul` (DESIGN.md op 3) in float64.

/// The sizes of a batched product `c = alpha · op(a) op(b)`: `batch` blocks, `op(a)` is
/// `[m, inner]`, `op(b)` is `[inner, n]`, `c` is `[m, n]` per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    /// Number of blocks (1 when neither operand is batched).
    pub batch: usize,
    /// Rows of `op(a)` and `c`.
    pub m: usize,
    /// Columns of `op(b)` and `c`.
    pub n: usize,
    /// Columns of `op(a)`, rows of `op(b)`.
    pub inner: usize,
    /// `a` is stored `[inner, m]` and used transposed.
    pub trans_a: bool,
    /// `b` is stored `[n, inner]` and used transposed.
    pub trans_b: bool,
    /// `a` has one block per batch entry (else one shared block).
    pub a_batched: bool,
    /// `b` has one block per batch entry (else one shared block).
    pub b_batched: bool,
    /// `c` is `[batch, m, n]` (else `[m, n]`): either operand is batched.
    pub batched_output: bool,
}

/// `c_t = alpha · op(a_t) op(b_t)` for every block t, with `op` the optional transpose:
/// `c_t[i][j] = alpha · Σ_p op(a_t)[i][p] · op(b_t)[p][j]`.
pub fn matmul(s: &MatmulShape, a: &[f64], b: &[f64], alpha: f64) -> Vec<f64> {
    let (m, n, inner) = (s.m, s.n, s.inner);
    // op(a_t)[i][p]: stored [m, inner], or [inner, m] when transposed.
    let op_a = |t: usize, i: usize, p: usize| {
        let block = if s.a_batched { t * m * inner } else { 0 };
        if s.trans_a {
            a[block + p * m + i]
        } else {
            a[block + i * inner + p]
        }
    };
    // op(b_t)[p][j]: stored [inner, n], or [n, inner] when transposed.
    let op_b = |t: usize, p: usize, j: usize| {
        let block = if s.b_batched { t * inner * n } else { 0 };
        if s.trans_b {
            b[block + j * inner + p]
        } else {
            b[block + p * n + j]
        }
    };
    let mut c = vec![0.0; s.batch * m * n];
    for t in 0..s.batch {
        for i in 0..m {
            for j in 0..n {
                let mut sum = 0.0;
                for p in 0..inner {
                    sum += op_a(t, i, p) * op_b(t, p, j);
                }
                c[(t * m + i) * n + j] = alpha * sum;
            }
        }
    }
    c
}
