//! Where a sweep stands (`bnlab status DIR`): each run finished, failed, running (by whom,
//! since when), begun but abandoned, or missing, read from the output directory alone.

use std::path::Path;
use std::time::Duration;

use crate::checkpoint::Checkpoints;
use crate::claim::{latest_claim, now_ms};
use crate::{RunResult, Status, SweepFile, TrainError, result_path, run_dir, run_id};

/// What one run is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Its result is written.
    Finished,
    /// It ended with an error (recorded in its result).
    Failed(String),
    /// A worker holds its claim.
    Running {
        /// The worker (`host:pid`).
        owner: String,
        /// When it claimed the run (ms since the Unix epoch).
        since_ms: u64,
        /// Epochs in its latest checkpoint.
        epochs_done: usize,
    },
    /// Begun (a checkpoint exists) but no worker holds it: the next `bnlab run` resumes it.
    Abandoned {
        /// Epochs in its latest checkpoint.
        epochs_done: usize,
    },
    /// Not begun.
    Missing,
}

/// One run's line of the status.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStatus {
    /// The run id.
    pub id: String,
    /// What it is doing.
    pub state: RunState,
}

/// The state of every run of the sweep in `out`, in spec order; a claim not renewed within
/// `lease` counts as abandoned.
pub fn sweep_status(out: &Path, lease: Duration) -> Result<Vec<RunStatus>, TrainError> {
    let path = out.join("sweep.json");
    let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
    let sweep: SweepFile = serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
        path: path.clone(),
        why: format!("not a bnlab sweep file: {e}"),
    })?;
    let now = now_ms();
    let mut out_list = Vec::new();
    for name in &sweep.order {
        for &index in &sweep.seeds {
            let id = run_id(name, index);
            let state = if result_path(out, &id).exists() {
                match RunResult::load(&result_path(out, &id))?.status {
                    Status::Finished => RunState::Finished,
                    Status::Failed { reason } => RunState::Failed(reason),
                }
            } else {
                let dir = run_dir(out, &id);
                let epochs_done = Checkpoints::new(dir.join("checkpoints"))
                    .peek()?
                    .map(|c| c.state.epochs_done);
                match latest_claim(&dir)? {
                    Some((_, c)) if c.live(now, lease) => RunState::Running {
                        owner: c.owner,
                        since_ms: c.since_ms,
                        epochs_done: epochs_done.unwrap_or(0),
                    },
                    _ => match epochs_done {
                        Some(epochs_done) => RunState::Abandoned { epochs_done },
                        None => RunState::Missing,
                    },
                }
            };
            out_list.push(RunStatus { id, state });
        }
    }
    Ok(out_list)
}
