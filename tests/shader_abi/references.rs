//! References for the example dispatches, in f64 from the inputs and the parameters by name.
//! `expected` gives each output the reference knows (by binding variable), as [`observed`]
//! presents it; entries without a reference here are only checked for finite outputs.

use bella::dtype::{unpack_bits, DType};
use std::collections::BTreeMap;

type Buffers = BTreeMap<String, Vec<f32>>;
type Params = BTreeMap<String, f64>;

fn gelu(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

fn gelu_grad(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let t = (c * (x + 0.044715 * x * x * x)).tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
}

/// An output as its reference is stated: `sqdist_partial`'s rows of partial sums added up
/// (one sum per pair; how D is cut into chunks and lanes is the kernel's business), a
/// narrowing cast's packed halves widened to their values, any other output as it is.
pub fn observed(name: &str, var: &str, got: &[f32], p: &Params) -> Vec<f64> {
    if let Some(dt) = narrowed_to(name) {
        // The packed halves, widened (exactly) to their values.
        return halves(dt, got, p["n"] as usize);
    }
    if name == "sqdist_partial" && var == "partial_out" {
        let pairs = p["pairs"] as usize;
        let rows = got.len() / pairs.max(1);
        return (0..pairs)
            .map(|q| (0..rows).map(|r| got[r * pairs + q] as f64).sum())
            .collect();
    }
    got.iter().map(|&x| x as f64).collect()
}

/// The outputs of `name`'s dispatch with inputs `b` and parameters `p`, where known.
pub fn expected(name: &str, b: &Buffers, p: &Params) -> Option<BTreeMap<&'static str, Vec<f64>>> {
    let u = |k: &str| p[k] as usize;
    let f = |k: &str| p[k];
    let v = |k: &str| -> Vec<f64> { b[k].iter().map(|&x| x as f64).collect() };
    let n = p.get("n").map_or(0, |&n| n as usize);
    let map = |out: &'static str, values: Vec<f64>| Some(BTreeMap::from([(out, values)]));
    match name {
        "relu_forward" => map(
            "unary_out",
            v("x")[..n].iter().map(|&x| x.max(0.0)).collect(),
        ),
        "gelu_forward" => map("unary_out", v("x")[..n].iter().map(|&x| gelu(x)).collect()),
        "relu_backward" | "gelu_backward" | "axpby" => {
            let (x, y) = (v("x"), v("y"));
            let out = (0..n)
                .map(|i| match name {
                    "relu_backward" => {
                        if x[i] > 0.0 {
                            y[i]
                        } else {
                            0.0
                        }
                    }
                    "gelu_backward" => y[i] * gelu_grad(x[i]),
                    _ => f("alpha") * x[i] + f("beta") * y[i],
                })
                .collect();
            map("binary_out", out)
        }
        "adamw_step" => {
            let (g, mut param, mut m, mut vv) = (v("grad"), v("param"), v("m"), v("v"));
            for i in 0..n {
                m[i] = f("beta1") * m[i] + (1.0 - f("beta1")) * g[i];
                vv[i] = f("beta2") * vv[i] + (1.0 - f("beta2")) * g[i] * g[i];
                let m_hat = m[i] / f("bias_correction1");
                let v_hat = vv[i] / f("bias_correction2");
                param[i] = param[i] * f("decay") - f("lr") * m_hat / (v_hat.sqrt() + f("eps"));
            }
            Some(BTreeMap::from([("param", param), ("m", m), ("v", vv)]))
        }
        "rbf_from_sqdist" => map(
            "kernel_out",
            v("dist_in")[..n]
                .iter()
                .map(|d| (-d / f("bandwidth")).exp())
                .collect(),
        ),
        "gemm_tiled" | "gemm_tiled_128" | "gemm_narrow_splitk" => {
            map("c", gemm(&v("a"), &v("b"), p))
        }
        "gemm_tiled_bf16"
        | "gemm_tiled_f16"
        | "gemm_tiled_f16_native"
        | "gemm_narrow_splitk_bf16"
        | "gemm_narrow_splitk_f16" => {
            // The packed operands widened (exactly) to their values: every half of every word.
            let dt = if name.ends_with("bf16") {
                DType::BF16
            } else {
                DType::F16
            };
            let wide = |k: &str| halves(dt, &b[k], 2 * b[k].len());
            map("c", gemm(&wide("ah"), &wide("bh"), p))
        }
        "softmax_xent_rows" => {
            let (k, m, c) = (u("k"), u("m"), u("c"));
            let z = v("logits");
            let labels: Vec<usize> = b["labels"].iter().map(|x| x.to_bits() as usize).collect();
            let mut dlogits = vec![0.0; k * m * c];
            let mut loss = vec![0.0; k * m];
            for row in 0..k * m {
                let zr = &z[row * c..(row + 1) * c];
                let mx = zr.iter().cloned().fold(f64::MIN, f64::max);
                let s: f64 = zr.iter().map(|x| (x - mx).exp()).sum();
                let label = labels[row % m];
                for j in 0..c {
                    let onehot = if j == label { 1.0 } else { 0.0 };
                    dlogits[row * c + j] = ((zr[j] - mx).exp() / s - onehot) * f("inv_m");
                }
                loss[row] = s.ln() + mx - zr[label];
            }
            Some(BTreeMap::from([("dlogits", dlogits), ("row_loss", loss)]))
        }
        "row_mean" => {
            let (k, m) = (u("k"), u("m"));
            let r = v("row_loss_in");
            map(
                "loss",
                (0..k)
                    .map(|i| r[i * m..(i + 1) * m].iter().sum::<f64>() * f("inv_m"))
                    .collect(),
            )
        }
        "ensemble_stats" => Some(ensemble_stats(&v("stat_logits"), u("k"), u("m"), u("c"))),
        "sqdist_partial" => {
            let (k, d) = (u("k"), u("d"));
            let theta = v("theta");
            let mut sums = Vec::new();
            for i in 0..k {
                for j in i + 1..k {
                    let s = (0..d).map(|e| (theta[i * d + e] - theta[j * d + e]).powi(2));
                    sums.push(s.sum());
                }
            }
            map("partial_out", sums)
        }
        "sqdist_finalize" => {
            let (k, pairs, rows) = (u("k"), u("pairs"), u("rows"));
            let partial = v("partial_in");
            let mut out = vec![0.0; k * k];
            let mut pair = 0;
            for i in 0..k {
                for j in i + 1..k {
                    let s: f64 = (0..rows).map(|r| partial[r * pairs + pair]).sum();
                    out[i * k + j] = s;
                    out[j * k + i] = s;
                    pair += 1;
                }
            }
            map("sqdist", out)
        }
        "svgd_direction" => {
            let (k, d) = (u("k"), u("d"));
            let (theta, score, kern) = (v("theta_d"), v("score"), v("kern"));
            let mut phi = vec![0.0; k * d];
            for i in 0..k {
                for e in 0..d {
                    let s: f64 = (0..k)
                        .map(|j| {
                            kern[j * k + i]
                                * (score[j * d + e]
                                    + f("c") * (theta[i * d + e] - theta[j * d + e]))
                        })
                        .sum();
                    phi[i * d + e] = s * f("inv_k");
                }
            }
            map("phi", phi)
        }
        "lora_forward" | "lora_forward_128" => lora_forward(b, p),
        "lora_forward_bf16"
        | "lora_forward_f16"
        | "lora_forward_bf16_128"
        | "lora_forward_f16_128" => {
            // The packed operands widened (exactly) to their values, then the f32 entry's
            // reference under its variable names.
            let dt = if name.starts_with("lora_forward_bf16") {
                DType::BF16
            } else {
                DType::F16
            };
            let wide = |k: &str| -> Vec<f32> {
                let v = halves(dt, &b[k], 2 * b[k].len());
                v.into_iter().map(|x| x as f32).collect()
            };
            let mut f32s: Buffers = b.clone();
            for (packed, var) in [("x16", "lhs"), ("w16", "weight"), ("b16", "factor")] {
                f32s.insert(var.into(), wide(packed));
            }
            lora_forward(&f32s, p)
        }
        "lora_dx" | "lora_dx_128" => lora_dx(b, p),
        "cast_f32_to_bf16" | "cast_f32_to_f16" => {
            let dt = narrowed_to(name)?;
            let src = &b["src"][..n];
            map(
                "dst",
                src.iter()
                    .map(|&x| dt.widen_bits(dt.round_bits(x)) as f64)
                    .collect(),
            )
        }
        "cast_bf16_to_f32" => map("dst", halves(DType::BF16, &b["src"], n)),
        "cast_f16_to_f32" => map("dst", halves(DType::F16, &b["src"], n)),
        _ => None,
    }
}

