//! The bf16/f16 checks of one backend, shared by `tests/half_precision.rs` and `bella doctor`:
//! `cast` bit for bit against the rule of [`crate::dtype`], the 16-bit `matmul` against a
//! float64 product of the exact 16-bit values (element-wise within the f32-accumulation
//! bound, and norm-wise), the bits round trip, and the refusals (mixed operand dtypes,
//! f32-only ops given 16-bit tensors). On PTX the `a · bᵀ` cases run the tensor-core kernel,
//! the others the widen-then-f32 fallback. Each returns the first problem as an error.

use crate::backend::Backend;
use crate::dtype::DType;
use crate::ops::{self, MatmulOperand};
use crate::rng::Rng;
use crate::tensor::{OutSlot, Tensor};

/// The 16-bit types.
pub const HALVES: [DType; 2] = [DType::BF16, DType::F16];

/// `Err(problem)` or `Ok(what was checked)`.
pub type Check = std::result::Result<String, String>;

fn fail<T>(msg: String) -> std::result::Result<T, String> {
    Err(msg)
}

fn op<T>(what: &str, r: crate::Result<T>) -> std::result::Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn same_value(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Values that exercise the rounding rule: ties, subnormals, overflow, signed zeros, NaN,
/// then random values of many magnitudes. An even count.
pub fn special_values(seed: u64) -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        1.0 + 1.0 / 256.0,  // bf16 tie, to even (1)
        1.0 + 3.0 / 256.0,  // bf16 tie, to even (up)
        1.0 + 1.0 / 2048.0, // f16 tie
        1.0 + 3.0 / 2048.0,
        65504.0,
        65519.0,
        65520.0, // f16 overflow threshold
        -70000.0,
        3.0e38,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        2f32.powi(-24),        // smallest f16 subnormal
        2f32.powi(-25),        // half of it: a tie, to even (0)
        3.0 * 2f32.powi(-25),  // 1.5 of it: a tie, to even (2)
        2f32.powi(-14) * 0.75, // f16 subnormal
        1.0e-40,               // f32 subnormal
        -1.0e-45,
        f32::MIN_POSITIVE,
    ];
    let mut rng = Rng::new(seed);
    for scale in [1e-6f32, 1e-3, 1.0, 100.0, 6e4, 1e30] {
        for _ in 0..40 {
            v.push((rng.uniform() * 2.0 - 1.0) * scale);
        }
    }
    v
}

/// `cast` f32 → bf16/f16 → f32 and bf16 → f16 on odd, even, 1- and 2-element tensors.
pub fn check_cast(be: &dyn Backend, seed: u64) -> Check {
    let xs = special_values(seed);
    for n in [xs.len() - 1, 1, 2, xs.len()] {
        let x = op("upload", be.upload(&[n], &xs[..n]))?;
        for d in HALVES {
            let h = op("cast", ops::cast(be, &x, d))?;
            if h.dtype() != d || h.shape() != [n] {
                return fail(format!("cast to {d} gave {h:?}"));
            }
            let want: Vec<u16> = xs[..n].iter().map(|&v| d.round_bits(v)).collect();
            let got = op("download_bits", be.download_bits(&h))?;
            if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
                return fail(format!(
                    "{d} cast of {:e} (element {i} of {n}): bits {:#06x}, the rule gives {:#06x}",
                    xs[i], got[i], want[i]
                ));
            }
            let back = op("cast", ops::cast(be, &h, DType::F32))?;
            let back = op("download", be.download(&back))?;
            if let Some(i) = (0..n).find(|&i| !same_value(back[i], d.widen_bits(want[i]))) {
                return fail(format!(
                    "{d} -> f32 of element {i}: {:e}, exactly {:e}",
                    back[i],
                    d.widen_bits(want[i])
                ));
            }
        }
        let hb = op("cast", ops::cast(be, &x, DType::BF16))?;
        let hf = op("cast", ops::cast(be, &hb, DType::F16))?;
        let want: Vec<u16> = op("download_bits", be.download_bits(&hb))?
            .iter()
            .map(|&b| DType::F16.round_bits(DType::BF16.widen_bits(b)))
            .collect();
        if op("download_bits", be.download_bits(&hf))? != want {
            return fail("bf16 -> f16 differs from rounding the bf16 values to f16".into());
        }
        if !op("cast", ops::cast(be, &hb, DType::BF16))?.same_storage(&hb) {
            return fail("cast to the tensor's own dtype copied it".into());
        }
    }
    Ok(format!(
        "{} values (ties, subnormals, overflow, NaN) bit for bit, both ways",
        xs.len()
    ))
}

