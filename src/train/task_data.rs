//! What a run trains and evaluates on: the embedded digits task, or a user's dataset on a
//! user's model. Splits other than `train` are optional for a user's data; the report covers
//! the ones there are.

use super::data::{digits_task, CLASSES, FEATURES};
use super::dataset::Dataset;
use super::split::Split;
use crate::error::Result;

/// The name under which the embedded task is reported.
pub const DIGITS_TASK: &str = "digits-rot90";

/// A run's data.
#[derive(Clone, Debug)]
pub struct TaskData {
    /// `digits-rot90`, or the user's data file name.
    pub name: String,
    /// Classes (the model's outputs); labels are `0..classes`.
    pub classes: usize,
    /// What the particles train on.
    pub train: Split,
    /// The in-distribution test split.
    pub test: Option<Split>,
    /// A test split under a shift no method trained on.
    pub shifted: Option<Split>,
    /// Unlabeled out-of-distribution inputs (scored by AUROC against `test`, else `train`).
    pub ood: Option<Split>,
    /// The digits task only: the source domain the base is pre-trained on.
    pub source: Option<Split>,
}

impl TaskData {
    /// The embedded digits task with `per_class` target images per class for training.
    pub fn digits(per_class: usize) -> Result<Self> {
        let t = digits_task(per_class)?;
        Ok(TaskData {
            name: DIGITS_TASK.to_string(),
            classes: CLASSES,
            train: t.target_train,
            test: Some(t.in_dist),
            shifted: Some(t.shifted),
            ood: Some(t.ood),
            source: Some(t.source),
        })
    }

    /// A user's dataset for a model with `classes` outputs (checked by the caller with
    /// [`Dataset::check_model`]).
    pub fn user(name: &str, data: Dataset, classes: usize) -> Self {
        TaskData {
            name: name.to_string(),
            classes,
            train: data.train,
            test: data.test,
            shifted: data.shifted,
            ood: data.ood,
            source: None,
        }
    }

    /// Whether this is the embedded digits task.
    pub fn is_digits(&self) -> bool {
        self.name == DIGITS_TASK && self.train.features == FEATURES
    }

    /// Inputs per row.
    pub fn features(&self) -> usize {
        self.train.features
    }
}
