//! The typed configuration of one run: data, model and normalization, optimizer, schedule,
//! training and evaluation. A spec file expands into one of these per grid point.

use std::path::PathBuf;

use bnlab_data::{Augment, CorruptionKind};
use bnlab_models::{ConvKernel, InputNormName, ModelOptions, NormSpec};
use bnlab_norm::{NormSettings, SyncGroups, SyncName, SyncWeighting, UnitName};
use serde::{Deserialize, Serialize};

use crate::{OptimizerConfig, Schedule};

/// Everything one run needs besides its seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The data.
    pub data: DataConfig,
    /// The network and its normalization.
    pub model: ModelConfig,
    /// The optimizer and its parameter groups.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Epochs, batch sizes, warm-up, FrozenBN.
    pub train: TrainConfig,
    /// The evaluation schemes of the best checkpoint.
    #[serde(default)]
    pub eval: EvalConfig,
}

fn default_schedule() -> Schedule {
    Schedule::Cosine
}

/// Where the images come from and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A catalogue name (`cifar10`, `fashion-mnist-subset`, …) or `synthetic`.
    pub dataset: String,
    /// A directory to read the dataset from, instead of the search order.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// The share of each training class held out for validation (Davis & Frank: 0.1).
    #[serde(default = "default_validation")]
    pub validation: f64,
    /// Seed of the validation split (the same split for every run of a sweep).
    #[serde(default)]
    pub split_seed: u64,
    /// Training augmentation.
    #[serde(default = "default_augment")]
    pub augment: AugmentName,
    /// Padding of `pad-crop-flip`.
    #[serde(default = "default_pad")]
    pub pad: usize,
    /// Crop side of `crop-flip` (evaluation then uses a centre crop).
    #[serde(default)]
    pub crop: Option<usize>,
    /// Pixel scaling; default `raw` with input normalization, else `unit`.
    #[serde(default)]
    pub scaling: Option<ScalingName>,
    /// Loader threads.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// The synthetic data set, for `dataset = "synthetic"`.
    #[serde(default)]
    pub synthetic: Option<SyntheticConfig>,
    /// Training batches built with an artificial class pattern (Wu & Johnson §6.1, Fig. 8):
    /// every forward batch holds `classes_per_batch` classes × `per_class` examples, grouped
    /// by class, so each worker's shard of it holds few classes. Default: uniform shuffling.
    #[serde(default)]
    pub class_pattern: Option<ClassPattern>,
}

/// `[data.class_pattern]`: k classes × m examples per training batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPattern {
    /// k.
    pub classes_per_batch: usize,
    /// m.
    pub per_class: usize,
}

fn default_validation() -> f64 {
    0.1
}
fn default_augment() -> AugmentName {
    AugmentName::None
}
fn default_pad() -> usize {
    4
}
fn default_threads() -> usize {
    2
}

/// Training augmentations by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentName {
    /// None.
    None,
    /// Random horizontal flips (Davis & Frank's CIFAR recipe).
    Flip,
    /// Pad, random crop, flip (the usual CIFAR recipe).
    PadCropFlip,
    /// Random crop of `crop`, flip (resize 256 → crop 224).
    CropFlip,
}

/// Pixel scalings by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScalingName {
    /// 0–255 as they are.
    Raw,
    /// x / 255.
    Unit,
    /// (x − 128) / 128.
    Fixed,
}

impl DataConfig {
    /// The training augmentation.
    pub fn train_augment(&self) -> Augment {
        match (self.augment, self.crop) {
            (AugmentName::None, _) => Augment::None,
            (AugmentName::Flip, _) => Augment::Flip,
            (AugmentName::PadCropFlip, _) => Augment::PadCropFlip { pad: self.pad },
            (AugmentName::CropFlip, crop) => Augment::CropFlip {
                crop: crop.unwrap_or(224),
            },
        }
    }

    /// The evaluation transform: a centre crop after `crop-flip` training, else none.
    pub fn eval_augment(&self) -> Augment {
        match self.augment {
            AugmentName::CropFlip => Augment::CenterCrop {
                crop: self.crop.unwrap_or(224),
            },
            _ => Augment::None,
        }
    }
}

/// A synthetic class-conditional data set ([`bnlab_data::synthetic`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Classes.
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// Training images per class.
    #[serde(default = "default_per_class")]
    pub train_per_class: usize,
    /// Test images per class.
    #[serde(default = "default_test_per_class")]
    pub test_per_class: usize,
    /// (channels, height, width).
    #[serde(default = "default_shape")]
    pub shape: [usize; 3],
    /// 0 (trivial) to 1 (pure noise).
    #[serde(default = "default_difficulty")]
    pub difficulty: f64,
}

fn default_classes() -> usize {
    4
}
fn default_per_class() -> usize {
    64
}
fn default_test_per_class() -> usize {
    16
}
fn default_shape() -> [usize; 3] {
    [1, 8, 8]
}
fn default_difficulty() -> f64 {
    0.5
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            classes: default_classes(),
            train_per_class: default_per_class(),
            test_per_class: default_test_per_class(),
            shape: default_shape(),
            difficulty: default_difficulty(),
        }
    }
}