/// `upload_bits` / `download_bits` / `download` of 16-bit tensors, and their errors.
pub fn check_bits_round_trip(be: &dyn Backend) -> Check {
    for d in HALVES {
        let bits: Vec<u16> = (0..7u16).map(|i| i * 9001 + 3).collect();
        let t = op("upload_bits", be.upload_bits(&[7], d, &bits))?;
        if t.dtype() != d || op("download_bits", be.download_bits(&t))? != bits {
            return fail(format!("{d} bits did not round-trip"));
        }
        let got = op("download", be.download(&t))?;
        if (0..7).any(|i| !same_value(got[i], d.widen_bits(bits[i]))) {
            return fail(format!("{d} download is not the exact widening"));
        }
        if be.upload_bits(&[8], d, &bits).is_ok() || be.upload_bits(&[7], DType::F32, &bits).is_ok()
        {
            return fail("upload_bits took a wrong count or f32".into());
        }
    }
    let f = op("upload", be.upload(&[2], &[1.0, 2.0]))?;
    if be.download_bits(&f).is_ok() {
        return fail("download_bits took an f32 tensor".into());
    }
    Ok("upload_bits / download_bits / download".into())
}

/// One product: `batch` blocks of op(a) `[m, inner]` · op(b) `[inner, n]`, operand blocks
/// from element offsets `a_offset` / `b_offset`, `b` shared or one block per product.
#[derive(Clone, Copy, Debug)]
pub struct Product {
    /// Products.
    pub batch: usize,
    /// Rows of op(a) and c.
    pub m: usize,
    /// Columns of op(b) and c.
    pub n: usize,
    /// The inner dimension.
    pub inner: usize,
    /// `a` stored `[inner, m]`.
    pub trans_a: bool,
    /// `b` stored `[n, inner]`.
    pub trans_b: bool,
    /// Element offset of `a`'s first block.
    pub a_offset: usize,
    /// Element offset of `b`'s first block.
    pub b_offset: usize,
    /// One `b` block for every product (stride 0).
    pub b_shared: bool,
}

fn nt(batch: usize, m: usize, n: usize, inner: usize) -> Product {
    Product {
        batch,
        m,
        n,
        inner,
        trans_a: false,
        trans_b: true,
        a_offset: 0,
        b_offset: 0,
        b_shared: false,
    }
}

/// The products checked: `a · bᵀ` with K % 8 = 0 and aligned blocks (the tensor-core kernel
/// on PTX: one element, past one 128-tile, batched with a shared `b` at offsets), what it
/// does not cover (odd K, misaligned offsets, K-major operands whose M or N is not a multiple
/// of 8), then the K-major layouts it covers.
pub fn products() -> Vec<Product> {
    vec![
        nt(1, 1, 1, 8),
        nt(1, 130, 129, 40),
        Product {
            a_offset: 8,
            b_offset: 16,
            b_shared: true,
            ..nt(3, 33, 17, 24)
        },
        nt(1, 19, 23, 13),
        Product {
            a_offset: 3,
            b_offset: 1,
            ..nt(2, 9, 11, 16)
        },
        Product {
            trans_a: true,
            trans_b: false,
            b_shared: true,
            ..nt(2, 21, 14, 10)
        },
        Product {
            trans_b: false,
            ..nt(1, 5, 70, 33)
        },
        // The K-major layouts the tensor-core kernel takes since it reads them with
        // `ldmatrix .trans` (M / N multiples of 8): `a · b`, `aᵀ · b` (any K), `aᵀ · bᵀ`,
        // past one 128-tile.
        Product {
            trans_b: false,
            ..nt(1, 37, 136, 24)
        },
        Product {
            trans_a: true,
            trans_b: false,
            b_offset: 8,
            b_shared: true,
            ..nt(2, 16, 24, 13)
        },
        Product {
            trans_a: true,
            ..nt(1, 144, 9, 16)
        },
    ]
}

