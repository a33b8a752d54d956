//! The public figures of the GPU cards: per-SM limits per architecture (for occupancy: the
//! PTX host code sizes its grids from them) and per-card peaks (for `bella profile`'s
//! modelled time; also `profile::cards`). Every number the model uses is in one of the two
//! tables below, with its source. A leaf module, so the backends need not reach `profile`.

/// Per-SM resource limits of one compute capability.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct SmLimits {
    /// `sm_80`, `sm_90`
    pub arch: &'static str,
    /// 32-bit registers per SM
    pub regs: u32,
    /// register allocation unit per warp (registers)
    pub reg_unit: u32,
    /// Resident threads per SM.
    pub max_threads: u32,
    /// Resident CTAs per SM.
    pub max_blocks: u32,
    /// shared memory per SM usable by CTAs, bytes
    pub shared: u32,
    /// shared memory the system reserves per CTA, bytes
    pub shared_reserved_per_block: u32,
}

/// Sources: NVIDIA CUDA C++ Programming Guide, "Technical Specifications per Compute
/// Capability" (8.0 and 9.0): 64 K registers per SM, 2048 resident threads, 32 resident
/// blocks, 164 KB (8.0) / 228 KB (9.0) shared memory per SM, 1 KB reserved per block;
/// register allocation unit 256 per warp (CUDA occupancy calculator).
pub const SM_LIMITS: [SmLimits; 2] = [
    SmLimits {
        arch: "sm_80",
        regs: 65536,
        reg_unit: 256,
        max_threads: 2048,
        max_blocks: 32,
        shared: 164 * 1024,
        shared_reserved_per_block: 1024,
    },
    SmLimits {
        arch: "sm_90",
        regs: 65536,
        reg_unit: 256,
        max_threads: 2048,
        max_blocks: 32,
        shared: 228 * 1024,
        shared_reserved_per_block: 1024,
    },
];

/// The limits of `arch` (`sm_80` or `sm_90`).
pub fn sm_limits(arch: &str) -> &'static SmLimits {
    SM_LIMITS
        .iter()
        .find(|l| l.arch == arch)
        .unwrap_or(&SM_LIMITS[0])
}

/// Resident blocks per SM of a launch, and the resource that limits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Occupancy {
    /// Resident CTAs per SM.
    pub blocks_per_sm: u32,
    /// `blocks`, `threads`, `registers` or `shared`
    pub limiter: &'static str,
    /// false when the registers are unknown (no ptxas): then `blocks_per_sm` is an upper bound
    pub exact: bool,
}

/// Blocks per SM for `threads` threads per block, `regs` registers per thread (None:
/// unknown, left out) and `shared` bytes of shared memory per block.
pub fn occupancy(l: &SmLimits, threads: u32, regs: Option<u32>, shared: u32) -> Occupancy {
    let warps = threads.div_ceil(32).max(1);
    let mut best = (l.max_blocks, "blocks");
    let mut consider = |n: u32, what: &'static str| {
        if n < best.0 {
            best = (n, what);
        }
    };
    consider(l.max_threads / 32 / warps, "threads");
    if let Some(r) = regs {
        let per_warp = (r.max(1) * 32).div_ceil(l.reg_unit) * l.reg_unit;
        consider(l.regs / per_warp / warps, "registers");
    }
    if shared > 0 {
        consider(l.shared / (shared + l.shared_reserved_per_block), "shared");
    }
    Occupancy {
        blocks_per_sm: best.0,
        limiter: best.1,
        exact: regs.is_some(),
    }
}

/// One card's public peak figures.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Card {
    /// JSON key: `a100`, `h100`, `h200`
    pub key: &'static str,
    /// Full name (`H100 SXM5 80GB`).
    pub name: &'static str,
    /// Compute capability (`sm_80`, `sm_90`).
    pub arch: &'static str,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// boost clock, GHz
    pub clock_ghz: f64,
    /// FP32 lanes per SM (FMA units): peak FP32 = sms × lanes × 2 × clock
    pub fp32_lanes: u32,
    /// special-function (MUFU) lanes per SM
    pub sfu_lanes: u32,
    /// warp schedulers per SM, one warp instruction per clock each
    pub schedulers: u32,
    /// shared-memory wavefronts per SM per clock (128 bytes)
    pub shared_wavefronts_per_clk: u32,
    /// L2 bytes per clock, the whole chip
    pub l2_bytes_per_clk: f64,
    /// DRAM bandwidth, GB/s
    pub dram_gbs: f64,
    /// published peak FP32 (non-tensor), TFLOP/s
    pub fp32_tflops: f64,
    /// published dense BF16/F16 tensor-core peak (f32 accumulate, no sparsity), TFLOP/s
    pub tensor_tflops: f64,
    /// the share of `tensor_tflops` that `mma.sync` can reach (1 on sm_80; on sm_90 the full
    /// rate needs the warpgroup `wgmma`, see the card's source)
    pub mma_sync_share: f64,
    /// Where the figures come from (datasheet, whitepaper).
    pub source: &'static str,
}

