//! `bnlab report`: a sweep's results as Markdown tables with significance marks, CSV and
//! figures. Everything is computed in memory first; files are written only when all of it
//! succeeded, each one atomically, `report.md` last.

mod claims;
mod csv_files;
mod figures;
mod plot;
mod results;
mod selection;
mod table;

use std::path::{Path, PathBuf};

use bnlab_data::write_atomic;

use crate::{Alternative, EvalKey, Status, TrainError, run_seed};

pub use claims::{ClaimOutcome, ClaimSpec, ExpectName, claims, claims_markdown};
use csv_files::{runs_csv, tables_csv};
pub use figures::{Figure, HistPanel, HistSeries, LinePanel, LineSeries, Panel, figures};
pub use plot::{PALETTE, PANEL, png, size, svg};
pub use results::{Metric, MissingRun, Pairs, SweepResults, pair};
pub use selection::Selection;
pub use table::{
    Baseline, Cell, Comparison, Detail, Table, TableSettings, TestKind, all_axes, cell, tables,
};

/// What `bnlab report` is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// The baseline (configuration, variant or `AXIS=VALUE`); default: the spec's.
    pub baseline: Option<String>,
    /// Layout and statistics of the tables.
    pub table: TableSettings,
    /// Schemes tabulated; default: every scheme except the α grid (which is a figure).
    pub schemes: Vec<String>,
    /// The scheme of the batch-size figure (default `population`).
    pub figure_scheme: String,
    /// Claims to judge instead of those `sweep.json` holds (a spec's `[[claim]]`s, for one
    /// claim folder's report of a shared pool).
    pub claims: Option<Vec<ClaimSpec>>,
    /// Writes each figure as SVG too (PNG always).
    pub svg: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            baseline: None,
            table: TableSettings {
                rows: vec![],
                cols: vec![],
                metric: Metric::Accuracy,
                test: TestKind::Paired,
                level: 0.05,
                correction: crate::Correction::Auto,
            },
            schemes: vec![],
            figure_scheme: "population".into(),
            claims: None,
            svg: true,
        }
    }
}

/// A report in memory: its files relative to the output directory, `report.md` last.
#[derive(Debug, Clone)]
pub struct Report {
    /// (relative path, contents).
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Runs the sweep asks for.
    pub expected: usize,
    /// Runs with a result file.
    pub present: usize,
    /// Runs that failed.
    pub failed: usize,
}

impl Report {
    /// Writes every file under `out`, each atomically, `report.md` last.
    pub fn write(&self, out: &Path) -> Result<(), TrainError> {
        for (path, bytes) in &self.files {
            write_atomic(&out.join(path), bytes)?;
        }
        Ok(())
    }
}

/// What a scheme measures, for headings (the name itself for a key bnlab does not write).
pub fn describe_scheme(scheme: &str) -> String {
    EvalKey::parse(scheme).map_or_else(|| scheme.to_string(), |k| k.describe())
}

