//! The **modelled** time of a launch, and of an op (the sum of its launches), on a card: the
//! largest of the launch's pipeline times, each at the card's public peak (see
//! [`cards`](super::cards)). Modelled, never measured.
//!
//! Compute pipes are per SM and run on the busiest SM: a launch of `ctas` CTAs puts
//! `ceil(ctas / SMs)` of them on it (CTAs resident together share the SM's pipes, so waves and
//! co-resident CTAs cost the same), each doing the launch's average per-CTA work:
//!
//! - `issue`: warp instructions, one per scheduler per clock;
//! - `fp32`: FP32 FMA/add/mul/other warp instructions, 32 lanes each, on the FP32 lanes;
//! - `sfu`: FP32 special functions on the SFU lanes;
//! - `shared`: shared-memory wavefronts, one per SM per clock;
//! - `tensor`: tensor-core FLOPs (`mma.sync`, 2·M·N·K each) at the card's dense BF16/F16 rate
//!   reachable by `mma.sync` ([`Card::mma_flops_per_s`]) divided over its SMs.
//!
//! Memory pipes are device-wide:
//!
//! - `l2`: bytes between the SMs and L2 (sectors × 32) at the chip's L2 bandwidth;
//! - `dram`: the launch's distinct 32-byte sectors loaded plus those stored (an L2 that holds
//!   the launch's whole footprint: each sector crosses DRAM once per launch, a lower bound on
//!   DRAM traffic) at the DRAM bandwidth. For a sampled launch the simulator scales each
//!   buffer's sampled distinct sectors to the grid and caps them at the buffer's size: exact
//!   when CTAs touch disjoint data (element-wise kernels), an estimate when they share inputs
//!   (GEMM CTAs read whole panels of both operands), so the table marks it `~`.
//!
//! No launch latency, no latency hiding limits (occupancy is reported, not modelled). The op's
//! roofline time is the larger of its useful FLOPs at peak FP32 and its minimum bytes at DRAM
//! bandwidth (an f32 op's roofline; a tensor-core op is compared with the tensor peak by its
//! caller).

use super::cards::Card;
use serde::Serialize;

/// The model's name and its assumptions, as printed and put in the JSON.
pub const MODEL: &str = "modelled per launch = max of pipeline times at public peaks; \
compute pipes (issue, fp32, sfu, shared wavefronts, tensor FLOPs at the mma.sync dense \
BF16/F16 rate) on the busiest SM = per-CTA work × \
ceil(CTAs / SMs) at one SM's rate (CTAs resident together share an SM's pipes); memory pipes \
device-wide: l2 = l2_bytes (sectors × 32) / L2 bandwidth, dram = dram_bytes / DRAM bandwidth \
with dram_bytes = the launch's distinct 32-byte sectors loaded + stored (an L2 holding the \
launch's whole footprint: each sector crosses DRAM once per launch, a lower bound; for a \
sampled launch each buffer's sampled distinct sectors scaled to the grid and capped at the \
buffer's size, an estimate, marked ~); op = sum \
of its launches; no launch latency, occupancy not modelled; \
roofline_pct = max(useful FLOPs / FP32 peak (the mma.sync tensor peak for the tensor-core \
GEMMs gemm_mma_* and for ops on 16-bit operands, --dtype bf16/f16), minimum bytes / DRAM \
bandwidth) / modelled op time";

/// What the model needs of one launch's counters (scaled to the whole grid when sampled).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LaunchInputs {
    /// CTAs in the grid
    pub ctas: u64,
    /// Warp instructions issued, all classes.
    pub warp_inst: u64,
    /// FP32 warp instructions.
    pub fp32_warp_inst: u64,
    /// Special-function (MUFU) warp instructions.
    pub sfu_warp_inst: u64,
    /// Shared-memory wavefronts.
    pub shared_wavefronts: u64,
    /// L2 traffic: sectors × 32, bytes.
    pub l2_bytes: u64,
    /// distinct sectors loaded + stored, × 32
    pub dram_bytes: u64,
    /// tensor-core FLOPs (`mma.sync`), not in the FP32 counts
    pub tensor_flops: u64,
}

