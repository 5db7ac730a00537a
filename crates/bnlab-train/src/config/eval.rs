//! `[eval]`: the evaluation schemes of the best checkpoint.

use bnlab_data::CorruptionKind;
use serde::{Deserialize, Serialize};

/// An evaluation scheme (Wu & Johnson §3, §4.1; Summers & Dinneen §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Population statistics from the training EMA.
    Population,
    /// PreciseBN statistics from `precise_samples` training images in batches of
    /// `precise_batch`.
    Precise,
    /// Each test batch of `minibatch_sizes` normalized by its own statistics.
    Minibatch,
    /// Example weighing over the grid `alphas`.
    Alpha,
    /// Training-set error under mini-batch statistics at the training batch size (the
    /// noise / generalization / inconsistency decomposition).
    TrainMinibatch,
}

/// Target-domain evaluation (Adaptive BN, Wu & Johnson §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptConfig {
    /// The corruption defining the target domain.
    pub corruption: CorruptionKind,
    /// Severity 1–5.
    pub severity: u8,
}

/// How the best checkpoint is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The schemes, each reported on the test set.
    #[serde(default = "default_schemes")]
    pub schemes: Vec<Scheme>,
    /// Batch size of population-statistics evaluation.
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
    /// PreciseBN's N.
    #[serde(default = "default_precise_samples")]
    pub precise_samples: usize,
    /// PreciseBN's batch size B.
    #[serde(default = "default_precise_batch")]
    pub precise_batch: usize,
    /// Batch sizes of the mini-batch scheme.
    #[serde(default)]
    pub minibatch_sizes: Vec<usize>,
    /// α values of example weighing.
    #[serde(default)]
    pub alphas: Vec<f64>,
    /// Target domains for Adaptive BN.
    #[serde(default)]
    pub adapt: Vec<AdaptConfig>,
}

fn default_schemes() -> Vec<Scheme> {
    vec![Scheme::Population]
}
fn default_eval_batch() -> usize {
    256
}
fn default_precise_samples() -> usize {
    10_000
}
fn default_precise_batch() -> usize {
    128
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            schemes: default_schemes(),
            batch_size: default_eval_batch(),
            precise_samples: default_precise_samples(),
            precise_batch: default_precise_batch(),
            minibatch_sizes: Vec::new(),
            alphas: Vec::new(),
            adapt: Vec::new(),
        }
    }
}
