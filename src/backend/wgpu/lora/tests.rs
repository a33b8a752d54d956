//! The 16-bit `lora_forward` on wgpu (`lora_forward_bf16` / `lora_forward_f16` of
//! `shaders/lora.wgsl`, h on the 16-bit GEMM): through `Backend::lora_forward` on parameter-
//! arena views (odd offsets and strides, so elements straddle the halves of words), shared
//! and per-particle x (a tile's rows spanning particles), K = 1, r = 1, M = 1, I = 1, past
//! one 64-tile, f32 / 16-bit / no bias, f16 subnormals, each element of y and h within the
//! f32-accumulation bound of float64 sums; no f32 copy made (no widening cast built); and
//! copies of the shader text with a planted bug, run on raw wgpu, fail where the unchanged
//! text passes. `tests/half_precision.rs` covers the op layer on every backend.

use super::super::kernels::Kernel;
use super::super::tests::{gpu_or_skip, run_text};
use super::super::{OpenOptions, WgpuBackend};
use crate::backend::{Backend, LoraDims, LoraForwardArgs};
use crate::dtype::{pack_bits, DType};
use crate::rng::Rng;
use crate::tensor::Strided;

const HALVES: [DType; 2] = [DType::BF16, DType::F16];

/// Random 16-bit values of `dt`: uniform in [-1, 1) times `scale`, rounded; a fraction `tiny`
/// of them uniform in (-2^-14, 2^-14) instead (f16's subnormals; normal in bf16).
fn draw(rng: &mut Rng, dt: DType, n: usize, scale: f32, tiny: f32) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let u = rng.uniform() * 2.0 - 1.0;
            if rng.uniform() < tiny {
                dt.round_bits(u * 2f32.powi(-14))
            } else {
                dt.round_bits(u * scale)
            }
        })
        .collect()
}

/// One case's inputs (bits), its float64 y and h and each element's bound.
struct Case {
    d: DType,
    dims: LoraDims,
    x: Vec<u16>,
    w: Vec<u16>,
    /// the `[K, D]` arena: lora_a at `OFF`, lora_b after it, then padding
    arena: Vec<u16>,
    d_row: usize,
    /// None, or the bias and whether it is 16-bit (else f32)
    bias: Option<(Vec<f32>, bool)>,
    s: f32,
}

/// A float64 value and the bound of its f32 computation.
type Bounded = (f64, f64);

/// Arena: elements before A in each row (odd: A and B straddle word halves).
const OFF: usize = 3;

impl Case {
    /// `bias`: 0 none, 1 f32, 2 16-bit; `tiny`: the fraction of x near f16's subnormals.
    fn new(d: DType, shape: Shape, bias: u8, tiny: f32) -> Case {
        let (k, m, i, o, r, shared) = shape;
        let mut rng = Rng::new(Rng::fresh_seed());
        let xk = if shared { 1 } else { k };
        let x = draw(&mut rng, d, xk * m * i, 1.0, tiny);
        let w = draw(&mut rng, d, o * i, 1.0 / (i as f32).sqrt(), 0.0);
        let d_row = OFF + r * i + o * r + 5;
        let mut arena = draw(&mut rng, d, k * d_row, 7.0, 0.0);
        for kk in 0..k {
            let a = draw(&mut rng, d, r * i, 1.0 / (i as f32).sqrt(), 0.0);
            let b = draw(&mut rng, d, o * r, 1.0, 0.0);
            arena[kk * d_row + OFF..][..r * i].copy_from_slice(&a);
            arena[kk * d_row + OFF + r * i..][..o * r].copy_from_slice(&b);
        }
        let bias = match bias {
            0 => None,
            b => {
                let half = b == 2;
                let v = (0..o)
                    .map(|_| rng.uniform() - 0.5)
                    .map(|v| {
                        if half {
                            d.widen_bits(d.round_bits(v))
                        } else {
                            v
                        }
                    })
                    .collect();
                Some((v, half))
            }
        };
        Case {
            d,
            dims: LoraDims {
                k,
                m,
                i,
                o,
                r,
                x_shared: shared,
            },
            x,
            w,
            arena,
            d_row,
            bias,
            s: 2.0 / r as f32,
        }
    }