/// The 16-bit type a narrowing cast writes.
fn narrowed_to(name: &str) -> Option<DType> {
    match name {
        "cast_f32_to_bf16" => Some(DType::BF16),
        "cast_f32_to_f16" => Some(DType::F16),
        _ => None,
    }
}

/// The first `n` halves of packed words (given as the f32s of their bits), widened.
fn halves(dt: DType, words: &[f32], n: usize) -> Vec<f64> {
    let bits: Vec<u32> = words.iter().map(|w| w.to_bits()).collect();
    unpack_bits(&bits, n)
        .into_iter()
        .map(|h| dt.widen_bits(h) as f64)
        .collect()
}

/// c[batch, row, col] by the stride formulas of matmul.wgsl's header.
fn gemm(a: &[f64], b: &[f64], p: &Params) -> Vec<f64> {
    let u = |k: &str| p[k] as usize;
    let mut c = vec![f64::NAN; u("c_off") + u("batch") * u("c_bs").max(u("m") * u("n"))];
    for bt in 0..u("batch") {
        for row in 0..u("m") {
            for col in 0..u("n") {
                let s: f64 = (0..u("inner"))
                    .map(|k| {
                        let ai = u("a_off") + bt * u("a_bs") + row * u("a_rs") + k * u("a_ks");
                        let bi = u("b_off")
                            + bt * u("b_bs")
                            + k * u("b_ks")
                            + (col / u("b_grp")) * u("b_gs")
                            + (col % u("b_grp")) * u("b_cs");
                        a[ai] * b[bi]
                    })
                    .sum();
                let ci = u("c_off")
                    + bt * u("c_bs")
                    + row * u("c_rs")
                    + (col / u("c_grp")) * u("c_gs")
                    + (col % u("c_grp")) * u("c_cs");
                c[ci] = p["alpha"] * s;
            }
        }
    }
    c.truncate(u("batch") * u("m") * u("n"));
    c
}