/// The network by registry name and the normalization at its sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A registry name (`resnet20`, `resnet18-cifar`, …; `bnlab models` lists them).
    pub name: String,
    /// The normalization layer at every site.
    #[serde(default)]
    pub norm: NormSettings,
    /// Input normalization (Davis & Frank §3.4).
    #[serde(default)]
    pub input_norm: Option<InputNormName>,
    /// Start each residual block's last γ at 0.
    #[serde(default)]
    pub zero_init_residual: bool,
}

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
    /// Data-parallel workers and how their normalization batches are formed.
    #[serde(default)]
    pub distributed: DistConfig,
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

impl RunConfig {
    /// The network options for `classes` classes of `channels`-channel images.
    pub fn model_options(&self, classes: usize, channels: usize) -> ModelOptions {
        let input_norm = self.model.input_norm.map(|n| n.config(channels));
        ModelOptions {
            num_classes: classes,
            in_channels: channels,
            norm: NormSpec::new(self.model.norm.norm_config()),
            input_norm,
            zero_init_residual: self.model.zero_init_residual,
            conv_kernel: ConvKernel::Auto,
        }
    }

    /// The pixel scaling: as set, else raw under input normalization, else unit.
    pub fn scaling(&self) -> ScalingName {
        self.data
            .scaling
            .unwrap_or(if self.model.input_norm.is_some() {
                ScalingName::Raw
            } else {
                ScalingName::Unit
            })
    }

