//! The report's figures as data: which figures a sweep's results support, and their series.
//! Drawing is [`super::plot`]'s job.

use crate::{EvalKey, Histogram, RunResult, summary};

use super::results::{Metric, SweepResults};

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

impl HistSeries {
    /// A series from a stored histogram.
    fn from_histogram(label: String, h: &Histogram, dashed: bool, color: usize) -> Self {
        let total = h.counts.iter().sum::<u64>().max(1) as f64;
        Self {
            label,
            min: h.min,
            max: h.max,
            shares: h.counts.iter().map(|&c| 100.0 * c as f64 / total).collect(),
            dashed,
            color,
        }
    }
}

/// Bins per histogram of γ and β.
const AFFINE_BINS: usize = 40;

/// Histograms of several value sets over shared bins (so they overlay).
fn shared_histograms(sets: Vec<(String, Vec<f32>, bool, usize)>) -> Vec<HistSeries> {
    let finite = || {
        sets.iter()
            .flat_map(|s| s.1.iter())
            .filter(|v| v.is_finite())
    };
    let lo = finite().fold(f64::INFINITY, |a, &v| a.min(v as f64));
    let hi = finite().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
    if !lo.is_finite() {
        return vec![];
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    sets.into_iter()
        .filter(|s| !s.1.is_empty())
        .map(|(label, values, dashed, color)| {
            let mut counts = vec![0u64; AFFINE_BINS];
            for v in values.iter().filter(|v| v.is_finite()) {
                let bin = ((*v as f64 - lo) / (hi - lo) * AFFINE_BINS as f64) as usize;
                counts[bin.min(AFFINE_BINS - 1)] += 1;
            }
            let h = Histogram {
                min: lo,
                max: hi,
                counts,
            };
            HistSeries::from_histogram(label, &h, dashed, color)
        })
        .collect()
}

/// (x, mean, std) of the values grouped by x, sorted by x.
fn points(values: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64, f64)> {
    let mut by_x: Vec<(f64, Vec<f64>)> = Vec::new();
    for (x, y) in values {
        match by_x.iter_mut().find(|(k, _)| *k == x) {
            Some((_, ys)) => ys.push(y),
            None => by_x.push((x, vec![y])),
        }
    }
    by_x.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_x.into_iter()
        .filter_map(|(x, ys)| summary(&ys).map(|s| (x, s.mean, s.std)))
        .collect()
}

/// The configurations with at least one finished run, in spec order, with their runs.
fn configurations(results: &SweepResults) -> Vec<(usize, &str, Vec<&RunResult>)> {
    results
        .sweep
        .order
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let runs: Vec<&RunResult> = results.finished(c).collect();
            (!runs.is_empty()).then_some((i, c.as_str(), runs))
        })
        .collect()
}

/// Validation metric per epoch under EMA and (when recorded) PreciseBN statistics
/// (Wu & Johnson Fig. 3–4).
pub fn validation_curves(results: &SweepResults, metric: Metric) -> Option<Figure> {
    let mut series = Vec::new();
    for (i, name, runs) in configurations(results) {
        let of = |precise: bool| {
            points(runs.iter().flat_map(|r| {
                r.epochs.iter().filter_map(move |e| {
                    let m = if precise { &e.val_precise } else { &e.val };
                    m.as_ref().map(|m| (e.epoch as f64, metric.of(m)))
                })
            }))
        };
        for (precise, what) in [(false, "EMA"), (true, "PreciseBN")] {
            let p = of(precise);
            if !p.is_empty() {
                series.push(LineSeries {
                    label: format!("{name}, {what}"),
                    points: p,
                    dashed: precise,
                    color: i,
                });
            }
        }
    }
    if series.is_empty() {
        return None;
    }
    let precise = series.iter().any(|s| s.dashed);
    Some(Figure {
        name: "validation-per-epoch".into(),
        title: if precise {
            format!("Validation {} per epoch: EMA vs PreciseBN", metric.name())
        } else {
            format!("Validation {} per epoch (EMA statistics)", metric.name())
        },
        caption: "Mean ± std over seeds after each epoch; solid: population statistics from \
                  the training EMA, dashed: PreciseBN statistics (Wu & Johnson Fig. 3–4)."
            .into(),
        panels: vec![Panel::Lines(LinePanel {
            title: String::new(),
            x_label: "epoch".into(),
            y_label: format!("validation {}", metric.label()),
            log2_x: false,
            series,
        })],
    })
}

