//! Errors of specs, training, evaluation and the runner.

use std::path::PathBuf;

use bnlab_data::DataError;
use bnlab_models::ModelError;
use bnlab_norm::NormError;
use thiserror::Error;

/// Why a spec was refused or a run could not go on.
#[derive(Debug, Error)]
pub enum TrainError {
    /// The spec does not parse, has an unknown key, or asks for something impossible.
    #[error("{file}:{line}: {message}")]
    Spec {
        /// The spec file (or `<spec>` for a string).
        file: String,
        /// The 1-based line of the offending key (0 when no line applies).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of range (outside any spec file).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Data could not be read or batched.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The network could not be built or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A normalization layer failed.
    #[error(transparent)]
    Norm(#[from] NormError),
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or result file is malformed.
    #[error("{}: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The loss became NaN or infinite.
    #[error("loss is {loss} at epoch {epoch}, step {step}")]
    Diverged {
        /// The 1-based epoch.
        epoch: usize,
        /// The optimizer step within the run.
        step: usize,
        /// The loss value.
        loss: f32,
    },
    /// A report cannot be made as asked (unknown axis or baseline, nothing to report).
    #[error("report: {0}")]
    Report(String),
    /// A data-parallel worker failed or its data disagrees with the others'.
    #[error("distributed training: {0}")]
    Distributed(String),
    /// The workers' collective failed: a worker left, timed out or disagrees with the others.
    #[error(transparent)]
    Collective(#[from] bnlab_collective::CollectiveError),
    /// Runs already begun or finished under other settings than the spec's now: neither
    /// skipped nor continued.
    #[error("{}", changed_message(runs))]
    Changed {
        /// Each changed run's id and what changed.
        runs: Vec<(String, Vec<String>)>,
    },
    /// Another worker took over this run after this one's lease expired.
    #[error("run {0}: another worker took it over (this worker's lease expired)")]
    LeaseLost(String),
    /// The sweep was asked to stop (a budget ran out); rerunning continues it.
    #[error("stopped before the sweep finished; run again to continue")]
    Interrupted,
}

impl TrainError {
    /// An [`TrainError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }
}

/// The message of [`TrainError::Changed`]: every run with its changes, and what to do.
fn changed_message(runs: &[(String, Vec<String>)]) -> String {
    let mut out = format!(
        "{} run(s) were trained with other settings than the spec's now:",
        runs.len()
    );
    for (id, changes) in runs {
        out.push_str(&format!("\n  {id}:"));
        for c in changes {
            out.push_str(&format!("\n    {c}"));
        }
    }
    out.push_str(
        "\nRestore the spec, use another --out, or rerun with --restart-changed to retrain \
         them (their files are moved to superseded/, not deleted).",
    );
    out
}

/// `error` and every cause below it, joined by ": " (for messages that must carry the whole
/// chain in one string, such as a spec problem).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
