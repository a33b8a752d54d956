//! What each kernel's example launch should have written, computed here in f64 from the
//! example's inputs and the ABI's one-line descriptions (and the kernels' headers).

use super::launch::Run;
use bella::backend::ptx::abi::Entry;
use bella::backend::ptx::gemm_mma::HalfType;
use bella::dtype::{pack_bits, unpack_bits, DType};

/// Reads an example run by parameter name.
struct Case<'a> {
    e: &'a Entry,
    run: &'a Run,
}

impl Case<'_> {
    fn input(&self, name: &str) -> Vec<f64> {
        self.run.inputs[name].iter().map(|&x| x as f64).collect()
    }
    fn bits(&self, name: &str) -> Vec<u32> {
        self.run.inputs[name].iter().map(|x| x.to_bits()).collect()
    }
    fn u(&self, name: &str) -> usize {
        Run::scalar(self.e, name) as usize
    }
    /// An f32 scalar, as the kernel sees it.
    fn f(&self, name: &str) -> f64 {
        Run::scalar(self.e, name) as f32 as f64
    }
    /// `got` (the output `name`) within `tol` (relative, plus `tol` absolute) of `want`.
    fn expect(&self, name: &str, want: &[f64], tol: f64) {
        let got = &self.run.outputs[name];
        assert_eq!(got.len(), want.len(), "{}: `{name}` length", self.e.name);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                ((g as f64) - w).abs() <= tol * (1.0 + w.abs()),
                "{}: `{name}`[{i}] = {g}, the reference {w}",
                self.e.name
            );
        }
    }
}

const SQRT_2_PI: f64 = 0.797_884_560_802_865_4;
const GELU_A: f64 = 0.044715;

/// Checks `run` against the reference of `e`'s kernel; false when there is none.
pub fn check(e: &Entry, run: &Run) -> bool {
    let c = Case { e, run };
    match e.name.as_str() {
        "relu_forward" => c.expect("p_y", &map(&c.input("p_x"), |x| x.max(0.0)), 0.0),
        "relu_backward" => {
            let want: Vec<f64> = zip(&c.input("p_x"), &c.input("p_dy"), |x, dy| {
                if x > 0.0 {
                    dy
                } else {
                    0.0
                }
            });
            c.expect("p_dx", &want, 0.0)
        }
        "gelu_forward" => {
            let gelu = |x: f64| 0.5 * x * (1.0 + (SQRT_2_PI * (x + GELU_A * x * x * x)).tanh());
            c.expect("p_y", &map(&c.input("p_x"), gelu), 1e-5)
        }
        "gelu_backward" => {
            let d = |x: f64| {
                let t = (SQRT_2_PI * (x + GELU_A * x * x * x)).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_PI * (1.0 + 3.0 * GELU_A * x * x)
            };
            c.expect(
                "p_dx",
                &zip(&c.input("p_x"), &c.input("p_dy"), |x, dy| d(x) * dy),
                1e-5,
            )
        }
        "axpby" => {
            let (a, b) = (c.f("p_alpha"), c.f("p_beta"));
            c.expect(
                "p_out",
                &zip(&c.input("p_x"), &c.input("p_y"), |x, y| a * x + b * y),
                1e-6,
            )
        }
        "sum_blocks" => {
            let (k, len, src) = (c.u("p_k"), c.u("p_len"), c.input("p_src"));
            let want: Vec<f64> = (0..len)
                .map(|e| (0..k).map(|b| src[b * len + e]).sum())
                .collect();
            c.expect("p_out", &want, 1e-6)
        }
        "adamw_step" => adamw(&c),
        "softmax_xent_rows" => softmax_xent(&c),
        "row_mean" => {
            let (count, x, s) = (c.u("p_count"), c.input("p_in"), c.f("p_scale"));
            let want: Vec<f64> = (0..c.u("p_groups"))
                .map(|g| s * x[g * count..(g + 1) * count].iter().sum::<f64>())
                .collect();
            c.expect("p_out", &want, 1e-5)
        }
        "ensemble_stats" => ensemble_stats(&c),
        "sqdist_partial" | "sqdist_partial_pairs" => sqdist_partial(&c),
        "sqdist_finalize" => sqdist_finalize(&c),
        "rbf_from_sqdist" => {
            let h = c.f("p_h");
            c.expect(
                "p_kern",
                &map(&c.input("p_sqdist"), |s| (-s / h).exp()),
                1e-5,
            )
        }
        "svgd_direction" | "svgd_direction_per_output" => svgd_direction(&c),
        "gemm_tiled" | "gemm_tiled_128" | "gemm_narrow_splitk" => gemm_tiled(&c),
        "gemm_mma_bf16" => gemm_mma(&c, HalfType::Bf16),
        "gemm_mma_f16" => gemm_mma(&c, HalfType::F16),
        "lora_forward" | "lora_forward_64x32" => lora_forward_y_shared_x(&c),
        "lora_forward_mma_bf16" => lora_forward_mma(&c, HalfType::Bf16),
        "lora_forward_mma_f16" => lora_forward_mma(&c, HalfType::F16),
        "cast_f32_to_bf16" => cast_narrow(&c, DType::BF16),
        "cast_f32_to_f16" => cast_narrow(&c, DType::F16),
        "cast_bf16_to_f32" => cast_widen(&c, DType::BF16),
        "cast_f16_to_f32" => cast_widen(&c, DType::F16),
        "sum_blocks_bf16" => sum_blocks_half(&c, DType::BF16),
        "sum_blocks_f16" => sum_blocks_half(&c, DType::F16),
        "gather_blocks" => gather_blocks(&c),
        _ => return false,
    }
    true
}

