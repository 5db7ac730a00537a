//! Histogram figures: γ and β at initialization and at the end, and the epoch-1 weight and
//! gradient histograms of chosen layers.

use crate::Histogram;

use super::super::results::SweepResults;
use super::*;
use curves::{configurations, points};

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
