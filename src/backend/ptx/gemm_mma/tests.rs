//! The tensor-core GEMM on the PTX simulator against a float64 loop over the bf16/f16-rounded
//! inputs: minimal, edge, skinny and multi-tile shapes, beta and offsets, both formats; a
//! planted fragment swap that the comparison must catch; the two entries' texts in step;
//! the blocked C layout (`c_block`) with and without beta, and a planted index swap in it;
//! every operand layout (`Layouts`: A `[k, m]`, B `[k, n]`) at odd sizes, with beta, offsets
//! and blocked C, its refusals, and planted bugs in the K-major paths (a missing `.trans`, a
//! dropped swizzle, a wrong swizzled chunk in a K-major read).
use super::*;
use crate::backend::ptx::modules::MODULES;
use crate::backend::ptx_sim::SimDriver;
use crate::rng::Rng;

const TYPES: [HalfType; 2] = [HalfType::Bf16, HalfType::F16];

fn matmul_text() -> &'static str {
    MODULES.iter().find(|(n, _)| *n == MATMUL).unwrap().1
}

/// The text of entry `name` in `src`: from its `.visible .entry` line to the closing `}`.
fn entry_text<'s>(src: &'s str, name: &str) -> &'s str {
    let start = src
        .find(&format!(".visible .entry {name}("))
        .expect("entry");
    let end = start + src[start..].find("\n}\n").expect("entry end") + 3;
    &src[start..end]
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    beta: Option<f32>,
    /// f32 words in front of A (a multiple of 4) and of C
    a_offset: usize,
    c_offset: usize,
    /// C blocked `[n / blk, m, blk]` (`MmaGemm::c_block`)
    c_block: Option<usize>,
    /// how A and B are stored
    layouts: Layouts,
}

/// The four operand layouts.
const LAYOUTS: [Layouts; 4] = [
    Layouts {
        a_kmajor: false,
        b_kmajor: false,
    },
    Layouts {
        a_kmajor: true,
        b_kmajor: false,
    },
    Layouts {
        a_kmajor: false,
        b_kmajor: true,
    },
    Layouts {
        a_kmajor: true,
        b_kmajor: true,
    },
];

/// C tail words after the output, NaN: must stay untouched.
const TAIL: usize = 5;

/// The kernel's output, the float64 reference and each element's error bound.
struct Outcome {
    got: Vec<f32>,
    want: Vec<f64>,
    bound: Vec<f64>,
}

impl Outcome {
    /// Indices of elements outside their bound.
    fn bad(&self) -> Vec<usize> {
        (0..self.got.len())
            .filter(|&i| {
                let e = (self.got[i] as f64 - self.want[i]).abs();
                // a NaN error counts as outside
                e.is_nan() || e > self.bound[i]
            })
            .collect()
    }

    /// ‖got − want‖₂ / ‖want‖₂.
    fn rel_norm(&self) -> f64 {
        let (mut d, mut w) = (0f64, 0f64);
        for (g, r) in self.got.iter().zip(&self.want) {
            d += (*g as f64 - r).powi(2);
            w += r * r;
        }
        (d / w.max(1e-300)).sqrt()
    }
}