    /// `(y, h)` from `be` through `Backend::lora_forward`.
    fn run(&self, be: &WgpuBackend) -> (Vec<f32>, Vec<f32>) {
        let (d, dm) = (self.d, self.dims);
        let (k, m, i, o, r) = (dm.k, dm.m, dm.i, dm.o, dm.r);
        let x_shape = if dm.x_shared {
            vec![m, i]
        } else {
            vec![k, m, i]
        };
        let x = be.upload_bits(&x_shape, d, &self.x).unwrap();
        let w = be.upload_bits(&[o, i], d, &self.w).unwrap();
        let arena = be.upload_bits(&[k, self.d_row], d, &self.arena).unwrap();
        let bias = self.bias.as_ref().map(|(v, half)| {
            if *half {
                let bits: Vec<u16> = v.iter().map(|&x| d.round_bits(x)).collect();
                be.upload_bits(&[o], d, &bits).unwrap()
            } else {
                be.upload(&[o], v).unwrap()
            }
        });
        let view = |offset| Strided {
            tensor: &arena,
            offset,
            stride: self.d_row,
        };
        let (y, h) = be
            .lora_forward(&LoraForwardArgs {
                dims: dm,
                x: &x,
                weight: &w,
                bias: bias.as_ref(),
                a: view(OFF),
                b: view(OFF + r * i),
                scale: self.s,
            })
            .expect("lora_forward runs");
        (be.download(&y).unwrap(), be.download(&h).unwrap())
    }

    /// float64 `(y, h)`, each element `(value, bound)`: the f32-accumulation bound
    /// `2·2⁻²⁴·(n + 4)·Σ|terms|` of its n terms (y's rank term through the f32 h, whose
    /// rounding the bound of h covers, times s·|B|).
    fn want(&self) -> (Vec<Bounded>, Vec<Bounded>) {
        let (d, dm) = (self.d, self.dims);
        let (k, m, i, o, r) = (dm.k, dm.m, dm.i, dm.o, dm.r);
        let v = |bits: u16| d.widen_bits(bits) as f64;
        let eps = 2f64.powi(-24);
        let xat = |kk: usize, mm: usize, ii: usize| {
            v(self.x[((if dm.x_shared { 0 } else { kk }) * m + mm) * i + ii])
        };
        let a = |kk: usize, j: usize, ii: usize| v(self.arena[kk * self.d_row + OFF + j * i + ii]);
        let b = |kk: usize, oo: usize, j: usize| {
            v(self.arena[kk * self.d_row + OFF + r * i + oo * r + j])
        };
        let (mut y, mut h) = (Vec::new(), Vec::new());
        for kk in 0..k {
            for mm in 0..m {
                for j in 0..r {
                    let (s, abs) = (0..i).fold((0.0, 0.0), |(s, a_), ii| {
                        let t = xat(kk, mm, ii) * a(kk, j, ii);
                        (s + t, a_ + t.abs())
                    });
                    h.push((s, 2.0 * eps * (i as f64 + 4.0) * abs + 1e-30));
                }
            }
        }
        let s = self.s as f64;
        for kk in 0..k {
            for mm in 0..m {
                for oo in 0..o {
                    let (mut sum, mut abs) = (0.0, 0.0);
                    for ii in 0..i {
                        let t = xat(kk, mm, ii) * v(self.w[oo * i + ii]);
                        sum += t;
                        abs += t.abs();
                    }
                    let mut rank_err = 0.0;
                    for j in 0..r {
                        let (hv, hb) = h[(kk * m + mm) * r + j];
                        let t = s * hv * b(kk, oo, j);
                        sum += t;
                        abs += t.abs();
                        rank_err += s * hb * b(kk, oo, j).abs();
                    }
                    if let Some((bias, _)) = &self.bias {
                        sum += bias[oo] as f64;
                        abs += (bias[oo] as f64).abs();
                    }
                    let n = (i + r) as f64;
                    y.push((sum, 2.0 * eps * (n + 4.0) * abs + rank_err + 1e-30));
                }
            }
        }
        (y, h)
    }
}