fn map(x: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    x.iter().map(|&v| f(v)).collect()
}

fn zip(x: &[f64], y: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    x.iter().zip(y).map(|(&a, &b)| f(a, b)).collect()
}

fn adamw(c: &Case) {
    let (g, m0, v0, p0) = (
        c.input("p_grad"),
        c.input("p_m"),
        c.input("p_v"),
        c.input("p_param"),
    );
    let (b1, b2) = (c.f("p_beta1"), c.f("p_beta2"));
    let m = zip(&m0, &g, |m, g| b1 * m + (1.0 - b1) * g);
    let v = zip(&v0, &g, |v, g| b2 * v + (1.0 - b2) * g * g);
    let (lr, eps, decay, bc1, bc2) = (
        c.f("p_lr"),
        c.f("p_eps"),
        c.f("p_decay"),
        c.f("p_bc1"),
        c.f("p_bc2"),
    );
    let p: Vec<f64> = (0..p0.len())
        .map(|i| p0[i] * decay - lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps))
        .collect();
    c.expect("p_m", &m, 1e-6);
    c.expect("p_v", &v, 1e-6);
    c.expect("p_param", &p, 1e-5);
}

fn softmax(z: &[f64]) -> (Vec<f64>, f64) {
    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = z.iter().map(|&v| (v - mx).exp()).sum();
    (z.iter().map(|&v| (v - mx).exp() / s).collect(), mx + s.ln())
}

fn softmax_xent(c: &Case) {
    let (m, cols, inv_m) = (c.u("p_m"), c.u("p_c"), c.f("p_inv_m"));
    let (z, labels) = (c.input("p_logits"), c.bits("p_labels"));
    let (mut dl, mut loss) = (Vec::new(), Vec::new());
    for row in 0..c.u("p_rows") {
        let zr = &z[row * cols..(row + 1) * cols];
        let label = labels[row % m] as usize;
        let (p, lse) = softmax(zr);
        loss.push(lse - zr[label]);
        dl.extend((0..cols).map(|j| (p[j] - f64::from(j == label)) * inv_m));
    }
    c.expect("p_rowloss", &loss, 1e-5);
    c.expect("p_dl", &dl, 1e-5);
}

fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&q| q > 0.0)
        .map(|&q| q * q.ln())
        .sum::<f64>()
}

