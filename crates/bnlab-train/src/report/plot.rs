//! Draws [`Figure`]s with plotters, as PNG bytes and SVG text, with the DejaVu Sans font
//! embedded so no system font is needed.

use std::sync::Once;

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::TrainError;

use super::figures::{Figure, HistPanel, LinePanel, Panel};

/// Pixel size of one panel.
pub const PANEL: (u32, u32) = (720, 520);
/// Height of the title strip above the panels.
const TITLE_HEIGHT: u32 = 44;

/// Tableau's ten colours: distinct and readable on white; series `i` gets colour `i % 10`.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Panels per row and rows of a figure with `n` panels.
fn grid(n: usize) -> (usize, usize) {
    match n {
        4 => (2, 2),
        n => (n.max(1), 1),
    }
}

/// The image size of `figure` in pixels.
pub fn size(figure: &Figure) -> (u32, u32) {
    let (cols, rows) = grid(figure.panels.len());
    (PANEL.0 * cols as u32, PANEL.1 * rows as u32 + TITLE_HEIGHT)
}

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            // DejaVu Sans is a valid TrueType font; a failure would only lose text.
            let _ = register_font("sans-serif", style, dejavu::sans::regular());
        }
    });
}

fn failed(figure: &Figure) -> impl Fn(String) -> TrainError + '_ {
    move |e| TrainError::Report(format!("drawing figure `{}`: {e}", figure.name))
}

/// `figure` as a PNG file's bytes.
pub fn png(figure: &Figure) -> Result<Vec<u8>, TrainError> {
    register_fonts();
    let (w, h) = size(figure);
    let mut buffer = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        draw(&root, figure).map_err(failed(figure))?;
        root.present()
            .map_err(|e| failed(figure)(format!("{e:?}")))?;
    }
    // the best compression with adaptive filters: line plots shrink about 5× against the
    // encoder's default, which keeps committed reports small
    let mut out = Vec::new();
    let encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive);
    encoder
        .write_image(&buffer, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| failed(figure)(e.to_string()))?;
    Ok(out)
}

/// `figure` as SVG text.
pub fn svg(figure: &Figure) -> Result<String, TrainError> {
    register_fonts();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size(figure)).into_drawing_area();
        draw(&root, figure).map_err(failed(figure))?;
        root.present()
            .map_err(|e| failed(figure)(format!("{e:?}")))?;
    }
    Ok(out)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    root.fill(&WHITE).map_err(e)?;
    let body = root.titled(&figure.title, ("sans-serif", 24)).map_err(e)?;
    let (cols, rows) = grid(figure.panels.len());
    let areas = body.split_evenly((rows, cols));
    for (area, panel) in areas.iter().zip(&figure.panels) {
        match panel {
            Panel::Lines(p) => lines(area, p)?,
            Panel::Histograms(p) => histograms(area, p)?,
        }
    }
    Ok(())
}

/// `(lo, hi)` widened by 6 % each side (or ±0.5 when empty).
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.06 * (hi - lo) } else { 0.5 };
    (lo - pad, hi + pad)
}

/// The share of the data's height added on top so that a legend of `series` lines sits
/// above the data.
fn legend_room(series: usize) -> f64 {
    if series == 0 {
        0.0
    } else {
        0.06 * series as f64 + 0.05
    }
}

/// Tick labels without trailing zeros.
fn tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// A chart's frame: margins, label areas and the title when there is one.
fn builder<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(area);
    b.margin(14).x_label_area_size(48).y_label_area_size(72);
    if !title.is_empty() {
        b.caption(title, ("sans-serif", 20));
    }
    b
}

/// A chart with linear f64 axes.
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws a solid or dashed line with its legend entry.
fn line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    pts: Vec<(f64, f64)>,
    style: ShapeStyle,
    dashed: bool,
    label: &str,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    if dashed {
        chart
            .draw_series(DashedLineSeries::new(pts, 8, 5, style))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 3, style));
    } else {
        chart
            .draw_series(LineSeries::new(pts, style))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    Ok(())
}