fn run(dtype: HalfType, c: &Case, module: Option<&str>) -> Outcome {
    let be = PtxBackend::new(SimDriver::new()).expect("simulator loads kernels/");
    if let Some(text) = module {
        be.driver().load_module("planted", text).expect("loads");
    }
    let mut rng = Rng::new(Rng::fresh_seed());
    let (m, n, k) = (c.m, c.n, c.k);
    // inputs rounded to the format: the reference multiplies exactly these values
    let round =
        |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| dtype.value(dtype.bits(x))).collect() };
    // op(A)(i, q) = a[i k + q], op(B)(j, q) = b[j k + q]; stored as the layouts say
    let a = round(rng.normal_vec(m * k));
    let b = round(rng.normal_vec(n * k));
    let stored = |x: &[f32], rows: usize, kmajor: bool| -> Vec<f32> {
        if kmajor {
            (0..rows * k)
                .map(|w| x[(w % rows) * k + w / rows])
                .collect()
        } else {
            x.to_vec()
        }
    };
    let mut a_words = vec![0f32; c.a_offset];
    a_words.extend(pack_half(dtype, &stored(&a, m, c.layouts.a_kmajor)));
    let b_words = pack_half(dtype, &stored(&b, n, c.layouts.b_kmajor));
    // C: NaN before the offset and after the output (never touched), then random when beta
    // reads it, NaN when it must not be read
    let mut c0 = vec![f32::NAN; c.c_offset];
    c0.extend(match c.beta {
        Some(_) => rng.normal_vec(m * n),
        None => vec![f32::NAN; m * n],
    });
    c0.extend([f32::NAN; TAIL]);
    // word of element (i, j) after the offset, in C's layout
    let at = |i: usize, j: usize| match c.c_block {
        None => i * n + j,
        Some(blk) => ((j / blk) * m + i) * blk + j % blk,
    };
    let d = be.driver();
    let (ab, bb, cb) = (
        d.upload(&a_words).unwrap(),
        d.upload(&b_words).unwrap(),
        d.upload(&c0).unwrap(),
    );
    let alpha = 0.75f32;
    let g = MmaGemm {
        dtype,
        m,
        n,
        k,
        a: &ab,
        a_offset: c.a_offset,
        b: &bb,
        b_offset: 0,
        c: &cb,
        c_offset: c.c_offset,
        alpha,
        beta: c.beta,
        c_block: c.c_block,
        layouts: c.layouts,
        batch: Batch::ONE,
    };
    match module {
        Some(_) => launch_in(&be, "planted", &g),
        None => gemm_mma(&be, &g),
    }
    .expect("the GEMM runs");
    let out = d.download(&cb, c0.len()).unwrap();
    assert!(
        out[..c.c_offset].iter().all(|x| x.is_nan()),
        "C before its offset was written"
    );
    assert!(
        out[c.c_offset + m * n..].iter().all(|x| x.is_nan()),
        "C after the output was written"
    );
    let eps = f64::powi(2.0, -24);
    let (mut want, mut bound) = (Vec::new(), Vec::new());
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut s_abs) = (0f64, 0f64);
            for q in 0..k {
                let p = a[i * k + q] as f64 * b[j * k + q] as f64;
                s += p;
                s_abs += p.abs();
            }
            let mut v = alpha as f64 * s;
            let mut scale = alpha as f64 * s_abs;
            if let Some(beta) = c.beta {
                let cv = beta as f64 * c0[c.c_offset + at(i, j)] as f64;
                v += cv;
                scale += cv.abs();
            }
            want.push(v);
            // f32 accumulation: one rounding per mma (k/16 of them) of partial sums bounded
            // by Σ|a b|, then the epilogue's mul and fma; a factor 2 of slack
            bound.push(2.0 * eps * ((k as f64 / 16.0 + 3.0) * scale) + 1e-30);
        }
    }
    Outcome {
        // in (i, j) order, as the reference
        got: (0..m * n)
            .map(|x| out[c.c_offset + at(x / n, x % n)])
            .collect(),
        want,
        bound,
    }
}

fn case(m: usize, n: usize, k: usize) -> Case {
    Case {
        m,
        n,
        k,
        beta: None,
        a_offset: 0,
        c_offset: 0,
        c_block: None,
        layouts: Layouts::default(),
    }
}

fn check(dtype: HalfType, c: &Case) {
    let o = run(dtype, c, None);
    let bad = o.bad();
    assert!(
        bad.is_empty(),
        "{dtype:?} {:?} {}x{}x{}: {} elements off, first at {} ({} vs {})",
        c.layouts,
        c.m,
        c.n,
        c.k,
        bad.len(),
        bad[0],
        o.got[bad[0]],
        o.want[bad[0]]
    );
    let rel = o.rel_norm();
    assert!(
        rel <= 1e-6,
        "{dtype:?} {:?} {}x{}x{}: relative error {rel}",
        c.layouts,
        c.m,
        c.n,
        c.k
    );
}