/// `p` in dtype `d` against float64 sums of the same 16-bit values: each element within
/// the f32-accumulation bound, and ‖c − ref‖ ≤ 1e-6 ‖Σ|a b|‖ (the absolute sums: cancelling
/// products keep no relative accuracy of their own); returns that norm-wise error.
pub fn check_product(
    be: &dyn Backend,
    p: &Product,
    d: DType,
    rng: &mut Rng,
) -> std::result::Result<f64, String> {
    let (ar, ac) = if p.trans_a {
        (p.inner, p.m)
    } else {
        (p.m, p.inner)
    };
    let (br, bc) = if p.trans_b {
        (p.n, p.inner)
    } else {
        (p.inner, p.n)
    };
    let a_len = p.a_offset + p.batch * ar * ac;
    let b_len = p.b_offset + if p.b_shared { 1 } else { p.batch } * br * bc;
    let mut draw = |len| -> Vec<f32> {
        (0..len)
            .map(|_| d.round(rng.uniform() * 2.0 - 1.0))
            .collect()
    };
    let (a, b) = (draw(a_len), draw(b_len));
    let alpha = 0.75f32;
    let at = op("upload_as", be.upload_as(&[a_len], d, &a))?;
    let bt = op("upload_as", be.upload_as(&[b_len], d, &b))?;
    let c_len = p.batch * p.m * p.n;
    let mut c = op("upload", be.upload(&[c_len], &vec![f32::NAN; c_len]))?;
    let b_stride = if p.b_shared { 0 } else { br * bc };
    op(
        "matmul",
        ops::matmul_into(
            be,
            p.batch,
            MatmulOperand::strided(&at, p.a_offset, ar * ac, ar, ac),
            p.trans_a,
            MatmulOperand::strided(&bt, p.b_offset, b_stride, br, bc),
            p.trans_b,
            alpha,
            &mut c,
            OutSlot {
                offset: 0,
                stride: p.m * p.n,
            },
        ),
    )?;
    let got = op("download", be.download(&c))?;
    let (mut err2, mut ref2) = (0f64, 0f64);
    for k in 0..p.batch {
        let (a0, b0) = (p.a_offset + k * ar * ac, p.b_offset + k * b_stride);
        for i in 0..p.m {
            for j in 0..p.n {
                let (mut sum, mut abs) = (0f64, 0f64);
                for l in 0..p.inner {
                    let x = a[a0 + if p.trans_a { l * ac + i } else { i * ac + l }] as f64;
                    let y = b[b0 + if p.trans_b { j * bc + l } else { l * bc + j }] as f64;
                    sum += x * y;
                    abs += (x * y).abs();
                }
                let (want, abs) = (alpha as f64 * sum, alpha as f64 * abs);
                let g = got[k * p.m * p.n + i * p.n + j] as f64;
                // f32 accumulation in any order, the scale and the final rounding
                let bound = 2.0 * 2f64.powi(-24) * (p.inner as f64 + 3.0) * abs + 1e-30;
                let within = (g - want).abs() <= bound; // false for NaN too
                if !within {
                    return fail(format!(
                        "{d} {p:?}: c[{k}, {i}, {j}] = {g}, float64 {want} (bound {bound:e})"
                    ));
                }
                err2 += (g - want).powi(2);
                // the norm-wise scale is Σ|terms| per element, not |Σ terms|: a product that
                // cancels (a 1×1 output of 8 terms) keeps f32-level accuracy only of that
                ref2 += abs * abs;
            }
        }
    }
    let norm = (err2 / ref2.max(1e-300)).sqrt();
    let within = norm <= 1e-6; // false for NaN too
    if !within {
        return fail(format!(
            "{d} {p:?}: norm-wise error {norm:e} of the absolute sums > 1e-6"
        ));
    }
    Ok(norm)
}

