//! The 16-bit block sums (`sum_blocks_bf16`, `sum_blocks_f16`) on the PTX simulator against
//! the f32 sum in block order of the widened values and one `DType::round_bits`, bit for
//! bit: random bit patterns (every magnitude, subnormals, ±inf, NaN), K = 1, 2, 3, 8, blocks
//! of 2 .. 2050 elements, grids smaller than the work; a planted swap of the two halves
//! caught; odd block lengths refused.
use super::*;
use crate::backend::ptx::modules::MODULES;
use crate::backend::ptx_sim::SimDriver;
use crate::dtype::{pack_bits, unpack_bits};
use crate::rng::Rng;

const HALVES: [DType; 2] = [DType::BF16, DType::F16];

fn backend(sm_count: u32, planted: Option<&str>) -> PtxBackend<SimDriver> {
    let be = PtxBackend::new(SimDriver::with_sm_count(sm_count)).expect("loads kernels/");
    if let Some(text) = planted {
        be.driver().load_module("planted", text).expect("loads");
    }
    be
}

/// Random 16-bit patterns: mostly finite values of moderate size (so sums do not all
/// overflow), some of every exponent, a few infinities and NaNs.
fn draw(d: DType, rng: &mut Rng, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let u = rng.uniform();
            if u < 0.02 {
                (rng.uniform() * 65536.0) as u16 // any pattern: subnormals, inf, NaN
            } else {
                d.round_bits((rng.uniform() * 2.0 - 1.0) * 4f32.powi((u * 8.0) as i32 - 4))
            }
        })
        .collect()
}

/// The kernel's output bits for `k` blocks of `len` elements.
fn run(be: &PtxBackend<SimDriver>, module: &str, d: DType, src: &[u16], k: usize) -> Vec<u16> {
    let len = src.len() / k;
    let drv = be.driver();
    let words: Vec<f32> = pack_bits(src).into_iter().map(f32::from_bits).collect();
    let s = drv.upload(&words).unwrap();
    let out = drv.upload(&vec![f32::NAN; len / 2]).unwrap();
    sum_blocks_half_in(be, module, d, &s, (k, len), &out).expect("runs");
    let got: Vec<u32> = drv
        .download(&out, len / 2)
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    unpack_bits(&got, len)
}

fn reference(d: DType, src: &[u16], k: usize) -> Vec<u16> {
    let len = src.len() / k;
    (0..len)
        .map(|e| {
            let mut acc = d.widen_bits(src[e]);
            for b in 1..k {
                acc += d.widen_bits(src[b * len + e]);
            }
            d.round_bits(acc)
        })
        .collect()
}

#[test]
fn sums_match_the_f32_sum_rounded_once_bit_for_bit() {
    let mut rng = Rng::new(Rng::fresh_seed());
    for sm in [1, 132] {
        let be = backend(sm, None);
        for d in HALVES {
            for (k, len) in [(1, 2), (2, 6), (3, 1000), (8, 2050), (5, 514)] {
                let src = draw(d, &mut rng, k * len);
                let got = run(&be, ACTIVATION, d, &src, k);
                let want = reference(d, &src, k);
                for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g, w,
                        "{d} K={k} len={len} sm={sm}: element {e}: {g:#06x} vs {w:#06x}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_planted_swap_of_the_halves_is_caught() {
    let text = MODULES.iter().find(|(n, _)| *n == ACTIVATION).unwrap().1;
    for (d, good) in [
        (DType::BF16, "cvt.rn.bf16x2.f32 %v, %hi, %lo;"),
        (DType::F16, "cvt.rn.f16x2.f32 %v, %hi, %lo;"),
    ] {
        assert_eq!(text.matches(good).count(), 1, "{good}");
        let bad = good.replace("%hi, %lo", "%lo, %hi");
        let be = backend(4, Some(&text.replace(good, &bad)));
        let mut rng = Rng::new(7);
        let src = draw(d, &mut rng, 3 * 64);
        let got = run(&be, "planted", d, &src, 3);
        assert_ne!(
            got,
            reference(d, &src, 3),
            "{d}: the planted swap went unnoticed"
        );
    }
}

#[test]
fn odd_block_lengths_are_refused() {
    let be = backend(4, None);
    let drv = be.driver();
    let buf = drv.upload(&[0.0f32; 8]).unwrap();
    let err = sum_blocks_half(&be, DType::BF16, &buf, (2, 3), &buf).unwrap_err();
    assert!(err.to_string().contains("whole 32-bit words"), "{err}");
    assert!(sum_blocks_half(&be, DType::F32, &buf, (2, 4), &buf).is_err());
}
