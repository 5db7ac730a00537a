//! The report's tables: configurations laid out by grid axes (rows, columns, one table per
//! value of the other axes), each cell mean ± std over seeds, **bold** when significantly
//! better than the baseline (one-sided t-test, direction by metric), underlined (`<ins>`)
//! when best in its column: the papers' convention.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    Alternative, Correction, PairedDifference, Summary, TTest, TrainError, UnpairedDifference,
    summary,
};

use super::results::{Metric, SweepResults, pair};

/// Which t-test compares a configuration with its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKind {
    /// One-sided paired t-test, runs paired by seed (the default: the papers' test).
    Paired,
    /// One-sided Welch t-test on all finished runs, unpaired.
    Welch,
}

impl TestKind {
    /// How the report names the test.
    pub fn describe(self) -> &'static str {
        match self {
            TestKind::Paired => "one-sided paired t-test, runs paired by seed",
            TestKind::Welch => "one-sided Welch t-test (unpaired, unequal variances)",
        }
    }
}

impl std::str::FromStr for TestKind {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "paired" => Ok(TestKind::Paired),
            "welch" => Ok(TestKind::Welch),
            other => Err(TrainError::Report(format!(
                "unknown test `{other}` (paired or welch)"
            ))),
        }
    }
}

/// The configuration each configuration is compared with: the named configuration, or the
/// configuration with the same grid point whose named axes take the named values.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// As named by the user.
    pub name: String,
    selector: BTreeMap<String, String>,
}

impl Baseline {
    /// Resolves `name`: a configuration, a variant, or `AXIS=VALUE[,AXIS=VALUE…]`.
    pub fn resolve(name: &str, results: &SweepResults) -> Result<Self, TrainError> {
        let configs = &results.sweep.configurations;
        let selector = if let Some(axes) = configs.get(name) {
            axes.clone()
        } else if configs
            .values()
            .any(|a| a.get("variant").is_some_and(|v| v == name))
        {
            BTreeMap::from([("variant".to_string(), name.to_string())])
        } else {
            let axes = all_axes(results);
            let mut selector = BTreeMap::new();
            for part in name.split(',') {
                match part.split_once('=') {
                    Some((k, v)) if axes.contains(&k.trim().to_string()) => {
                        selector.insert(k.trim().to_string(), v.trim().to_string());
                    }
                    _ => {
                        return Err(TrainError::Report(format!(
                            "baseline `{name}` is neither a configuration, a variant nor \
                             AXIS=VALUE over the axes {}",
                            axes.join(", ")
                        )));
                    }
                }
            }
            selector
        };
        Ok(Self {
            name: name.to_string(),
            selector,
        })
    }

    /// The baseline of `configuration`: its axes with the baseline's values put in.
    pub fn partner(&self, configuration: &str, results: &SweepResults) -> Option<String> {
        let mut target = results.axes(configuration)?.clone();
        target.extend(self.selector.clone());
        results
            .sweep
            .order
            .iter()
            .find(|c| results.axes(c) == Some(&target))
            .cloned()
    }
}

/// Every axis of the sweep's configurations, sorted.
pub fn all_axes(results: &SweepResults) -> Vec<String> {
    let mut axes: Vec<String> = results
        .sweep
        .configurations
        .values()
        .flat_map(|a| a.keys().cloned())
        .collect();
    axes.sort();
    axes.dedup();
    axes
}

/// The axes whose value differs between configurations, sorted.
pub(super) fn varying_axes(results: &SweepResults) -> Vec<String> {
    let order = &results.sweep.order;
    all_axes(results)
        .into_iter()
        .filter(|a| {
            distinct(
                order
                    .iter()
                    .map(|c| label(results, c, std::slice::from_ref(a))),
            )
            .len()
                > 1
        })
        .collect()
}

/// `mean ± std` with `d` decimals.
pub(super) fn mean_std(s: &Summary, d: usize) -> String {
    format!("{:.d$} ± {:.d$}", s.mean, s.std)
}

