//! `bella profile`: the ops of `bella bench` run once each on the counting PTX simulator;
//! per launch what a GPU profiler counts, per op the totals against the op's useful FLOPs and
//! minimum bytes (both from `bench::cases`, stated once per op there), and a
//! **modelled** time per card ([`model`], from the peaks in [`cards`]). Modelled, never
//! measured: no GPU is involved.
//!
//! Shapes are `bella bench`'s: by default those it runs on ptx-sim (`Scale::Small`);
//! `--scale cpu|gpu` takes its larger ones (and at `gpu` the single 4096³ GEMM next to
//! bench's batched one). The simulated device reports [`DEFAULT_SM_COUNT`] SMs (H100 SXM,
//! H200), so the host code sizes its grids as on those cards. A case whose useful FLOPs or
//! minimum bytes pass [`SIM_MAX_FLOPS`] / [`SIM_MAX_BYTES`] is sampled: a probe run of a few
//! CTAs per launch measures each launch's thread instructions per CTA, and the counted run
//! takes, per launch, the largest evenly strided sample of CTAs that keeps the case within
//! [`SAMPLE_BUDGET_INST`] simulated thread instructions; its counters are scaled to the grid
//! and the output says which launches were sampled.

pub use crate::cards;
pub mod model;
pub mod ptxas;

pub use crate::bench::cases::Scale;

/// Useful FLOPs past which a case is sampled rather than run whole (at roughly 10^7–10^8
/// simulated thread instructions per second with counting on, it would take minutes).
pub const SIM_MAX_FLOPS: f64 = 2.0e8;
/// Minimum bytes past which a case is sampled rather than run whole.
pub const SIM_MAX_BYTES: f64 = 256.0 * 1024.0 * 1024.0;
/// Simulated thread instructions a sampled case may take in its counted run (about 5–10 s
/// in a release build on 2 cores). A launch is never cut below the probe's CTAs, so a case
/// whose CTAs each do more (the 4096-wide GEMMs loop over tens of tiles per CTA) takes longer.
pub const SAMPLE_BUDGET_INST: u64 = 500_000_000;
/// The SM count the simulated device reports: H100 SXM's and H200's.
pub const DEFAULT_SM_COUNT: u32 = 132;

/// Parse `small`, `cpu` or `gpu` (as [`Scale`]'s `FromStr`).
pub fn parse_scale(s: &str) -> Option<Scale> {
    s.parse().ok()
}

#[cfg(feature = "ptx-sim")]
mod run;
#[cfg(feature = "ptx-sim")]
pub use run::*;
