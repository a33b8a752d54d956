//! `shaders/cast.wgsl` against `DType::round_bits` / `widen_bits`, bit for bit: random f32
//! of many magnitudes and random bit patterns, exact ties (normal and f16-subnormal), the
//! f16 underflow and overflow edges, ±0, ±inf, NaN, f32 subnormals; odd n, n = 1, 2; the
//! grid-stride loop on fewer workgroups than words and on a dispatch folded into 2-D; every
//! 16-bit pattern widened; and planted rounding bugs (ties away from zero, the f16 underflow
//! edge) caught.

use super::super::tests::{gpu_or_skip, run_text, upload_words};
use super::*;
use crate::dtype::{pack_bits, unpack_bits, HALF_NAN};
use crate::rng::Rng;

const HALVES: [DType; 2] = [DType::BF16, DType::F16];

fn read_words(gpu: &WgpuBackend, s: &WgpuStorage) -> Vec<u32> {
    gpu.read(s).unwrap().iter().map(|x| x.to_bits()).collect()
}

/// What the shader must write for `x` (the reference, as `Tensor`s will see it).
fn want_bits(dt: DType, x: f32) -> u16 {
    let b = dt.round_bits(x);
    if x.is_nan() {
        assert_eq!(b, HALF_NAN);
    }
    b
}

/// `xs` narrowed to `dt` on the device (optionally on `groups` workgroups): the packed words.
fn narrow(gpu: &WgpuBackend, dt: DType, xs: &[f32], groups: Option<u64>) -> Vec<u32> {
    let n = xs.len();
    let bits: Vec<u32> = xs.iter().map(|x| x.to_bits()).collect();
    let src = upload_words(gpu, &bits);
    // One word more than needed, holding a sentinel that must survive.
    let dst = upload_words(gpu, &vec![0xdead_beef; dt.words(n) + 1]);
    cast_in_groups(gpu, DType::F32, dt, &dst, &src, n, groups).unwrap();
    let mut words = read_words(gpu, &dst);
    assert_eq!(words.pop(), Some(0xdead_beef), "{dt}: wrote past the end");
    words
}

/// Compare the device's narrowing of `xs` with the reference, every element and the odd
/// count's zero high half.
fn check_narrow(gpu: &WgpuBackend, dt: DType, xs: &[f32], groups: Option<u64>) {
    let words = narrow(gpu, dt, xs, groups);
    let got = unpack_bits(&words, xs.len());
    let mut bad = Vec::new();
    for (i, (&x, &g)) in xs.iter().zip(&got).enumerate() {
        let w = want_bits(dt, x);
        if g != w {
            bad.push(format!(
                "[{i}] {x:e} ({:#010x}): got {g:#06x}, want {w:#06x}",
                x.to_bits()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{dt}, n = {}: {} wrong, e.g.\n{}",
        xs.len(),
        bad.len(),
        bad[..bad.len().min(12)].join("\n")
    );
    if xs.len() % 2 == 1 {
        assert_eq!(
            words.last().unwrap() >> 16,
            0,
            "{dt}: odd n, high half not 0"
        );
    }
}

/// The special values and edges of both types.
fn edge_values() -> Vec<f32> {
    let p2 = |e: i32| 2f32.powi(e);
    let mut v = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN
        f32::from_bits(0xffc1_2345),
        f32::from_bits(0x7fff_ffff),
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1.0,
        -1.0,
        // bf16 ties: 1 + 2^-8 (to 1, even), 1 + 3·2^-8 (to 1 + 2^-6, even), and just off them.
        1.0 + p2(-8),
        -(1.0 + p2(-8)),
        1.0 + 3.0 * p2(-8),
        f32::from_bits((1.0 + p2(-8)).to_bits() + 1),
        f32::from_bits((1.0 + p2(-8)).to_bits() - 1),
        // f16 ties: 1 + 2^-11 (to 1), 1 + 3·2^-11 (up), and just off them.
        1.0 + p2(-11),
        -(1.0 + p2(-11)),
        1.0 + 3.0 * p2(-11),
        f32::from_bits((1.0 + p2(-11)).to_bits() + 1),
        f32::from_bits((1.0 + p2(-11)).to_bits() - 1),
        // f16 range: largest finite, the overflow tie and just below, 2^15, 2^16.
        65504.0,
        -65504.0,
        65519.99,
        65520.0,
        -65520.0,
        f32::from_bits(65520f32.to_bits() - 1),
        65536.0,
        32768.0,
        1e10,
        // f16 normal/subnormal boundary and the underflow edge.
        p2(-14),
        f32::from_bits(p2(-14).to_bits() - 1),
        p2(-24),
        -p2(-24),
        p2(-25),
        -p2(-25),
        f32::from_bits(p2(-25).to_bits() + 1),
        f32::from_bits(p2(-25).to_bits() - 1),
        p2(-26),
        1.5 * p2(-25),
        1.5 * p2(-24),
        2.5 * p2(-24),
        1023.5 * p2(-24),
        // f32 subnormals: bf16 keeps them (ties too), f16 flushes them to ±0.
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::from_bits(0x007f_ffff),
        f32::from_bits(0x0000_8000),
        f32::from_bits(0x0001_8000),
        f32::from_bits(0x8001_8000),
        f32::from_bits(0x0040_0000),
    ];
    // Every f16 subnormal tie (k + ½)·2^-24, both signs, and one f32 ulp either side.
    for k in 0..1024u32 {
        let t = (k as f32 + 0.5) * p2(-24);
        for x in [t, -t] {
            v.extend([
                x,
                f32::from_bits(x.to_bits() + 1),
                f32::from_bits(x.to_bits() - 1),
            ]);
        }
    }
    // Ties of both types across exponents: mantissa patterns with the round bit set.
    for e in -30..20 {
        for m in [0x8000u32, 0x1_8000, 0x1000, 0x3000, 0x7f_f000, 0x7f_8000] {
            let x = f32::from_bits(((e + 127) as u32) << 23 | m);
            v.extend([x, -x]);
        }
    }
    v
}

/// Random f32: normal values scaled over many magnitudes, and raw bit patterns (NaNs,
/// infinities, subnormals included).
fn random_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 3 {
            0 => rng.normal() * 2f32.powi(rng.below(80) as i32 - 40),
            1 => rng.normal() * 2f32.powi(rng.below(36) as i32 - 26),
            _ => f32::from_bits(rng.next_u64() as u32),
        })
        .collect()
}

