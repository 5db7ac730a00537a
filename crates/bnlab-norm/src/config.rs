//! The settings of a [`Norm`](crate::Norm) layer: statistic unit, batch policy, domains,
//! running statistics and affine tail.

use burn::config::Config;
use serde::{Deserialize, Serialize};

use crate::NormError;

/// The scale σ_act of a unit Gaussian after a ReLU (Davis & Frank §3.4): input-normalization
/// layers start at γ̂ = 0.58·γ because no activation follows them.
pub const RELU_SIGMA_ACT: f64 = 0.58;

/// Over which values one mean and variance are computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum StatUnit {
    /// Per channel over (N, H, W) of the normalization batch (BatchNorm).
    Batch,
    /// Per example over `C / groups` channels and (H, W) (GroupNorm).
    Group {
        /// Number of channel groups; must divide the channel count.
        groups: usize,
    },
    /// Per example over all channels: GroupNorm with one group.
    Layer,
    /// Per example and channel: GroupNorm with one channel per group.
    Instance,
    /// Summers & Dinneen §3.4: over a group of channels and a group of examples.
    BatchGroup {
        /// Number of channel groups; must divide the channel count.
        channel_groups: usize,
        /// Number of example groups the batch is split into.
        example_groups: usize,
    },
    /// No normalization: x̂ = x (with an affine tail this is Peerthum & Stamp's AffineLayer).
    None,
}

impl StatUnit {
    /// Whether every unit lies within one example (GroupNorm, LayerNorm, InstanceNorm).
    pub fn is_per_example(&self) -> bool {
        matches!(self, Self::Group { .. } | Self::Layer | Self::Instance)
    }
}

/// How a batch is cut into ghost batches (or example groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GhostSplit {
    /// Ghost batch g holds examples g·B' .. (g+1)·B' (Summers & Dinneen eq. 4).
    Contiguous,
    /// Ghost batch g holds examples g, g + G, g + 2G, … with G = ⌈N / B'⌉ (tf-keras).
    Strided,
}

/// What to do when the ghost size does not divide the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Remainder {
    /// A batch the ghost size does not divide is an error.
    Error,
    /// Allow a partial ghost batch, provided it holds at least 2 examples.
    Allow,
}

/// What "the batch" is for batch statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchPolicy {
    /// Ghost size B' (normalization batch ≠ SGD batch); `None` uses the whole batch.
    pub ghost_size: Option<usize>,
    /// How ghost batches and BatchGroup example groups are cut from the batch.
    pub split: GhostSplit,
    /// Whether a partial ghost batch is allowed.
    pub remainder: Remainder,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            ghost_size: None,
            split: GhostSplit::Contiguous,
            remainder: Remainder::Error,
        }
    }
}

impl BatchPolicy {
    /// A ghost policy of size `ghost_size` with the given split and no remainder.
    pub fn ghost(ghost_size: usize, split: GhostSplit) -> Self {
        Self {
            ghost_size: Some(ghost_size),
            split,
            remainder: Remainder::Error,
        }
    }
}

/// Whether something is shared by all domains or kept per domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainChoice {
    /// One for all domains together.
    Shared,
    /// One per domain.
    PerDomain,
}

/// Multi-domain settings (Wu & Johnson §5.2, Table 5). Each example carries a domain id < `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// Number of domains D.
    pub count: usize,
    /// Statistics used to normalize in SGD training: over all domains or per domain.
    pub train_stats: DomainChoice,
    /// Population statistics: one set, or one per domain (used by the example's domain at inference).
    pub population_stats: DomainChoice,
    /// Affine parameters: one set, or one per domain.
    pub affine: DomainChoice,
}

/// How running (population) statistics are kept during `Train`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RunningStats {
    /// running = (1 − m)·running + m·batch (PyTorch convention; m = 0.1 is usual).
    Ema {
        /// The momentum m in [0, 1].
        momentum: f64,
    },
    /// Equal-weight average of every batch statistic seen so far.
    Cumulative,
    /// Running statistics are never updated in `Train`.
    Off,
}

/// How the running variance is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VarianceStorage {
    /// The biased batch variance (divide by n).
    Biased,
    /// The unbiased batch variance (divide by n − 1), as PyTorch stores it.
    Unbiased,
}

/// How `finalize` turns collected batch statistics into population statistics
/// (Wu & Johnson A.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PopulationEstimator {
    /// Eq. 2: the variance of all collected samples, `E[μ² + σ²] − E[μ]²` (count-weighted).
    Pooled,
    /// Eq. 3: the average of the per-batch variances.
    MeanOfVariances,
}

