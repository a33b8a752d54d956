//! The utility `axpby` in float64.

/// `out = alpha · x + beta · y`, element by element.
pub fn axpby(alpha: f64, x: &[f64], beta: f64, y: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(y)
        .map(|(&xe, &ye)| alpha * xe + beta * ye)
        .collect()
}
