//! The modelled time of an op on a card: the largest of its pipeline times, each at the
//! card's public peak (see [`cards`](super::cards)). Modelled, never measured:
//!
//! - `issue`: every warp instruction, one per scheduler per clock;
//! - `fp32`: FP32 FMA/add/mul/other warp instructions, 32 lanes each, on the FP32 lanes;
//! - `sfu`: FP32 special functions on the SFU lanes;
//! - `shared`: shared-memory wavefronts, one per SM per clock;
//! - `l2`: bytes between the SMs and L2 (sectors × 32) at the L2 bandwidth;
//! - `dram`: the op's minimum bytes at the DRAM bandwidth. The L2 model is the simplest one:
//!   every byte the op must move comes from (or goes to) DRAM once, all re-reads hit L2.
//!
//! Tensor-core instructions do not exist in the kernels yet, so there is no tensor pipe. All
//! SMs are assumed busy (no tail effect, no launch latency), so small shapes model fast.

use super::cards::Card;
use serde::Serialize;

/// What the model needs of an op's counters (summed over its launches).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PipeInputs {
    pub warp_inst: u64,
    pub fp32_warp_inst: u64,
    pub sfu_warp_inst: u64,
    pub shared_wavefronts: u64,
    pub l2_bytes: u64,
    /// the op's minimum bytes (each input read once, each output written once)
    pub min_bytes: f64,
    /// the op's useful FLOPs (its contract's count)
    pub useful_flops: f64,
}

/// The modelled time on one card.
#[derive(Clone, Debug, Serialize)]
pub struct Modelled {
    /// modelled microseconds: the largest pipeline time
    pub us: f64,
    /// the pipeline that sets `us`
    pub limiter: &'static str,
    /// 100 × (the op's roofline time: useful FLOPs at peak FP32 or minimum bytes at DRAM
    /// bandwidth, whichever is longer) / `us`
    pub roofline_pct: f64,
    /// every pipeline's time, microseconds
    pub pipes_us: Vec<(&'static str, f64)>,
}

/// The model (see the module notes).
pub fn model(c: &Card, p: &PipeInputs) -> Modelled {
    let clk = c.clock_ghz * 1e9;
    let sms = c.sms as f64;
    let s = |x: f64| x * 1e6;
    let pipes = vec![
        (
            "issue",
            s(p.warp_inst as f64 / (sms * c.schedulers as f64 * clk)),
        ),
        (
            "fp32",
            s(p.fp32_warp_inst as f64 * 32.0 / (sms * c.fp32_lanes as f64 * clk)),
        ),
        (
            "sfu",
            s(p.sfu_warp_inst as f64 * 32.0 / (sms * c.sfu_lanes as f64 * clk)),
        ),
        (
            "shared",
            s(p.shared_wavefronts as f64 / (sms * c.shared_wavefronts_per_clk as f64 * clk)),
        ),
        ("l2", s(p.l2_bytes as f64 / (c.l2_bytes_per_clk * clk))),
        ("dram", s(p.min_bytes / (c.dram_gbs * 1e9))),
    ];
    let (limiter, us) = pipes
        .iter()
        .copied()
        .fold(("none", 0.0f64), |a, b| if b.1 > a.1 { b } else { a });
    let roof = s((p.useful_flops / c.fp32_flops_per_s()).max(p.min_bytes / (c.dram_gbs * 1e9)));
    Modelled {
        us,
        limiter,
        roofline_pct: if us > 0.0 { 100.0 * roof / us } else { 0.0 },
        pipes_us: pipes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::cards::CARDS;

    #[test]
    fn a_pure_stream_is_dram_bound_at_the_roofline() {
        let n = 1u64 << 24;
        let p = PipeInputs {
            warp_inst: n / 32 * 10,
            fp32_warp_inst: n / 32,
            l2_bytes: 8 * n,
            min_bytes: 8.0 * n as f64,
            useful_flops: n as f64,
            ..Default::default()
        };
        let m = model(&CARDS[2], &p);
        assert_eq!(m.limiter, "dram");
        assert!((m.roofline_pct - 100.0).abs() < 1e-9);
        assert!((m.us - 8.0 * n as f64 / 4.8e12 * 1e6).abs() < 1e-6);
    }
}
