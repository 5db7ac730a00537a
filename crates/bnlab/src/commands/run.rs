//! `bnlab run SPEC --out DIR`: a sweep with progress bars and a log file in DIR.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bnlab_train::{Bars, Progress, Quiet, Spec, SweepOptions, SweepSummary, run_sweep};

/// Sends tracing events to `out/bnlab.log` (once per process).
fn log_to(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("bnlab.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // a second sweep in the same process keeps the first log
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .try_init();
    Ok(())
}

/// Runs `spec` into `out`; an interrupted or failed sweep is an error.
pub fn run(
    spec: &Path,
    out: &Path,
    jobs: usize,
    quiet: bool,
    stop_after_epochs: Option<usize>,
) -> Result<SweepSummary> {
    let spec = Spec::load(spec)?;
    sweep(&spec, out, jobs, quiet, stop_after_epochs)
}

/// Runs a parsed spec into `out`.
pub fn sweep(
    spec: &Spec,
    out: &Path,
    jobs: usize,
    quiet: bool,
    stop_after_epochs: Option<usize>,
) -> Result<SweepSummary> {
    log_to(out)?;
    let total = spec.runs().len();
    let done = spec
        .runs()
        .iter()
        .filter(|r| bnlab_train::result_path(out, &r.id).exists())
        .count();
    let progress: Arc<dyn Progress> = if quiet {
        Arc::new(Quiet)
    } else {
        Arc::new(Bars::new(total, done))
    };
    let options = SweepOptions {
        jobs,
        budget: stop_after_epochs,
        progress,
    };
    let summary = run_sweep(spec, out, &options)
        .with_context(|| format!("sweep `{}` into {}", spec.name, out.display()))?;
    eprintln!(
        "{}: {} finished, {} failed, {} already done; results in {}",
        spec.name,
        summary.finished,
        summary.failed,
        summary.already_done,
        out.join("results").display()
    );
    Ok(summary)
}
