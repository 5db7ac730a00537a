//! The typed configuration of one run: data, model and normalization, optimizer, schedule,
//! training and evaluation. A spec file expands into one of these per grid point.

use std::path::PathBuf;

use bnlab_data::{Augment, CorruptionKind};
use bnlab_models::{ConvKernel, InputNormConfig, ModelOptions, NormSpec};
use bnlab_norm::{
    Affine, BatchPolicy, GhostSplit, NormConfig, Remainder, RunningStats, StatUnit, SyncGroups,
    SyncWeighting, VarianceStorage,
};
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

/// Input normalization by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputNormName {
    /// A scale-only BN layer, γ̂ = 0.58·γ.
    Bn,
    /// (x − 128)/128.
    Fixed,
    /// The training split's per-channel μ and σ.
    Offline,
}

/// Statistic units by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitName {
    /// BatchNorm.
    Batch,
    /// GroupNorm with `groups`.
    Group,
    /// LayerNorm.
    Layer,
    /// InstanceNorm.
    Instance,
    /// Batch-Group Norm with `groups` channel groups and `example_groups`.
    BatchGroup,
    /// No normalization (with `affine = "standard"`: AffineLayer).
    None,
}

/// Affine tails by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AffineName {
    /// γ·x̂ + β.
    Standard,
    /// x̂ (BatchNorm-minus).
    Off,
    /// γ·(x̂ + β).
    A1,
    /// γ·(γ0·x̂ + β).
    A2,
    /// RBN.
    Rbn,
    /// IEBN.
    Iebn,
    /// RBN⁻.
    RbnMinus,
    /// IEBN⁻.
    IebnMinus,
}

/// Running-statistics policies by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunningName {
    /// EMA with `momentum`.
    Ema,
    /// Equal-weight average.
    Cumulative,
    /// Never updated in training.
    Off,
}

/// The normalization layer of a spec, flat and by name; becomes a [`NormConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormSettings {
    /// The statistic unit.
    #[serde(default = "default_unit")]
    pub unit: UnitName,
    /// Channel groups of `group` and `batch-group`.
    #[serde(default = "default_groups")]
    pub groups: usize,
    /// Example groups of `batch-group`.
    #[serde(default = "default_example_groups")]
    pub example_groups: usize,
    /// Ghost batch size (Batch unit only).
    #[serde(default)]
    pub ghost_size: Option<usize>,
    /// How ghost batches are cut.
    #[serde(default = "default_split")]
    pub ghost_split: GhostSplit,
    /// Allow a partial last ghost batch.
    #[serde(default)]
    pub allow_remainder: bool,
    /// Running statistics.
    #[serde(default = "default_running")]
    pub running: RunningName,
    /// EMA momentum m (PyTorch convention).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Store the running variance unbiased (PyTorch) or biased.
    #[serde(default = "default_variance")]
    pub variance: VarianceStorage,
    /// The affine tail.
    #[serde(default = "default_affine")]
    pub affine: AffineName,
    /// Initial γ (Davis & Frank: < 1).
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Initial β.
    #[serde(default)]
    pub beta: f64,
    /// ε.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
}

fn default_unit() -> UnitName {
    UnitName::Batch
}
fn default_groups() -> usize {
    32
}
fn default_example_groups() -> usize {
    1
}
fn default_split() -> GhostSplit {
    GhostSplit::Contiguous
}
fn default_running() -> RunningName {
    RunningName::Ema
}
fn default_momentum() -> f64 {
    0.1
}
fn default_variance() -> VarianceStorage {
    VarianceStorage::Unbiased
}
fn default_affine() -> AffineName {
    AffineName::Standard
}
fn default_gamma() -> f64 {
    1.0
}
fn default_epsilon() -> f64 {
    1e-5
}

impl Default for NormSettings {
    fn default() -> Self {
        Self {
            unit: default_unit(),
            groups: default_groups(),
            example_groups: default_example_groups(),
            ghost_size: None,
            ghost_split: default_split(),
            allow_remainder: false,
            running: default_running(),
            momentum: default_momentum(),
            variance: default_variance(),
            affine: default_affine(),
            gamma: default_gamma(),
            beta: 0.0,
            epsilon: default_epsilon(),
        }
    }
}

