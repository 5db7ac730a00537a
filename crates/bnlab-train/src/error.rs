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
