//! `bnlab report DIR`: the sweep's tables, tests, CSV and figures under `DIR/report`.

use anyhow::{Context, Result, bail};
use bnlab_train::{ReportOptions, Spec, SweepFile, TableSettings, write_report};

use crate::args::ReportArgs;

/// The options `a` asks for.
pub fn options(a: &ReportArgs) -> Result<ReportOptions> {
    Ok(ReportOptions {
        baseline: a.baseline.clone(),
        table: TableSettings {
            rows: a.rows.clone(),
            cols: a.cols.clone(),
            metric: a.metric.parse()?,
            test: a.test.parse()?,
            level: a.level,
            correction: a.correction.parse()?,
        },
        schemes: a.schemes.clone(),
        figure_scheme: a.figure_scheme.clone(),
        claims: match &a.claims {
            Some(path) => Some(claims_of(path, &a.dir)?),
            None => None,
        },
        svg: !a.no_svg,
    })
}

/// The claims of spec `path`, which must be the spec of the sweep in `dir`.
fn claims_of(path: &std::path::Path, dir: &std::path::Path) -> Result<Vec<bnlab_train::ClaimSpec>> {
    let spec = Spec::load(path)?;
    let sweep = SweepFile::load(dir)?;
    let names: Vec<&String> = spec.configurations.iter().map(|c| &c.name).collect();
    if spec.name != sweep.name || names != sweep.order.iter().collect::<Vec<_>>() {
        bail!(
            "{} is not the spec of the sweep in {}: its name or configurations differ",
            path.display(),
            dir.display()
        );
    }
    Ok(spec.claims)
}

/// Writes the report and says where.
pub fn run(a: &ReportArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| a.dir.join("report"));
    let report = write_report(&a.dir, &options(a)?, &out)
        .with_context(|| format!("reporting on {}", a.dir.display()))?;
    println!(
        "{}: {} of {} runs ({} failed); {} files",
        out.join("report.md").display(),
        report.present,
        report.expected,
        report.failed,
        report.files.len()
    );
    Ok(())
}