impl Card {
    /// Peak FP32 FLOP/s from the lanes and the clock (agrees with `fp32_tflops` to 1 %).
    pub fn fp32_flops_per_s(&self) -> f64 {
        self.sms as f64 * self.fp32_lanes as f64 * 2.0 * self.clock_ghz * 1e9
    }

    /// The dense BF16/F16 tensor FLOP/s `mma.sync` reaches: the model's tensor pipe.
    pub fn mma_flops_per_s(&self) -> f64 {
        self.tensor_tflops * self.mma_sync_share * 1e12
    }
}

/// The cards, with their sources. The L2 figure is published for A100 only; H100 and H200
/// are given A100's bytes per clock at their own clock (an assumption, stated here).
pub const CARDS: [Card; 3] = [
    Card {
        key: "a100",
        name: "A100 SXM4 80GB",
        arch: "sm_80",
        sms: 108,
        clock_ghz: 1.41,
        fp32_lanes: 64,
        sfu_lanes: 16,
        schedulers: 4,
        shared_wavefronts_per_clk: 1,
        l2_bytes_per_clk: 5120.0,
        dram_gbs: 2039.0,
        fp32_tflops: 19.5,
        tensor_tflops: 312.0,
        mma_sync_share: 1.0,
        source: "NVIDIA A100 datasheet (19.5 TFLOP/s FP32, 312 TFLOP/s dense BF16/FP16 tensor, \
                 2039 GB/s HBM2e, 80GB SXM); mma.sync is Ampere's native tensor instruction; \
                 A100 whitepaper (108 SMs, 1410 MHz boost, 64 FP32 and 16 SFU lanes per SM, \
                 L2 read bandwidth 5120 B/clk)",
    },
    Card {
        key: "h100",
        name: "H100 SXM5 80GB",
        arch: "sm_90",
        sms: 132,
        clock_ghz: 1.98,
        fp32_lanes: 128,
        sfu_lanes: 16,
        schedulers: 4,
        shared_wavefronts_per_clk: 1,
        l2_bytes_per_clk: 5120.0,
        dram_gbs: 3350.0,
        fp32_tflops: 67.0,
        tensor_tflops: 989.4,
        mma_sync_share: 0.5,
        source: "NVIDIA H100 datasheet (67 TFLOP/s FP32, 989.4 TFLOP/s dense BF16/FP16 tensor \
                 (1979 with sparsity), 3.35 TB/s HBM3, SXM); that rate is wgmma's (Hopper's warpgroup \
                 instruction; Luo et al., Dissecting the NVIDIA Hopper Architecture through \
                 Microbenchmarking, arXiv 2501.12084, benchmark both); mma.sync modelled at half \
                 of it, an assumption (issue 14's estimate, not a figure from that paper); \
                 H100 whitepaper \
                 (132 SMs, 128 FP32 and 16 SFU lanes per SM; 1980 MHz = 67 T / (132·128·2)); \
                 L2 B/clk assumed equal to A100's",
    },
    Card {
        key: "h200",
        name: "H200 SXM 141GB",
        arch: "sm_90",
        sms: 132,
        clock_ghz: 1.98,
        fp32_lanes: 128,
        sfu_lanes: 16,
        schedulers: 4,
        shared_wavefronts_per_clk: 1,
        l2_bytes_per_clk: 5120.0,
        dram_gbs: 4800.0,
        fp32_tflops: 67.0,
        tensor_tflops: 989.4,
        mma_sync_share: 0.5,
        source: "NVIDIA H200 datasheet (67 TFLOP/s FP32, 989 TFLOP/s dense BF16/FP16 tensor, \
                 4.8 TB/s HBM3e); same GH100 SMs and clock as H100 SXM (mma.sync at half the \
                 tensor peak, as H100); \
                 L2 B/clk assumed equal to A100's",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_fp32_follows_from_lanes_and_clock() {
        for c in &CARDS {
            let derived = c.fp32_flops_per_s() / 1e12;
            assert!(
                (derived / c.fp32_tflops - 1.0).abs() < 0.01,
                "{}: {derived}",
                c.key
            );
        }
    }

    #[test]
    fn occupancy_of_256_thread_blocks() {
        let a = sm_limits("sm_80");
        // 8 warps per block: 64 warps per SM allow 8 blocks
        assert_eq!(occupancy(a, 256, Some(32), 0).blocks_per_sm, 8);
        // 64 regs: 2048 per warp, 32 warps, 4 blocks
        let o = occupancy(a, 256, Some(64), 0);
        assert_eq!((o.blocks_per_sm, o.limiter), (4, "registers"));
        // 48 KiB + 1 KiB reserved: 3 blocks in 164 KiB, 4 in 228 KiB
        assert_eq!(occupancy(a, 256, Some(32), 48 * 1024).blocks_per_sm, 3);
        let h = sm_limits("sm_90");
        assert_eq!(occupancy(h, 256, Some(32), 48 * 1024).blocks_per_sm, 4);
        assert!(!occupancy(a, 64, None, 0).exact);
    }
}
