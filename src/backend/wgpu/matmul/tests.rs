//! `gemm_tiled_bf16` / `gemm_tiled_f16` of `shaders/matmul.wgsl` and `gemm_tiled_f16_native`
//! of `shaders/matmul_f16.wgsl` dispatched from a copy of the shader text on raw wgpu (not the
//! host's cached pipelines), against an f64 reference of the header's stride formulas over the
//! exactly widened halves: the unchanged text passes, and copies with a planted bug (the low
//! and high halves of a word swapped; f16 subnormals widened one binade off, or flushed; a's
//! strides swapped) fail. Then the host path of an f16 `matmul`: native on a device with
//! `SHADER_F16` (lavapipe has it), the packed fallback on a device opened without it, both
//! against float64 on the exact f16 inputs at odd sizes past one tile.
//! `tests/half_precision.rs` covers the host path on many more layouts.

use super::super::kernels::Kernel;
use super::super::tests::{gpu_or_skip, run_text};
use super::super::{OpenOptions, WgpuBackend};
use crate::backend::Backend;
use crate::dtype::{pack_bits, DType};
use crate::ops::{self, MatmulOperand};
use crate::rng::Rng;
use crate::tensor::OutSlot;

/// `GemmParams` in field order (see the shader), for a batched product with transposed a,
/// offsets, and a shared (batch stride 0) transposed b.
struct Case {
    m: u32,
    n: u32,
    inner: u32,
    batch: u32,
    a: [u32; 4], // off, bs, rs, ks
    b: [u32; 4], // off, bs, ks, cs
    c_bs: u32,
    /// output tile columns: 64 (gemm_tiled_*) or 16 (gemm_narrow_splitk_*)
    tile_n: u32,
}

impl Case {
    fn words(&self) -> Vec<u32> {
        let (m, n) = (self.m, self.n);
        let [ao, abs, ars, aks] = self.a;
        let [bo, bbs, bks, bcs] = self.b;
        vec![
            m,
            n,
            self.inner,
            self.batch,
            ao,
            abs,
            ars,
            aks,
            bo,
            bbs,
            bks,
            bcs,
            n, // b_grp
            0, // b_gs
            n, // c_grp
            0, // c_gs
            0, // c_off
            self.c_bs,
            n, // c_rs
            1, // c_cs
            0.5f32.to_bits(),
            m.div_ceil(64),
            n.div_ceil(self.tile_n),
            0,
        ]
    }

    fn groups(&self) -> u32 {
        self.m.div_ceil(64) * self.n.div_ceil(self.tile_n) * self.batch
    }

    /// c by the stride formulas, in f64, from the widened operands.
    fn reference(&self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let u = |x: u32| x as usize;
        let (m, n, inner) = (u(self.m), u(self.n), u(self.inner));
        let [ao, abs, ars, aks] = self.a.map(u);
        let [bo, bbs, bks, bcs] = self.b.map(u);
        let mut c = vec![0.0; u(self.batch) * u(self.c_bs)];
        for bt in 0..u(self.batch) {
            for row in 0..m {
                for col in 0..n {
                    let s: f64 = (0..inner)
                        .map(|k| {
                            a[ao + bt * abs + row * ars + k * aks]
                                * b[bo + bt * bbs + k * bks + col * bcs]
                        })
                        .sum();
                    c[bt * u(self.c_bs) + row * n + col] = 0.5 * s;
                }
            }
        }
        c
    }
}

/// Random finite 16-bit patterns with biased exponents in `exps` (random sign and mantissa).
fn random_halves(rng: &mut Rng, dt: DType, exps: (u64, u64), n: usize) -> Vec<u16> {
    let man_bits = if dt == DType::BF16 { 7 } else { 10 };
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            let sign = ((r & 1) as u16) << 15;
            let e = exps.0 + (r >> 1) % (exps.1 - exps.0 + 1);
            let man = (r >> 16) as u16 & ((1 << man_bits) - 1);
            sign | (e as u16) << man_bits | man
        })
        .collect()
}

/// `entry` of the WGSL `text` on raw wgpu: c (f32, `c_len` long) from the packed words.
fn gemm_with_text(
    gpu: &WgpuBackend,
    text: &str,
    entry: &str,
    case: &Case,
    a: &[u32],
    b: &[u32],
    c_len: usize,
) -> Vec<f32> {
    run_text(
        gpu,
        text,
        entry,
        &[&case.words(), a, b],
        c_len,
        case.groups(),
    )
}

