//! `[train]`: epochs, batch sizes, FrozenBN and data-parallel training.

use bnlab_norm::{DeviceName, Precision, SyncGroups, SyncName, SyncWeighting};
use serde::{Deserialize, Serialize};

/// Epochs, batch sizes and the FrozenBN switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// The SGD batch: examples per optimizer update.
    pub batch_size: usize,
    /// The forward batch the normalization layers see; gradients of `batch_size /
    /// micro_batch_size` forward batches are accumulated per update (Wu & Johnson A.5).
    /// Default: `batch_size`.
    #[serde(default)]
    pub micro_batch_size: Option<usize>,
    /// Linear learning-rate warm-up, in epochs.
    #[serde(default)]
    pub warmup_epochs: usize,
    /// FrozenBN (Wu & Johnson §4.3): after this many epochs, compute precise statistics,
    /// freeze every norm layer and re-warm the learning rate linearly over one epoch.
    #[serde(default)]
    pub freeze_at_epoch: Option<usize>,
    /// Also validate with PreciseBN statistics after every epoch (Wu & Johnson Fig. 3–4).
    #[serde(default)]
    pub precise_every_epoch: bool,
    /// Also validate with mini-batch statistics after every epoch, in batches of one
    /// worker's forward batch built in `eval.minibatch_order` (Wu & Johnson Fig. 8: patterned
    /// batches hide the leakage that random ones show).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub minibatch_every_epoch: bool,
    /// Which checkpoint the final evaluation reads: `best-validation` (Davis & Frank §4.2,
    /// the default) or `last` (Wu & Johnson's FrozenBN and Peerthum & Stamp test the final
    /// model).
    #[serde(default, skip_serializing_if = "Evaluated::is_default")]
    pub evaluate: Evaluated,
    /// Where the run computes: `flex` (the CPU, the default), `vulkan[:N]`, `vulkan-cpu` or
    /// `cuda[:N]` (`bnlab run --device` overrides it). Its kind is part of the fingerprint, its
    /// index is not: results of one kind of device are comparable, those of two are not mixed.
    #[serde(default, skip_serializing_if = "DeviceName::is_default")]
    pub device: DeviceName,
    /// The activations' dtype: `f32` (the default), `f16` or `bf16` (mixed precision:
    /// parameters, their gradients, optimizer state and every normalization statistic stay
    /// f32). There is no loss scaling: f16 loses activation gradients below about 6e-8, bf16
    /// (f32's range) does not.
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    pub precision: Precision,
    /// Data-parallel workers and how their normalization batches are formed.
    #[serde(default)]
    pub distributed: DistConfig,
}

/// The checkpoint a run's final evaluation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Evaluated {
    /// The epoch with the best validation accuracy (the last one without validation).
    #[default]
    BestValidation,
    /// The last epoch.
    Last,
}

impl Evaluated {
    fn is_default(&self) -> bool {
        *self == Evaluated::BestValidation
    }
}

/// Data-parallel training (`[train.distributed]`): K workers, each with a replica and a
/// shard of every forward batch, gradients summed over all workers every update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistConfig {
    /// Workers K; each forward batch of `micro_batch_size` is split into K equal shards.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Which workers' examples a normalization layer's batch statistics span: `worker` (plain
    /// data parallelism), `all` (SyncBN) or `groups` of `group_size` consecutive workers.
    #[serde(default)]
    pub norm: SyncName,
    /// Workers per sync group, for `norm = "groups"`.
    #[serde(default)]
    pub group_size: Option<usize>,
    /// `count` (the concatenated batch) or `equal-per-worker` (every worker's statistics weigh
    /// the same).
    #[serde(default)]
    pub weighting: SyncWeighting,
    /// Shuffle BN (Wu & Johnson §6.1): before every forward, examples move to random workers
    /// (an all-to-all). Their outputs stay where they were computed: the loss is a sum over
    /// examples and gradients are summed over workers, so where an example's loss is taken
    /// does not matter.
    #[serde(default)]
    pub shuffle: bool,
    /// A worker that waits longer than this for the others stops the job, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_workers() -> usize {
    1
}
fn default_timeout() -> u64 {
    600
}

impl Default for DistConfig {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            norm: SyncName::default(),
            group_size: None,
            weighting: SyncWeighting::default(),
            shuffle: false,
            timeout_secs: default_timeout(),
        }
    }
}

impl DistConfig {
    /// The sync groups of [`DistConfig::norm`].
    pub fn sync_groups(&self) -> SyncGroups {
        self.norm.groups(self.workers, self.group_size)
    }
}

impl TrainConfig {
    /// The forward (normalization) batch size.
    pub fn micro_batch(&self) -> usize {
        self.micro_batch_size.unwrap_or(self.batch_size)
    }

    /// Forward batches per optimizer update.
    pub fn accumulation(&self) -> usize {
        self.batch_size / self.micro_batch().max(1)
    }
}