    /// Every impossible combination, as (dotted key, message); empty when the run can start.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let t = &self.train;
        let n = t.micro_batch();
        if t.epochs == 0 {
            out.push(("train.epochs", "epochs must be at least 1".to_string()));
        }
        if t.batch_size == 0 || n == 0 || !t.batch_size.is_multiple_of(n) {
            out.push((
                "train.micro_batch_size",
                format!(
                    "micro_batch_size = {n} must be ≥ 1 and divide batch_size = {}",
                    t.batch_size
                ),
            ));
        } else if t.distributed.workers == 0 || !n.is_multiple_of(t.distributed.workers) {
            out.push((
                "train.distributed.workers",
                format!(
                    "workers = {} must be ≥ 1 and divide the forward batch of {n}",
                    t.distributed.workers
                ),
            ));
        }
        let d = &t.distributed;
        if d.norm == SyncName::Groups
            && !d
                .group_size
                .is_some_and(|g| g >= 1 && d.workers.is_multiple_of(g))
        {
            out.push((
                "train.distributed.group_size",
                format!(
                    "norm = \"groups\" needs a group_size that divides workers = {}",
                    d.workers
                ),
            ));
        }
        if d.timeout_secs == 0 {
            out.push((
                "train.distributed.timeout_secs",
                "timeout_secs must be at least 1".into(),
            ));
        }
        if let Some(p) = self.data.class_pattern
            && p.classes_per_batch * p.per_class != n
        {
            out.push((
                "data.class_pattern",
                format!(
                    "classes_per_batch × per_class = {} × {} must equal the forward batch of {n}",
                    p.classes_per_batch, p.per_class
                ),
            ));
        }
        if let Some(k) = t.freeze_at_epoch
            && (k == 0 || k >= t.epochs)
        {
            out.push((
                "train.freeze_at_epoch",
                format!(
                    "freeze_at_epoch = {k} must be in 1..{} (epochs = {})",
                    t.epochs, t.epochs
                ),
            ));
        }
        if let Err(e) = self.optimizer.validate() {
            out.push(("optimizer", e));
        }
        let v = self.data.validation;
        if !(0.0..1.0).contains(&v) {
            out.push((
                "data.validation",
                format!("validation must be in [0, 1), got {v}"),
            ));
        }
        if self.data.threads == 0 {
            out.push(("data.threads", "threads must be at least 1".into()));
        }
        if matches!(
            self.model.input_norm,
            Some(InputNormName::Fixed | InputNormName::Offline)
        ) && self.scaling() != ScalingName::Raw
        {
            out.push((
                "data.scaling",
                "fixed and offline input normalization expect raw 0–255 pixels: set scaling = \"raw\""
                    .into(),
            ));
        }
        let e = &self.eval;
        if e.batch_size == 0 {
            out.push(("eval.batch_size", "batch_size must be at least 1".into()));
        }
        let uses = |s: Scheme| e.schemes.contains(&s);
        if (uses(Scheme::Precise) || t.precise_every_epoch || t.freeze_at_epoch.is_some())
            && e.precise_samples == 0
        {
            out.push(("eval.precise_samples", "precise_samples must be ≥ 1".into()));
        }
        if uses(Scheme::Minibatch) && e.minibatch_sizes.is_empty() {
            out.push((
                "eval.minibatch_sizes",
                "the minibatch scheme needs minibatch_sizes".into(),
            ));
        }
        if uses(Scheme::Alpha) {
            if e.alphas.is_empty() {
                out.push(("eval.alphas", "the alpha scheme needs alphas".into()));
            }
            if let Some(a) = e.alphas.iter().find(|a| !(0.0..=1.0).contains(*a)) {
                out.push(("eval.alphas", format!("α = {a} is outside [0, 1]")));
            }
        }
        for a in &e.adapt {
            if !(1..=5).contains(&a.severity) {
                out.push((
                    "eval.adapt",
                    format!("severity {} is outside 1..=5", a.severity),
                ));
            }
        }
        let known_model = bnlab_models::model_names().contains(&self.model.name.as_str());
        if let (true, Some((channels, classes))) = (known_model, self.input_channels_and_classes())
        {
            out.extend(self.batch_problems(channels, classes));
        }
        if !known_model {
            out.push((
                "model.name",
                format!(
                    "unknown model `{}`; `bnlab models` lists them",
                    self.model.name
                ),
            ));
        }
        if self.data.dataset != "synthetic"
            && bnlab_data::DatasetId::from_name(&self.data.dataset).is_err()
        {
            out.push((
                "data.dataset",
                format!(
                    "unknown dataset `{}`; `bnlab data list` lists them, or use \"synthetic\"",
                    self.data.dataset
                ),
            ));
        }
        out
    }

    /// (input channels, classes) of the spec's data set; `None` for an unknown name.
    fn input_channels_and_classes(&self) -> Option<(usize, usize)> {
        if self.data.dataset == "synthetic" {
            let s = self.data.synthetic.clone().unwrap_or_default();
            return Some((s.shape[0], s.classes));
        }
        let id = bnlab_data::DatasetId::from_name(&self.data.dataset).ok()?;
        Some((id.channels(), id.classes()))
    }

    /// The batch problems at every normalization site of the network, by the layer's own rule
    /// ([`bnlab_norm::check_batch`]) at each site's own channel count: the forward batch of one
    /// worker, PreciseBN's batches (whole at the final evaluation, a worker's shard during
    /// training) and the mini-batch evaluation sizes. The first failing site is named.
    fn batch_problems(&self, channels: usize, classes: usize) -> Vec<(&'static str, String)> {
        let options = self.model_options(classes, channels);
        let sites = match bnlab_models::norm_site_configs(&self.model.name, &options) {
            Ok(sites) => sites,
            Err(e) => return vec![("model.norm", crate::error::chain(&e))],
        };
        let (t, e) = (&self.train, &self.eval);
        let workers = t.distributed.workers.max(1);
        let n = t.micro_batch();
        let training_key = match self.model.norm.unit {
            UnitName::BatchGroup => "model.norm.example_groups",
            _ if self.model.norm.ghost_size.is_some() => "model.norm.ghost_size",
            _ => "train.batch_size",
        };
        // (key, batch size, what the batch is)
        let mut batches: Vec<(&'static str, usize, &'static str)> = Vec::new();
        if n > 0 && n.is_multiple_of(workers) {
            batches.push((training_key, n / workers, "the forward batch of one worker"));
        }
        let uses = |s: Scheme| e.schemes.contains(&s);
        // PreciseBN draws exactly precise_samples images: full batches and the rest
        let last = e.precise_samples % e.precise_batch.max(1);
        if uses(Scheme::Precise) || !e.adapt.is_empty() {
            batches.push(("eval.precise_batch", e.precise_batch, "a PreciseBN batch"));
            if last > 0 {
                batches.push((
                    "eval.precise_samples",
                    last,
                    "the last PreciseBN batch, precise_samples mod precise_batch",
                ));
            }
        }
        if t.precise_every_epoch || t.freeze_at_epoch.is_some() {
            let what = if workers > 1 {
                "one worker's shard of a PreciseBN batch during training"
            } else {
                "a PreciseBN batch"
            };
            for size in shard_sizes(e.precise_batch, workers) {
                batches.push(("eval.precise_batch", size, what));
            }
            if last > 0 {
                for size in shard_sizes(last, workers) {
                    batches.push((
                        "eval.precise_samples",
                        size,
                        "(a shard of) the last PreciseBN batch during training",
                    ));
                }
            }
        }
        if uses(Scheme::Minibatch) {
            for &b in &e.minibatch_sizes {
                batches.push(("eval.minibatch_sizes", b, "a mini-batch evaluation batch"));
            }
        }
        batches.dedup();
        batches
            .into_iter()
            .filter_map(|(key, size, what)| {
                sites.iter().find_map(|(site, config)| {
                    bnlab_norm::check_batch(config, size)
                        .err()
                        .map(|err| (key, format!("{err} ({what}, at site `{site}`)")))
                })
            })
            .collect()
    }
}

/// The distinct non-zero shard sizes of a batch of `n` over `workers` (as [`crate::shard`]
/// cuts it).
fn shard_sizes(n: usize, workers: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..workers)
        .map(|rank| crate::shard(n, rank, workers).len())
        .filter(|&s| s > 0)
        .collect();
    sizes.dedup();
    sizes
}