/// How a table is laid out and what it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSettings {
    /// Axes whose values label the rows; empty: every varying axis not in `cols`.
    pub rows: Vec<String>,
    /// Axes whose values label the columns; empty: one column.
    pub cols: Vec<String>,
    /// The metric.
    pub metric: Metric,
    /// The test against the baseline.
    pub test: TestKind,
    /// The significance level (0.05).
    pub level: f64,
    /// The correction of each table's p-values for its many comparisons.
    pub correction: Correction,
}

/// The difference behind a comparison, with its intervals, tests and power.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "test")]
pub enum Detail {
    /// Paired by seed.
    Paired(PairedDifference),
    /// Welch, unpaired.
    Welch(UnpairedDifference),
}

/// A configuration against its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The baseline configuration.
    pub baseline: String,
    /// The test, or why there is none.
    pub outcome: Result<TTest, String>,
    /// Mean difference to the baseline (over pairs for the paired test).
    pub delta: Option<f64>,
    /// Runs paired (paired test) or the two sample sizes (Welch).
    pub compared: String,
    /// Run indices left out because the other side has no finished run.
    pub unmatched: Vec<u32>,
    /// The difference with its intervals, tests and power; `None` where it is undefined.
    pub detail: Option<Detail>,
    /// The one-sided p-value after the table's correction (the raw one without it).
    pub p_adjusted: Option<f64>,
    /// The (corrected) p below the level in the metric's better direction.
    pub significant: bool,
}

/// One cell: a configuration's runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The configuration.
    pub configuration: String,
    /// Mean, std and n over finished runs; `None` when none finished.
    pub summary: Option<Summary>,
    /// The comparison, absent for the baseline itself or without a baseline partner.
    pub comparison: Option<Comparison>,
    /// Best mean of its column within its table.
    pub best: bool,
}

/// One table: a block of configurations sharing the values of the axes not laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The evaluation scheme.
    pub scheme: String,
    /// The block's fixed axes and values (empty when there is one block).
    pub block: Vec<(String, String)>,
    /// Header of the row labels.
    pub row_header: String,
    /// Header of the column axes, when there are any.
    pub col_header: Option<String>,
    /// Column labels.
    pub col_labels: Vec<String>,
    /// Row label and cells (one per column; `None` where no configuration sits).
    pub rows: Vec<(String, Vec<Option<Cell>>)>,
    /// The metric.
    pub metric: Metric,
    /// Runs per configuration the sweep asks for.
    pub seeds: usize,
}

/// The short name of an axis (last dotted segment).
fn short(axis: &str) -> &str {
    axis.rsplit('.').next().unwrap_or(axis)
}

