//! `bella profile`: the ops of `bella bench` run once each on the counting PTX simulator;
//! per launch what a GPU profiler counts, per op the totals against the op's useful FLOPs and
//! minimum bytes (both from [`crate::bench::cases`], stated once per op there), and a
//! **modelled** time per card ([`model`], from the peaks in [`cards`]). Modelled, never
//! measured: no GPU is involved.
//!
//! Shapes are `bella bench`'s: by default those it runs on ptx-sim ([`Scale::Small`]);
//! `--scale cpu|gpu` takes its larger ones, and a case whose useful FLOPs or minimum bytes
//! pass [`SIM_MAX_FLOPS`] / [`SIM_MAX_BYTES`] is skipped with a printed reason (no sampling).

pub mod cards;
pub mod model;
pub mod ptxas;

use crate::bench::cases::Scale;

/// Useful FLOPs past which a case is not run in the simulator (at roughly 10^7–10^8
/// simulated thread instructions per second with counting on, it would take minutes).
pub const SIM_MAX_FLOPS: f64 = 2.0e8;
/// Minimum bytes past which a case is not run in the simulator.
pub const SIM_MAX_BYTES: f64 = 256.0 * 1024.0 * 1024.0;

/// Parse `small`, `cpu` or `gpu`.
pub fn parse_scale(s: &str) -> Option<Scale> {
    match s {
        "small" => Some(Scale::Small),
        "cpu" => Some(Scale::Cpu),
        "gpu" => Some(Scale::Gpu),
        _ => None,
    }
}

#[cfg(feature = "ptx-sim")]
mod run;
#[cfg(feature = "ptx-sim")]
pub use run::*;
