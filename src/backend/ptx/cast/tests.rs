//! The cast kernels on the PTX simulator against `DType::round_bits` / `DType::widen_bits`,
//! bit for bit: random f32 of many magnitudes and random bit patterns, ties, subnormals,
//! overflow, ±0, ±inf, NaNs; odd n, n = 1, 2, grids smaller than the work (fixed tiny
//! grids and `grid_1d`'s cap); every 16-bit pattern widened; planted bugs that the
//! comparison must catch; the two narrowing entries' texts in step.
use super::*;
use crate::backend::ptx::modules::MODULES;
use crate::backend::ptx_sim::SimDriver;
use crate::dtype::{pack_bits, unpack_bits, HALF_NAN};
use crate::rng::Rng;

const HALVES: [DType; 2] = [DType::BF16, DType::F16];

fn cast_text() -> &'static str {
    MODULES.iter().find(|(n, _)| *n == CAST).unwrap().1
}

/// The text of entry `name` in `src`: from its `.visible .entry` line to the closing `}`.
fn entry_text<'s>(src: &'s str, name: &str) -> &'s str {
    let start = src
        .find(&format!(".visible .entry {name}("))
        .expect("entry");
    let end = start + src[start..].find("\n}\n").expect("entry end") + 3;
    &src[start..end]
}

/// A simulator backend; `planted`: an altered copy of cast.ptx loaded as module "planted".
fn backend(sm_count: u32, planted: Option<&str>) -> PtxBackend<SimDriver> {
    let be = PtxBackend::new(SimDriver::with_sm_count(sm_count)).expect("loads kernels/");
    if let Some(text) = planted {
        be.driver().load_module("planted", text).expect("loads");
    }
    be
}

/// The module a run launches from: the altered copy or cast.ptx itself.
fn module(planted: bool) -> &'static str {
    if planted {
        "planted"
    } else {
        CAST
    }
}

const GUARD: u32 = 0x7fc0_abcd;

/// `xs` narrowed to `to` by the kernel: the packed words (a guard word after them must
/// stay untouched).
fn narrow(
    be: &PtxBackend<SimDriver>,
    planted: bool,
    to: DType,
    xs: &[f32],
    ctas: Option<u32>,
) -> Vec<u32> {
    let d = be.driver();
    let words = to.words(xs.len());
    let src = d.upload(xs).unwrap();
    let mut init = vec![f32::NAN; words];
    init.push(f32::from_bits(GUARD));
    let dst = d.upload(&init).unwrap();
    let m = module(planted);
    launch_in(be, m, DType::F32, to, &dst, &src, xs.len(), ctas).expect("the cast runs");
    let mut out: Vec<u32> = d
        .download(&dst, words + 1)
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(out.pop(), Some(GUARD), "the word after dst was written");
    out
}

/// The first `n` elements of the packed `words` of `from` widened by the kernel, as bits.
fn widen(
    be: &PtxBackend<SimDriver>,
    planted: bool,
    from: DType,
    words: &[u32],
    n: usize,
    ctas: Option<u32>,
) -> Vec<u32> {
    let d = be.driver();
    let w: Vec<f32> = words.iter().map(|&b| f32::from_bits(b)).collect();
    let src = d.upload(&w).unwrap();
    let mut init = vec![f32::NAN; n];
    init.push(f32::from_bits(GUARD));
    let dst = d.upload(&init).unwrap();
    let m = module(planted);
    launch_in(be, m, from, DType::F32, &dst, &src, n, ctas).expect("the cast runs");
    let mut out: Vec<u32> = d
        .download(&dst, n + 1)
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(out.pop(), Some(GUARD), "the word after dst was written");
    out
}

fn want_narrow(to: DType, xs: &[f32]) -> Vec<u32> {
    pack_bits(&xs.iter().map(|&x| to.round_bits(x)).collect::<Vec<_>>())
}

fn want_widen(from: DType, words: &[u32], n: usize) -> Vec<u32> {
    unpack_bits(words, n)
        .into_iter()
        .map(|b| from.widen_bits(b).to_bits())
        .collect()
}