impl NormSettings {
    /// The layer configuration (channel count 1; each site sets its own).
    pub fn norm_config(&self) -> NormConfig {
        let unit = match self.unit {
            UnitName::Batch => StatUnit::Batch,
            UnitName::Group => StatUnit::Group {
                groups: self.groups,
            },
            UnitName::Layer => StatUnit::Layer,
            UnitName::Instance => StatUnit::Instance,
            UnitName::BatchGroup => StatUnit::BatchGroup {
                channel_groups: self.groups,
                example_groups: self.example_groups,
            },
            UnitName::None => StatUnit::None,
        };
        let gamma_init = self.gamma;
        let affine = match self.affine {
            AffineName::Standard => Affine::Standard {
                gamma_init,
                beta_init: self.beta,
            },
            AffineName::Off => Affine::Off,
            AffineName::A1 => Affine::A1 { gamma_init },
            AffineName::A2 => Affine::A2 { gamma_init },
            AffineName::Rbn => Affine::Rbn { gamma_init },
            AffineName::Iebn => Affine::Iebn { gamma_init },
            AffineName::RbnMinus => Affine::RbnMinus { gamma_init },
            AffineName::IebnMinus => Affine::IebnMinus { gamma_init },
        };
        let running = match self.running {
            RunningName::Ema => RunningStats::Ema {
                momentum: self.momentum,
            },
            RunningName::Cumulative => RunningStats::Cumulative,
            RunningName::Off => RunningStats::Off,
        };
        NormConfig::new(1)
            .with_unit(unit)
            .with_batch(BatchPolicy {
                ghost_size: self.ghost_size,
                split: self.ghost_split,
                remainder: if self.allow_remainder {
                    Remainder::Allow
                } else {
                    Remainder::Error
                },
            })
            .with_running(running)
            .with_variance(self.variance)
            .with_affine(affine)
            .with_epsilon(self.epsilon)
    }

    /// Examples one batch statistic needs at least, for a forward batch of any size: the
    /// ghost size, or the example-group count; the error says why a size `n` cannot work.
    pub fn check_batch(&self, n: usize) -> Result<(), String> {
        match self.unit {
            UnitName::Batch => {
                let g = self.ghost_size.unwrap_or(n);
                if g < 2 || n < 2 {
                    return Err(format!(
                        "a batch of {n} with ghost size {g} leaves a BatchNorm group with fewer than 2 examples"
                    ));
                }
                if !self.allow_remainder && !n.is_multiple_of(g) {
                    return Err(format!("ghost_size = {g} does not divide the batch of {n}"));
                }
                if self.allow_remainder && n % g == 1 {
                    return Err(format!(
                        "ghost_size = {g} leaves a last ghost batch of 1 example from a batch of {n}"
                    ));
                }
            }
            UnitName::BatchGroup if self.example_groups > n => {
                return Err(format!(
                    "example_groups = {} exceeds the batch of {n}",
                    self.example_groups
                ));
            }
            _ => {}
        }
        Ok(())
    }
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
    /// `count` (the concatenated batch) or `equal` (every worker's statistics weigh the same).
    #[serde(default)]
    pub weighting: SyncWeighting,
    /// Shuffle BN (Wu & Johnson §6.1): before every forward, examples move to random workers
    /// (an all-to-all), and their outputs return to their owners after it.
    #[serde(default)]
    pub shuffle: bool,
    /// A worker that waits longer than this for the others stops the job, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// The normalization group of data-parallel training, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SyncName {
    /// Each worker alone.
    #[default]
    Worker,
    /// All workers (SyncBN).
    All,
    /// Groups of `group_size` consecutive workers.
    Groups,
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
        match self.norm {
            SyncName::Worker => SyncGroups::PerWorker,
            SyncName::All => SyncGroups::All,
            SyncName::Groups => {
                SyncGroups::consecutive(self.workers, self.group_size.unwrap_or(self.workers))
            }
        }
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
        let input_norm = self.model.input_norm.map(|n| match n {
            InputNormName::Bn => InputNormConfig::Bn,
            InputNormName::Fixed => InputNormConfig::Fixed,
            // filled in from the training split by the trainer
            InputNormName::Offline => InputNormConfig::Offline {
                mean: vec![0.0; channels],
                std: vec![1.0; channels],
            },
        });
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
        } else if let Err(e) = self.model.norm.check_batch(n / t.distributed.workers) {
            let key = match self.model.norm.unit {
                UnitName::BatchGroup => "model.norm.example_groups",
                _ if self.model.norm.ghost_size.is_some() => "model.norm.ghost_size",
                _ => "train.batch_size",
            };
            out.push((key, format!("{e} (the forward batch of one worker)")));
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
        if let Err(e) = self.model.norm.norm_config().validate() {
            out.push(("model.norm", e.to_string()));
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
        if uses(Scheme::Precise) || t.precise_every_epoch || t.freeze_at_epoch.is_some() {
            if e.precise_samples == 0 {
                out.push(("eval.precise_samples", "precise_samples must be ≥ 1".into()));
            }
            if let Err(m) = self.model.norm.check_batch(e.precise_batch) {
                out.push(("eval.precise_batch", m));
            }
        }
        if uses(Scheme::Minibatch) {
            if e.minibatch_sizes.is_empty() {
                out.push((
                    "eval.minibatch_sizes",
                    "the minibatch scheme needs minibatch_sizes".into(),
                ));
            }
            for &b in &e.minibatch_sizes {
                if let Err(m) = self.model.norm.check_batch(b) {
                    out.push(("eval.minibatch_sizes", m));
                }
            }
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
        if !e.adapt.is_empty()
            && let Err(m) = self.model.norm.check_batch(e.precise_batch)
        {
            out.push(("eval.precise_batch", m));
        }
        if bnlab_models::model_names()
            .iter()
            .all(|m| *m != self.model.name)
        {
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
}