/// The modelled time of one launch on one card.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchModelled {
    /// modelled microseconds: the largest pipeline time
    pub us: f64,
    /// the pipeline that sets `us`
    pub limiter: &'static str,
    /// CTAs on the busiest SM: ceil(ctas / SMs)
    pub ctas_per_sm: u64,
    /// every pipeline's time, microseconds
    pub pipes_us: Vec<(&'static str, f64)>,
}

/// The modelled time of an op (its launches, one after another) on one card.
#[derive(Clone, Debug, Serialize)]
pub struct Modelled {
    /// modelled microseconds: the sum of the launches' modelled times
    pub us: f64,
    /// the pipeline that limits the launches holding most of `us`
    pub limiter: &'static str,
    /// 100 × (the op's roofline time: useful FLOPs at peak FP32 or minimum bytes at DRAM
    /// bandwidth, whichever is longer) / `us`
    pub roofline_pct: f64,
    /// per pipeline, the modelled microseconds of the launches it limits
    pub limited_us: Vec<(&'static str, f64)>,
}

const PIPES: [&str; 7] = ["issue", "fp32", "sfu", "shared", "tensor", "l2", "dram"];

/// One launch (see the module notes).
pub fn model_launch(c: &Card, p: &LaunchInputs) -> LaunchModelled {
    let clk = c.clock_ghz * 1e9;
    let ctas = p.ctas.max(1);
    let per_sm = ctas.div_ceil(c.sms as u64);
    // the busiest SM's share of a whole-launch count
    let sm = |total: u64| total as f64 / ctas as f64 * per_sm as f64;
    let s = |x: f64| x * 1e6;
    let pipes = vec![
        (PIPES[0], s(sm(p.warp_inst) / (c.schedulers as f64 * clk))),
        (
            PIPES[1],
            s(sm(p.fp32_warp_inst) * 32.0 / (c.fp32_lanes as f64 * clk)),
        ),
        (
            PIPES[2],
            s(sm(p.sfu_warp_inst) * 32.0 / (c.sfu_lanes as f64 * clk)),
        ),
        (
            PIPES[3],
            s(sm(p.shared_wavefronts) / (c.shared_wavefronts_per_clk as f64 * clk)),
        ),
        (
            PIPES[4],
            s(sm(p.tensor_flops) / (c.mma_flops_per_s() / c.sms as f64)),
        ),
        (PIPES[5], s(p.l2_bytes as f64 / (c.l2_bytes_per_clk * clk))),
        (PIPES[6], s(p.dram_bytes as f64 / (c.dram_gbs * 1e9))),
    ];
    let (limiter, us) = pipes
        .iter()
        .copied()
        .fold(("none", 0.0f64), |a, b| if b.1 > a.1 { b } else { a });
    LaunchModelled {
        us,
        limiter,
        ctas_per_sm: per_sm,
        pipes_us: pipes,
    }
}

/// Which peak an op's useful FLOPs are measured against in its roofline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlopPeak {
    /// FP32 SIMT (every f32 op).
    Fp32,
    /// The tensor pipe as `mma.sync` reaches it ([`Card::mma_flops_per_s`]): the
    /// tensor-core GEMMs.
    MmaSync,
}

