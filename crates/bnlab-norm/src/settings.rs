//! [`NormSettings`]: the layer's settings flat and by name, as an experiment spec's
//! `[model.norm]` table writes them, with their serde names and defaults. This is the one name
//! table of the layer: bnlab-train's specs embed it, so a setting, its name and its default are
//! written here once. An unknown name is refused by serde with the list of valid ones.

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Serialize};

use crate::{
    Affine, BatchPolicy, DomainChoice, DomainConfig, GhostSplit, Kernel, NormConfig, NormError,
    Remainder, RunningStats, StatUnit, SyncGroups, VarianceStorage,
};

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
    /// The EMA as Keras writes it, decay d = 1 − m (instead of `momentum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<f64>,
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
    /// The fused kernels where the backend has them (`auto`) or Burn tensor operations
    /// everywhere (`composed`, the reference); results agree within float rounding.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub kernel: Kernel,
    /// Stop with an error when a batch statistic is NaN or infinite.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_finite: bool,
    /// What is kept per domain when the data set has several (Wu & Johnson §5.2, Table 5);
    /// everything shared by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<DomainSettings>,
}

/// `[model.norm.domains]`: for each of the three, `shared` or `per-domain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSettings {
    /// The statistics that normalize in training.
    #[serde(default = "shared")]
    pub train_stats: DomainChoice,
    /// The population statistics of inference.
    #[serde(default = "shared")]
    pub population_stats: DomainChoice,
    /// γ and β (and the tail's other parameters).
    #[serde(default = "shared")]
    pub affine: DomainChoice,
}

fn shared() -> DomainChoice {
    DomainChoice::Shared
}

impl DomainSettings {
    /// These choices for `count` domains.
    pub fn config(self, count: usize) -> DomainConfig {
        DomainConfig {
            count,
            train_stats: self.train_stats,
            population_stats: self.population_stats,
            affine: self.affine,
        }
    }
}

fn is_auto(k: &Kernel) -> bool {
    *k == Kernel::Auto
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
            decay: None,
            variance: default_variance(),
            affine: default_affine(),
            gamma: default_gamma(),
            beta: 0.0,
            epsilon: default_epsilon(),
            kernel: Kernel::Auto,
            check_finite: false,
            domains: None,
        }
    }
}

impl NormSettings {
    /// The layer configuration (channel count 1; each site sets its own) for a data set of
    /// `domains` domains: with several, every layer takes the examples' domain ids, and
    /// keeps per domain what `domains` asks (everything shared by default).
    pub fn norm_config_for(&self, domains: usize) -> NormConfig {
        let config = self.norm_config();
        if domains < 2 {
            return config;
        }
        let choices = self.domains.unwrap_or(DomainSettings {
            train_stats: DomainChoice::Shared,
            population_stats: DomainChoice::Shared,
            affine: DomainChoice::Shared,
        });
        config.with_domains(Some(choices.config(domains)))
    }

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
            RunningName::Ema => match self.decay {
                Some(d) => RunningStats::keras(d),
                None => RunningStats::pytorch(self.momentum),
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
            .with_kernel(self.kernel)
            .with_check_finite(self.check_finite)
    }
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

impl SyncName {
    /// The sync groups this name stands for with `workers` workers; `groups` takes
    /// `group_size` consecutive workers per group (all of them without one).
    pub fn groups(self, workers: usize, group_size: Option<usize>) -> SyncGroups {
        match self {
            SyncName::Worker => SyncGroups::PerWorker,
            SyncName::All => SyncGroups::All,
            SyncName::Groups => SyncGroups::consecutive(workers, group_size.unwrap_or(workers)),
        }
    }
}

/// The setting called `name` by its serde name, as a spec writes it (for command-line flags,
/// which take the same names); an unknown name lists the valid ones.
pub fn by_name<T: DeserializeOwned>(name: &str) -> Result<T, NormError> {
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(name))
        .map_err(|e| NormError::InvalidConfig(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kebab_case_and_the_old_pascal_case_still_reads() {
        assert_eq!(by_name::<GhostSplit>("strided"), Ok(GhostSplit::Strided));
        assert_eq!(by_name::<GhostSplit>("Strided"), Ok(GhostSplit::Strided));
        assert_eq!(
            by_name::<VarianceStorage>("biased"),
            Ok(VarianceStorage::Biased)
        );
        assert_eq!(
            by_name::<crate::PopulationEstimator>("mean-of-variances"),
            Ok(crate::PopulationEstimator::MeanOfVariances)
        );
        // what specs and results files hold
        let written = serde_json::to_string(&GhostSplit::Contiguous).unwrap();
        assert_eq!(written, "\"contiguous\"");
    }

    #[test]
    fn an_unknown_name_lists_the_valid_ones() {
        let e = by_name::<GhostSplit>("diagonal").unwrap_err().to_string();
        assert!(e.contains("diagonal"), "{e}");
        assert!(e.contains("contiguous") && e.contains("strided"), "{e}");
    }
}