/// The values of `axes` in configuration `c`, joined.
fn label(results: &SweepResults, c: &str, axes: &[String]) -> String {
    let values = results.axes(c);
    axes.iter()
        .map(|a| {
            values
                .and_then(|v| v.get(a))
                .map_or("–", String::as_str)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Distinct values in first-appearance order.
fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Compares `configuration` with `baseline` under `scheme`.
fn compare(
    results: &SweepResults,
    configuration: &str,
    baseline: &str,
    scheme: &str,
    settings: &TableSettings,
) -> Comparison {
    let metric = settings.metric;
    let alternative = Alternative::for_metric(metric.name());
    let a = results.values(configuration, scheme, metric);
    let b = results.values(baseline, scheme, metric);
    let mean = |v: &[f64]| summary(v).map_or(f64::NAN, |s| s.mean);
    let (detail, delta, compared, unmatched) = match settings.test {
        TestKind::Paired => {
            let p = pair(&a, &b);
            let delta = (!p.a.is_empty()).then(|| mean(&p.a) - mean(&p.b));
            let compared = format!("{} pairs", p.indices.len());
            let d: Vec<f64> = p.a.iter().zip(&p.b).map(|(x, y)| x - y).collect();
            let detail = PairedDifference::of(&d, None, None).map(Detail::Paired);
            (detail, delta, compared, p.unmatched)
        }
        TestKind::Welch => {
            let (a, b): (Vec<f64>, Vec<f64>) =
                (a.values().copied().collect(), b.values().copied().collect());
            let delta = (!a.is_empty() && !b.is_empty()).then(|| mean(&a) - mean(&b));
            let compared = format!("{} vs {} runs", a.len(), b.len());
            let detail = UnpairedDifference::of(&a, &b).map(Detail::Welch);
            (detail, delta, compared, vec![])
        }
    };
    let detail = detail.map_err(|e| match e {
        TrainError::Config(m) | TrainError::Report(m) => m,
        e => e.to_string(),
    });
    // the one-sided test in the metric's better direction, read off the difference
    let outcome = detail.as_ref().map(|d| {
        let (t, df, p) = match d {
            Detail::Paired(x) => (x.t, x.df, x.t_p),
            Detail::Welch(x) => (x.t, x.df, x.t_p),
        };
        TTest {
            statistic: t,
            df,
            p_value: p.one_sided(alternative),
        }
    });
    let outcome = outcome.map_err(String::clone);
    let significant = outcome.as_ref().is_ok_and(|t| t.p_value < settings.level);
    Comparison {
        baseline: baseline.to_string(),
        p_adjusted: outcome.as_ref().ok().map(|t| t.p_value),
        outcome,
        delta,
        compared,
        unmatched,
        detail: detail.ok(),
        significant,
    }
}

/// Corrects the p-values of one table's comparisons together, and marks significance by the
/// corrected value.
fn correct(rows: &mut [(String, Vec<Option<Cell>>)], settings: &TableSettings) {
    let mut tested: Vec<&mut Comparison> = rows
        .iter_mut()
        .flat_map(|(_, cells)| cells.iter_mut().flatten())
        .filter_map(|c| c.comparison.as_mut())
        .filter(|c| c.outcome.is_ok())
        .collect();
    let raw: Vec<f64> = tested
        .iter()
        .filter_map(|c| c.outcome.as_ref().ok().map(|t| t.p_value))
        .collect();
    for (c, p) in tested.iter_mut().zip(settings.correction.adjust(&raw)) {
        c.p_adjusted = Some(p);
        c.significant = p < settings.level;
    }
}

/// One configuration's cell, without `best`.
pub fn cell(
    results: &SweepResults,
    configuration: &str,
    scheme: &str,
    baseline: Option<&Baseline>,
    settings: &TableSettings,
) -> Cell {
    let values: Vec<f64> = results
        .values(configuration, scheme, settings.metric)
        .into_values()
        .collect();
    let partner = baseline.and_then(|b| b.partner(configuration, results));
    let comparison = partner
        .filter(|p| p != configuration)
        .map(|p| compare(results, configuration, &p, scheme, settings));
    Cell {
        configuration: configuration.to_string(),
        summary: summary(&values),
        comparison,
        best: false,
    }
}

/// The tables of `scheme`: one per combination of the axes neither in rows nor in columns.
/// Without a baseline nothing is tested.
pub fn tables(
    results: &SweepResults,
    scheme: &str,
    baseline: Option<&Baseline>,
    settings: &TableSettings,
) -> Result<Vec<Table>, TrainError> {
    let axes = all_axes(results);
    for a in settings.rows.iter().chain(&settings.cols) {
        if !axes.contains(a) {
            return Err(TrainError::Report(format!(
                "`{a}` is not an axis of this sweep; its axes are {}",
                axes.join(", ")
            )));
        }
    }
    let order = &results.sweep.order;
    let varying = varying_axes(results);
    let laid_out = |a: &String| settings.rows.contains(a) || settings.cols.contains(a);
    let rows = if settings.rows.is_empty() {
        let mut rest: Vec<String> = varying.iter().filter(|a| !laid_out(a)).cloned().collect();
        rest.sort_by_key(|a| a != "variant");
        if rest.is_empty() {
            vec!["variant".to_string()]
        } else {
            rest
        }
    } else {
        settings.rows.clone()
    };
    let blocks: Vec<String> = varying
        .iter()
        .filter(|a| !laid_out(a) && !rows.contains(a))
        .cloned()
        .collect();
    let cols = &settings.cols;

    let mut out = Vec::new();
    for block in distinct(order.iter().map(|c| label(results, c, &blocks))) {
        let members: Vec<&String> = order
            .iter()
            .filter(|c| label(results, c, &blocks) == block)
            .collect();
        let row_labels = distinct(members.iter().map(|c| label(results, c, &rows)));
        let col_labels = if cols.is_empty() {
            vec![settings.metric.label().to_string()]
        } else {
            distinct(members.iter().map(|c| label(results, c, cols)))
        };
        let mut table_rows: Vec<(String, Vec<Option<Cell>>)> = row_labels
            .iter()
            .map(|r| {
                let cells = col_labels
                    .iter()
                    .map(|col| {
                        members
                            .iter()
                            .find(|c| {
                                label(results, c, &rows) == *r
                                    && (cols.is_empty() || label(results, c, cols) == *col)
                            })
                            .map(|c| cell(results, c, scheme, baseline, settings))
                    })
                    .collect();
                (r.clone(), cells)
            })
            .collect();
        mark_best(&mut table_rows, settings.metric);
        correct(&mut table_rows, settings);
        let block_axes = members.first().and_then(|c| results.axes(c));
        out.push(Table {
            scheme: scheme.to_string(),
            block: blocks
                .iter()
                .map(|a| {
                    let v = block_axes.and_then(|axes| axes.get(a)).cloned();
                    (a.clone(), v.unwrap_or_default())
                })
                .collect(),
            row_header: rows
                .iter()
                .map(|a| short(a))
                .collect::<Vec<_>>()
                .join(" / "),
            col_header: (!cols.is_empty()).then(|| {
                cols.iter()
                    .map(|a| short(a))
                    .collect::<Vec<_>>()
                    .join(" / ")
            }),
            col_labels,
            rows: table_rows,
            metric: settings.metric,
            seeds: results.sweep.seeds.len(),
        });
    }
    Ok(out)
}

/// Marks the best mean of each column (highest, or lowest for error and loss); ties all win.
fn mark_best(rows: &mut [(String, Vec<Option<Cell>>)], metric: Metric) {
    let better = Alternative::for_metric(metric.name());
    let columns = rows.first().map_or(0, |(_, cells)| cells.len());
    for col in 0..columns {
        let means = rows
            .iter()
            .filter_map(|(_, cells)| cells[col].as_ref()?.summary.map(|s| s.mean));
        let best = match better {
            Alternative::Greater => means.fold(f64::NEG_INFINITY, f64::max),
            Alternative::Less => means.fold(f64::INFINITY, f64::min),
        };
        for (_, cells) in rows.iter_mut() {
            if let Some(c) = cells[col].as_mut() {
                c.best = c.summary.is_some_and(|s| s.mean == best);
            }
        }
    }
}

impl Table {
    /// The cell's text: `mean ± std`, `(n=k)` when runs are missing, bold when significant,
    /// underlined when best.
    fn cell_text(&self, cell: &Option<Cell>) -> String {
        let Some(cell) = cell else {
            return "–".into();
        };
        let Some(s) = cell.summary else {
            return "no finished run".into();
        };
        let d = self.metric.decimals();
        let mut text = mean_std(&s, d);
        if cell.comparison.as_ref().is_some_and(|c| c.significant) {
            text = format!("**{text}**");
        }
        if cell.best {
            text = format!("<ins>{text}</ins>");
        }
        if s.n < self.seeds {
            text.push_str(&format!(" (n={})", s.n));
        }
        text
    }

    /// The table in Markdown (GitHub flavour).
    pub fn markdown(&self) -> String {
        let corner = match &self.col_header {
            Some(c) => format!("{} \\ {c}", self.row_header),
            None => self.row_header.clone(),
        };
        let mut out = format!("| {corner} | {} |\n", self.col_labels.join(" | "));
        out.push_str(&format!("|---|{}\n", "---|".repeat(self.col_labels.len())));
        for (label, cells) in &self.rows {
            let cells: Vec<String> = cells.iter().map(|c| self.cell_text(c)).collect();
            out.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
        }
        out
    }

    /// Every cell of the table, in row-major order.
    pub fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.rows.iter().flat_map(|(_, c)| c.iter().flatten())
    }
}
