//! The report's CSV files: one per evaluation scheme's tables, and one line per run, split
//! and scheme.

use super::*;

fn csv_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Report(format!("writing CSV: {e}"))
}

/// Formats an optional number, or empty.
fn num(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_default()
}

/// The long-format CSV of `tables`: one line per cell.
pub(super) fn tables_csv(tables: &[Table]) -> Result<Vec<u8>, TrainError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "block",
        "row",
        "column",
        "configuration",
        "scheme",
        "metric",
        "n",
        "mean",
        "std",
        "baseline",
        "compared",
        "delta",
        "t",
        "df",
        "p_value",
        "significant",
        "best_in_column",
    ])
    .map_err(csv_error)?;
    for t in tables {
        let block: Vec<String> = t.block.iter().map(|(a, v)| format!("{a}={v}")).collect();
        for (row, cells) in &t.rows {
            for (col, cell) in t.col_labels.iter().zip(cells) {
                let Some(c) = cell else { continue };
                let test = c.comparison.as_ref();
                let ok = test.and_then(|c| c.outcome.as_ref().ok());
                w.write_record([
                    block.join(";"),
                    row.clone(),
                    col.clone(),
                    c.configuration.clone(),
                    t.scheme.clone(),
                    t.metric.name().to_string(),
                    c.summary.map_or(0, |s| s.n).to_string(),
                    num(c.summary.map(|s| s.mean)),
                    num(c.summary.map(|s| s.std)),
                    test.map(|c| c.baseline.clone()).unwrap_or_default(),
                    test.map(|c| c.compared.clone()).unwrap_or_default(),
                    num(test.and_then(|c| c.delta)),
                    num(ok.map(|t| t.statistic)),
                    num(ok.map(|t| t.df)),
                    num(ok.map(|t| t.p_value)),
                    test.is_some_and(|c| c.significant).to_string(),
                    c.best.to_string(),
                ])
                .map_err(csv_error)?;
            }
        }
    }
    w.into_inner().map_err(csv_error)
}

/// Every run × scheme as CSV, with each run's axes.
pub(super) fn runs_csv(results: &SweepResults) -> Result<Vec<u8>, TrainError> {
    let axes = all_axes(results);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = vec!["configuration".into()];
    header.extend(axes.iter().cloned());
    header.extend(
        [
            "index", "seed", "status", "split", "scheme", "accuracy", "error", "loss", "examples",
        ]
        .map(String::from),
    );
    w.write_record(&header).map_err(csv_error)?;
    for r in &results.runs {
        let mut base: Vec<String> = vec![r.configuration.clone()];
        base.extend(
            axes.iter()
                .map(|a| r.axes.get(a).cloned().unwrap_or_default()),
        );
        base.push(r.index.to_string());
        base.push(format!("{:#010x}", r.seed));
        let status = match &r.status {
            Status::Finished => "finished".to_string(),
            Status::Failed { reason } => format!("failed: {reason}"),
        };
        base.push(status);
        if r.test.is_empty() {
            let mut line = base.clone();
            line.extend(std::iter::repeat_n(String::new(), 6));
            w.write_record(&line).map_err(csv_error)?;
        }
        let splits = [("test", &r.test), ("validation", &r.validation)];
        for (split, scheme, m) in splits
            .into_iter()
            .flat_map(|(split, map)| map.iter().map(move |(k, m)| (split, k, m)))
        {
            let mut line = base.clone();
            line.extend([
                split.to_string(),
                scheme.clone(),
                format!("{}", Metric::Accuracy.of(m)),
                format!("{}", Metric::Error.of(m)),
                format!("{}", m.loss),
                m.examples.to_string(),
            ]);
            w.write_record(&line).map_err(csv_error)?;
        }
    }
    w.into_inner().map_err(csv_error)
}