#[test]
fn minimal_and_edge_shapes() {
    for dtype in TYPES {
        for (m, n, k) in [
            (1, 1, 8),
            (129, 130, 40),
            (130, 129, 8),
            (1, 257, 64),
            (257, 1, 32),
        ] {
            check(dtype, &case(m, n, k));
        }
    }
}

#[test]
fn past_one_tile_with_beta_and_offsets() {
    for dtype in TYPES {
        check(
            dtype,
            &Case {
                beta: Some(-0.5),
                a_offset: 4,
                c_offset: 3,
                ..case(257, 130, 264)
            },
        );
    }
}

#[test]
fn a_256_cube() {
    for dtype in TYPES {
        check(dtype, &case(256, 256, 256));
    }
}

#[test]
fn a_swapped_b_fragment_is_caught() {
    // frag_b[j] = {b0, b1} handed to the mma as {b1, b0}: k 0-7 and 8-15 of B trade places
    let src = matmul_text();
    let entry = entry_text(src, "gemm_mma_bf16");
    let planted_entry = entry.replace("{%fb0, %fb1}", "{%fb1, %fb0}");
    assert_ne!(entry, planted_entry);
    let planted = src.replace(entry, &planted_entry);
    let o = run(HalfType::Bf16, &case(64, 64, 32), Some(&planted));
    assert!(!o.bad().is_empty(), "the swap went unnoticed");
    // the unaltered text, loaded the same way, passes
    let o = run(HalfType::Bf16, &case(64, 64, 32), Some(src));
    assert!(o.bad().is_empty());
}

#[test]
fn the_f16_entry_is_the_bf16_entry_with_its_type_replaced() {
    let src = matmul_text();
    let bf = entry_text(src, "gemm_mma_bf16");
    assert_eq!(bf.replace("bf16", "f16"), entry_text(src, "gemm_mma_f16"));
}

#[test]
fn k_not_a_multiple_of_8_and_misaligned_offsets_are_refused() {
    let be = PtxBackend::new(SimDriver::new()).unwrap();
    let buf = be.driver().alloc_zeroed(1024).unwrap();
    let g = |k: usize, a_offset: usize| MmaGemm {
        dtype: HalfType::F16,
        m: 4,
        n: 4,
        k,
        a: &buf,
        a_offset,
        b: &buf,
        b_offset: 0,
        c: &buf,
        c_offset: 0,
        alpha: 1.0,
        beta: None,
        c_block: None,
        layouts: Layouts::default(),
        batch: Batch::ONE,
    };
    for k in [4, 12] {
        let e = gemm_mma(&be, &g(k, 0)).unwrap_err().to_string();
        assert!(
            e.contains("gemm_mma_f16") && e.contains("multiple of 8"),
            "{e}"
        );
    }
    let e = gemm_mma(&be, &g(8, 2)).unwrap_err().to_string();
    assert!(e.contains("multiples of 4"), "{e}");
    let e = gemm_mma(&be, &MmaGemm { m: 64, ..g(64, 0) })
        .unwrap_err()
        .to_string();
    assert!(e.contains("A needs"), "{e}");
}

/// The registers and shared memory the grid is sized from are ptxas' (when installed).
#[test]
fn resources_match_ptxas() {
    // 122 registers: 2 CTAs of 256 threads per SM; 48 KiB + 1 KiB reserved: 3 on sm_80
    assert_eq!(blocks_per_sm(), 2);
    let mut ptxas = crate::profile::ptxas::Ptxas::new();
    if !ptxas.available() {
        println!("notice: ptxas not found; skipping");
        return;
    }
    for dtype in TYPES {
        let mut regs = 0;
        for arch in ["sm_80", "sm_90"] {
            let info = ptxas
                .info(MATMUL, dtype.kernel(), arch)
                .expect("ptxas assembles matmul.ptx");
            regs = regs.max(info.registers);
            assert_eq!(info.smem, SMEM, "{dtype:?} {arch} shared memory");
        }
        assert_eq!(regs, REGS, "{dtype:?} registers (max of sm_80, sm_90)");
    }
}

