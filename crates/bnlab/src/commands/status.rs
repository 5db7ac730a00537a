//! `bnlab status DIR`: each run of a sweep finished, failed, running, abandoned or missing.

use std::path::Path;

use anyhow::{Context, Result};
use bnlab_train::{RunState, SweepOptions, sweep_status};

/// Prints the state of every run of the sweep in `out`, then the counts.
pub fn run(out: &Path) -> Result<()> {
    let runs = sweep_status(out, SweepOptions::DEFAULT_LEASE)
        .with_context(|| format!("reading the sweep in {}", out.display()))?;
    let now = bnlab_train::claim::now_ms();
    let mut counts = [0usize; 5];
    for r in &runs {
        let (slot, line) = match &r.state {
            RunState::Finished => (0, "finished".to_string()),
            RunState::Failed(reason) => (1, format!("failed: {reason}")),
            RunState::Running {
                owner,
                since_ms,
                epochs_done,
            } => (
                2,
                format!(
                    "running on {owner} for {}s, {epochs_done} epochs done",
                    now.saturating_sub(*since_ms) / 1000
                ),
            ),
            RunState::Abandoned { epochs_done } => (
                3,
                format!("abandoned after {epochs_done} epochs (the next `bnlab run` resumes it)"),
            ),
            RunState::Missing => (4, "missing".to_string()),
        };
        counts[slot] += 1;
        println!("{:<40} {line}", r.id);
    }
    println!(
        "{} runs: {} finished, {} failed, {} running, {} abandoned, {} missing",
        runs.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4]
    );
    Ok(())
}