/// Every product of [`products`] in bf16 and f16, and the whole-tensor form; returns the
/// worst norm-wise error.
pub fn check_matmul(be: &dyn Backend, seed: u64) -> std::result::Result<f64, String> {
    let mut rng = Rng::new(seed);
    let mut worst = 0f64;
    for d in HALVES {
        for p in &products() {
            worst = worst.max(check_product(be, p, d, &mut rng)?);
        }
    }
    let a = op("upload_as", be.upload_as(&[4, 16], DType::BF16, &[0.5; 64]))?;
    let c = op("matmul", ops::matmul(be, &a, &a, false, true, 1.0))?;
    if c.dtype() != DType::F32 || op("download", be.download(&c))? != vec![4.0; 16] {
        return fail("bf16 matmul of halves: c is not the f32 [4; 16]".into());
    }
    Ok(worst)
}

/// Mixed operand dtypes and f32-only ops given 16-bit tensors are errors naming the dtype.
pub fn check_refusals(be: &dyn Backend) -> Check {
    let h = op("upload_as", be.upload_as(&[2, 8], DType::BF16, &[1.0; 16]))?;
    let f16 = op("upload_as", be.upload_as(&[2, 8], DType::F16, &[1.0; 16]))?;
    let f = op("upload", be.upload(&[2, 8], &[1.0; 16]))?;
    let refused = |r: crate::Result<Tensor>, what: &str, needle: &[&str]| match r {
        Ok(_) => fail(format!("{what} was accepted")),
        Err(e) if needle.iter().all(|n| e.to_string().contains(n)) => Ok(()),
        Err(e) => fail(format!("{what}: the error does not say why: {e}")),
    };
    for (a, b, what) in [
        (&h, &f, "bf16 x f32"),
        (&f, &h, "f32 x bf16"),
        (&h, &f16, "bf16 x f16"),
    ] {
        refused(
            ops::matmul(be, a, b, false, true, 1.0),
            what,
            &["one dtype"],
        )?;
    }
    refused(
        ops::relu_forward(be, &h),
        "relu_forward(bf16)",
        &["bf16", "cast"],
    )?;
    refused(
        ops::axpby(be, 1.0, &f, 1.0, &h),
        "axpby(f32, bf16)",
        &["bf16"],
    )?;
    refused(
        ops::pairwise_sqdist(be, &f16),
        "pairwise_sqdist(f16)",
        &["f16"],
    )?;
    Ok("mixed operands and f32-only ops refused".into())
}

/// `lora_forward` or `lora_backward` (`op`) with `x`, `weight`, `lora_a`, `lora_b` in one
/// 16-bit type (through the named interface, so they stay 16-bit on the device; `dy`, `h`
/// f32) against the float64 oracle on the same values: shared and per-particle `x`,
/// K = 1 / r = 1 / M = 1, sizes past one tile, f32 and 16-bit bias. Returns the worst
/// norm-wise error.
pub fn check_lora(be: &dyn Backend, op_name: &str, seed: u64) -> std::result::Result<f64, String> {
    use crate::host::{HostTensor, Named};
    let mut rng = Rng::new(seed);
    let mut worst = 0f64;
    // (K, M, I, O, r, shared x, bias: None / Some(16-bit?))
    let plans = [
        (1, 1, 8, 1, 1, true, None),
        (3, 37, 40, 67, 8, true, Some(false)),
        (2, 19, 33, 21, 5, false, Some(true)),
        (1, 5, 16, 130, 16, false, None),
        // per-particle x past one 128-row tile, I % 8 == 0: the tensor cores on PTX
        (3, 131, 24, 20, 3, false, Some(false)),
    ];
    for d in HALVES {
        for &(k, m, i, o, r, shared, bias) in &plans {
            let mut half = |shape: &[usize], scale: f32| {
                let n: usize = shape.iter().product();
                let bits = (0..n)
                    .map(|_| d.round_bits((rng.uniform() * 2.0 - 1.0) * scale))
                    .collect();
                HostTensor::half(shape, d, bits)
            };
            let mut named = Named::new();
            let x_shape = if shared { vec![m, i] } else { vec![k, m, i] };
            named.insert("x".into(), half(&x_shape, 1.0));
            named.insert("weight".into(), half(&[o, i], 1.0 / (i as f32).sqrt()));
            named.insert("lora_a".into(), half(&[k, r, i], 1.0 / (i as f32).sqrt()));
            named.insert("lora_b".into(), half(&[k, o, r], 1.0));
            let backward = op_name == "lora_backward";
            if backward {
                // dy and h are f32: widen fresh 16-bit draws' values (any f32 values do).
                let dy = half(&[k, m, o], 1.0).to_f32();
                let h = half(&[k, m, r], 1.0).to_f32();
                named.insert("dy".into(), HostTensor::float(&[k, m, o], dy));
                named.insert("h".into(), HostTensor::float(&[k, m, r], h));
            }
            match bias.filter(|_| !backward) {
                Some(true) => {
                    named.insert("bias".into(), half(&[o], 1.0));
                }
                Some(false) => {
                    let v = (0..o).map(|_| rng.uniform() - 0.5).collect();
                    named.insert("bias".into(), HostTensor::float(&[o], v));
                }
                None => {}
            }
            named.insert("scale".into(), HostTensor::scalar(2.0 / r as f32));
            let case = format!("{d} {op_name} K={k} M={m} I={i} O={o} r={r} shared={shared}");
            let got = op(&case, crate::ops::named::run_named(be, op_name, &named))?;
            let want = op(&case, crate::oracle::run_f64(op_name, &named))?;
            for c in super::compare_outputs(&case, &got, &want) {
                if !c.passed() {
                    return fail(c.describe());
                }
                worst = worst.max(c.rel_err);
            }
        }
    }
    Ok(worst)
}

