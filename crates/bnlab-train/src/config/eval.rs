//! `[eval]`: the evaluation schemes of the best checkpoint.

use bnlab_data::CorruptionKind;
use bnlab_norm::PopulationEstimator;
use serde::{Deserialize, Serialize};

use crate::EvalKey;

/// An evaluation scheme (Wu & Johnson §3, §4.1; Summers & Dinneen §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Population statistics from the training EMA.
    Population,
    /// PreciseBN statistics from `precise_samples` training images in batches of
    /// `precise_batch` (every combination of the lists, under every `precise_policy`).
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
    /// Also the reverse (Wu & Johnson Table 4's last rows): statistics from the corrupted
    /// training images, evaluated on the clean test set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverse: bool,
}

/// One value or a list of values of an `[eval]` setting. One value is written back as it
/// was read (a bare value), so adding lists kept the fingerprints of earlier specs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A bare value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T: Copy> OneOrMany<T> {
    /// Every value, in the order written.
    pub fn values(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![*v],
            OneOrMany::Many(v) => v.clone(),
        }
    }

    /// The first value (`None` for an empty list).
    pub fn first(&self) -> Option<T> {
        self.values().first().copied()
    }
}

/// How PreciseBN's batches are normalized while statistics are collected (Wu & Johnson §4.1,
/// Table 2: B is the batch the statistics see).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrecisePolicy {
    /// Under the training batch policy: a model trained with ghost batches of 2 collects in
    /// ghost batches of 2 within each PreciseBN batch.
    #[default]
    AsTrained,
    /// Each PreciseBN batch of B normalized as one batch.
    WholeBatch,
}

/// The data split an evaluation is reported on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The validation images held out of the training set (`data.validation`).
    Validation,
    /// The test set.
    Test,
}

/// One PreciseBN estimate: N training images in batches of B, normalized under `policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreciseSetting {
    /// N.
    pub samples: usize,
    /// B.
    pub batch: usize,
    /// How the batches are normalized.
    pub policy: PrecisePolicy,
}

/// How the best checkpoint is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The schemes, each reported on every split of `splits`.
    #[serde(default = "default_schemes")]
    pub schemes: Vec<Scheme>,
    /// Batch size of population-statistics evaluation.
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
    /// PreciseBN's N, one or a list; the first is also the N of per-epoch PreciseBN,
    /// FrozenBN and Adaptive BN.
    #[serde(default = "default_precise_samples")]
    pub precise_samples: OneOrMany<usize>,
    /// PreciseBN's batch size B, one or a list; the first is also the B of per-epoch
    /// PreciseBN, FrozenBN and Adaptive BN.
    #[serde(default = "default_precise_batch")]
    pub precise_batch: OneOrMany<usize>,
    /// How PreciseBN batches normalize: `as-trained` (the training batch policy) and/or
    /// `whole-batch`; every combination of N, B and policy is one evaluation.
    #[serde(default = "default_policy", skip_serializing_if = "is_default_policy")]
    pub precise_policy: OneOrMany<PrecisePolicy>,
    /// How batch statistics become population statistics (Wu & Johnson A.2): `pooled`
    /// (eq. 2) or `mean-of-variances` (eq. 3).
    #[serde(default, skip_serializing_if = "is_pooled")]
    pub estimator: PopulationEstimator,
    /// Population statistics layer by layer (Wu & Johnson A.3): one pass per layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
    /// Batch sizes of the mini-batch scheme.
    #[serde(default)]
    pub minibatch_sizes: Vec<usize>,
    /// α values of example weighing.
    #[serde(default)]
    pub alphas: Vec<f64>,
    /// Target domains for Adaptive BN.
    #[serde(default)]
    pub adapt: Vec<AdaptConfig>,
    /// The splits every scheme is reported on: `test` (the default) and `validation`, on
    /// which a report can choose α or PreciseBN's N and B before reading the test set.
    #[serde(default = "default_splits", skip_serializing_if = "is_default_splits")]
    pub splits: Vec<Split>,
    /// How the mini-batches of the `minibatch` scheme (and of per-epoch mini-batch
    /// validation) are built: `shuffle` by default, or the training patterns (`class-pattern`
    /// gives Wu & Johnson Fig. 8's patterned evaluation batches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minibatch_order: Option<crate::OrderName>,
    /// Whether PreciseBN's and Adaptive BN's statistics images get training augmentation (the
    /// default) or none (Wu & Johnson Table 4's last row).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub stats_augment: bool,
}

fn yes() -> bool {
    true
}
fn is_true(v: &bool) -> bool {
    *v
}

fn default_schemes() -> Vec<Scheme> {
    vec![Scheme::Population]
}
fn default_eval_batch() -> usize {
    256
}
fn default_precise_samples() -> OneOrMany<usize> {
    OneOrMany::One(10_000)
}
fn default_precise_batch() -> OneOrMany<usize> {
    OneOrMany::One(128)
}
fn default_policy() -> OneOrMany<PrecisePolicy> {
    OneOrMany::One(PrecisePolicy::AsTrained)
}
fn is_default_policy(p: &OneOrMany<PrecisePolicy>) -> bool {
    *p == default_policy()
}
fn is_pooled(e: &PopulationEstimator) -> bool {
    *e == PopulationEstimator::Pooled
}
fn default_splits() -> Vec<Split> {
    vec![Split::Test]
}
fn is_default_splits(s: &[Split]) -> bool {
    s == [Split::Test]
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            schemes: default_schemes(),
            batch_size: default_eval_batch(),
            precise_samples: default_precise_samples(),
            precise_batch: default_precise_batch(),
            precise_policy: default_policy(),
            estimator: PopulationEstimator::Pooled,
            exact: false,
            minibatch_sizes: Vec::new(),
            alphas: Vec::new(),
            adapt: Vec::new(),
            splits: default_splits(),
            minibatch_order: None,
            stats_augment: true,
        }
    }
}

impl EvalConfig {
    /// The first N, B and policy: the PreciseBN of per-epoch validation, FrozenBN and
    /// Adaptive BN, reported as `precise`.
    pub fn primary_precise(&self) -> PreciseSetting {
        PreciseSetting {
            samples: self.precise_samples.first().unwrap_or(0),
            batch: self.precise_batch.first().unwrap_or(0),
            policy: self.precise_policy.first().unwrap_or_default(),
        }
    }

    /// Every PreciseBN evaluation of the `precise` scheme with its result key: each N × B ×
    /// policy, the key naming N and B unless they are the first.
    pub fn precise_settings(&self) -> Vec<(EvalKey, PreciseSetting)> {
        let primary = self.primary_precise();
        let mut out = Vec::new();
        for samples in self.precise_samples.values() {
            for batch in self.precise_batch.values() {
                for policy in self.precise_policy.values() {
                    let size = (samples, batch);
                    let key = EvalKey::Precise {
                        size: (size != (primary.samples, primary.batch)).then_some(size),
                        whole: policy == PrecisePolicy::WholeBatch,
                        exact: self.exact,
                        eq3: self.estimator == PopulationEstimator::MeanOfVariances,
                    };
                    out.push((
                        key,
                        PreciseSetting {
                            samples,
                            batch,
                            policy,
                        },
                    ));
                }
            }
        }
        out
    }
}
