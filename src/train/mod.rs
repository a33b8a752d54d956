//! Training and evaluation of Bella particles: the embedded digits task ([`data`]), the
//! methods ([`method`]), the loop ([`trainer`]), metrics, checkpoints, the report, the
//! reliability diagrams, and the whole run ([`task`]).

pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod method;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod split;
pub mod task;
pub mod trainer;

pub use method::{Method, TrainConfig};
pub use report::{MethodReport, Report};
pub use task::{eval_saved, run, RunOptions};
