//! `ptx-sim`: a CPU interpreter for the hand-written PTX in `kernels/`, driven by the same
//! host launch code as the CUDA backend (`backend::ptx`) through [`SimDriver`].
//!
//! A small machine, one file per part, so a reader can find how one instruction behaves:
//! - `lexer`, `parser`: PTX text to kernels (declarations, labels, operand syntax);
//! - `decode`: opcode + modifiers + operands to one `isa::Op` (unsupported = error);
//! - `isa`: the decoded instruction set; `alu`: what arithmetic, compares and conversions
//!   compute; `thread`: one thread's instruction loop; `exec`: grid, CTA and warp scheduling,
//!   barriers and warp collectives; `memory`: global/shared/local/param memory and the
//!   checker (bounds, alignment, uninitialised shared reads, shared-memory races);
//! - `driver`: the [`Driver`](crate::backend::ptx::driver::Driver) implementation.
//!
//! Errors name the kernel, the PTX line, the thread and CTA, and the address.

mod alu;
mod decode;
mod driver;
mod exec;
mod isa;
mod lexer;
mod memory;
mod parser;
mod thread;

#[cfg(test)]
mod tests;

pub use driver::{SimBuf, SimDriver};

use crate::backend::ptx::PtxBackend;
use crate::backend::Backend;
use crate::error::Result;
use std::sync::Arc;

/// Open the backend: the PTX launch code of `backend::ptx` on the simulator. Fails when a
/// module of `kernels/` does not parse (the error names the module and the line).
pub fn open() -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(PtxBackend::new(SimDriver::new())?))
}