/// An op of `launches` (modelled on `c`) with its contract's useful FLOPs and minimum bytes;
/// `peak` says which compute peak its roofline takes.
pub fn model_op(
    c: &Card,
    launches: &[&LaunchModelled],
    useful_flops: f64,
    min_bytes: f64,
    peak: FlopPeak,
) -> Modelled {
    let us: f64 = launches.iter().map(|l| l.us).sum();
    let limited_us: Vec<(&'static str, f64)> = PIPES
        .iter()
        .map(|&p| {
            let t = launches
                .iter()
                .filter(|l| l.limiter == p)
                .map(|l| l.us)
                .sum();
            (p, t)
        })
        .collect();
    let limiter = limited_us
        .iter()
        .copied()
        .fold(("none", 0.0f64), |a, b| if b.1 > a.1 { b } else { a })
        .0;
    let flops_per_s = match peak {
        FlopPeak::Fp32 => c.fp32_flops_per_s(),
        FlopPeak::MmaSync => c.mma_flops_per_s(),
    };
    let roof = 1e6 * (useful_flops / flops_per_s).max(min_bytes / (c.dram_gbs * 1e9));
    Modelled {
        us,
        limiter,
        roofline_pct: if us > 0.0 { 100.0 * roof / us } else { 0.0 },
        limited_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::cards::CARDS;

    #[test]
    fn a_pure_stream_is_dram_bound_at_the_roofline() {
        let n = 1u64 << 24;
        let p = LaunchInputs {
            ctas: 132 * 8,
            warp_inst: n / 32 * 10,
            fp32_warp_inst: n / 32,
            l2_bytes: 8 * n,
            dram_bytes: 8 * n,
            ..Default::default()
        };
        let l = model_launch(&CARDS[2], &p);
        assert_eq!(l.limiter, "dram");
        assert_eq!(l.ctas_per_sm, 8);
        let m = model_op(&CARDS[2], &[&l], n as f64, 8.0 * n as f64, FlopPeak::Fp32);
        assert_eq!(m.limiter, "dram");
        assert!((m.roofline_pct - 100.0).abs() < 1e-9);
        assert!((m.us - 8.0 * n as f64 / 4.8e12 * 1e6).abs() < 1e-6);
    }

    #[test]
    fn compute_runs_on_the_busiest_sm() {
        let a100 = &CARDS[0];
        // FMA-only CTAs: 109 CTAs put 2 on one SM of 108
        let per_cta = 1_000_000u64;
        let at = |ctas: u64| {
            model_launch(
                a100,
                &LaunchInputs {
                    ctas,
                    warp_inst: per_cta * ctas,
                    fp32_warp_inst: per_cta * ctas,
                    ..Default::default()
                },
            )
        };
        let (one, full, over) = (at(1), at(108), at(109));
        assert_eq!(one.limiter, "fp32");
        assert!((one.us - full.us).abs() < 1e-9, "one wave either way");
        assert!((over.us - 2.0 * full.us).abs() < 1e-9, "a second wave");
        // fp32: 32 lanes × 1e6 / 64 lanes per clock at 1.41 GHz
        assert!((one.us - 1e6 * 32.0 / 64.0 / 1.41e9 * 1e6).abs() < 1e-6);
        // op = sum of launches
        let m = model_op(a100, &[&one, &over], 0.0, 0.0, FlopPeak::Fp32);
        assert!((m.us - 3.0 * one.us).abs() < 1e-9);
        assert_eq!(m.limiter, "fp32");
    }

    #[test]
    fn tensor_flops_run_at_the_mma_sync_rate() {
        // one CTA per SM, 1e9 tensor FLOPs each: A100 at 312 T / 108 SMs per SM, H100 at
        // half of 989.4 T / 132
        for (card, per_sm) in [(&CARDS[0], 312e12 / 108.0), (&CARDS[1], 494.7e12 / 132.0)] {
            let l = model_launch(
                card,
                &LaunchInputs {
                    ctas: card.sms as u64,
                    warp_inst: 1000,
                    tensor_flops: 1_000_000_000 * card.sms as u64,
                    ..Default::default()
                },
            );
            assert_eq!(l.limiter, "tensor", "{}", card.key);
            assert!(
                (l.us - 1e9 / per_sm * 1e6).abs() < 1e-6 * l.us,
                "{}",
                card.key
            );
        }
    }
}
