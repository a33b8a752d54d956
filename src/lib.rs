//! bella: GPU kernels for Bayesian low-rank learning. K particles, each a low-rank adapter
//! `B_k A_k` on one frozen weight, trained as an ensemble or with SVGD. See DESIGN.md (the op
//! contracts) and README.md.

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod error;
pub mod io;
pub mod nn;
pub mod ops;
pub mod oracle;
pub mod profile;
pub mod rng;
pub mod tensor;
pub mod testing;
pub mod train;

pub use backend::{Backend, BackendKind};
pub use error::{BellaError, Result};
pub use tensor::Tensor;
