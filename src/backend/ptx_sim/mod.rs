//! `ptx-sim`: a CPU interpreter for the hand-written PTX in `kernels/`, driven by the same
//! host launch code as the CUDA backend (`backend::ptx`) through [`SimDriver`].
//!
//! A small machine, one file per part, so a reader can find how one instruction behaves:
//! - `lexer`, `parser`: PTX text to kernels (declarations, labels, operand syntax);
//! - `decode`: opcode + modifiers + operands to one `isa::Op` (unsupported = error);
//! - `isa`: the decoded instruction set; `alu`: what arithmetic, compares and conversions
//!   compute; `half_cvt`: conversions to and from `.f16` / `.bf16`; `thread`: one thread's
//!   instruction loop; `exec`: grid, CTA and warp scheduling, barriers and warp collectives;
//!   `warp_matrix`: fragment layouts and arithmetic of `mma.sync` and `ldmatrix`; `memory`:
//!   global/shared/local/param memory and the checker (bounds, alignment, uninitialised
//!   shared reads, shared-memory races); `async_copy`: `cp.async` copies and their groups;
//! - `driver`: the [`Driver`](crate::backend::ptx::driver::Driver) implementation;
//! - `profile`: counting mode (instructions by class, FLOPs, global sectors, shared-memory
//!   wavefronts), off unless a launch asks for it: [`Profiler`], [`Counters`].
//!
//! Errors name the kernel, the PTX line, the thread and CTA, and the address.

mod alu;
mod async_copy;
mod decode;
mod driver;
mod exec;
mod half_cvt;
mod isa;
mod lexer;
mod memory;
mod parser;
pub mod profile;
mod thread;
mod warp_matrix;

#[cfg(test)]
mod tests;

pub use driver::{SimBuf, SimDriver};
pub use profile::{Counters, LaunchProfile, ProfileOptions, Profiler, Sample};

use crate::backend::ptx::PtxBackend;
use crate::backend::Backend;
use crate::error::Result;
use std::sync::Arc;

/// Open the backend: the PTX launch code of `backend::ptx` on the simulator. Fails when a
/// module of `kernels/` does not parse (the error names the module and the line).
pub fn open() -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(PtxBackend::new(SimDriver::new())?))
}

/// [`open`] with counting on: every launch of the backend is counted and logged in the
/// returned [`Profiler`] (switch it off and on with [`Profiler::set_enabled`]).
pub fn open_profiled() -> Result<(Arc<dyn Backend>, Profiler)> {
    let driver = SimDriver::new();
    let profiler = driver.profiler();
    profiler.set_enabled(true);
    Ok((Arc::new(PtxBackend::new(driver)?), profiler))
}

/// [`open_profiled`] on a device set up by `opts`: the SM count it reports (grids sized as
/// on that card) and the sampling limit per launch.
pub fn open_profiled_with(opts: ProfileOptions) -> Result<(Arc<PtxBackend<SimDriver>>, Profiler)> {
    let driver = SimDriver::with_sm_count(opts.sm_count);
    let profiler = driver.profiler();
    profiler.set_max_ctas(opts.max_ctas_per_launch);
    profiler.set_enabled(true);
    Ok((Arc::new(PtxBackend::new(driver)?), profiler))
}