/// Test accuracy and cross-entropy against the example-weighing α (Summers & Dinneen
/// Fig. 1–2, 4).
pub fn alpha_curves(results: &SweepResults) -> Option<Figure> {
    let panel = |metric: Metric| {
        let series: Vec<LineSeries> = configurations(results)
            .into_iter()
            .filter_map(|(i, name, runs)| {
                let p = points(runs.iter().flat_map(|r| {
                    r.test.iter().filter_map(|(k, m)| {
                        let Some(EvalKey::Alpha(alpha)) = EvalKey::parse(k) else {
                            return None;
                        };
                        Some((alpha, metric.of(m)))
                    })
                }));
                (!p.is_empty()).then(|| LineSeries {
                    label: name.to_string(),
                    points: p,
                    dashed: false,
                    color: i,
                })
            })
            .collect();
        LinePanel {
            title: format!("test {}", metric.name()),
            x_label: "α (weight of the example in its own statistics)".into(),
            y_label: format!("test {}", metric.label()),
            log2_x: false,
            series,
        }
    };
    let accuracy = panel(Metric::Accuracy);
    if accuracy.series.is_empty() {
        return None;
    }
    Some(Figure {
        name: "example-weighing-alpha".into(),
        title: "Inference example weighing: test accuracy and cross-entropy against α".into(),
        caption: "Each test example normalized with statistics that weigh it by α against \
                  the population statistics (Summers & Dinneen §3.1, Fig. 1–2, 4); mean ± std \
                  over seeds."
            .into(),
        panels: vec![Panel::Lines(accuracy), Panel::Lines(panel(Metric::Loss))],
    })
}

/// The axes that set batch sizes.
const BATCH_AXES: [&str; 3] = [
    "train.batch_size",
    "train.micro_batch_size",
    "model.norm.ghost_size",
];

/// The values of every axis except the batch-size axes, joined: a series' name.
fn series_name(results: &SweepResults, configuration: &str) -> String {
    let axes = results.axes(configuration);
    let varying: Vec<String> = super::table::varying_axes(results)
        .into_iter()
        .filter(|a| !BATCH_AXES.contains(&a.as_str()))
        .collect();
    let name: Vec<&str> = varying
        .iter()
        .filter_map(|a| axes.and_then(|x| x.get(a)).map(String::as_str))
        .collect();
    if name.is_empty() {
        "all".into()
    } else {
        name.join(" / ")
    }
}

/// Series grouped by name: (name, first configuration index, runs).
fn series_groups(results: &SweepResults) -> Vec<(String, usize, Vec<&RunResult>)> {
    let mut groups: Vec<(String, usize, Vec<&RunResult>)> = Vec::new();
    for (i, c, runs) in configurations(results) {
        let name = series_name(results, c);
        match groups.iter_mut().find(|g| g.0 == name) {
            Some(g) => g.2.extend(runs),
            None => groups.push((name, i, runs)),
        }
    }
    groups
}

