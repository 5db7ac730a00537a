//! Line figures: validation curves, α curves, and accuracy against batch size and
//! normalization batch size.

use crate::{EvalKey, RunResult, summary};

use super::super::results::{Metric, SweepResults};
use super::*;

/// (x, mean, std) of the values grouped by x, sorted by x.
pub(super) fn points(values: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64, f64)> {
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
pub(super) fn configurations(results: &SweepResults) -> Vec<(usize, &str, Vec<&RunResult>)> {
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
        type Pick = fn(&crate::EpochRecord) -> Option<crate::Metrics>;
        let kinds: [(Pick, &str, bool); 3] = [
            (|e| e.val, "EMA", false),
            (|e| e.val_precise, "PreciseBN", true),
            (|e| e.val_minibatch, "mini-batch statistics", true),
        ];
        for (pick, what, dashed) in kinds {
            let p = points(runs.iter().flat_map(|r| {
                r.epochs
                    .iter()
                    .filter_map(move |e| pick(e).map(|m| (e.epoch as f64, metric.of(&m))))
            }));
            if !p.is_empty() {
                series.push(LineSeries {
                    label: format!("{name}, {what}"),
                    points: p,
                    dashed,
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
                  the training EMA, dashed: PreciseBN statistics (Wu & Johnson Fig. 3–4) or \
                  mini-batch statistics (Fig. 8), as the legend says."
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
    let varying: Vec<String> = super::super::table::varying_axes(results)
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
            ("test, PreciseBN", |_| EvalKey::PRECISE.to_string()),
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