/// The first element index whose 16-bit result differs, with both bits.
fn first_narrow_mismatch(xs: &[f32], got: &[u32], want: &[u32]) -> Option<String> {
    assert_eq!(got.len(), want.len());
    let (g, w) = (unpack_bits(got, xs.len()), unpack_bits(want, xs.len()));
    if xs.len() % 2 == 1 && got[got.len() - 1] >> 16 != 0 {
        return Some("the high half past an odd n is not 0".into());
    }
    (0..xs.len()).find(|&i| g[i] != w[i]).map(|i| {
        format!(
            "element {i} of {}: x = {:e} ({:#010x}), got {:#06x}, want {:#06x}",
            xs.len(),
            xs[i],
            xs[i].to_bits(),
            g[i],
            w[i]
        )
    })
}

fn check_narrow(be: &PtxBackend<SimDriver>, to: DType, xs: &[f32], ctas: Option<u32>) {
    let got = narrow(be, false, to, xs, ctas);
    if let Some(m) = first_narrow_mismatch(xs, &got, &want_narrow(to, xs)) {
        panic!("{to} (grid {ctas:?}): {m}");
    }
}

/// Values with a known rounding story in each format.
fn special_values() -> Vec<f32> {
    let p = |e: i32| 2f32.powi(e);
    let mut v = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN
        f32::from_bits(0xffc0_1234),
        f32::from_bits(0x7fff_ffff),
        1.0,
        -1.0,
        // bf16 ties (1 + 2^-8: to 1; 1 + 3 * 2^-8: to 1 + 2^-6) and near-ties
        1.0 + p(-8),
        1.0 + 3.0 * p(-8),
        -(1.0 + p(-8)),
        f32::from_bits((1.0f32 + p(-8)).to_bits() + 1),
        f32::from_bits((1.0f32 + p(-8)).to_bits() - 1),
        // f16 ties (1 + 2^-11, 1 + 3 * 2^-11) and near-ties
        1.0 + p(-11),
        1.0 + 3.0 * p(-11),
        -(1.0 + 3.0 * p(-11)),
        f32::from_bits((1.0f32 + p(-11)).to_bits() + 1),
        f32::from_bits((1.0f32 + p(-11)).to_bits() - 1),
        // f16 subnormals: the smallest (2^-24), half of it (a tie to 0), just above half,
        // below half, 1.5 and 2.5 units (ties to 2), the largest, the smallest normal
        p(-24),
        -p(-24),
        p(-25),
        -p(-25),
        f32::from_bits(p(-25).to_bits() + 1),
        p(-26),
        1.5 * p(-24),
        2.5 * p(-24),
        1023.0 * p(-24),
        1023.5 * p(-24),
        p(-14),
        p(-14) - p(-26),
        // f16 overflow: the largest finite (65504), just below the threshold (65520) that
        // rounds to infinity, the threshold, past it
        65504.0,
        -65504.0,
        f32::from_bits(65520f32.to_bits() - 1),
        65520.0,
        -65520.0,
        65536.0,
        1.0e6,
        // bf16: f32 subnormals (kept), its largest finite and the overflow tie
        f32::from_bits(1),
        f32::from_bits(0x0000_8000),
        f32::from_bits(0x0001_8000),
        f32::from_bits(0x807f_ffff),
        f32::MIN_POSITIVE,
        f32::from_bits(0x7f7f_0000),
        f32::from_bits(0x7f7f_7fff),
        f32::from_bits(0x7f7f_8000),
        f32::MAX,
        f32::MIN,
    ];
    // every special next to every other in both halves of a word
    let w = v.clone();
    v.extend(w.iter().rev());
    v
}

/// Random f32 of magnitudes 2^-140 .. 2^130 and random bit patterns (NaNs included).
fn random_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 3 {
            0 => f32::from_bits(rng.next_u64() as u32),
            _ => rng.normal() * 2f32.powi(rng.below(271) as i32 - 140),
        })
        .collect()
}

