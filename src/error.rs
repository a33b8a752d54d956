//! One error type for the library and the CLI. Every failure the user can cause (shapes,
//! files, missing backends, device limits) is a `BellaError`, never a panic.

use std::fmt;

/// What went wrong; new kinds may be added (the enum is `#[non_exhaustive]`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BellaError {
    /// A tensor has the wrong shape: which op, which tensor, what was expected, what came.
    Shape {
        /// The op (or reader) that checked it.
        op: String,
        /// The tensor's name in the op contract.
        tensor: String,
        /// The expected shape, in words (`"[K, M, O]"`, `"a 2-D tensor"`).
        expected: String,
        /// The shape that came.
        got: Vec<usize>,
    },
    /// A value is out of its allowed range (a label >= C, step < 1, a negative size, ...).
    Invalid(String),
    /// A named input is missing.
    Missing {
        /// The op that needs it.
        op: String,
        /// The input's name.
        tensor: String,
    },
    /// Unknown op or backend name.
    Unknown {
        /// What kind of name: `"op"`, `"backend"`, ...
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// The backend is not compiled in or not present on this machine.
    BackendUnavailable {
        /// The backend's name (`cuda`, `wgpu`, ...).
        backend: String,
        /// Why: not compiled in, no device, no driver.
        reason: String,
    },
    /// A device refused: validation error, launch failure, out of memory, limits.
    Device {
        /// The backend's name.
        backend: String,
        /// What the device or the budget check said.
        message: String,
    },
    /// File and format problems (safetensors, checkpoints, reports).
    Io(String),
    /// NaN or Inf where finite numbers were required.
    NonFinite(String),
}

/// `Result` with [`BellaError`], as every fallible function of the crate returns.
pub type Result<T> = std::result::Result<T, BellaError>;

impl BellaError {
    /// A [`BellaError::Shape`]: `tensor` of `op` has shape `got`, `expected` in words.
    pub fn shape(op: &str, tensor: &str, expected: impl Into<String>, got: &[usize]) -> Self {
        BellaError::Shape {
            op: op.to_string(),
            tensor: tensor.to_string(),
            expected: expected.into(),
            got: got.to_vec(),
        }
    }
    /// A [`BellaError::Invalid`] with this message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        BellaError::Invalid(msg.into())
    }
    /// A [`BellaError::Device`] of `backend` with this message.
    pub fn device(backend: &str, msg: impl Into<String>) -> Self {
        BellaError::Device {
            backend: backend.to_string(),
            message: msg.into(),
        }
    }
    /// A [`BellaError::BackendUnavailable`]: `backend` cannot be used, for `reason`.
    pub fn unavailable(backend: &str, reason: impl Into<String>) -> Self {
        BellaError::BackendUnavailable {
            backend: backend.to_string(),
            reason: reason.into(),
        }
    }
    /// A [`BellaError::Io`] with this message (name the path in it).
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