#[test]
fn blocked_c_layout() {
    for dtype in TYPES {
        for (m, n, k, blk, beta) in [
            (1, 8, 8, 1, None),
            (130, 48, 40, 16, None),
            (257, 130, 264, 5, Some(-0.5)),
            (130, 48, 40, 16, Some(1.5)),
            // blk = n: the blocked layout is row-major
            (33, 128, 16, 128, None),
        ] {
            check(
                dtype,
                &Case {
                    beta,
                    c_offset: 3,
                    c_block: Some(blk),
                    ..case(m, n, k)
                },
            );
        }
    }
}

#[test]
fn a_swapped_block_index_is_caught() {
    // the column part of the blocked address with the block index and the in-block index
    // trading places: (col % blk) * M * blk + col / blk
    let src = matmul_text();
    let entry = entry_text(src, "gemm_mma_bf16");
    let mut planted_entry = entry.to_string();
    for c in 0..8 {
        planted_entry = planted_entry.replace(
            &format!("mad.lo.u32 %cw{c}, %r1, %r3, %r5;"),
            &format!("mad.lo.u32 %cw{c}, %r5, %r3, %r1;"),
        );
    }
    assert_ne!(entry, planted_entry);
    let planted = src.replace(entry, &planted_entry);
    // 64 x 64, blk 8: the swapped addresses stay inside C
    let c = Case {
        c_block: Some(8),
        ..case(64, 64, 32)
    };
    let o = run(HalfType::Bf16, &c, Some(&planted));
    assert!(!o.bad().is_empty(), "the swap went unnoticed");
    let o = run(HalfType::Bf16, &c, Some(src));
    assert!(o.bad().is_empty());
}

#[test]
fn bad_block_widths_are_refused() {
    let be = PtxBackend::new(SimDriver::new()).unwrap();
    let buf = be.driver().alloc_zeroed(1024).unwrap();
    let g = |c_block: Option<usize>| MmaGemm {
        dtype: HalfType::Bf16,
        m: 4,
        n: 12,
        k: 8,
        a: &buf,
        a_offset: 0,
        b: &buf,
        b_offset: 0,
        c: &buf,
        c_offset: 0,
        alpha: 1.0,
        beta: None,
        c_block,
        layouts: Layouts::default(),
        batch: Batch::ONE,
    };
    for blk in [0, 5, 24, 1 << 24] {
        let e = gemm_mma(&be, &g(Some(blk))).unwrap_err().to_string();
        assert!(
            e.contains("gemm_mma_bf16") && e.contains("block width"),
            "{blk}: {e}"
        );
    }
    for blk in [1, 3, 12] {
        gemm_mma(&be, &g(Some(blk))).expect("a divisor of n runs");
    }
}

/// Shapes the layout allows: m (n) a multiple of 8 for a K-major A (B), k a multiple of 8
/// unless both are K-major; odd sizes, 1, k = 8, partial and several tiles.
fn layout_shapes(l: Layouts) -> Vec<(usize, usize, usize)> {
    match (l.a_kmajor, l.b_kmajor) {
        (false, false) => vec![(1, 1, 8), (129, 130, 40), (1, 257, 64)],
        (true, false) => vec![
            (8, 1, 8),
            (136, 129, 40),
            (8, 257, 64),
            (264, 1, 32),
            (128, 131, 96),
        ],
        (false, true) => vec![
            (1, 8, 8),
            (129, 136, 40),
            (257, 8, 32),
            (1, 264, 64),
            (131, 128, 96),
        ],
        (true, true) => vec![
            (8, 8, 1),
            (8, 8, 8),
            (136, 128, 13),
            (8, 264, 40),
            (264, 8, 77),
            (128, 136, 100),
            (16, 24, 31),
        ],
    }
}

#[test]
fn every_layout_at_odd_sizes() {
    for dtype in TYPES {
        for l in LAYOUTS {
            for (m, n, k) in layout_shapes(l) {
                check(
                    dtype,
                    &Case {
                        layouts: l,
                        ..case(m, n, k)
                    },
                );
            }
        }
    }
}

