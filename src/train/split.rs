//! A split of a dataset: `n` rows of `features` inputs, and (except for an OOD set) a label
//! per row.

/// Rows `x [n, features]` (row-major) and labels `y [n]`; `y` is empty for an unlabeled
/// split (an OOD set).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// Inputs per row.
    pub features: usize,
    /// Row-major inputs, `len() · features` values.
    pub x: Vec<f32>,
    /// One label per row, or none at all for an unlabeled split.
    pub y: Vec<u32>,
}

impl Split {
    /// An empty split of rows with `features` inputs.
    pub fn new(features: usize) -> Self {
        Split {
            features,
            ..Split::default()
        }
    }
    /// Rows.
    pub fn len(&self) -> usize {
        self.x.len().checked_div(self.features).unwrap_or(0)
    }
    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether every row has a label.
    pub fn is_labeled(&self) -> bool {
        !self.x.is_empty() && self.y.len() == self.len()
    }
    /// Append a labeled row.
    pub fn push(&mut self, row: &[f32], label: u32) {
        debug_assert_eq!(row.len(), self.features);
        self.x.extend_from_slice(row);
        self.y.push(label);
    }
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }
}
