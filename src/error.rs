//! One error type for the library and the CLI. Every failure the user can cause (shapes,
//! files, missing backends, device limits) is a `BellaError`, never a panic.

use std::fmt;

/// What went wrong; new kinds may be added (the enum is `#[non_exhaustive]`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BellaError {
    /// A tensor has the wrong shape: which op, which tensor, what was expected, what came.
    Shape {
        op: String,
        tensor: String,
        expected: String,
        got: Vec<usize>,
    },
    /// A value is out of its allowed range (a label >= C, step < 1, a negative size, ...).
    Invalid(String),
    /// A named input is missing.
    Missing { op: String, tensor: String },
    /// Unknown op or backend name.
    Unknown { what: &'static str, name: String },
    /// The backend is not compiled in or not present on this machine.
    BackendUnavailable { backend: String, reason: String },
    /// A device refused: validation error, launch failure, out of memory, limits.
    Device { backend: String, message: String },
    /// File and format problems (safetensors, checkpoints, reports).
    Io(String),
    /// NaN or Inf where finite numbers were required.
    NonFinite(String),
}

pub type Result<T> = std::result::Result<T, BellaError>;

impl BellaError {
    pub fn shape(op: &str, tensor: &str, expected: impl Into<String>, got: &[usize]) -> Self {
        BellaError::Shape {
            op: op.to_string(),
            tensor: tensor.to_string(),
            expected: expected.into(),
            got: got.to_vec(),
        }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        BellaError::Invalid(msg.into())
    }
    pub fn device(backend: &str, msg: impl Into<String>) -> Self {
        BellaError::Device {
            backend: backend.to_string(),
            message: msg.into(),
        }
    }
    pub fn unavailable(backend: &str, reason: impl Into<String>) -> Self {
        BellaError::BackendUnavailable {
            backend: backend.to_string(),
            reason: reason.into(),
        }
    }
    pub fn io(msg: impl Into<String>) -> Self {
        BellaError::Io(msg.into())
    }
}

impl fmt::Display for BellaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BellaError::Shape {
                op,
                tensor,
                expected,
                got,
            } => write!(
                f,
                "{op}: tensor `{tensor}` has shape {got:?}, expected {expected}"
            ),
            BellaError::Invalid(m) => write!(f, "{m}"),
            BellaError::Missing { op, tensor } => {
                write!(f, "{op}: missing input tensor `{tensor}`")
            }
            BellaError::Unknown { what, name } => write!(f, "unknown {what} `{name}`"),
            BellaError::BackendUnavailable { backend, reason } => {
                write!(f, "backend `{backend}` is not available: {reason}")
            }
            BellaError::Device { backend, message } => write!(f, "{backend}: {message}"),
            BellaError::Io(m) => write!(f, "{m}"),
            BellaError::NonFinite(m) => write!(f, "non-finite values: {m}"),
        }
    }
}

impl std::error::Error for BellaError {}

impl From<std::io::Error> for BellaError {
    fn from(e: std::io::Error) -> Self {
        BellaError::Io(e.to_string())
    }
}