#[test]
fn every_layout_past_one_tile_with_beta_offsets_and_blocked_c() {
    for dtype in TYPES {
        for l in LAYOUTS {
            // several tiles each way, a partial last k tile where the layout allows it
            let k = if l.a_kmajor && l.b_kmajor { 203 } else { 200 };
            let (m, n) = (
                if l.a_kmajor { 264 } else { 257 },
                if l.b_kmajor { 136 } else { 130 },
            );
            check(
                dtype,
                &Case {
                    beta: Some(-0.5),
                    a_offset: 4,
                    c_offset: 3,
                    layouts: l,
                    ..case(m, n, k)
                },
            );
            // blocked C (blk 8 or 10 divides n) with and without beta
            for beta in [None, Some(1.5)] {
                check(
                    dtype,
                    &Case {
                        beta,
                        c_offset: 3,
                        c_block: Some(if l.b_kmajor { 8 } else { 10 }),
                        layouts: l,
                        ..case(if l.a_kmajor { 136 } else { 130 }, n, 40)
                    },
                );
            }
        }
    }
}

#[test]
fn k_major_layouts_at_256_cubed() {
    for l in &LAYOUTS[1..] {
        check(
            HalfType::Bf16,
            &Case {
                layouts: *l,
                ..case(256, 256, 256)
            },
        );
    }
}

#[test]
fn layouts_the_kernel_cannot_do_are_refused() {
    let be = PtxBackend::new(SimDriver::new()).unwrap();
    let buf = be.driver().alloc_zeroed(4096).unwrap();
    let g = |m: usize, n: usize, k: usize, layouts: Layouts| MmaGemm {
        dtype: HalfType::Bf16,
        m,
        n,
        k,
        a: &buf,
        a_offset: 0,
        b: &buf,
        b_offset: 0,
        c: &buf,
        c_offset: 0,
        alpha: 1.0,
        beta: None,
        c_block: None,
        layouts,
        batch: Batch::ONE,
    };
    let [_, ta, tb, tt] = LAYOUTS;
    // a K-major operand's rows of m (n) elements move in 16-byte chunks
    for (m, n, l, what) in [
        (12, 8, ta, "A stored [k, m]"),
        (8, 12, tb, "B stored [k, n]"),
    ] {
        let e = gemm_mma(&be, &g(m, n, 16, l)).unwrap_err().to_string();
        assert!(
            e.contains("gemm_mma_bf16") && e.contains(what) && e.contains("multiple of 8"),
            "{e}"
        );
    }
    // with one K-contiguous operand K stays a multiple of 8
    for l in [ta, tb] {
        let e = gemm_mma(&be, &g(8, 8, 13, l)).unwrap_err().to_string();
        assert!(e.contains("k = 13") && e.contains("K-contiguous"), "{e}");
    }
    // both K-major: any k >= 1 runs, k = 0 is refused
    gemm_mma(&be, &g(8, 8, 13, tt)).expect("both K-major, k = 13 runs");
    let e = gemm_mma(&be, &g(8, 8, 0, tt)).unwrap_err().to_string();
    assert!(e.contains("k = 0"), "{e}");
    // the buffer check counts m·k halves in either layout
    let e = gemm_mma(&be, &g(8, 8, 1032, tt)).unwrap_err().to_string();
    assert!(e.contains("A needs"), "{e}");
}

/// `planted` (the bf16 entry with `from` replaced by `to`) gets at least one element of
/// `c` wrong, while the unaltered text passes the same way.
fn planted_is_caught(from: &str, to: &str, c: &Case) {
    let src = matmul_text();
    let entry = entry_text(src, "gemm_mma_bf16");
    assert!(entry.contains(from), "{from} not in the entry");
    let planted = src.replace(entry, &entry.replace(from, to));
    let o = run(HalfType::Bf16, c, Some(&planted));
    assert!(!o.bad().is_empty(), "{from} -> {to} went unnoticed");
    let o = run(HalfType::Bf16, c, Some(src));
    assert!(o.bad().is_empty());
}