#[test]
fn narrowing_matches_round_bits_bit_for_bit() {
    let Some(gpu) = gpu_or_skip() else { return };
    let seed = Rng::fresh_seed();
    let mut rng = Rng::new(seed);
    eprintln!("cast narrowing seed {seed}");
    let mut edges = edge_values();
    if edges.len().is_multiple_of(2) {
        edges.push(-3.0); // an odd count
    }
    let random = random_values(&mut rng, 40_001);
    for dt in HALVES {
        check_narrow(&gpu, dt, &edges, None);
        check_narrow(&gpu, dt, &random, None);
        for n in [1, 2, 3] {
            check_narrow(&gpu, dt, &random[..n], None);
        }
        // Each special value alone, in the low and in the high half.
        for &x in &edges[..60] {
            check_narrow(&gpu, dt, &[x], None);
            check_narrow(&gpu, dt, &[1.0, x], None);
        }
    }
}

/// Fewer workgroups than words: the grid-stride loop covers every word once (1, 3 and 7
/// workgroups for 20001 elements: each invocation does several words, the last lap partly).
/// And a dispatch of 65537 workgroups, folded by the host into (65535, 2), most of them past
/// the words: the workgroups with wid.y = 1 and the stride over all 131070 stay correct.
#[test]
fn grid_stride_loop_covers_every_word() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng::new(Rng::fresh_seed());
    let xs = random_values(&mut rng, 20_001);
    for dt in HALVES {
        for groups in [1, 3, 7] {
            check_narrow(&gpu, dt, &xs, Some(groups));
        }
    }
    let max = gpu.limits().max_compute_workgroups_per_dimension as u64;
    check_narrow(&gpu, DType::F16, &xs, Some(max + 2));
    // Widening on a short grid too.
    let words: Vec<u32> = (0..5000).map(|_| rng.next_u64() as u32).collect();
    for dt in HALVES {
        check_widen(&gpu, dt, &words, 9999, Some(3));
    }
}