/// Draws the legend at `position`.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| format!("{e:?}"))
}

fn lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &LinePanel) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    let log2 = p.log2_x;
    let tx = move |x: f64| {
        if log2 {
            x.max(f64::MIN_POSITIVE).log2()
        } else {
            x
        }
    };
    let all = || p.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), q| {
        (a.min(tx(q.0)), b.max(tx(q.0)))
    });
    let (y0, y1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), q| {
        (a.min(q.1 - q.2), b.max(q.1 + q.2))
    });
    let (x0, x1) = if log2 && x0.is_finite() {
        (x0.floor() - 0.3, x1.ceil() + 0.3)
    } else {
        padded(x0, x1)
    };
    let (y0, y1) = padded(y0, y1);
    // Shares, accuracies and losses are never negative: keep error bars above the axis.
    let y0 = if all().all(|q| q.1 >= 0.0) {
        y0.max(0.0)
    } else {
        y0
    };
    // Headroom above the data for the legend, a line per series.
    let y1 = y1 + (y1 - y0) * legend_room(p.series.len());
    let integral = !log2 && all().all(|q| q.0.fract() == 0.0);
    let mut chart = builder(area, &p.title)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    let x_format = move |v: &f64| {
        let whole = (v - v.round()).abs() < 1e-6;
        match (log2, integral) {
            (true, _) if whole => tick(2f64.powf(v.round())),
            (false, true) if whole => tick(v.round()),
            (false, false) => tick(*v),
            _ => String::new(),
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .x_label_formatter(&x_format)
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16));
    if log2 || (integral && x1 - x0 <= 24.0) {
        mesh.x_labels((x1 - x0).ceil() as usize + 1);
    }
    mesh.draw().map_err(e)?;
    for s in &p.series {
        let c = color(s.color);
        let style = c.stroke_width(2);
        let pts: Vec<(f64, f64)> = s.points.iter().map(|q| (tx(q.0), q.1)).collect();
        line(&mut chart, pts.clone(), style, s.dashed, &s.label)?;
        chart
            .draw_series(pts.iter().map(|&q| Circle::new(q, 3, c.filled())))
            .map_err(e)?;
        chart
            .draw_series(s.points.iter().filter(|q| q.2 > 0.0).map(|q| {
                ErrorBar::new_vertical(tx(q.0), q.1 - q.2, q.1, q.1 + q.2, c.stroke_width(1), 8)
            }))
            .map_err(e)?;
    }
    if !p.series.is_empty() {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

fn histograms<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &HistPanel,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    let edges = |s: &super::figures::HistSeries| {
        if s.max > s.min {
            (s.min, s.max)
        } else {
            (s.min - 0.5, s.max + 0.5)
        }
    };
    let (x0, x1) = p
        .series
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| {
            let (lo, hi) = edges(s);
            (a.min(lo), b.max(hi))
        });
    let top = p
        .series
        .iter()
        .flat_map(|s| s.shares.iter())
        .fold(0.0f64, |a, &b| a.max(b));
    let (x0, x1) = padded(x0, x1);
    let mut chart = builder(area, &p.title)
        .build_cartesian_2d(
            x0..x1,
            0.0..(top * (1.04 + legend_room(p.series.len()))).max(1.0),
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(p.x_label.as_str())
        .y_desc("share of values (%)")
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    for s in &p.series {
        let (lo, hi) = edges(s);
        let w = (hi - lo) / s.shares.len().max(1) as f64;
        let mut pts = vec![(lo, 0.0)];
        for (i, &share) in s.shares.iter().enumerate() {
            let a = lo + i as f64 * w;
            pts.push((a, share));
            pts.push((a + w, share));
        }
        pts.push((hi, 0.0));
        let style = color(s.color).stroke_width(2);
        line(&mut chart, pts, style, s.dashed, &s.label)?;
    }
    if !p.series.is_empty() {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}