#[test]
fn narrowing_matches_round_bits_on_special_values() {
    let be = backend(4, None);
    let xs = special_values();
    for to in HALVES {
        check_narrow(&be, to, &xs, None);
        // the same values shifted by one element (each special in the other half)
        check_narrow(&be, to, &xs[1..], None);
    }
    // the rule's own figures, through the kernel
    let w = narrow(
        &be,
        false,
        DType::F16,
        &[65520.0, f32::NAN, 1.0 + 2f32.powi(-11)],
        None,
    );
    assert_eq!(w, vec![(HALF_NAN as u32) << 16 | 0x7c00, 0x3c00]);
    let w = narrow(
        &be,
        false,
        DType::BF16,
        &[1.0 + 2f32.powi(-8), -f32::NAN],
        None,
    );
    assert_eq!(w, vec![(HALF_NAN as u32) << 16 | 0x3f80]);
}

#[test]
fn narrowing_matches_round_bits_on_random_values_and_sizes() {
    let be = backend(4, None);
    let seed = Rng::fresh_seed();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    for to in HALVES {
        for n in [1, 2, 3, 4, 5, 255, 511, 512, 513, 1001, 4097] {
            check_narrow(&be, to, &random_values(&mut rng, n), None);
        }
        // grids smaller than the work: one CTA, three CTAs (the grid-stride loop)
        check_narrow(&be, to, &random_values(&mut rng, 2 * 256 * 3 + 1), Some(1));
        check_narrow(&be, to, &random_values(&mut rng, 5001), Some(3));
    }
}

#[test]
fn narrowing_past_the_capped_grid() {
    // one simulated SM: grid_1d caps the grid at 16 CTAs = 4096 words, fewer than 10001
    let be = backend(1, None);
    let seed = Rng::fresh_seed();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let xs = random_values(&mut rng, 20001);
    assert!(xs.len().div_ceil(2).div_ceil(256) > 16);
    for to in HALVES {
        check_narrow(&be, to, &xs, None);
    }
}

#[test]
fn widening_is_exact_for_every_bit_pattern() {
    let be = backend(4, None);
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let words = pack_bits(&all);
    for from in HALVES {
        for (n, ctas) in [
            (65536, None),
            (65535, None),
            (65536, Some(3)),
            (65535, Some(1)),
        ] {
            let got = widen(&be, false, from, &words, n, ctas);
            let want = want_widen(from, &words, n);
            if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
                panic!(
                    "{from} n {n} grid {ctas:?}: bits {:#06x} widened to {:#010x}, want {:#010x}",
                    all[i], got[i], want[i]
                );
            }
        }
    }
    // f16 subnormals are kept: 0x0001 is 2^-24, 0x03ff is 1023 * 2^-24
    let got = widen(&be, false, DType::F16, &[0x03ff_0001], 2, None);
    assert_eq!(
        got,
        vec![
            2f32.powi(-24).to_bits(),
            (1023.0 * 2f32.powi(-24)).to_bits()
        ]
    );
}

#[test]
fn widening_small_and_odd_sizes() {
    let be = backend(1, None);
    let seed = Rng::fresh_seed();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    for from in HALVES {
        for n in [1usize, 2, 3, 257, 513, 20001] {
            let words: Vec<u32> = (0..n.div_ceil(2)).map(|_| rng.next_u64() as u32).collect();
            assert_eq!(
                widen(&be, false, from, &words, n, None),
                want_widen(from, &words, n),
                "{from} n {n}"
            );
        }
    }
}

#[test]
fn round_trips_through_cast_buf() {
    // the public entry: narrow then widen gives DType::round, also for n = 1
    let be = backend(4, None);
    let d = be.driver();
    let seed = Rng::fresh_seed();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    for to in HALVES {
        for n in [1, 2, 777] {
            let xs: Vec<f32> = rng.normal_vec(n);
            let src = d.upload(&xs).unwrap();
            let half = d.alloc_zeroed(to.words(n)).unwrap();
            let back = d.alloc_zeroed(n).unwrap();
            cast_buf(&be, DType::F32, to, &half, &src, n).unwrap();
            cast_buf(&be, to, DType::F32, &back, &half, n).unwrap();
            let got = d.download(&back, n).unwrap();
            for (x, g) in xs.iter().zip(&got) {
                assert_eq!(g.to_bits(), to.round(*x).to_bits(), "{to} {x}");
            }
        }
    }
}

