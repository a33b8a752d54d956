//! Training and evaluation of Bella particles: the embedded digits task ([`data`]) or a
//! user's dataset ([`dataset`]), the methods ([`method`]), the loop ([`trainer`]), metrics,
//! checkpoints, the report, the reliability diagrams, the whole run ([`task`]), and trained
//! particles as a library user holds them ([`trained`]: fit, predict, export to PEFT).

pub mod checkpoint;
pub mod data;
pub mod dataset;
pub mod eval;
pub mod method;
pub mod metrics;
#[cfg(feature = "cli")]
pub mod plot;
pub mod progress;
pub mod report;
pub mod split;
pub mod task;
pub mod task_data;
pub mod trained;
pub mod trainer;

pub use dataset::Dataset;
pub use eval::Prediction;
pub use method::{Method, TrainConfig};
pub use report::{MethodReport, Report};
pub use split::Split;
pub use task::{eval_saved, peft_settings, run, RunOptions};
pub use trained::{fit, fit_from, write_prediction, Trained};