/// The first element outside its bound (a NaN counts as outside), as a message.
fn first_off(what: &str, got: &[f32], want: &[Bounded]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!(
            "{what}: {} elements, want {}",
            got.len(),
            want.len()
        ));
    }
    got.iter()
        .zip(want)
        .enumerate()
        .find_map(|(e, (&g, &(w, bound)))| {
            let err = (g as f64 - w).abs();
            let within = err <= bound; // false for NaN too
            (!within).then(|| format!("{what}[{e}] = {g}, float64 {w}: |Δ| {err:e} > {bound:e}"))
        })
}

/// (K, M, I, O, r, shared x)
type Shape = (usize, usize, usize, usize, usize, bool);

const SHAPES: [Shape; 8] = [
    (1, 1, 1, 1, 1, true),
    (3, 37, 29, 67, 5, true),
    (2, 19, 33, 130, 3, false),
    // per-particle rows 0..69: the first 64-row tile spans three particles
    (3, 23, 16, 9, 1, false),
    (1, 70, 8, 65, 2, false),
    (2, 5, 40, 24, 16, true),
    // 250 × 250 outputs: the 128 × 128 variants (on lavapipe, as the f32 kernels)
    (2, 250, 40, 250, 5, true),
    (2, 125, 16, 250, 3, false),
];

#[test]
fn half_lora_forward_matches_float64_on_arena_views() {
    let Some(be) = gpu_or_skip() else { return };
    for d in HALVES {
        for (n, &shape) in SHAPES.iter().enumerate() {
            let c = Case::new(d, shape, (n % 3) as u8, 0.125);
            let (y, h) = c.run(&be);
            let (want_y, want_h) = c.want();
            let name = format!("{d} {shape:?} bias {}", n % 3);
            if let Some(e) = first_off("h", &h, &want_h).or(first_off("y", &y, &want_y)) {
                panic!("{name}: {e}");
            }
        }
    }
}

#[test]
fn half_lora_forward_reads_the_operands_as_stored() {
    // A device of its own, so that only this test's kernels are built: the 16-bit GEMM and
    // lora_forward entries, and no widening cast (no f32 copy of any operand).
    if gpu_or_skip().is_none() {
        return;
    }
    let be = WgpuBackend::open_with(OpenOptions { shader_f16: false }).unwrap();
    // h: r = 3 and r = 1 per particle on the narrow 16-bit GEMM, K·r = 32 stacked on the
    // 64-wide one (packed f16: this device has no SHADER_F16)
    Case::new(DType::BF16, SHAPES[2], 1, 0.0).run(&be);
    Case::new(DType::F16, SHAPES[3], 0, 0.0).run(&be);
    Case::new(DType::F16, SHAPES[5], 0, 0.0).run(&be);
    let k = &be.ctx.kernels;
    let mut built = vec![
        Kernel::GemmNarrowSplitKBf16,
        Kernel::GemmNarrowSplitKF16,
        Kernel::GemmTiledF16,
        Kernel::LoraForwardBf16,
        Kernel::LoraForwardF16,
    ];
    if be.min_big_tiles() <= 4 {
        Case::new(DType::BF16, SHAPES[6], 1, 0.0).run(&be);
        built.push(Kernel::LoraForwardBf16_128);
    }
    for kernel in built {
        assert!(k.built(kernel), "{kernel:?} not built");
    }
    for kernel in [
        Kernel::CastBf16ToF32,
        Kernel::CastF16ToF32,
        Kernel::LoraForward,
        Kernel::LoraForward128,
    ] {
        assert!(!k.built(kernel), "{kernel:?} built: an operand was widened");
    }
}

