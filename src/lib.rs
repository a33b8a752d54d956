//! bella: GPU kernels for Bayesian low-rank learning. K particles, each a low-rank adapter
//! `B_k A_k` on one frozen weight `W0`, trained as an ensemble or with SVGD. The kernels are
//! hand-written in CUDA PTX and WGSL; a CPU backend is the reference and the fallback.
//!
//! # Where things are
//!
//! - [`ops`]: the ops of DESIGN.md (`lora_forward`, `lora_backward`, `matmul`,
//!   `pairwise_sqdist`, `rbf_kernel`, `svgd_direction`, `adamw_step`, the activations,
//!   `softmax_xent`, `ensemble_stats`, and the utility `axpby`). Each function checks the
//!   op's full contract (shapes, values, devices) and returns a [`BellaError`], never panics,
//!   on bad input. This is the entry point for a framework.
//! - [`backend`]: the [`Backend`] trait every backend implements, and [`backend::open`] /
//!   [`backend::open_named`] to get one (`cpu` always; `wgpu`, `cuda`, `ptx-sim` by feature).
//! - [`tensor`]: [`Tensor`], row-major f32 data owned by one backend; moved to and from the
//!   host with [`Backend::upload`] and [`Backend::download`].
//! - [`oracle`]: every op as plain float64 loops, the reference all backends are checked
//!   against.
//! - [`autograd`], [`nn`], [`train`]: a tape autograd over the ops, LoRA particles on a frozen
//!   MLP, and the trainers (ensemble, SVGD) with their metrics and checkpoints.
//! - [`io`]: safetensors and `.npz` files; [`rng`]: a small seeded generator;
//!   [`profile`]: the PTX simulator's counters and modelled GPU times (`bella profile`).
//!
//! # Example
//!
//! ```
//! use bella::backend::cpu::CpuBackend;
//! use bella::{ops, Backend};
//!
//! # fn main() -> bella::Result<()> {
//! let be = CpuBackend::new();
//! let x = be.upload(&[3], &[-1.0, 0.0, 2.0])?;
//! let y = ops::relu_forward(&be, &x)?;
//! assert_eq!(be.download(&y)?, vec![0.0, 0.0, 2.0]);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod autograd;
pub mod backend;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
pub mod cards;
pub mod device;
pub mod dtype;
pub mod error;
pub mod host;
pub mod io;
pub mod nn;
pub mod ops;
pub mod oracle;
#[cfg(feature = "bench")]
pub mod profile;
pub mod rng;
pub mod tensor;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod train;

pub use backend::{Backend, BackendKind};
pub use dtype::DType;
pub use error::{BellaError, Result};
pub use tensor::Tensor;
