//! Placeholder: this backend is being written.
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use std::sync::Arc;

/// Open the backend, or say why it is not available.
pub fn open() -> Result<Arc<dyn Backend>> {
    Err(BellaError::unavailable("wgpu", "not implemented yet"))
}

/// True when wgpu finds a hardware (non-CPU) adapter; `auto` prefers those over the CPU.
pub fn has_real_gpu() -> bool {
    false
}
