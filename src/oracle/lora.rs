//! `lora_forward` and `lora_backward` (DESIGN.md ops 1 and 2) in float64.

/// The sizes of one LoRA layer: K particles, M rows of input, I inputs, O outputs, rank r;
/// `x_shared` when `x` is one `[M, I]` for every particle rather than `[K, M, I]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraShape {
    /// Particles.
    pub k: usize,
    /// Rows of `x`.
    pub m: usize,
    /// Input features.
    pub i: usize,
    /// Output features.
    pub o: usize,
    /// Adapter rank.
    pub r: usize,
    /// `x` is `[M, I]`, shared by all particles (else `[K, M, I]`).
    pub x_shared: bool,
}

impl LoraShape {
    /// `x_k[m][i]`: the shared `x` is the same for every particle.
    fn x(&self, x: &[f64], k: usize, m: usize, i: usize) -> f64 {
        if self.x_shared {
            x[m * self.i + i]
        } else {
            x[(k * self.m + m) * self.i + i]
        }
    }
}

/// `lora_forward`: `h_k = x_k A_kᵀ` (`[K, M, r]`) and
/// `y_k = x_k Wᵀ + bias + s · h_k B_kᵀ` (`[K, M, O]`). Returns `(y, h)`.
///
/// `w` is `[O, I]`, `bias` `[O]`, `a` `[K, r, I]`, `b` `[K, O, r]`, `x` as in [`LoraShape`].
pub fn lora_forward(
    s: &LoraShape,
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
    a: &[f64],
    b: &[f64],
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (kk, mm, ii, oo, rr) = (s.k, s.m, s.i, s.o, s.r);
    let mut h = vec![0.0; kk * mm * rr];
    let mut y = vec![0.0; kk * mm * oo];
    for k in 0..kk {
        for m in 0..mm {
            // h_k[m][q] = Σ_i x_k[m][i] · A_k[q][i]
            for q in 0..rr {
                let mut sum = 0.0;
                for i in 0..ii {
                    sum += s.x(x, k, m, i) * a[(k * rr + q) * ii + i];
                }
                h[(k * mm + m) * rr + q] = sum;
            }
            // y_k[m][o] = Σ_i x_k[m][i] · W[o][i] + bias[o] + s · Σ_q h_k[m][q] · B_k[o][q]
            for o in 0..oo {
                let mut base = 0.0;
                for i in 0..ii {
                    base += s.x(x, k, m, i) * w[o * ii + i];
                }
                let mut low_rank = 0.0;
                for q in 0..rr {
                    low_rank += h[(k * mm + m) * rr + q] * b[(k * oo + o) * rr + q];
                }
                let bias_o = bias.map_or(0.0, |bias| bias[o]);
                y[(k * mm + m) * oo + o] = base + bias_o + scale * low_rank;
            }
        }
    }
    (y, h)
}

/// The outputs of [`lora_backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoraGrads {
    /// `[M, I]` for a shared `x` (summed over particles), else `[K, M, I]`.
    pub dx: Vec<f64>,
    /// `[K, r, I]`.
    pub d_lora_a: Vec<f64>,
    /// `[K, O, r]`.
    pub d_lora_b: Vec<f64>,
}

/// `lora_backward`: with `g_k = dy_k B_k` (`[M, r]`),
/// `d_lora_b_k = s · dy_kᵀ h_k`, `d_lora_a_k = s · g_kᵀ x_k`, `dx_k = dy_k W + s · g_k A_k`;
/// for a shared `x`, `dx = Σ_k dx_k`.
///
/// `dy` is `[K, M, O]`, `h` `[K, M, r]`, the rest as in [`lora_forward`].
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(
    s: &LoraShape,
    dy: &[f64],
    x: &[f64],
    w: &[f64],
    a: &[f64],
    b: &[f64],
    h: &[f64],
    scale: f64,
) -> LoraGrads {
    let (kk, mm, ii, oo, rr) = (s.k, s.m, s.i, s.o, s.r);
    let dy_at = |k: usize, m: usize, o: usize| dy[(k * mm + m) * oo + o];
    let mut d_lora_a = vec![0.0; kk * rr * ii];
    let mut d_lora_b = vec![0.0; kk * oo * rr];
    let mut dx = vec![0.0; if s.x_shared { mm * ii } else { kk * mm * ii }];
    for k in 0..kk {
        // g_k[m][q] = Σ_o dy_k[m][o] · B_k[o][q]
        let mut g = vec![0.0; mm * rr];
        for m in 0..mm {
            for q in 0..rr {
                let mut sum = 0.0;
                for o in 0..oo {
                    sum += dy_at(k, m, o) * b[(k * oo + o) * rr + q];
                }
                g[m * rr + q] = sum;
            }
        }
        // d_lora_b_k[o][q] = s · Σ_m dy_k[m][o] · h_k[m][q]
        for o in 0..oo {
            for q in 0..rr {
                let mut sum = 0.0;
                for m in 0..mm {
                    sum += dy_at(k, m, o) * h[(k * mm + m) * rr + q];
                }
                d_lora_b[(k * oo + o) * rr + q] = scale * sum;
            }
        }
        // d_lora_a_k[q][i] = s · Σ_m g_k[m][q] · x_k[m][i]
        for q in 0..rr {
            for i in 0..ii {
                let mut sum = 0.0;
                for m in 0..mm {
                    sum += g[m * rr + q] * s.x(x, k, m, i);
                }
                d_lora_a[(k * rr + q) * ii + i] = scale * sum;
            }
        }
        // dx_k[m][i] = Σ_o dy_k[m][o] · W[o][i] + s · Σ_q g_k[m][q] · A_k[q][i],
        // added into one [M, I] for a shared x.
        for m in 0..mm {
            for i in 0..ii {
                let mut base = 0.0;
                for o in 0..oo {
                    base += dy_at(k, m, o) * w[o * ii + i];
                }
                let mut low_rank = 0.0;
                for q in 0..rr {
                    low_rank += g[m * rr + q] * a[(k * rr + q) * ii + i];
                }
                let at = if s.x_shared {
                    m * ii + i
                } else {
                    (k * mm + m) * ii + i
                };
                dx[at] += base + scale * low_rank;
            }
        }
    }
    LoraGrads {
        dx,
        d_lora_a,
        d_lora_b,
    }
}