fn ensemble_stats(c: &Case) {
    let (k, m, cols) = (c.u("p_k"), c.u("p_m"), c.u("p_c"));
    let z = c.input("p_logits");
    let (mut probs, mut ent, mut expd, mut mi) = (vec![0.0; m * cols], vec![], vec![], vec![]);
    for i in 0..m {
        let mut h = 0.0;
        for p in 0..k {
            let (s, _) = softmax(&z[(p * m + i) * cols..(p * m + i + 1) * cols]);
            h += entropy(&s) / k as f64;
            for j in 0..cols {
                probs[i * cols + j] += s[j] / k as f64;
            }
        }
        let hm = entropy(&probs[i * cols..(i + 1) * cols]);
        ent.push(hm);
        expd.push(h);
        mi.push(hm - h);
    }
    c.expect("p_probs", &probs, 1e-5);
    c.expect("p_entropy", &ent, 1e-5);
    c.expect("p_expected", &expd, 1e-5);
    c.expect("p_mi", &mi, 1e-5);
}

/// Pairs i < j in row-major order.
fn pairs(k: usize) -> Vec<(usize, usize)> {
    (0..k)
        .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
        .collect()
}

fn sqdist_partial(c: &Case) {
    let (k, d, chunk, nchunks) = (c.u("p_k"), c.u("p_d"), c.u("p_chunk"), c.u("p_nchunks"));
    let th = c.input("p_theta");
    let ps = pairs(k);
    let mut want = vec![0.0; ps.len() * nchunks];
    for (pi, &(i, j)) in ps.iter().enumerate() {
        for ch in 0..nchunks {
            let s: f64 = (ch * chunk..((ch + 1) * chunk).min(d))
                .map(|e| (th[i * d + e] - th[j * d + e]).powi(2))
                .sum();
            // sqdist_partial: partial[ch * pairs + pair]; _pairs: partial[pair * nchunks + ch]
            let at = if c.e.name == "sqdist_partial" {
                ch * ps.len() + pi
            } else {
                pi * nchunks + ch
            };
            want[at] = s;
        }
    }
    c.expect("p_partial", &want, 1e-5);
}

fn sqdist_finalize(c: &Case) {
    let (k, nchunks) = (c.u("p_k"), c.u("p_nchunks"));
    let (ps, cs, part) = (
        c.u("p_pair_stride"),
        c.u("p_ch_stride"),
        c.input("p_partial"),
    );
    let mut want = vec![0.0; k * k];
    for (pi, &(i, j)) in pairs(k).iter().enumerate() {
        let s: f64 = (0..nchunks).map(|ch| part[pi * ps + ch * cs]).sum();
        want[i * k + j] = s;
        want[j * k + i] = s;
    }
    c.expect("p_out", &want, 1e-5);
}

fn svgd_direction(c: &Case) {
    let (k, d, cc, inv_k) = (c.u("p_k"), c.u("p_d"), c.f("p_c"), c.f("p_inv_k"));
    let (th, sc, kern) = (c.input("p_theta"), c.input("p_score"), c.input("p_kern"));
    let mut want = vec![0.0; k * d];
    for i in 0..k {
        for e in 0..d {
            let s: f64 = (0..k)
                .map(|j| kern[j * k + i] * (sc[j * d + e] + cc * (th[i * d + e] - th[j * d + e])))
                .sum();
            want[i * d + e] = inv_k * s;
        }
    }
    c.expect("p_phi", &want, 1e-5);
}

fn gemm_tiled(c: &Case) {
    let (m, n, inner, batch, nred) = (
        c.u("p_m"),
        c.u("p_n"),
        c.u("p_inner"),
        c.u("p_batch"),
        c.u("p_nred"),
    );
    let (a_bs, a_sm, a_sk) = (c.u("p_a_bs"), c.u("p_a_sm"), c.u("p_a_sk"));
    let (b_bs, b_sk, b_sn) = (c.u("p_b_bs"), c.u("p_b_sk"), c.u("p_b_sn"));
    let (c_bs, c_sm, flags) = (c.u("p_c_bs"), c.u("p_c_sm"), c.u("p_flags"));
    let (alpha, beta) = (c.f("p_alpha"), c.f("p_beta"));
    let (a, b, bias) = (c.input("p_a"), c.input("p_b"), c.input("p_bias"));
    let mut want = c.input("p_c");
    for bb in 0..batch {
        for row in 0..m {
            for col in 0..n {
                let mut s = 0.0;
                for q in 0..nred {
                    let blk = bb * nred + q;
                    for kk in 0..inner {
                        s += a[blk * a_bs + row * a_sm + kk * a_sk]
                            * b[blk * b_bs + kk * b_sk + col * b_sn];
                    }
                }
                let at = bb * c_bs + row * c_sm + col;
                let mut v = alpha * s;
                if flags & 1 != 0 {
                    v += beta * want[at];
                }
                if flags & 2 != 0 {
                    v += bias[col];
                }
                want[at] = v;
            }
        }
    }
    c.expect("p_c", &want, 1e-5);
}