/// `lora_backward` with all six inputs 16-bit (the autocast contract of
/// [`ops::lora_backward`]: `ĝ = rnd(dy B)`, for a shared x `rnd(Σ_k dy_k) W`) against a
/// float64 loop that rounds at the same two points. `dy` and `lora_b` are drawn on coarse
/// grids (`dy = n·2⁻ᵉ`, `|n| < 256`, `e ≤ 4`; `B = n/16`) so that `dy B` and `Σ_k dy_k` are
/// exact in f32 whatever the summation order (multiples of 2⁻⁸ below 2¹⁵ for O ≤ 130: 23
/// bits): the rounded intermediates are then the same
/// bits on every backend and in the reference, and each output is checked element-wise
/// within the f32-accumulation bound of its remaining products (and norm-wise, 1e-6). A
/// backend that skipped a rounding would miss by ~2⁻⁹ of the rank term (bf16), far outside.
/// Returns the worst norm-wise error.
pub fn check_lora_backward_rounded(
    be: &dyn Backend,
    seed: u64,
) -> std::result::Result<f64, String> {
    use crate::host::{HostTensor, Named};
    let mut rng = Rng::new(seed ^ 0x9e37);
    let mut worst = 0f64;
    // (K, M, I, O, r, shared x); from the fifth on O, r, I are multiples of 8: the
    // tensor-core path on PTX (K = 1 shared, K > 1 shared with the rounded dy sum, past one
    // 128-tile); the last two are shared with M % 8 == 0, where PTX computes ĝ transposed
    // and the rank term as one product over K·r (past one 128-row tile of M).
    let plans = [
        (1, 1, 8, 1, 1, true),
        (3, 37, 40, 67, 8, true),
        (2, 19, 33, 21, 5, false),
        (4, 9, 16, 130, 16, true),
        (1, 5, 24, 40, 16, false),
        (1, 3, 8, 8, 8, true),
        (3, 37, 40, 24, 8, true),
        (2, 130, 24, 136, 16, false),
        (3, 16, 40, 24, 8, true),
        (2, 136, 24, 16, 8, true),
    ];
    for d in HALVES {
        for &(k, m, i, o, r, shared) in &plans {
            let mut draw = |n: usize, f: &mut dyn FnMut(&mut Rng) -> f32| -> Vec<u16> {
                (0..n).map(|_| d.round_bits(f(&mut rng))).collect()
            };
            let uniform = |scale: f32| move |g: &mut Rng| (g.uniform() * 2.0 - 1.0) * scale;
            let xk = if shared { 1 } else { k };
            let x = draw(xk * m * i, &mut uniform(1.0));
            let w = draw(o * i, &mut uniform(1.0 / (i as f32).sqrt()));
            let a = draw(k * r * i, &mut uniform(1.0 / (i as f32).sqrt()));
            let b = draw(k * o * r, &mut |g| {
                ((g.uniform() * 33.0).floor() - 16.0) / 16.0
            });
            let dy = draw(k * m * o, &mut |g| {
                let n = (g.uniform() * 511.0).floor() - 255.0;
                n * 2f32.powi(-((g.uniform() * 5.0).floor() as i32))
            });
            let h = draw(k * m * r, &mut uniform(1.0));
            let s = 2.0 / r as f32;
            let want = RoundedBackward {
                d,
                dims: crate::backend::LoraDims {
                    k,
                    m,
                    i,
                    o,
                    r,
                    x_shared: shared,
                },
                x: &x,
                w: &w,
                a: &a,
                a_blocks: k,
                b: &b,
                dy: &dy,
                h: &h,
                s,
            }
            .want();
            let [want_dx, want_a, want_b] = &want;
            let mut named = Named::new();
            let x_shape = if shared { vec![m, i] } else { vec![k, m, i] };
            named.insert("x".into(), HostTensor::half(&x_shape, d, x));
            named.insert("weight".into(), HostTensor::half(&[o, i], d, w));
            named.insert("lora_a".into(), HostTensor::half(&[k, r, i], d, a));
            named.insert("lora_b".into(), HostTensor::half(&[k, o, r], d, b));
            named.insert("dy".into(), HostTensor::half(&[k, m, o], d, dy));
            named.insert("h".into(), HostTensor::half(&[k, m, r], d, h));
            named.insert("scale".into(), HostTensor::scalar(s));
            let case = format!(
                "{d} lora_backward (16-bit dy, h) K={k} M={m} I={i} O={o} r={r} shared={shared}"
            );
            let got = op(
                &case,
                crate::ops::named::run_named(be, "lora_backward", &named),
            )?;
            for (name, want) in [("dx", want_dx), ("d_lora_a", want_a), ("d_lora_b", want_b)] {
                let Some((_, t)) = got.iter().find(|(n, _)| n == name) else {
                    return fail(format!("[{case}] no output `{name}`"));
                };
                let v = t.to_f32();
                if v.len() != want.len() {
                    return fail(format!(
                        "[{case}] `{name}`: {} elements, want {}",
                        v.len(),
                        want.len()
                    ));
                }
                let (mut diff, mut norm) = (0f64, 0f64);
                for (e, (&gv, &(wv, bound))) in v.iter().zip(want.iter()).enumerate() {
                    let err = (gv as f64 - wv).abs();
                    let within = err <= bound; // false for NaN too
                    if !within {
                        return fail(format!(
                            "[{case}] `{name}`[{e}] = {gv}, float64 (same rounding) {wv}: |Δ| {err:e} > bound {bound:e}"
                        ));
                    }
                    diff += err * err;
                    norm += wv * wv;
                }
                let rel = diff.sqrt() / norm.sqrt().max(1e-30);
                if rel > 1e-6 {
                    return fail(format!("[{case}] `{name}`: norm-wise error {rel:e} > 1e-6"));
                }
                worst = worst.max(rel);
            }
        }
    }
    Ok(worst)
}

