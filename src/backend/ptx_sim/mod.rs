//! Placeholder: this backend is being written.
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use std::sync::Arc;

/// Open the backend, or say why it is not available.
pub fn open() -> Result<Arc<dyn Backend>> {
    Err(BellaError::unavailable("ptx_sim", "not implemented yet"))
}