/// Distinct values of `f` over the finished runs.
fn distinct_runs(results: &SweepResults, f: impl Fn(&RunResult) -> usize) -> usize {
    let mut v: Vec<usize> = results
        .runs
        .iter()
        .filter(|r| r.status == crate::Status::Finished)
        .map(f)
        .collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Test metric against the SGD batch size, a line per method (Summers & Dinneen Fig. 5).
pub fn batch_size_curves(results: &SweepResults, scheme: &str, metric: Metric) -> Option<Figure> {
    if distinct_runs(results, |r| r.config.train.batch_size) < 2 {
        return None;
    }
    let series: Vec<LineSeries> = series_groups(results)
        .into_iter()
        .filter_map(|(name, color, runs)| {
            let p = points(runs.iter().filter_map(|r| {
                let m = r.test.get(scheme)?;
                Some((r.config.train.batch_size as f64, metric.of(m)))
            }));
            (!p.is_empty()).then_some(LineSeries {
                label: name,
                points: p,
                dashed: false,
                color,
            })
        })
        .collect();
    if series.is_empty() {
        return None;
    }
    Some(Figure {
        name: "batch-size".into(),
        title: format!("Test {} against batch size", metric.name()),
        caption: format!(
            "Test {} ({scheme} statistics) against the SGD batch size, one line per method \
             (Summers & Dinneen Fig. 5); mean ± std over seeds.",
            metric.label()
        ),
        panels: vec![Panel::Lines(LinePanel {
            title: String::new(),
            x_label: "batch size (examples, log scale)".into(),
            y_label: format!("test {}", metric.label()),
            log2_x: true,
            series,
        })],
    })
}

/// The test key of a scheme for a run.
type SchemeKey = fn(&RunResult) -> String;

/// The normalization batch of a run: the ghost size, else the forward batch.
fn norm_batch(r: &RunResult) -> usize {
    r.config
        .model
        .norm
        .ghost_size
        .unwrap_or(r.config.train.micro_batch())
}

/// Error against the normalization batch size under the three evaluation schemes of
/// Wu & Johnson Fig. 5–6.
pub fn norm_batch_curves(results: &SweepResults) -> Option<Figure> {
    if distinct_runs(results, norm_batch) < 2 {
        return None;
    }
    let mut series = Vec::new();
    for (g, (name, _, runs)) in series_groups(results).into_iter().enumerate() {
        let schemes: [(&str, SchemeKey); 4] = [
            ("train set, mini-batch stats", |_| {
                EvalKey::TrainMiniBatch.to_string()
            }),
            ("test, PreciseBN", |_| EvalKey::Precise.to_string()),
            ("test, EMA population", |_| EvalKey::Population.to_string()),
            ("test, mini-batch stats at the training norm. batch", |r| {
                EvalKey::MiniBatch(norm_batch(r)).to_string()
            }),
        ];
        for (k, (what, key)) in schemes.iter().enumerate() {
            let p = points(runs.iter().filter_map(|r| {
                let m = r.test.get(&key(r))?;
                Some((norm_batch(r) as f64, Metric::Error.of(m)))
            }));
            if !p.is_empty() {
                series.push(LineSeries {
                    label: if name == "all" {
                        what.to_string()
                    } else {
                        format!("{name}: {what}")
                    },
                    points: p,
                    dashed: g % 2 == 1,
                    color: k,
                });
            }
        }
    }
    if series.is_empty() {
        return None;
    }
    Some(Figure {
        name: "norm-batch-size".into(),
        title: "Error against normalization batch size".into(),
        caption: "Error on the training set with mini-batch statistics, and on the test set \
                  with PreciseBN, EMA population and mini-batch statistics at the training \
                  normalization batch size (Wu & Johnson Fig. 5–6); mean ± std over seeds."
            .into(),
        panels: vec![Panel::Lines(LinePanel {
            title: String::new(),
            x_label: "normalization batch size (examples, log scale)".into(),
            y_label: Metric::Error.label().into(),
            log2_x: true,
            series,
        })],
    })
}

/// Learned γ and β against their initial values, and the share of |x̂| > 6 per layer
/// (Davis & Frank §1, §3.2).
pub fn affine_histograms(results: &SweepResults) -> Option<Figure> {
    let configs = configurations(results);
    let sets = |gamma: bool| {
        let mut sets = Vec::new();
        for (i, name, runs) in &configs {
            let (mut init, mut learned) = (Vec::new(), Vec::new());
            for r in runs {
                for l in &r.diagnostics.layers {
                    let (a, b) = if gamma {
                        (&l.gamma_init, &l.gamma)
                    } else {
                        (&l.beta_init, &l.beta)
                    };
                    init.extend_from_slice(a);
                    learned.extend_from_slice(b);
                }
            }
            sets.push((format!("{name}, learned"), learned, false, *i));
            sets.push((format!("{name}, initial"), init, true, *i));
        }
        shared_histograms(sets)
    };
    let gamma = sets(true);
    let beta = sets(false);
    let mut outliers = Vec::new();
    for (i, name, runs) in &configs {
        let mut order: Vec<String> = runs[0]
            .diagnostics
            .layers
            .iter()
            .map(|l| l.path.clone())
            .collect();
        for path in runs[0].diagnostics.outlier_share.keys() {
            if !order.contains(path) {
                order.push(path.clone());
            }
        }
        let p = points(runs.iter().flat_map(|r| {
            order.iter().enumerate().filter_map(|(k, path)| {
                let share = r.diagnostics.outlier_share.get(path)?;
                Some(((k + 1) as f64, 100.0 * share))
            })
        }));
        if !p.is_empty() {
            outliers.push(LineSeries {
                label: name.to_string(),
                points: p,
                dashed: false,
                color: *i,
            });
        }
    }
    if gamma.is_empty() && beta.is_empty() && outliers.is_empty() {
        return None;
    }
    Some(Figure {
        name: "gamma-beta".into(),
        title: "Learned γ and β against their initial values; normalized outliers per layer".into(),
        caption: format!(
            "Histograms of γ and β over every normalization layer and seed, learned (solid) \
             and initial (dashed), as a share of the values; right: share of normalized \
             values with |x̂| > {} per layer on the test set, input to output (Davis & Frank \
             §1, §3.2).",
            crate::OUTLIER_THRESHOLD
        ),
        panels: vec![
            Panel::Histograms(HistPanel {
                title: "γ".into(),
                x_label: "γ".into(),
                series: gamma,
            }),
            Panel::Histograms(HistPanel {
                title: "β".into(),
                x_label: "β".into(),
                series: beta,
            }),
            Panel::Lines(LinePanel {
                title: format!("|x̂| > {}", crate::OUTLIER_THRESHOLD),
                x_label: "normalization layer (input → output)".into(),
                y_label: "share of normalized values (%)".into(),
                log2_x: false,
                series: outliers,
            }),
        ],
    })
}

/// First- and last-layer weights and gradients over the first and last updates of epoch 1,
/// one figure per configuration, from its lowest-index finished run (Peerthum & Stamp
/// Fig. 3–4).
pub fn layer_histograms(results: &SweepResults) -> Vec<Figure> {
    let mut out = Vec::new();
    for (_, name, runs) in configurations(results) {
        let run = runs[0];
        let h = &run.diagnostics.histograms;
        let mut panels = Vec::new();
        for layer in ["first", "last"] {
            for what in ["weights", "gradients"] {
                let series: Vec<HistSeries> = ["first", "last"]
                    .iter()
                    .enumerate()
                    .filter_map(|(k, window)| {
                        let key = format!(
                            "{layer}-layer {what}, {window} {} updates of epoch 1",
                            crate::HISTOGRAM_UPDATES
                        );
                        h.get(&key).map(|h| {
                            HistSeries::from_histogram(
                                format!("{window} {} updates", crate::HISTOGRAM_UPDATES),
                                h,
                                k == 1,
                                k,
                            )
                        })
                    })
                    .collect();
                if !series.is_empty() {
                    panels.push(Panel::Histograms(HistPanel {
                        title: format!("{layer} layer {what}"),
                        x_label: if what == "weights" {
                            "weight".into()
                        } else {
                            "gradient".into()
                        },
                        series,
                    }));
                }
            }
        }
        if panels.is_empty() {
            continue;
        }
        out.push(Figure {
            name: format!("layers-{}", crate::file_safe(name)),
            title: format!("{name}: first- and last-layer weights and gradients, epoch 1"),
            caption: format!(
                "`{name}`, run {} (seed {:#010x}): weights and gradients of the first \
                 convolution and the last layer over the first (solid) and last (dashed) {} \
                 updates of epoch 1 (Peerthum & Stamp Fig. 3–4).",
                run.index,
                run.seed,
                crate::HISTOGRAM_UPDATES
            ),
            panels,
        });
    }
    out
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