/// The affine tail applied to x̂ (Davis & Frank §3, §4.5; Peerthum & Stamp).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Affine {
    /// y = γ·x̂ + β.
    Standard {
        /// Initial γ; Davis & Frank recommend a value in (0, 1].
        gamma_init: f64,
        /// Initial β.
        beta_init: f64,
    },
    /// y = x̂ (BatchNorm-minus).
    Off,
    /// A1 (Davis & Frank eq. 26): y = γ·(x̂ + β).
    A1 {
        /// Initial γ.
        gamma_init: f64,
    },
    /// A2 (eq. 27): y = γ·(γ0·x̂ + β), γ0 starts at 1.
    A2 {
        /// Initial γ.
        gamma_init: f64,
    },
    /// RBN (eq. 28–29): y = γ·S·x̂ + β, S = sigmoid(w_v·GAP(x̂) + w_b), (w_v, w_b) = (0, 1).
    Rbn {
        /// Initial γ.
        gamma_init: f64,
    },
    /// IEBN: as RBN with GAP over the raw input and (w_v, w_b) = (0, −1).
    Iebn {
        /// Initial γ.
        gamma_init: f64,
    },
    /// RBN⁻: S = sigmoid(w_b), w_b = 1.
    RbnMinus {
        /// Initial γ.
        gamma_init: f64,
    },
    /// IEBN⁻: S = sigmoid(w_b), w_b = −1.
    IebnMinus {
        /// Initial γ.
        gamma_init: f64,
    },
    /// y = γ̂·x̂ with β fixed at 0: BN input normalization (Davis & Frank §3.4).
    ScaleOnly {
        /// Initial γ̂ (use [`Affine::input_norm`] for 0.58·γ).
        gamma_init: f64,
    },
}

impl Default for Affine {
    fn default() -> Self {
        Affine::Standard {
            gamma_init: 1.0,
            beta_init: 0.0,
        }
    }
}

impl Affine {
    /// The standard tail with γ starting at `gamma_init` and β at 0.
    pub fn standard(gamma_init: f64) -> Self {
        Affine::Standard {
            gamma_init,
            beta_init: 0.0,
        }
    }

    /// The BN input-normalization tail for a ReLU network: γ̂ = 0.58·γ, β fixed at 0.
    pub fn input_norm(gamma: f64) -> Self {
        Affine::ScaleOnly {
            gamma_init: RELU_SIGMA_ACT * gamma,
        }
    }

    /// This tail with its initial γ set to `gamma` (unchanged for `Off`, which has none).
    pub fn with_gamma_init(self, gamma: f64) -> Self {
        match self {
            Affine::Off => Affine::Off,
            Affine::Standard { beta_init, .. } => Affine::Standard {
                gamma_init: gamma,
                beta_init,
            },
            Affine::A1 { .. } => Affine::A1 { gamma_init: gamma },
            Affine::A2 { .. } => Affine::A2 { gamma_init: gamma },
            Affine::Rbn { .. } => Affine::Rbn { gamma_init: gamma },
            Affine::Iebn { .. } => Affine::Iebn { gamma_init: gamma },
            Affine::RbnMinus { .. } => Affine::RbnMinus { gamma_init: gamma },
            Affine::IebnMinus { .. } => Affine::IebnMinus { gamma_init: gamma },
            Affine::ScaleOnly { .. } => Affine::ScaleOnly { gamma_init: gamma },
        }
    }

    /// The initial γ, where the tail has one.
    pub fn gamma_init(&self) -> Option<f64> {
        match *self {
            Affine::Off => None,
            Affine::Standard { gamma_init, .. }
            | Affine::A1 { gamma_init }
            | Affine::A2 { gamma_init }
            | Affine::Rbn { gamma_init }
            | Affine::Iebn { gamma_init }
            | Affine::RbnMinus { gamma_init }
            | Affine::IebnMinus { gamma_init }
            | Affine::ScaleOnly { gamma_init } => Some(gamma_init),
        }
    }
}

/// Which implementation runs a [`Norm`](crate::Norm) layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Kernel {
    /// The fused kernels where the backend has them (f32 on Flex, without a stats reducer
    /// in batch-statistics modes), else the composed path.
    #[default]
    Auto,
    /// Burn tensor operations on every backend: the reference implementation.
    Composed,
}