#[test]
fn planted_bugs_in_the_k_major_paths_are_caught() {
    let [_, ta, tb, tt] = LAYOUTS;
    let c = |l: Layouts| Case {
        layouts: l,
        ..case(64, 64, 32)
    };
    // a K-major A tile read without .trans: each 8x8 matrix arrives transposed
    planted_is_caught(
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%fa4",
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%fa4",
        &c(ta),
    );
    // the same for B
    planted_is_caught(
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%fb0",
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%fb0",
        &c(tb),
    );
    // the K-major loader writes unswizzled chunks (the reads still unswizzle)
    planted_is_caught(
        "xor.b32 %r5, %r5, %r4;\t\t\t// swizzled chunk position",
        "mov.b32 %r5, %r4;",
        &c(tt),
    );
    // the K-major B reads n8 tiles 2, 3 at the wrong swizzled chunk (XOR 16, not 32)
    planted_is_caught("xor.b32 %r2, %r1, 32;", "xor.b32 %r2, %r1, 16;", &c(tt));
}

#[test]
fn ops_matmul_reaches_the_tensor_cores_in_every_layout() {
    use crate::backend::Backend;
    use crate::ops;
    use crate::tensor::{OutSlot, Strided};
    let be = PtxBackend::new(SimDriver::new()).unwrap();
    let mut rng = Rng::new(Rng::fresh_seed());
    let t = HalfType::Bf16;
    let (m, n, batch) = (24, 16, 3);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        // a batched a against a shared b; k = 13 where both operands are K-major
        let k = if ta && !tb { 13 } else { 40 };
        let a_block = if ta { [k, m] } else { [m, k] };
        let b_block = if tb { [n, k] } else { [k, n] };
        let round = |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| t.value(t.bits(x))).collect() };
        let av = round(rng.normal_vec(batch * m * k));
        let bv = round(rng.normal_vec(n * k));
        let a = be
            .upload_as(&[batch, a_block[0], a_block[1]], DType::BF16, &av)
            .unwrap();
        let b = be.upload_as(&b_block, DType::BF16, &bv).unwrap();
        // the dispatch takes the tensor-core kernel for this layout, not the widened GEMM,
        // and refuses the shapes the kernel cannot do
        let args = |m: usize, n: usize, k: usize| MatmulArgs {
            batch,
            m,
            n,
            inner: k,
            a: Strided {
                tensor: &a,
                offset: 0,
                stride: m * k,
            },
            b: Strided {
                tensor: &b,
                offset: 0,
                stride: 0,
            },
            trans_a: ta,
            trans_b: tb,
            alpha: 0.5,
            out: OutSlot {
                offset: 0,
                stride: m * n,
            },
        };
        assert!(covers(&args(m, n, k)), "ta={ta} tb={tb}");
        assert_eq!(covers(&args(20, n, k)), !ta, "ta={ta} tb={tb}: m = 20");
        assert_eq!(covers(&args(m, 20, k)), tb, "ta={ta} tb={tb}: n = 20");
        assert_eq!(
            covers(&args(m, n, 13)),
            ta && !tb,
            "ta={ta} tb={tb}: k = 13"
        );
        let c = be
            .download(&ops::matmul(&be, &a, &b, ta, tb, 0.5).unwrap())
            .unwrap();
        let eps = f64::powi(2.0, -24);
        for p in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let (mut s, mut s_abs) = (0f64, 0f64);
                    for q in 0..k {
                        let x = av[p * m * k + if ta { q * m + i } else { i * k + q }] as f64;
                        let y = bv[if tb { j * k + q } else { q * n + j }] as f64;
                        s += x * y;
                        s_abs += (x * y).abs();
                    }
                    let bound = 2.0 * eps * (k as f64 / 16.0 + 3.0) * 0.5 * s_abs + 1e-30;
                    let got = c[(p * m + i) * n + j] as f64;
                    assert!(
                        (got - 0.5 * s).abs() <= bound,
                        "ta={ta} tb={tb} block {p} ({i}, {j}): {got} vs {}",
                        0.5 * s
                    );
                }
            }
        }
    }
}