fn ensemble_stats(z: &[f64], k: usize, m: usize, c: usize) -> BTreeMap<&'static str, Vec<f64>> {
    let mut probs = vec![0.0; m * c];
    let (mut entropy, mut expected, mut mutual) = (vec![0.0; m], vec![0.0; m], vec![0.0; m]);
    for row in 0..m {
        for kp in 0..k {
            let zr = &z[(kp * m + row) * c..(kp * m + row + 1) * c];
            let mx = zr.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = zr.iter().map(|x| (x - mx).exp()).sum();
            let mut h = 0.0;
            for j in 0..c {
                let q = (zr[j] - mx).exp() / s;
                probs[row * c + j] += q / k as f64;
                h -= q * q.ln();
            }
            expected[row] += h / k as f64;
        }
        entropy[row] = -(0..c)
            .map(|j| probs[row * c + j])
            .map(|q| q * q.ln())
            .sum::<f64>();
        mutual[row] = entropy[row] - expected[row];
    }
    BTreeMap::from([
        ("probs", probs),
        ("entropy", entropy),
        ("expected_entropy", expected),
        ("mutual_info", mutual),
    ])
}

/// y_k = x Wᵀ + bias + s h_k B_kᵀ (the examples share x).
fn lora_forward(b: &Buffers, p: &Params) -> Option<BTreeMap<&'static str, Vec<f64>>> {
    let u = |k: &str| p[k] as usize;
    if u("x_shared") != 1 || u("has_bias") != 1 {
        return None;
    }
    let (k, m, i_, o, r) = (u("k"), u("m"), u("i"), u("o"), u("r"));
    let g = |n: &str, at: usize| b[n][at] as f64;
    let mut y = vec![0.0; k * m * o];
    for kp in 0..k {
        for row in 0..m {
            for col in 0..o {
                let base: f64 = (0..i_)
                    .map(|t| g("lhs", row * i_ + t) * g("weight", col * i_ + t))
                    .sum();
                let bk = u("f_off") + kp * u("f_stride");
                let rank: f64 = (0..r)
                    .map(|q| g("low", (kp * m + row) * r + q) * g("factor", bk + col * r + q))
                    .sum();
                y[(kp * m + row) * o + col] = base + g("bias", col) + p["scale"] * rank;
            }
        }
    }
    Some(BTreeMap::from([("y", y)]))
}

/// dx = Σ_k dy_k W + s Σ_k g_k A_k (the examples share x).
fn lora_dx(b: &Buffers, p: &Params) -> Option<BTreeMap<&'static str, Vec<f64>>> {
    let u = |k: &str| p[k] as usize;
    if u("x_shared") != 1 {
        return None;
    }
    let (k, m, i_, o, r) = (u("k"), u("m"), u("i"), u("o"), u("r"));
    let g = |n: &str, at: usize| b[n][at] as f64;
    let mut dx = vec![0.0; m * i_];
    for row in 0..m {
        for col in 0..i_ {
            let mut s = 0.0;
            for kp in 0..k {
                s += (0..o)
                    .map(|t| g("lhs", (kp * m + row) * o + t) * g("weight", t * i_ + col))
                    .sum::<f64>();
                let ak = u("f_off") + kp * u("f_stride");
                s += p["scale"]
                    * (0..r)
                        .map(|q| g("low", (kp * m + row) * r + q) * g("factor", ak + q * i_ + col))
                        .sum::<f64>();
            }
            dx[row * i_ + col] = s;
        }
    }
    Some(BTreeMap::from([("dx", dx)]))
}