/// Configuration of a [`Norm`](crate::Norm) layer. Every choice of the four papers is a field.
#[derive(Config, Debug)]
pub struct NormConfig {
    /// Number of channels C (axis 1 of the input).
    pub num_features: usize,
    /// The statistic unit. Default: `Batch`.
    #[config(default = "StatUnit::Batch")]
    pub unit: StatUnit,
    /// What the normalization batch is. Default: the whole batch.
    #[config(default = "BatchPolicy::default()")]
    pub batch: BatchPolicy,
    /// Multi-domain settings. Default: none.
    #[config(default = "None")]
    pub domains: Option<DomainConfig>,
    /// Running statistics policy. Default: EMA with momentum 0.1.
    #[config(default = "RunningStats::Ema { momentum: 0.1 }")]
    pub running: RunningStats,
    /// How the running variance is stored. Default: unbiased.
    #[config(default = "VarianceStorage::Unbiased")]
    pub variance: VarianceStorage,
    /// The affine tail. Default: standard, γ = 1, β = 0.
    #[config(default = "Affine::Standard { gamma_init: 1.0, beta_init: 0.0 }")]
    pub affine: Affine,
    /// Added to the variance before the square root. Default: 1e-5.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Return an error when a batch statistic is NaN or infinite. Default: false.
    #[config(default = false)]
    pub check_finite: bool,
    /// Fused kernels or the composed reference. Default: fused where available.
    #[config(default = "Kernel::Auto")]
    pub kernel: Kernel,
}

impl NormConfig {
    /// This config for a site with `channels` channels: one config per network, sized per site.
    pub fn for_channels(&self, channels: usize) -> NormConfig {
        NormConfig {
            num_features: channels,
            ..self.clone()
        }
    }

    /// Channels per channel group and the number of channel groups K of the statistic unit.
    pub(crate) fn channel_grouping(&self) -> (usize, usize) {
        let c = self.num_features;
        match self.unit {
            StatUnit::Batch | StatUnit::Instance | StatUnit::None => (1, c),
            StatUnit::Group { groups } => (c / groups, groups),
            StatUnit::Layer => (c, 1),
            StatUnit::BatchGroup { channel_groups, .. } => (c / channel_groups, channel_groups),
        }
    }

    /// Number of domains (1 without domains).
    pub(crate) fn domain_count(&self) -> usize {
        self.domains.map_or(1, |d| d.count)
    }

    fn per_domain(&self, pick: impl Fn(&DomainConfig) -> DomainChoice) -> bool {
        self.domains
            .as_ref()
            .is_some_and(|d| pick(d) == DomainChoice::PerDomain)
    }

    /// Whether training statistics are computed per domain.
    pub(crate) fn train_per_domain(&self) -> bool {
        self.per_domain(|d| d.train_stats)
    }

    /// Number of population-statistic sets P (1 or D).
    pub(crate) fn population_sets(&self) -> usize {
        if self.per_domain(|d| d.population_stats) {
            self.domain_count()
        } else {
            1
        }
    }

    /// Number of affine parameter sets A (1 or D).
    pub(crate) fn affine_sets(&self) -> usize {
        if self.per_domain(|d| d.affine) {
            self.domain_count()
        } else {
            1
        }
    }

    /// Checks every setting; the error names the offending one.
    pub fn validate(&self) -> Result<(), NormError> {
        let bad = |msg: String| Err(NormError::InvalidConfig(msg));
        let c = self.num_features;
        if c == 0 {
            return bad("num_features must be at least 1".into());
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad(format!(
                "epsilon must be finite and > 0, got {}",
                self.epsilon
            ));
        }
        let check_groups = |name: &str, g: usize| {
            if g == 0 || !c.is_multiple_of(g) {
                bad(format!(
                    "{name} = {g} must be ≥ 1 and divide num_features = {c}"
                ))
            } else {
                Ok(())
            }
        };
        match self.unit {
            StatUnit::Group { groups } => check_groups("groups", groups)?,
            StatUnit::BatchGroup {
                channel_groups,
                example_groups,
            } => {
                check_groups("channel_groups", channel_groups)?;
                if example_groups == 0 {
                    return bad("example_groups must be at least 1".into());
                }
            }
            _ => {}
        }
        if let Some(g) = self.batch.ghost_size {
            if g == 0 {
                return bad("ghost_size must be at least 1".into());
            }
            if self.unit != StatUnit::Batch {
                return bad(format!(
                    "ghost_size applies to the Batch unit only, not {:?}",
                    self.unit
                ));
            }
        }
        if let RunningStats::Ema { momentum } = self.running
            && !(momentum.is_finite() && (0.0..=1.0).contains(&momentum))
        {
            return bad(format!("EMA momentum must be in [0, 1], got {momentum}"));
        }
        if let Some(d) = self.domains
            && d.count == 0
        {
            return bad("domains.count must be at least 1".into());
        }
        if let Some(g) = self.affine.gamma_init()
            && !g.is_finite()
        {
            return bad(format!("gamma_init must be finite, got {g}"));
        }
        if let Affine::Standard { beta_init, .. } = self.affine
            && !beta_init.is_finite()
        {
            return bad(format!("beta_init must be finite, got {beta_init}"));
        }
        Ok(())
    }
}