/// `count` products in one launch ([`Batch`]): A blocks `a_gap` elements apart beyond their
/// size, B shared (stride 0) or per block, C blocks `c_gap` floats apart beyond theirs (the
/// gaps NaN and untouched); returns (got, float64 reference, bound) over every block.
#[allow(clippy::too_many_arguments)]
fn run_batched(
    dtype: HalfType,
    (m, n, k): (usize, usize, usize),
    count: usize,
    layouts: Layouts,
    shared_b: bool,
    beta: Option<f32>,
    module: Option<&str>,
) -> std::result::Result<Outcome, String> {
    let be = PtxBackend::new(SimDriver::new()).expect("simulator loads kernels/");
    if let Some(text) = module {
        be.driver().load_module("planted", text).expect("loads");
    }
    let mut rng = Rng::new(Rng::fresh_seed());
    let round =
        |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| dtype.value(dtype.bits(x))).collect() };
    let (a_bs, b_bs) = (
        (m * k).next_multiple_of(8) + 8,
        if shared_b {
            0
        } else {
            (n * k).next_multiple_of(8) + 16
        },
    );
    let c_bs = m * n + 5;
    let b_blocks = if shared_b { 1 } else { count };
    let a: Vec<Vec<f32>> = (0..count).map(|_| round(rng.normal_vec(m * k))).collect();
    let b: Vec<Vec<f32>> = (0..b_blocks)
        .map(|_| round(rng.normal_vec(n * k)))
        .collect();
    let stored = |x: &[f32], rows: usize, kmajor: bool| -> Vec<f32> {
        if kmajor {
            (0..rows * k)
                .map(|w| x[(w % rows) * k + w / rows])
                .collect()
        } else {
            x.to_vec()
        }
    };
    let mut a_elems = vec![0f32; (count - 1) * a_bs + m * k];
    for (t, blk) in a.iter().enumerate() {
        let s = stored(blk, m, layouts.a_kmajor);
        a_elems[t * a_bs..t * a_bs + m * k].copy_from_slice(&s);
    }
    let mut b_elems = vec![0f32; (b_blocks - 1) * b_bs + n * k];
    for (t, blk) in b.iter().enumerate() {
        let s = stored(blk, n, layouts.b_kmajor);
        b_elems[t * b_bs..t * b_bs + n * k].copy_from_slice(&s);
    }
    let c_len = (count - 1) * c_bs + m * n;
    let c0: Vec<f32> = match beta {
        Some(_) => rng.normal_vec(c_len),
        None => vec![f32::NAN; c_len],
    };
    let d = be.driver();
    let (ab, bb, cb) = (
        d.upload(&pack_half(dtype, &a_elems)).unwrap(),
        d.upload(&pack_half(dtype, &b_elems)).unwrap(),
        d.upload(&c0).unwrap(),
    );
    let alpha = 0.5f32;
    let g = MmaGemm {
        dtype,
        m,
        n,
        k,
        a: &ab,
        a_offset: 0,
        b: &bb,
        b_offset: 0,
        c: &cb,
        c_offset: 0,
        alpha,
        beta,
        c_block: None,
        layouts,
        batch: Batch {
            count,
            a: a_bs,
            b: b_bs,
            c: c_bs,
        },
    };
    match module {
        Some(_) => launch_in(&be, "planted", &g),
        None => gemm_mma(&be, &g),
    }
    .map_err(|e| e.to_string())?;
    let out = d.download(&cb, c_len).unwrap();
    let eps = f64::powi(2.0, -24);
    let (mut got, mut want, mut bound) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..count {
        let bt = &b[if shared_b { 0 } else { t }];
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut s_abs) = (0f64, 0f64);
                for q in 0..k {
                    let p = a[t][i * k + q] as f64 * bt[j * k + q] as f64;
                    s += p;
                    s_abs += p.abs();
                }
                let w = t * c_bs + i * n + j;
                let (mut v, mut scale) = (alpha as f64 * s, alpha as f64 * s_abs);
                if let Some(beta) = beta {
                    v += beta as f64 * c0[w] as f64;
                    scale += (beta as f64 * c0[w] as f64).abs();
                }
                got.push(out[w]);
                want.push(v);
                bound.push(2.0 * eps * ((k as f64 / 16.0 + 3.0) * scale) + 1e-30);
            }
        }
        if beta.is_none() && t + 1 < count {
            assert!(
                out[t * c_bs + m * n..(t + 1) * c_bs]
                    .iter()
                    .all(|x| x.is_nan()),
                "the gap after C block {t} was written"
            );
        }
    }
    Ok(Outcome { got, want, bound })
}