/// The comparisons of every configuration under one scheme, as a Markdown table, followed
/// by the seeds left out of the pairing.
fn comparisons_markdown(tables: &[Table], decimals: usize, alternative: Alternative) -> String {
    let cells: Vec<&Cell> = tables
        .iter()
        .flat_map(|t| t.cells())
        .filter(|c| c.comparison.is_some())
        .collect();
    if cells.is_empty() {
        return String::new();
    }
    let d = decimals;
    let side = match alternative {
        Alternative::Greater => "greater",
        Alternative::Less => "less",
    };
    let mut out = format!(
        "| configuration | baseline | mean ± std | Δ mean | 95 % CI (t) | 95 % CI (bootstrap) | t | df | p ({side}) | p adj. | p Wilcoxon (two-sided) | MDE | runs compared |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut notes = String::new();
    for c in &cells {
        let Some(cmp) = &c.comparison else { continue };
        let stats = c.summary.map_or("–".into(), |s| table::mean_std(&s, d));
        let delta = cmp.delta.map_or("–".into(), |v| format!("{v:+.d$}"));
        let (t, df, p) = match &cmp.outcome {
            Ok(t) => (
                format!("{:.3}", t.statistic),
                format!("{:.1}", t.df),
                format!("{:.4}", t.p_value),
            ),
            Err(why) => ("–".into(), "–".into(), format!("n/a: {why}")),
        };
        let adjusted = match cmp.p_adjusted {
            Some(p) if cmp.significant => format!("**{p:.4}**"),
            Some(p) => format!("{p:.4}"),
            None => "–".into(),
        };
        let interval = |i: &crate::Interval| format!("{i:.d$}");
        let (t_ci, boot, wilcoxon, mde) = match &cmp.detail {
            Some(table::Detail::Paired(x)) => (
                interval(&x.t_ci),
                interval(&x.bootstrap_ci),
                x.wilcoxon
                    .map_or("–".into(), |w| format!("{:.4}", w.p.two_sided)),
                format!("{:.d$}", x.mde),
            ),
            Some(table::Detail::Welch(x)) => (
                interval(&x.t_ci),
                interval(&x.bootstrap_ci),
                "–".into(),
                "–".into(),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        out.push_str(&format!(
            "| {} | {} | {stats} | {delta} | {t_ci} | {boot} | {t} | {df} | {p} | {adjusted} | {wilcoxon} | {mde} | {} |\n",
            c.configuration, cmp.baseline, cmp.compared
        ));
        if !cmp.unmatched.is_empty() {
            let runs: Vec<String> = cmp.unmatched.iter().map(u32::to_string).collect();
            notes.push_str(&format!(
                "- `{}` against `{}`: run{} {} finished on one side only, left out of the pairing.\n",
                c.configuration,
                cmp.baseline,
                if runs.len() == 1 { "" } else { "s" },
                runs.join(", ")
            ));
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out
}

/// The comparisons of `tables` for `report.json`.
fn comparisons_json(tables: &[Table]) -> Vec<serde_json::Value> {
    tables
        .iter()
        .flat_map(|t| t.cells().map(move |c| (t, c)))
        .filter_map(|(t, c)| {
            let cmp = c.comparison.as_ref()?;
            Some(serde_json::json!({
                "scheme": t.scheme,
                "metric": t.metric.name(),
                "block": t.block,
                "configuration": c.configuration,
                "baseline": cmp.baseline,
                "summary": c.summary,
                "delta": cmp.delta,
                "p_one_sided": cmp.outcome.as_ref().ok().map(|t| t.p_value),
                "p_adjusted": cmp.p_adjusted,
                "significant": cmp.significant,
                "unmatched": cmp.unmatched,
                "difference": cmp.detail,
                "error": cmp.outcome.as_ref().err(),
            }))
        })
        .collect()
}

/// The Markdown section of one scheme (its tables, then the tests against the baseline) and
/// its CSV.
pub fn scheme_section(
    results: &SweepResults,
    scheme: &str,
    baseline: Option<&Baseline>,
    settings: &TableSettings,
) -> Result<(String, Vec<u8>, Vec<serde_json::Value>), TrainError> {
    let metric = settings.metric;
    let tables = tables(results, scheme, baseline, settings)?;
    let mut md = format!(
        "## {}: {}\n\n",
        capitalized(metric.label()),
        describe_scheme(scheme)
    );
    for t in &tables {
        if !t.block.is_empty() {
            let block: Vec<String> = t.block.iter().map(|(a, v)| format!("{a} = {v}")).collect();
            md.push_str(&format!("### {}\n\n", block.join(", ")));
        }
        md.push_str(&t.markdown());
        md.push('\n');
    }
    let alternative = Alternative::for_metric(metric.name());
    let comparisons = comparisons_markdown(&tables, metric.decimals(), alternative);
    if !comparisons.is_empty() {
        md.push_str(&format!(
            "Against the baseline ({}):\n\n",
            settings.test.describe()
        ));
        md.push_str(&comparisons);
        md.push('\n');
    }
    Ok((md, tables_csv(&tables)?, comparisons_json(&tables)))
}

/// Builds the report of `results` in memory.
pub fn build_report(results: &SweepResults, options: &ReportOptions) -> Result<Report, TrainError> {
    let settings = &options.table;
    if !(settings.level > 0.0 && settings.level < 1.0) {
        return Err(TrainError::Report(format!(
            "the significance level must lie in (0, 1), not {}",
            settings.level
        )));
    }
    let metric = settings.metric;
    let sweep = &results.sweep;
    let baseline_name = options.baseline.clone().or_else(|| sweep.baseline.clone());
    let baseline = match &baseline_name {
        Some(name) => Some(Baseline::resolve(name, results)?),
        None => None,
    };
    let available = results.schemes();
    let schemes: Vec<String> = if options.schemes.is_empty() {
        available
            .iter()
            .filter(|s| !matches!(EvalKey::parse(s), Some(EvalKey::Alpha(_))))
            .cloned()
            .collect()
    } else {
        for s in &options.schemes {
            if !available.contains(s) {
                return Err(TrainError::Report(format!(
                    "no run has scheme `{s}`; the results have {}",
                    available.join(", ")
                )));
            }
        }
        options.schemes.clone()
    };

    let expected = sweep.order.len() * sweep.seeds.len();
    let failed: Vec<_> = results.failed().collect();
    let alternative = Alternative::for_metric(metric.name());
    let mut md = format!("# Report: {}\n\n", sweep.name);
    md.push_str(&format!(
        "- Results: `{}`: {} of {expected} runs ({} configurations × {} seeds); {} missing, {} failed.\n",
        results.dir.join("results").display(),
        results.runs.len(),
        sweep.order.len(),
        sweep.seeds.len(),
        results.missing.len(),
        failed.len(),
    ));
    md.push_str(&format!(
        "- Metric: {} on the test set unless the heading says otherwise; {} is better.\n",
        metric.label(),
        match alternative {
            Alternative::Greater => "higher",
            Alternative::Less => "lower",
        }
    ));
    md.push_str(&format!(
        "- Cells: mean ± sample standard deviation over seeds; `(n=k)` where fewer than {} runs finished.\n",
        sweep.seeds.len()
    ));
    match &baseline {
        Some(b) => md.push_str(&format!(
            "- Significance: {} against the baseline `{}`, p from Student's t; **bold**: better than its baseline at p < {}; <ins>underlined</ins>: best mean of its column.\n",
            settings.test.describe(),
            b.name,
            settings.level
        )),
        None => md.push_str(
            "- No baseline (none in the spec, none given with `--baseline`): no significance tests; <ins>underlined</ins>: best mean of its column.\n",
        ),
    }
    let seeds: Vec<String> = sweep
        .seeds
        .iter()
        .map(|&i| format!("{i} → {:#010x}", run_seed(i)))
        .collect();
    md.push_str(&format!(
        "- Seeds (run index → MD5 seed): {}.\n\n",
        seeds.join(", ")
    ));

    md.push_str("## Missing and failed runs\n\n");
    if results.missing.is_empty() && failed.is_empty() {
        md.push_str("Every run of the sweep finished.\n\n");
    } else {
        for m in &results.missing {
            md.push_str(&format!(
                "- `{}` run {}: missing (no result file yet)\n",
                m.configuration, m.index
            ));
        }
        for r in &failed {
            let reason = match &r.status {
                Status::Failed { reason } => reason.as_str(),
                Status::Finished => "",
            };
            md.push_str(&format!(
                "- `{}` run {}: failed: {reason}\n",
                r.configuration, r.index
            ));
        }
        md.push('\n');
    }

    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut comparisons = Vec::new();
    for scheme in &schemes {
        let (section, csv, json) = scheme_section(results, scheme, baseline.as_ref(), settings)?;
        comparisons.extend(json);
        md.push_str(&section);
        let csv_path = PathBuf::from("tables").join(format!("{}.csv", crate::file_safe(scheme)));
        md.push_str(&format!("CSV: [{0}]({0})\n\n", csv_path.display()));
        files.push((csv_path, csv));
    }

    md.push_str(&selection::selections_markdown(&results.selections));
    let outcomes = claims(results, settings.correction);
    md.push_str(&claims_markdown(&outcomes));

    let figs = figures(results, &options.figure_scheme, metric);
    if !figs.is_empty() {
        md.push_str("## Figures\n\n");
    }
    for f in &figs {
        let png_path = PathBuf::from("figures").join(format!("{}.png", f.name));
        let svg_path = PathBuf::from("figures").join(format!("{}.svg", f.name));
        files.push((png_path.clone(), png(f)?));
        let svg_link = if options.svg {
            files.push((svg_path.clone(), svg(f)?.into_bytes()));
            format!(" ([SVG]({}))", svg_path.display())
        } else {
            String::new()
        };
        md.push_str(&format!(
            "### {}\n\n{}\n\n![{}]({}){svg_link}\n\n",
            f.title,
            f.caption,
            f.title,
            png_path.display(),
        ));
    }

    files.push(("runs.csv".into(), runs_csv(results)?));
    let json = serde_json::json!({
        "sweep": sweep.name,
        "metric": metric.name(),
        "level": settings.level,
        "correction": settings.correction,
        "test": settings.test.describe(),
        "runs": { "expected": expected, "present": results.runs.len(), "failed": failed.len() },
        "comparisons": comparisons,
        "claims": outcomes,
        "chosen_on_validation": results.selections,
    });
    let json = serde_json::to_vec_pretty(&json)
        .map_err(|e| TrainError::Report(format!("writing report.json: {e}")))?;
    files.push(("report.json".into(), json));
    md.push_str(&format!("{COLUMNS}\n"));
    md.push_str("## Every run\n\nOne line per run and scheme: [runs.csv](runs.csv)\n");
    files.push(("report.md".into(), md.into_bytes()));
    Ok(Report {
        files,
        expected,
        present: results.runs.len(),
        failed: failed.len(),
    })
}

/// What each column of the comparison tables means.
const COLUMNS: &str = "## Columns of the comparisons\n\n\
- Δ mean: mean difference to the baseline (over pairs for the paired test).\n\
- 95 % CI (t): Student's t interval of Δ; (bootstrap): percentile interval of 10,000 seeded \
paired (or, for Welch, stratified) resamples.\n\
- p: the one-sided t-test in the metric's better direction; p adj.: after Holm's correction \
across the table where it applies (more than 3 comparisons by default, `--correction`); \
**bold**: p adj. below the level.\n\
- p Wilcoxon: two-sided signed-rank test of the paired differences.\n\
- MDE: the smallest true Δ that these pairs detect with 80 % power at α = 0.05 (two-sided \
paired t), given the observed std of the differences: a Δ smaller than this can go unseen.\n\
- Every number is also in [report.json](report.json).\n";

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Reads the sweep under `dir`, builds its report and writes it under `out`: nothing is
/// written unless every part was made.
pub fn write_report(dir: &Path, options: &ReportOptions, out: &Path) -> Result<Report, TrainError> {
    let mut results = SweepResults::load(dir)?;
    let mut options = options.clone();
    if let Some(claims) = options.claims.clone() {
        focus_on_claims(&mut results, &mut options, &claims);
    }
    let report = build_report(&results, &options)?;
    report.write(out)?;
    Ok(report)
}

/// Narrows a shared pool's report to what `claims` compare: their configurations, and (unless
/// asked otherwise) their test schemes and the pool's baseline where it is still there. A
/// claim folder then holds its own comparison, not the whole pool's.
fn focus_on_claims(results: &mut SweepResults, options: &mut ReportOptions, claims: &[ClaimSpec]) {
    results.sweep.claims = claims.to_vec();
    let cells: Vec<(String, String)> = claims
        .iter()
        .flat_map(|c| {
            c.cells()
                .into_iter()
                .map(|(_, k, s)| (k.to_string(), s.to_string()))
        })
        .collect();
    let keep: std::collections::BTreeSet<String> = cells.iter().map(|(k, _)| k.clone()).collect();
    results.focus(&keep);
    if options.baseline.is_none()
        && let Some(b) = &results.sweep.baseline
        && Baseline::resolve(b, results).is_err()
    {
        results.sweep.baseline = None;
    }
    if options.schemes.is_empty() {
        let available = results.schemes();
        let mut schemes: Vec<String> = Vec::new();
        for s in std::iter::once("population".to_string()).chain(cells.into_iter().map(|c| c.1)) {
            if available.contains(&s) && !schemes.contains(&s) {
                schemes.push(s);
            }
        }
        options.schemes = schemes;
    }
}