/// Element `i` of a half-packed buffer.
fn half_at(t: HalfType, words: &[u32], i: usize) -> f64 {
    let shift = 16 * (i % 2);
    t.value((words[i / 2] >> shift) as u16) as f64
}

/// Every flag: bit 0 beta, bit 1 C blocked `[n / blk, m, blk]` (blk = flags >> 8), bit 2 A
/// stored `[k, m]`, bit 3 B stored `[k, n]`; bits 4..7 are unused (must be 0); `p_batch`
/// blocks at the `p_*_bs` strides.
fn gemm_mma(c: &Case, t: HalfType) {
    let (m, n, k, flags) = (c.u("p_m"), c.u("p_n"), c.u("p_k"), c.u("p_flags"));
    assert_eq!(flags & 0xf0, 0, "gemm_mma: flags bits 4..7 are not defined");
    let (alpha, beta) = (c.f("p_alpha"), c.f("p_beta"));
    let (batch, a_bs, b_bs, c_bs) = (c.u("p_batch"), c.u("p_a_bs"), c.u("p_b_bs"), c.u("p_c_bs"));
    let (a, b, c0) = (c.bits("p_a"), c.bits("p_b"), c.input("p_c"));
    // op(A)(row, q) and op(B)(col, q) of batch block bt in the stored layouts
    let a_at = |bt: usize, row: usize, q: usize| {
        let e = if flags & 4 != 0 {
            q * m + row
        } else {
            row * k + q
        };
        half_at(t, &a, bt * a_bs + e)
    };
    let b_at = |bt: usize, col: usize, q: usize| {
        let e = if flags & 8 != 0 {
            q * n + col
        } else {
            col * k + q
        };
        half_at(t, &b, bt * b_bs + e)
    };
    // C's word of (row, col) in block bt
    let blk = flags >> 8;
    let word = |bt: usize, row: usize, col: usize| {
        bt * c_bs
            + if flags & 2 != 0 {
                ((col / blk) * m + row) * blk + col % blk
            } else {
                row * n + col
            }
    };
    let mut want = c0.clone();
    for bt in 0..batch {
        for row in 0..m {
            for col in 0..n {
                let s: f64 = (0..k).map(|q| a_at(bt, row, q) * b_at(bt, col, q)).sum();
                let w = word(bt, row, col);
                want[w] = alpha * s + if flags & 1 != 0 { beta * c0[w] } else { 0.0 };
            }
        }
    }
    c.expect("p_c", &want, 1e-5);
}

/// The example's mode: y (flags 1: bias, shared x), h given.
fn lora_forward_y_shared_x(c: &Case) {
    assert_eq!(
        c.u("p_flags"),
        1,
        "the reference covers y mode with a bias and a shared x"
    );
    let (m, o, i, r, k) = (c.u("p_m"), c.u("p_o"), c.u("p_i"), c.u("p_r"), c.u("p_k"));
    let (b_ps, scale) = (c.u("p_b_ps"), c.f("p_scale"));
    let (x, w, bias, h, b) = (
        c.input("p_x"),
        c.input("p_w"),
        c.input("p_bias"),
        c.input("p_h"),
        c.input("p_b"),
    );
    let mut want = vec![0.0; k * m * o];
    for p in 0..k {
        for row in 0..m {
            for col in 0..o {
                let base: f64 = (0..i).map(|ii| x[row * i + ii] * w[col * i + ii]).sum();
                let rank: f64 = (0..r)
                    .map(|rr| h[(p * m + row) * r + rr] * b[p * b_ps + col * r + rr])
                    .sum();
                want[(p * m + row) * o + col] = base + bias[col] + scale * rank;
            }
        }
    }
    c.expect("p_y", &want, 1e-5);
}