#[test]
fn batched_products_match_float64_in_every_layout() {
    for dtype in TYPES {
        for (l, layouts) in LAYOUTS.iter().enumerate() {
            for (mnk, count, shared_b, beta) in [
                ((40, 24, 16), 3, l % 2 == 0, None),
                ((136, 16, 24), 2, false, Some(0.25)),
                ((8, 8, 8), 5, true, None),
            ] {
                let o = run_batched(dtype, mnk, count, *layouts, shared_b, beta, None)
                    .expect("the batched GEMM runs");
                let bad = o.bad();
                assert!(
                    bad.is_empty(),
                    "{dtype:?} {layouts:?} {mnk:?} x{count}: {bad:?}"
                );
            }
        }
    }
}

#[test]
fn planted_batch_offsets_are_caught() {
    // A's and C's batch offsets scaled wrong (A: 4 bytes an element instead of 2; C: 2 bytes a
    // float instead of 4): caught by the comparison or by the simulator (a misaligned or
    // out-of-bounds access is an error there, as on a GPU)
    let text = matmul_text();
    for (good, bad) in [
        (
            "\tshl.b64 %rdk, %rdk, 1;\n\tadd.u64 %rda, %rda, %rdk;",
            "\tshl.b64 %rdk, %rdk, 2;\n\tadd.u64 %rda, %rda, %rdk;",
        ),
        (
            "\tshl.b64 %rdk, %rdk, 2;\n\tadd.u64 %rdc, %rdc, %rdk;",
            "\tshl.b64 %rdk, %rdk, 1;\n\tadd.u64 %rdc, %rdc, %rdk;",
        ),
    ] {
        assert_eq!(text.matches(good).count(), 2, "both entries: {good}");
        let planted = text.replace(good, bad);
        let caught = match run_batched(
            HalfType::Bf16,
            (40, 24, 16),
            3,
            LAYOUTS[0],
            false,
            None,
            Some(&planted),
        ) {
            Ok(o) => !o.bad().is_empty(),
            Err(_) => true,
        };
        assert!(caught, "the planted batch offset went unnoticed: {bad}");
    }
}

#[test]
fn batches_are_refused_where_the_kernel_cannot_take_them() {
    let be = PtxBackend::new(SimDriver::new()).expect("simulator loads kernels/");
    let d = be.driver();
    let buf = d.upload(&vec![0f32; 4096]).unwrap();
    let g = |batch: Batch| MmaGemm {
        dtype: HalfType::Bf16,
        m: 16,
        n: 16,
        k: 16,
        a: &buf,
        a_offset: 0,
        b: &buf,
        b_offset: 0,
        c: &buf,
        c_offset: 0,
        alpha: 1.0,
        beta: None,
        c_block: None,
        layouts: Layouts::default(),
        batch,
    };
    let err = |b: Batch| gemm_mma(&be, &g(b)).unwrap_err().to_string();
    let b = |count, a, bb, c| Batch { count, a, b: bb, c };
    assert!(err(b(0, 0, 0, 0)).contains("batch of 0"));
    assert!(err(b(2, 4, 0, 256)).contains("multiples of 8"));
    assert!(err(b(2, 256, 0, 100)).contains("overlap"));
    assert!(err(b(40, 256, 0, 256)).contains("needs"), "past the buffer");
}
