//! An SVG chart of a report: each op's share of its roofline, and each comparison's ratio
//! against its target. Horizontal bars, one per row, labelled in place.

use super::report::Report;
use crate::error::{BellaError, Result};
use plotters::prelude::*;

const ROW_PX: u32 = 22;
const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn plot_err(e: impl std::fmt::Display) -> BellaError {
    BellaError::io(format!("plot: {e}"))
}

/// One bar: label, value, colour index, and a target line where there is one.
struct Bar {
    label: String,
    value: f64,
    series: usize,
    target: Option<f64>,
}

pub fn write_svg(report: &Report, path: &str) -> Result<()> {
    let backends: Vec<&str> = report.backends.iter().map(|b| b.name.as_str()).collect();
    let series = |name: &str| backends.iter().position(|b| *b == name).unwrap_or(0);
    let roofline: Vec<Bar> = report
        .results
        .iter()
        .map(|r| Bar {
            label: format!(
                "{} · {} · {} — {:.0}%",
                r.backend, r.op, r.shape, r.roofline_pct
            ),
            value: r.roofline_pct,
            series: series(&r.backend),
            target: None,
        })
        .collect();
    let ratios: Vec<Bar> = report
        .comparisons
        .iter()
        .map(|c| Bar {
            label: format!("{} · {} — {:.2}×", c.backend, c.name, c.ratio),
            value: c.ratio,
            series: series(&c.backend),
            target: c.target,
        })
        .collect();
    let heights = [panel_height(roofline.len()), panel_height(ratios.len())];
    let root = SVGBackend::new(path, (1000, heights[0] + heights[1])).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(heights[0]);
    let title = format!("bella bench — {} ({})", report.date, report.machine.cpu);
    panel(
        &top,
        &title,
        "roofline % (time at the measured copy/GEMM ceilings over measured time)",
        &roofline,
    )?;
    panel(
        &bottom,
        "",
        "ratio = baseline time / our time (bars past the dashed target meet it)",
        &ratios,
    )?;
    root.present().map_err(plot_err)
}

fn panel_height(rows: usize) -> u32 {
    90 + ROW_PX * rows.max(1) as u32
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    bars: &[Bar],
) -> Result<()> {
    let n = bars.len().max(1) as f64;
    let max = bars
        .iter()
        .map(|b| b.value.max(b.target.unwrap_or(0.0)))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(5)
        .build_cartesian_2d(0.0..max * 1.05, 0.0..n)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(x_desc)
        .draw()
        .map_err(plot_err)?;
    // Row 0 at the top.
    let y = |i: usize| n - i as f64;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let colour = PALETTE[b.series % PALETTE.len()];
            let v = if b.value.is_finite() { b.value } else { 0.0 };
            Rectangle::new(
                [(0.0, y(i) - 0.85), (v, y(i) - 0.15)],
                colour.mix(0.55).filled(),
            )
        }))
        .map_err(plot_err)?;
    for (i, b) in bars.iter().enumerate() {
        if let Some(t) = b.target {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(t, y(i) - 1.0), (t, y(i))],
                    4,
                    3,
                    BLACK.stroke_width(2),
                ))
                .map_err(plot_err)?;
        }
    }
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                b.label.clone(),
                (max * 0.005, y(i) - 0.35),
                ("sans-serif", 12).into_font(),
            )
        }))
        .map_err(plot_err)?;
    Ok(())
}