/// Elements of `got` off the reference by more than 1e-5 of its largest magnitude.
fn mismatches(got: &[f32], want: &[f64]) -> usize {
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .filter(|(&g, &w)| {
            let within = (g as f64 - w).abs() <= 1e-5 * scale; // false for NaN too
            !within
        })
        .count()
}

/// A plant: the text replaced, its replacement, the entries it breaks.
type Plant = (&'static str, &'static str, &'static [&'static str]);

/// An operand set: the type, the entry that takes it, the exponent range of its halves.
type OperandSet = (DType, &'static str, (u64, u64));

/// `case` (its a, b, c lengths `lens`) with fresh halves of each operand set: the
/// unchanged `text` must match the f64 reference; each plant that breaks the set's entry is
/// run too, and the entry recorded in `caught[plant]` when it is wrong somewhere.
fn run_plants(
    gpu: &WgpuBackend,
    text: &str,
    (case, lens): (&Case, (usize, usize, usize)),
    sets: &[OperandSet],
    plants: &[Plant],
    rng: &mut Rng,
    caught: &mut [Vec<&'static str>],
) {
    let (a_len, b_len, c_len) = lens;
    for &(dt, entry, exps) in sets {
        let ha = random_halves(rng, dt, exps, a_len);
        let hb = random_halves(rng, dt, exps, b_len);
        let wide = |h: &[u16]| -> Vec<f64> { h.iter().map(|&x| dt.widen_bits(x) as f64).collect() };
        let want = case.reference(&wide(&ha), &wide(&hb));
        let (wa, wb) = (pack_bits(&ha), pack_bits(&hb));
        let good = gemm_with_text(gpu, text, entry, case, &wa, &wb, c_len);
        assert_eq!(
            mismatches(&good, &want),
            0,
            "{entry} {exps:?}: the unchanged text"
        );
        for (i, (from, to, breaks)) in plants.iter().enumerate() {
            if !breaks.contains(&entry) {
                continue;
            }
            assert_eq!(text.matches(from).count(), 1, "the plant's text `{from}`");
            let planted = text.replacen(from, to, 1);
            let bad = gemm_with_text(gpu, &planted, entry, case, &wa, &wb, c_len);
            let wrong = mismatches(&bad, &want);
            eprintln!("{entry} {exps:?}: `{to}` is wrong on {wrong} of {c_len} outputs");
            if wrong > 0 {
                caught[i].push(entry);
            }
        }
    }
}

/// Every plant was caught on every entry it breaks.
fn assert_caught(plants: &[Plant], caught: &[Vec<&str>]) {
    for ((_, to, breaks), caught) in plants.iter().zip(caught) {
        for entry in breaks.iter() {
            assert!(caught.contains(entry), "{entry}: `{to}` not caught");
        }
    }
}

#[test]
fn planted_half_gemm_bugs_are_caught() {
    let Some(gpu) = gpu_or_skip() else { return };
    let text = include_str!("../../../../shaders/matmul.wgsl");
    let (case, a_len, b_len, c_len) = planted_case();
    let plants: [Plant; 2] = [
        (
            "(w >> ((e & 1u) * 16u))",
            "(w >> ((1u - (e & 1u)) * 16u))",
            &["gemm_tiled_bf16", "gemm_tiled_f16"],
        ),
        (
            "((q + 103u) << 23u)",
            "((q + 104u) << 23u)",
            &["gemm_tiled_f16"],
        ),
    ];
    // Operand sets: bf16 over about 2^-15 .. 2^8; f16 over subnormals .. 2^2, and one of
    // subnormals and the smallest normals only (where a subnormal's value is visible in c).
    let sets: [OperandSet; 3] = [
        (DType::BF16, "gemm_tiled_bf16", (112, 135)),
        (DType::F16, "gemm_tiled_f16", (0, 17)),
        (DType::F16, "gemm_tiled_f16", (0, 2)),
    ];
    let mut rng = Rng::new(0x05ee_df16);
    let mut caught = vec![Vec::new(); plants.len()];
    let lens = (a_len, b_len, c_len);
    run_plants(
        &gpu,
        text,
        (&case, lens),
        &sets,
        &plants,
        &mut rng,
        &mut caught,
    );
    assert_caught(&plants, &caught);
}

#[test]
fn planted_narrow_half_gemm_bugs_are_caught() {
    let Some(gpu) = gpu_or_skip() else { return };
    let text = include_str!("../../../../shaders/matmul.wgsl");
    // 37×13 per batch block (n ≤ 16: the narrow kernels): a transposed at an odd offset, b
    // shared along k (b_ks = 1), then a along k and b along the columns at odd offsets
    let cases = [
        Case {
            m: 37,
            n: 13,
            inner: 29,
            batch: 2,
            a: [3, 37 * 29, 1, 37],
            b: [1, 0, 1, 29],
            c_bs: 37 * 13,
            tile_n: 16,
        },
        Case {
            m: 70,
            n: 11,
            inner: 45,
            batch: 1,
            a: [1, 0, 45, 1],
            b: [3, 0, 11, 1],
            c_bs: 70 * 11,
            tile_n: 16,
        },
    ];
    let lens = |c: &Case| {
        let u = |x: u32| x as usize;
        let a_len = u(c.a[0]) + u(c.batch) * u(c.m * c.inner);
        let b_len = u(c.b[0]) + u(c.inner * c.n).max(u(c.b[1]) * u(c.batch));
        (a_len, b_len, u(c.batch * c.c_bs))
    };
    let plants: [Plant; 4] = [
        (
            "let lo = select(p0, (p0 >> 16u) | (p1 << 16u), odd);",
            "let lo = select((p0 >> 16u) | (p1 << 16u), p0, odd);",
            &["gemm_narrow_splitk_bf16", "gemm_narrow_splitk_f16"],
        ),
        (
            "half_load4(true, first + step, select(0u, count, 1u < lines), is_f16)",
            "half_load4(true, first, select(0u, count, 1u < lines), is_f16)",
            &["gemm_narrow_splitk_bf16", "gemm_narrow_splitk_f16"],
        ),
        (
            "let l1 = b_index(base, k0 + select(1u, 0u, along_k), c0 + select(0u, 1u, along_k));",
            "let l1 = b_index(base, k0, c0);",
            &["gemm_narrow_splitk_bf16", "gemm_narrow_splitk_f16"],
        ),
        (
            "((q + 103u) << 23u)",
            "((q + 104u) << 23u)",
            &["gemm_narrow_splitk_f16"],
        ),
    ];
    let sets: [OperandSet; 3] = [
        (DType::BF16, "gemm_narrow_splitk_bf16", (112, 135)),
        (DType::F16, "gemm_narrow_splitk_f16", (0, 17)),
        (DType::F16, "gemm_narrow_splitk_f16", (0, 2)),
    ];
    let mut rng = Rng::new(0x0a77_0f16);
    let mut caught = vec![Vec::new(); plants.len()];
    for case in &cases {
        run_plants(
            &gpu,
            text,
            (case, lens(case)),
            &sets,
            &plants,
            &mut rng,
            &mut caught,
        );
    }
    assert_caught(&plants, &caught);
}

/// The planted-bug case of both tests: 37×45 = op(a) 37×29 (transposed, offset 3) · op(b)
/// 29×45 (transposed, offset 1, shared by both batch blocks); odd offsets, so elements
/// straddle the halves of words.
fn planted_case() -> (Case, usize, usize, usize) {
    let case = Case {
        m: 37,
        n: 45,
        inner: 29,
        batch: 2,
        a: [3, 37 * 29, 1, 37],
        b: [1, 0, 1, 29],
        c_bs: 37 * 45,
        tile_n: 64,
    };
    (case, 3 + 2 * 37 * 29, 1 + 29 * 45, 2 * 37 * 45)
}

/// True for lavapipe (Mesa's llvmpipe Vulkan driver), which offers SHADER_F16.
fn is_lavapipe(gpu: &WgpuBackend) -> bool {
    gpu.ctx.gpu.info.name.contains("llvmpipe")
}

#[test]
fn planted_native_f16_gemm_bugs_are_caught() {
    let Some(gpu) = gpu_or_skip() else { return };
    if !gpu.ctx.gpu.f16_offered {
        assert!(!is_lavapipe(&gpu), "lavapipe should offer SHADER_F16");
        eprintln!("notice: the adapter lacks SHADER_F16; skipping gemm_tiled_f16_native");
        return;
    }
    // A device of its own with SHADER_F16, whatever BELLA_WGPU_F16 says of the shared one.
    let gpu = WgpuBackend::open_with(OpenOptions { shader_f16: true }).unwrap();
    assert!(gpu.shader_f16());
    let text = include_str!("../../../../shaders/matmul_f16.wgsl");
    let entry = "gemm_tiled_f16_native";
    let (case, a_len, b_len, c_len) = planted_case();
    let read_a = "return f32(ah[a_base + row * p.a_rs + k * p.a_ks]);";
    let plants: [(&str, &str); 3] = [
        // Element e read from the other half of its word.
        (
            "f32(bh[b_index(b_base, k, col)])",
            "f32(bh[b_index(b_base, k, col) ^ 1u])",
        ),
        // a's row and k strides swapped.
        (
            read_a,
            "return f32(ah[a_base + row * p.a_ks + k * p.a_rs]);",
        ),
        // f16 subnormals flushed to zero (as a device may do in float operations).
        (
            read_a,
            "let h = ah[a_base + row * p.a_rs + k * p.a_ks];\n    \
             return select(0.0, f32(h), abs(h) >= 6.103515625e-5h);",
        ),
    ];
    // Subnormals .. 2^2, then subnormals and the smallest normals only.
    let sets: [(u64, u64); 2] = [(0, 17), (0, 2)];
    let mut rng = Rng::new(0x05ee_d16e);
    let mut caught = [false; 3];
    for exps in sets {
        let ha = random_halves(&mut rng, DType::F16, exps, a_len);
        let hb = random_halves(&mut rng, DType::F16, exps, b_len);
        let wide = |h: &[u16]| -> Vec<f64> {
            h.iter().map(|&x| DType::F16.widen_bits(x) as f64).collect()
        };
        let want = case.reference(&wide(&ha), &wide(&hb));
        let (wa, wb) = (pack_bits(&ha), pack_bits(&hb));
        let good = gemm_with_text(&gpu, text, entry, &case, &wa, &wb, c_len);
        assert_eq!(
            mismatches(&good, &want),
            0,
            "{entry} {exps:?}: the unchanged text"
        );
        for (i, (from, to)) in plants.iter().enumerate() {
            assert!(text.contains(from), "the plant's text `{from}` is gone");
            let planted = text.replacen(from, to, 1);
            let bad = gemm_with_text(&gpu, &planted, entry, &case, &wa, &wb, c_len);
            let wrong = mismatches(&bad, &want);
            eprintln!("{entry} {exps:?}: `{to}` is wrong on {wrong} of {c_len} outputs");
            caught[i] |= wrong > 0;
        }
    }
    for ((_, to), caught) in plants.iter().zip(caught) {
        assert!(caught, "{entry}: `{to}` not caught");
    }
}

/// Products at odd sizes past one 64×64 tile: (batch, m, n, inner, trans_a, trans_b,
/// a_offset, b_offset, b_shared).
type Shape = (usize, usize, usize, usize, bool, bool, usize, usize, bool);

const HOST_SHAPES: [Shape; 3] = [
    (2, 70, 131, 67, true, false, 3, 1, true),
    (1, 129, 65, 33, false, true, 1, 0, false),
    (3, 65, 67, 17, false, false, 0, 5, false),
];

/// `ops::matmul_into` of random f16 operands (biased exponents in `exps`, subnormals
/// included) on `be`, each element against float64 sums of the exact f16 values within the
/// f32-accumulation bound 2·2^-24·(K + 3)·Σ|a b| (f16 products are exact in f32).
fn check_host_f16(be: &WgpuBackend, rng: &mut Rng, exps: (u64, u64)) {
    for (batch, m, n, inner, ta, tb, a_off, b_off, shared) in HOST_SHAPES {
        let (ar, ac) = if ta { (inner, m) } else { (m, inner) };
        let (br, bc) = if tb { (n, inner) } else { (inner, n) };
        let a_len = a_off + batch * ar * ac;
        let b_stride = if shared { 0 } else { br * bc };
        let b_len = b_off + if shared { 1 } else { batch } * br * bc;
        let ha = random_halves(rng, DType::F16, exps, a_len);
        let hb = random_halves(rng, DType::F16, exps, b_len);
        let at = be.upload_bits(&[a_len], DType::F16, &ha).unwrap();
        let bt = be.upload_bits(&[b_len], DType::F16, &hb).unwrap();
        let c_len = batch * m * n;
        let mut c = be.upload(&[c_len], &vec![f32::NAN; c_len]).unwrap();
        let alpha = 0.75f32;
        ops::matmul_into(
            be,
            batch,
            MatmulOperand::strided(&at, a_off, ar * ac, ar, ac),
            ta,
            MatmulOperand::strided(&bt, b_off, b_stride, br, bc),
            tb,
            alpha,
            &mut c,
            OutSlot {
                offset: 0,
                stride: m * n,
            },
        )
        .unwrap();
        let got = be.download(&c).unwrap();
        let a: Vec<f64> = ha
            .iter()
            .map(|&h| DType::F16.widen_bits(h) as f64)
            .collect();
        let b: Vec<f64> = hb
            .iter()
            .map(|&h| DType::F16.widen_bits(h) as f64)
            .collect();
        for k in 0..batch {
            let (a0, b0) = (a_off + k * ar * ac, b_off + k * b_stride);
            for i in 0..m {
                for j in 0..n {
                    let (mut sum, mut abs) = (0f64, 0f64);
                    for l in 0..inner {
                        let x = a[a0 + if ta { l * ac + i } else { i * ac + l }];
                        let y = b[b0 + if tb { j * bc + l } else { l * bc + j }];
                        sum += x * y;
                        abs += (x * y).abs();
                    }
                    let want = alpha as f64 * sum;
                    let bound = 2.0 * 2f64.powi(-24) * (inner as f64 + 3.0) * alpha as f64 * abs;
                    let g = got[k * m * n + i * n + j] as f64;
                    let within = (g - want).abs() <= bound + 1e-300; // false for NaN too
                    assert!(
                        within,
                        "{batch}×{m}×{n}×{inner} ta {ta} tb {tb} exps {exps:?}: c[{k}, {i}, {j}] \
                         = {g}, float64 {want} (bound {bound:e})"
                    );
                }
            }
        }
    }
}

/// Which of the two f16 kernels this device built (the path taken), after `check_host_f16`.
fn f16_kernels_built(be: &WgpuBackend) -> (bool, bool) {
    let k = &be.ctx.kernels;
    (
        k.built(Kernel::GemmTiledF16Native),
        k.built(Kernel::GemmTiledF16),
    )
}

#[test]
fn f16_matmul_takes_the_native_kernel_with_shader_f16() {
    let Some(shared) = gpu_or_skip() else { return };
    if is_lavapipe(&shared) {
        assert!(
            shared.ctx.gpu.f16_offered,
            "lavapipe should offer SHADER_F16"
        );
    }
    // The process's device has it unless BELLA_WGPU_F16=off.
    assert_eq!(
        shared.shader_f16(),
        shared.ctx.gpu.f16_offered && OpenOptions::from_env().shader_f16
    );
    assert!(shared.describe().contains("SHADER_F16"));
    if !shared.ctx.gpu.f16_offered {
        eprintln!("notice: the adapter lacks SHADER_F16; only the fallback can run here");
        return;
    }
    // A device of its own, so that no other test's kernels are in its cache.
    let be = WgpuBackend::open_with(OpenOptions { shader_f16: true }).unwrap();
    assert!(be.shader_f16());
    assert!(be.describe().contains("SHADER_F16 on"), "{}", be.describe());
    let mut rng = Rng::new(0xf16_0001);
    check_host_f16(&be, &mut rng, (0, 17));
    check_host_f16(&be, &mut rng, (0, 2));
    assert_eq!(
        f16_kernels_built(&be),
        (true, false),
        "native kernel, not the fallback"
    );
}

#[test]
fn f16_matmul_falls_back_without_shader_f16() {
    if gpu_or_skip().is_none() {
        return;
    }
    let be = WgpuBackend::open_with(OpenOptions { shader_f16: false }).unwrap();
    assert!(!be.shader_f16());
    assert!(
        !be.describe().contains("SHADER_F16 on"),
        "{}",
        be.describe()
    );
    // The native module is refused on this device rather than compiled.
    let refused = be
        .ctx
        .kernels
        .pipeline(&be.ctx.gpu, Kernel::GemmTiledF16Native);
    assert!(
        refused.is_err(),
        "the native kernel built without SHADER_F16"
    );
    let mut rng = Rng::new(0xf16_0002);
    check_host_f16(&be, &mut rng, (0, 17));
    check_host_f16(&be, &mut rng, (0, 2));
    assert_eq!(
        f16_kernels_built(&be),
        (false, true),
        "the fallback, not native"
    );
}
