//! The 16-bit block sums (`sum_blocks_bf16`, `sum_blocks_f16`) on the PTX simulator against
//! the f32 sum in block order of the widened values and one `DType::round_bits`, bit for
//! bit: random bit patterns (every magnitude, subnormals, ±inf, NaN), K = 1, 2, 3, 8, blocks
//! of 2 .. 2050 elements, grids smaller than the work; a planted swap of the two halves
//! caught; odd block lengths refused. `gather_blocks` bit for bit against the blocks copied
//! on the host: random 32-bit patterns (NaN payloads included), K = 1 .. 8, odd lengths,
//! source offsets, stride 0, blocks right after one another, grids smaller than the work; a
//! planted wrong source stride caught; blocks past a buffer's end refused.
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

/// `gather_blocks` of `k` blocks of `len` words, `stride` apart from word `offset` of `src`,
/// as bits; `out` starts as NaNs one word longer than the result (the last must stay).
fn gather(
    be: &PtxBackend<SimDriver>,
    module: &str,
    src: &[u32],
    offset: usize,
    (k, len, stride): (usize, usize, usize),
) -> Vec<u32> {
    let drv = be.driver();
    let words: Vec<f32> = src.iter().map(|&b| f32::from_bits(b)).collect();
    let s = drv.upload(&words).unwrap();
    let out = drv.upload(&vec![f32::NAN; k * len + 1]).unwrap();
    gather_blocks_in(be, module, (&s, offset), (k, len, stride), &out).expect("runs");
    let got: Vec<u32> = drv
        .download(&out, k * len + 1)
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(
        got[k * len],
        f32::NAN.to_bits(),
        "a word past the blocks written"
    );
    got[..k * len].to_vec()
}

fn gathered(src: &[u32], offset: usize, (k, len, stride): (usize, usize, usize)) -> Vec<u32> {
    (0..k)
        .flat_map(|b| src[offset + b * stride..][..len].iter().copied())
        .collect()
}

#[test]
fn gather_copies_the_blocks_bit_for_bit() {
    let mut rng = Rng::new(Rng::fresh_seed());
    // (k, len, stride, offset): K = 1, odd lengths, stride 0 (one block repeated), blocks
    // back to back (stride = len), an arena's rows (stride > len), 3 · 2051 words past what
    // a 1-SM grid (16 CTAs · 256 threads) covers in one pass
    let plans = [
        (1, 8, 8, 0),
        (1, 7, 0, 3),
        (3, 5, 0, 4),
        (2, 64, 64, 0),
        (3, 131, 200, 4),
        (8, 1024, 1100, 12),
        (3, 2051, 2100, 1),
    ];
    for sm in [1, 132] {
        let be = backend(sm, None);
        for (k, len, stride, offset) in plans {
            let n = offset + (k - 1) * stride + len + 5;
            let src: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
            let got = gather(&be, ACTIVATION, &src, offset, (k, len, stride));
            let want = gathered(&src, offset, (k, len, stride));
            assert_eq!(got.len(), want.len());
            if let Some(e) = (0..want.len()).find(|&e| got[e] != want[e]) {
                panic!(
                    "k={k} len={len} stride={stride} offset={offset} sm={sm}: word {e}: \
                     {:#010x} vs {:#010x}",
                    got[e], want[e]
                );
            }
        }
    }
}

#[test]
fn a_planted_wrong_gather_stride_is_caught() {
    let text = MODULES.iter().find(|(n, _)| *n == ACTIVATION).unwrap().1;
    let good = "mul.wide.u32 %rd1, %b, %bstride;";
    assert_eq!(text.matches(good).count(), 1, "{good}");
    // the source blocks taken `len` apart (as if contiguous) instead of `stride`
    let bad = "mul.wide.u32 %rd1, %b, %len;";
    let be = backend(4, Some(&text.replace(good, bad)));
    let mut rng = Rng::new(11);
    let (k, len, stride) = (3, 40, 56);
    let src: Vec<u32> = (0..(k - 1) * stride + len)
        .map(|_| rng.next_u64() as u32)
        .collect();
    let got = gather(&be, "planted", &src, 0, (k, len, stride));
    assert_ne!(
        got,
        gathered(&src, 0, (k, len, stride)),
        "the planted stride went unnoticed"
    );
}

#[test]
fn gathers_past_a_buffer_are_refused() {
    let be = backend(4, None);
    let drv = be.driver();
    let src = drv.upload(&[0.0f32; 20]).unwrap();
    let out = drv.upload(&[0.0f32; 12]).unwrap();
    // 3 blocks of 4 words 8 apart end at word 20: fits; from word 1 it does not
    gather_blocks(&be, (&src, 0), (3, 4, 8), &out).expect("fits exactly");
    let err = gather_blocks(&be, (&src, 1), (3, 4, 8), &out).unwrap_err();
    assert!(err.to_string().contains("source words"), "{err}");
    // out holds 12 words, 4 blocks of 3 = 12 fit, 13 do not
    gather_blocks(&be, (&src, 0), (4, 3, 4), &out).expect("fits exactly");
    assert!(gather_blocks(&be, (&src, 0), (1, 13, 0), &out).is_err());
    // sizes past the kernels' u32 limit
    let err = gather_blocks(&be, (&src, 0), (1 << 20, 1 << 12, 0), &out).unwrap_err();
    assert!(err.to_string().contains("2^31-1"), "{err}");
    // nothing to gather: no launch, no error
    gather_blocks(&be, (&src, 0), (0, 4, 8), &out).expect("k = 0");
    gather_blocks(&be, (&src, 40), (3, 0, 8), &out).expect("len = 0");
}