/// The 16-bit-`dy` `lora_backward`'s inputs (bits of type `d`) for its float64 reference
/// with the contract's two roundings, [`RoundedBackward::want`].
pub(crate) struct RoundedBackward<'a> {
    pub d: DType,
    pub dims: crate::backend::LoraDims,
    /// `[M, I]` (shared) or `[K, M, I]`
    pub x: &'a [u16],
    pub w: &'a [u16],
    /// `a_blocks` blocks `[r, I]`: K, or 1 used by every particle
    pub a: &'a [u16],
    pub a_blocks: usize,
    /// `[K, O, r]`
    pub b: &'a [u16],
    pub dy: &'a [u16],
    pub h: &'a [u16],
    pub s: f32,
}

impl RoundedBackward<'_> {
    /// `(dx, d_lora_a, d_lora_b)`, each element `(float64 value, f32-accumulation bound)`:
    /// `ĝ_k = rnd(dy_k B_k)` and, for a shared x with K > 1, `rnd(Σ_k dy_k)` rounded once
    /// (exact sums on check_lora_backward_rounded's grids), the rest exact.
    pub(crate) fn want(&self) -> [Vec<(f64, f64)>; 3] {
        let (d, dm) = (self.d, self.dims);
        let (k, m, i, o, r, shared) = (dm.k, dm.m, dm.i, dm.o, dm.r, dm.x_shared);
        let wide = |v: &[u16]| -> Vec<f64> { v.iter().map(|&b| d.widen_bits(b) as f64).collect() };
        let (xv, wv, av, bv, dyv, hv) = (
            wide(self.x),
            wide(self.w),
            wide(self.a),
            wide(self.b),
            wide(self.dy),
            wide(self.h),
        );
        let rnd = |v: f64| d.widen_bits(d.round_bits(v as f32)) as f64;
        let s = self.s as f64;
        let xat =
            |kk: usize, mm: usize, ii: usize| xv[((if shared { 0 } else { kk }) * m + mm) * i + ii];
        let aat = |kk: usize, j: usize, ii: usize| {
            av[((if self.a_blocks == 1 { 0 } else { kk }) * r + j) * i + ii]
        };
        // ĝ_k = rnd(dy_k B_k): exact products and sums (the grids), one rounding.
        let mut g = vec![0f64; k * m * r];
        for kk in 0..k {
            for mm in 0..m {
                for j in 0..r {
                    let v: f64 = (0..o)
                        .map(|oo| dyv[(kk * m + mm) * o + oo] * bv[(kk * o + oo) * r + j])
                        .sum();
                    g[(kk * m + mm) * r + j] = rnd(v);
                }
            }
        }
        let mut want_b = Vec::new();
        for kk in 0..k {
            for oo in 0..o {
                for j in 0..r {
                    let t = (0..m)
                        .map(|mm| s * dyv[(kk * m + mm) * o + oo] * hv[(kk * m + mm) * r + j]);
                    want_b.push(sum_abs(t, m));
                }
            }
        }
        let mut want_a = Vec::new();
        for kk in 0..k {
            for j in 0..r {
                for ii in 0..i {
                    let t = (0..m).map(|mm| s * g[(kk * m + mm) * r + j] * xat(kk, mm, ii));
                    want_a.push(sum_abs(t, m));
                }
            }
        }
        // dx: one block for a shared x (Σ_k dy_k W + s Σ_k ĝ_k A_k), else one per particle
        let sum_dy = shared && k > 1;
        let dysum: Vec<f64> = (0..m * o)
            .map(|e| {
                if sum_dy {
                    rnd((0..k).map(|kk| dyv[kk * m * o + e]).sum())
                } else {
                    0.0
                }
            })
            .collect();
        let mut want_dx = Vec::new();
        for blk in 0..if shared { 1 } else { k } {
            for mm in 0..m {
                for ii in 0..i {
                    let base = (0..o).map(|oo| {
                        let dyo = if sum_dy {
                            dysum[mm * o + oo]
                        } else {
                            dyv[(blk * m + mm) * o + oo]
                        };
                        dyo * wv[oo * i + ii]
                    });
                    let parts = if shared { 0..k } else { blk..blk + 1 };
                    let rank: Vec<f64> = parts
                        .flat_map(|kk| (0..r).map(move |j| (kk, j)))
                        .map(|(kk, j)| s * g[(kk * m + mm) * r + j] * aat(kk, j, ii))
                        .collect();
                    let n = o + rank.len() + 2;
                    want_dx.push(sum_abs(base.chain(rank), n));
                }
            }
        }
        [want_dx, want_a, want_b]
    }
}

/// `(Σ terms, bound)`: the float64 sum and the f32-accumulation bound `2·2⁻²⁴·(n + 3)·Σ|terms|`
/// of computing it from `n` f32 terms.
pub(crate) fn sum_abs(terms: impl Iterator<Item = f64>, n: usize) -> (f64, f64) {
    let (mut sum, mut abs) = (0f64, 0f64);
    for t in terms {
        sum += t;
        abs += t.abs();
    }
    (sum, 2.0 * 2f64.powi(-24) * (n as f64 + 3.0) * abs + 1e-30)
}
