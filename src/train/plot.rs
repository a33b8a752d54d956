//! Reliability diagrams (SVG): per confidence bin, the accuracy of the shifted split as bars
//! and of the in-distribution split as a line, against the diagonal of perfect calibration.

use super::metrics::{Bin, ECE_BINS};
use crate::error::{BellaError, Result};
use plotters::prelude::*;
use std::path::Path;

/// Write a reliability diagram to `path` (SVG): per confidence bin, the shifted split's
/// accuracy as bars and the in-distribution split's as a line, titled `title`.
/// [`BellaError::Io`] if it cannot be drawn or written.
pub fn reliability_svg(path: &Path, title: &str, in_dist: &[Bin], shifted: &[Bin]) -> Result<()> {
    draw(path, title, in_dist, shifted)
        .map_err(|e| BellaError::io(format!("cannot draw {}: {e}", path.display())))
}

fn draw(
    path: &Path,
    title: &str,
    in_dist: &[Bin],
    shifted: &[Bin],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (560, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("confidence (top label)")
        .y_desc("accuracy")
        .draw()?;
    let w = 1.0 / ECE_BINS as f64;
    chart
        .draw_series(
            shifted
                .iter()
                .enumerate()
                .filter(|(_, b)| b.count > 0)
                .map(|(i, b)| {
                    let x0 = i as f64 * w;
                    Rectangle::new(
                        [(x0 + 0.1 * w, 0.0), (x0 + 0.9 * w, b.accuracy)],
                        BLUE.mix(0.45).filled(),
                    )
                }),
        )?
        .label("shifted split (bars)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BLUE.mix(0.45).filled()));
    chart
        .draw_series(LineSeries::new(
            in_dist
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.confidence, b.accuracy)),
            RED.stroke_width(2),
        ))?
        .label("in-distribution")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.6)))?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK.mix(0.6)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