#[test]
fn empty_same_and_unsupported_casts() {
    let be = backend(4, None);
    let d = be.driver();
    let buf = d.upload(&[f32::NAN; 2]).unwrap();
    // n = 0 launches nothing: the buffer keeps its NaNs
    cast_buf(&be, DType::F32, DType::BF16, &buf, &buf, 0).unwrap();
    assert!(d.download(&buf, 2).unwrap().iter().all(|x| x.is_nan()));
    for t in DType::ALL {
        let e = cast_buf(&be, t, t, &buf, &buf, 2).unwrap_err().to_string();
        assert!(e.contains("not a conversion"), "{e}");
    }
    for (a, b) in [(DType::BF16, DType::F16), (DType::F16, DType::BF16)] {
        let e = cast_buf(&be, a, b, &buf, &buf, 2).unwrap_err().to_string();
        assert!(e.contains("not supported") && e.contains("f32"), "{e}");
    }
}

/// `entry`'s text in cast.ptx with `from` replaced by `to` (which must change it).
fn planted(entry: &str, from: &str, to: &str) -> String {
    let src = cast_text();
    let e = entry_text(src, entry);
    let p = e.replace(from, to);
    assert_ne!(e, p, "the plant changes {entry}");
    src.replace(e, &p)
}

#[test]
fn swapped_halves_are_caught() {
    let seed = Rng::fresh_seed();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let xs = random_values(&mut rng, 1001);
    for (to, cvt) in [(DType::BF16, "bf16x2"), (DType::F16, "f16x2")] {
        let entry = format!("cast_f32_to_{to}");
        let text = planted(
            &entry,
            &format!("cvt.rn.{cvt}.f32 %w, %f1, %f0;"),
            &format!("cvt.rn.{cvt}.f32 %w, %f0, %f1;"),
        );
        let be = backend(4, Some(&text));
        let got = narrow(&be, true, to, &xs, None);
        assert!(
            first_narrow_mismatch(&xs, &got, &want_narrow(to, &xs)).is_some(),
            "{to}: the swap went unnoticed"
        );
        // the unaltered text, loaded the same way, passes
        let be = backend(4, Some(cast_text()));
        let got = narrow(&be, true, to, &xs, None);
        assert_eq!(
            first_narrow_mismatch(&xs, &got, &want_narrow(to, &xs)),
            None
        );
    }
    // widening: the f16 halves split in the wrong order
    let text = planted("cast_f16_to_f32", "{%h0, %h1}, %w", "{%h1, %h0}, %w");
    let be = backend(4, Some(&text));
    let words: Vec<u32> = (0..500).map(|_| rng.next_u64() as u32).collect();
    assert_ne!(
        widen(&be, true, DType::F16, &words, 999, None),
        want_widen(DType::F16, &words, 999)
    );
}

#[test]
fn a_wrong_nan_fix_is_caught() {
    // the NaN fix writing 0x7e00 instead of the canonical 0x7fff into the low half (the
    // simulator's cvt already gives 0x7fff, so a removed fix would pass here; a wrong one
    // must not)
    let xs = [f32::NAN, 1.0, 2.0, -f32::NAN];
    for to in HALVES {
        let text = planted(
            &format!("cast_f32_to_{to}"),
            "or.b32 %w, %w, 0x00007fff;",
            "or.b32 %w, %w, 0x00007e00;",
        );
        let be = backend(4, Some(&text));
        let got = narrow(&be, true, to, &xs, None);
        assert!(
            first_narrow_mismatch(&xs, &got, &want_narrow(to, &xs)).is_some(),
            "{to}: the wrong NaN went unnoticed"
        );
    }
}

#[test]
fn the_f16_narrowing_entry_is_the_bf16_entry_with_its_type_replaced() {
    let src = cast_text();
    let bf = entry_text(src, "cast_f32_to_bf16");
    assert_eq!(
        bf.replace("bf16", "f16"),
        entry_text(src, "cast_f32_to_f16")
    );
}