/// `lora_forward_*` of `text` on raw wgpu for a shared-x case on `tile`-square tiles: y.
fn y_with_text(
    be: &WgpuBackend,
    text: &str,
    (entry, tile): (&str, usize),
    c: &Case,
    h: &[f32],
) -> Vec<f32> {
    let dm = c.dims;
    let (k, m, i, o, r) = (dm.k, dm.m, dm.i, dm.o, dm.r);
    let tiles = (m.div_ceil(tile), o.div_ceil(tile));
    let params: Vec<u32> = [
        k,
        m,
        i,
        o,
        r,
        1,
        1,
        m,
        OFF + r * i,
        c.d_row,
        tiles.0,
        tiles.1,
    ]
    .iter()
    .map(|&v| v as u32)
    .chain([c.s.to_bits(), 0, 0, 0])
    .collect();
    let bias: Vec<u32> = c
        .bias
        .as_ref()
        .unwrap()
        .0
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let mut h4: Vec<u32> = h.iter().map(|v| v.to_bits()).collect();
    h4.resize(h.len().next_multiple_of(4), 0);
    let inputs: [&[u32]; 6] = [
        &params,
        &pack_bits(&c.x),
        &pack_bits(&c.w),
        &pack_bits(&c.arena),
        &h4,
        &bias,
    ];
    run_text(
        be,
        text,
        entry,
        &inputs,
        k * m * o,
        (tiles.0 * tiles.1) as u32,
    )
}

#[test]
fn planted_half_lora_forward_bugs_are_caught() {
    let Some(be) = gpu_or_skip() else { return };
    let text = include_str!("../../../../shaders/lora.wgsl");
    // (text, replacement, the entries it breaks, x near subnormals): the word's halves
    // swapped; B's particle stride dropped; the rank term's scale dropped (on the first four
    // j of each 8); f16 subnormals a binade off (x all subnormal, so that its terms are not
    // lost in y's bound); the 128-tile loop's second row block read from the first
    const ALL: &[&str] = &[
        "lora_forward_bf16",
        "lora_forward_f16",
        "lora_forward_bf16_128",
        "lora_forward_f16_128",
    ];
    let plants: [(&str, &str, &[&str], bool); 5] = [
        (
            "(word >> ((e & 1u) * 16u))",
            "(word >> ((1u - (e & 1u)) * 16u))",
            ALL,
            false,
        ),
        (
            "(j / lp.r) * lp.f_stride + col * lp.r + j % lp.r;\n    return half_value(",
            "(j / lp.r) * 0u + col * lp.r + j % lp.r;\n    return half_value(",
            ALL,
            false,
        ),
        (
            "a[0] = lp.scale * vec4<f32>(low_elem(",
            "a[0] = vec4<f32>(low_elem(",
            ALL,
            false,
        ),
        (
            "return sign | ((q + 103u) << 23u) | ((m << (23u - q)) & 0x7fffffu);\n    }\n    return sign | ((e + 112u) << 23u) | (m << 13u);\n}\n\n// Element e",
            "return sign | ((q + 104u) << 23u) | ((m << (23u - q)) & 0x7fffffu);\n    }\n    return sign | ((e + 112u) << 23u) | (m << 13u);\n}\n\n// Element e",
            &["lora_forward_f16", "lora_forward_f16_128"],
            true,
        ),
        (
            "let a1 = ha[kk * 32u + 16u + ty];",
            "let a1 = ha[kk * 32u + ty];",
            &["lora_forward_bf16_128", "lora_forward_f16_128"],
            false,
        ),
    ];
    for entry in ALL {
        let d = if entry.contains("bf16") {
            DType::BF16
        } else {
            DType::F16
        };
        // one 128-tile holding rows past 64 (the plant of the second row block shows there)
        let (shape, tile) = if entry.ends_with("_128") {
            ((2, 70, 16, 70, 3, true), 128)
        } else {
            (SHAPES[1], 64)
        };
        for (from, to, breaks, tiny) in &plants {
            if !breaks.contains(entry) {
                continue;
            }
            let c = Case::new(d, shape, 1, if *tiny { 1.0 } else { 0.0 });
            let (_, h) = c.run(&be);
            let (want, _) = c.want();
            let good = y_with_text(&be, text, (entry, tile), &c, &h);
            assert_eq!(
                first_off("y", &good, &want),
                None,
                "{entry}: the unchanged text"
            );
            assert_eq!(text.matches(from).count(), 1, "the plant's text `{from}`");
            let bad = y_with_text(&be, &text.replacen(from, to, 1), (entry, tile), &c, &h);
            assert!(
                first_off("y", &bad, &want).is_some(),
                "{entry}: `{to}` not caught"
            );
        }
    }
}
