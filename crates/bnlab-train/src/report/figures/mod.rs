//! The report's figures as data: which figures a sweep's results support, and their series.
//! Drawing is [`super::plot`]'s job.

use super::results::{Metric, SweepResults};

mod curves;
mod histograms;

pub use curves::*;
pub use histograms::*;

/// A figure: panels side by side (or 2 × 2 for four), written as `<name>.png` and `.svg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem.
    pub name: String,
    /// Title drawn above the panels.
    pub title: String,
    /// What the figure shows, for the report.
    pub caption: String,
    /// The panels.
    pub panels: Vec<Panel>,
}

/// One chart of a figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Panel {
    /// Lines through points with ± std error bars.
    Lines(LinePanel),
    /// Step histograms of shares per bin.
    Histograms(HistPanel),
}

/// Lines against a numeric x.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePanel {
    /// Panel title.
    pub title: String,
    /// x-axis label with unit.
    pub x_label: String,
    /// y-axis label with unit.
    pub y_label: String,
    /// Draw x on a log₂ scale (batch sizes).
    pub log2_x: bool,
    /// The series.
    pub series: Vec<LineSeries>,
}

/// One line: (x, mean, std) points.
#[derive(Debug, Clone, PartialEq)]
pub struct LineSeries {
    /// Legend entry.
    pub label: String,
    /// (x, mean, std) sorted by x.
    pub points: Vec<(f64, f64, f64)>,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// Palette index.
    pub color: usize,
}

/// Histograms over one x-axis.
#[derive(Debug, Clone, PartialEq)]
pub struct HistPanel {
    /// Panel title.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// The series.
    pub series: Vec<HistSeries>,
}

/// One histogram: equal bins from `min` to `max`, each bin's share of the values in %.
#[derive(Debug, Clone, PartialEq)]
pub struct HistSeries {
    /// Legend entry.
    pub label: String,
    /// Lower edge of the first bin.
    pub min: f64,
    /// Upper edge of the last bin.
    pub max: f64,
    /// Share of values per bin (%).
    pub shares: Vec<f64>,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// Palette index.
    pub color: usize,
}

/// Every figure the results support.
pub fn figures(results: &SweepResults, scheme: &str, metric: Metric) -> Vec<Figure> {
    let mut out: Vec<Figure> = [
        validation_curves(results, metric),
        alpha_curves(results),
        batch_size_curves(results, scheme, metric),
        norm_batch_curves(results),
        affine_histograms(results),
    ]
    .into_iter()
    .flatten()
    .collect();
    out.extend(layer_histograms(results));
    out
}