/// Widen the first `n` halves of `words` on the device and compare with `widen_bits`
/// exactly (a NaN must give a NaN).
fn check_widen(gpu: &WgpuBackend, dt: DType, words: &[u32], n: usize, groups: Option<u64>) {
    let src = upload_words(gpu, words);
    let dst = upload_words(gpu, &vec![0xdead_beef; n + 1]);
    cast_in_groups(gpu, dt, DType::F32, &dst, &src, n, groups).unwrap();
    let got = read_words(gpu, &dst);
    assert_eq!(got[n], 0xdead_beef, "{dt}: wrote past n");
    let halves = unpack_bits(words, n);
    let mut bad = Vec::new();
    for (i, (&h, &g)) in halves.iter().zip(&got).enumerate() {
        let want = dt.widen_bits(h);
        let ok = if want.is_nan() {
            f32::from_bits(g).is_nan()
        } else {
            g == want.to_bits()
        };
        if !ok {
            bad.push(format!(
                "[{i}] {h:#06x}: got {g:#010x}, want {:#010x}",
                want.to_bits()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{dt} -> f32, n = {n}: {} wrong, e.g.\n{}",
        bad.len(),
        bad[..bad.len().min(12)].join("\n")
    );
}

#[test]
fn widening_is_exact_for_every_bit_pattern() {
    let Some(gpu) = gpu_or_skip() else { return };
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let words = pack_bits(&all);
    for dt in HALVES {
        check_widen(&gpu, dt, &words, all.len(), None);
        // Odd counts: the last word's high half (here not 0) is ignored.
        check_widen(&gpu, dt, &words, all.len() - 1, None);
        for n in [1, 2, 3] {
            // From 0x7c00 (f16 inf, then NaNs; bf16 large normals).
            check_widen(&gpu, dt, &words[0x7c00 / 2..], n, None);
        }
    }
}

#[test]
fn empty_and_unsupported_casts() {
    let Some(gpu) = gpu_or_skip() else { return };
    let a = gpu.alloc(4).unwrap();
    let b = gpu.alloc(4).unwrap();
    for dt in HALVES {
        cast_storage(&gpu, DType::F32, dt, &a, &b, 0).unwrap();
        cast_storage(&gpu, dt, DType::F32, &a, &b, 0).unwrap();
    }
    let pairs = [
        (DType::F32, DType::F32),
        (DType::BF16, DType::F16),
        (DType::F16, DType::BF16),
        (DType::BF16, DType::BF16),
    ];
    for (from, to) in pairs {
        let err = cast_storage(&gpu, from, to, &a, &b, 4).unwrap_err();
        assert!(
            matches!(err, BellaError::Invalid(_)) && err.to_string().contains("no kernel"),
            "{from} -> {to}: {err:?}"
        );
    }
    // Too short a destination (4 f32 words for 5 elements).
    let src = gpu.alloc(3).unwrap();
    let err = cast_storage(&gpu, DType::BF16, DType::F32, &a, &src, 5).unwrap_err();
    assert!(err.to_string().contains("dst holds 4 words"), "{err}");
}

/// Run `entry` of the WGSL `text` on raw wgpu (not the host's cached pipelines): `xs`
/// narrowed to packed halves.
fn narrow_with_text(gpu: &WgpuBackend, text: &str, entry: &str, xs: &[f32]) -> Vec<u32> {
    let n = xs.len();
    let bits: Vec<u32> = xs.iter().map(|x| x.to_bits()).collect();
    let params = [n as u32, 0, 0, 0];
    let groups = n.div_ceil(2).div_ceil(THREADS) as u32;
    let out = run_text(gpu, text, entry, &[&params, &bits], n.div_ceil(2), groups);
    out.iter().map(|x| x.to_bits()).collect()
}

/// How many of `xs` the words disagree with the reference on.
fn mismatches(dt: DType, xs: &[f32], words: &[u32]) -> usize {
    let got = unpack_bits(words, xs.len());
    xs.iter()
        .zip(got)
        .filter(|(&x, g)| *g != want_bits(dt, x))
        .count()
}

/// A plant: the text replaced, its replacement, the entries (and types) it breaks.
type Plant = (&'static str, &'static str, &'static [(DType, &'static str)]);

/// Copies of the shader with one rounding step broken fail the comparison: ties rounded
/// away from zero (the tie-to-even test dropped; both types), and the f16 underflow edge one
/// binade too high ([2^-25, 2^-24) flushed to 0 instead of rounded to 2^-24). The unchanged
/// text, run the same way, passes (so the comparison, not the raw launch, is what catches it).
#[test]
fn planted_rounding_bugs_are_caught() {
    let Some(gpu) = gpu_or_skip() else { return };
    let text = include_str!("../../../../shaders/cast.wgsl");
    let plants: [Plant; 2] = [
        (
            "(bits & rb) != 0u && (bits & (3u * rb - 1u)) != 0u",
            "(bits & rb) != 0u",
            &[
                (DType::BF16, "cast_f32_to_bf16"),
                (DType::F16, "cast_f32_to_f16"),
            ],
        ),
        (
            "if (e < 102u) {",
            "if (e < 103u) {",
            &[(DType::F16, "cast_f32_to_f16")],
        ),
    ];
    let xs = edge_values();
    for (from, to, entries) in plants {
        assert!(text.contains(from), "the plant's text `{from}` is gone");
        let planted = text.replacen(from, to, 1);
        for &(dt, entry) in entries {
            let good = narrow_with_text(&gpu, text, entry, &xs);
            assert_eq!(mismatches(dt, &xs, &good), 0, "{entry}: the unchanged text");
            let bad = narrow_with_text(&gpu, &planted, entry, &xs);
            let wrong = mismatches(dt, &xs, &bad);
            assert!(wrong > 0, "{entry}: `{to}` not caught");
            eprintln!("{entry}: `{to}` is wrong on {wrong} values");
        }
    }
}