/// y_k = x W^T (+ bias) + s h_k B_k^T with x, W, B 16-bit (packed) and h f32, shared x.
fn lora_forward_mma(c: &Case, t: HalfType) {
    let (m, o, i, r, k) = (c.u("p_m"), c.u("p_o"), c.u("p_i"), c.u("p_r"), c.u("p_k"));
    let (b_ps, scale, flags) = (c.u("p_b_ps"), c.f("p_scale"), c.u("p_flags"));
    let (x, w, b) = (c.bits("p_x"), c.bits("p_w"), c.bits("p_b"));
    let (bias, h) = (c.input("p_bias"), c.input("p_h"));
    // flags bit 1: x_p at element p * x_ps, else one x for every particle
    let x_ps = if flags & 2 != 0 { c.u("p_x_ps") } else { 0 };
    let mut want = vec![0.0; k * m * o];
    for p in 0..k {
        for row in 0..m {
            for col in 0..o {
                let base: f64 = (0..i)
                    .map(|q| half_at(t, &x, p * x_ps + row * i + q) * half_at(t, &w, col * i + q))
                    .sum();
                let rank: f64 = (0..r)
                    .map(|q| h[(p * m + row) * r + q] * half_at(t, &b, p * b_ps + col * r + q))
                    .sum();
                let bv = if flags & 1 != 0 { bias[col] } else { 0.0 };
                want[(p * m + row) * o + col] = base + bv + scale * rank;
            }
        }
    }
    c.expect("p_y", &want, 1e-5);
}

/// `p_dst` = the packed bits of `src` rounded by `src/dtype.rs`'s rule, bit for bit.
fn cast_narrow(c: &Case, dtype: DType) {
    let src = &c.run.inputs["p_src"][..c.u("p_n")];
    let want = pack_bits(&src.iter().map(|&x| dtype.round_bits(x)).collect::<Vec<_>>());
    let got: Vec<u32> = c.run.outputs["p_dst"].iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, want, "{}: `p_dst` bits", c.e.name);
}

/// `p_dst` = the exact f32 values of the first n packed 16-bit elements, bit for bit.
fn cast_widen(c: &Case, dtype: DType) {
    let n = c.u("p_n");
    let want: Vec<u32> = unpack_bits(&c.bits("p_src"), n)
        .into_iter()
        .map(|b| dtype.widen_bits(b).to_bits())
        .collect();
    let got: Vec<u32> = c.run.outputs["p_dst"].iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, want, "{}: `p_dst` bits", c.e.name);
}

/// `p_out` = the K blocks' f32 sum in block order, rounded once, bit for bit.
fn sum_blocks_half(c: &Case, dtype: DType) {
    let (k, words) = (c.u("p_k"), c.u("p_words"));
    let src = unpack_bits(&c.bits("p_src"), 2 * k * words);
    let len = 2 * words;
    let sums: Vec<u16> = (0..len)
        .map(|e| {
            let mut acc = dtype.widen_bits(src[e]);
            for b in 1..k {
                acc += dtype.widen_bits(src[b * len + e]);
            }
            dtype.round_bits(acc)
        })
        .collect();
    let got: Vec<u32> = c.run.outputs["p_out"].iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, pack_bits(&sums), "{}: `p_out` bits", c.e.name);
}

/// `p_out` = the k source blocks of `p_len` words, `p_stride` apart, one after another, bit
/// for bit.
fn gather_blocks(c: &Case) {
    let (k, len, stride) = (c.u("p_k"), c.u("p_len"), c.u("p_stride"));
    let src = c.bits("p_src");
    let want: Vec<u32> = (0..k)
        .flat_map(|b| src[b * stride..b * stride + len].iter().copied())
        .collect();
    let got: Vec<u32> = c.run.outputs["p_out"].iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, want, "{}: `p_out` bits", c.e.name);
}
