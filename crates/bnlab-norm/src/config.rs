//! [`NormConfig`]: every setting of a [`Norm`](crate::Norm) layer in one place, and
//! [`NormConfig::validate`]. The settings' types live with the question they answer: the
//! statistic unit and batch policy in `batch/`, running statistics and PreciseBN's estimator in
//! `stats/`, the affine tail in `affine.rs`.

use burn::config::Config;
use serde::{Deserialize, Serialize};

use crate::{
    Affine, BatchPolicy, DomainChoice, DomainConfig, NormError, RunningStats, StatUnit,
    VarianceStorage,
};

/// Which implementation runs a [`Norm`](crate::Norm) layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernel {
    /// The fused kernels where the backend has them (f32 on Flex; on a GPU only with a
    /// stats reducer, since they plan statistics on the host), else the composed path.
    #[default]
    #[serde(alias = "Auto")]
    Auto,
    /// Burn tensor operations on every backend: the reference implementation.
    #[serde(alias = "Composed")]
    Composed,
    /// The fused kernels wherever the backend has them (f32 on Flex or a GPU), even where
    /// `Auto` would not take them: to test and time the GPU kernels without a reducer.
    #[serde(alias = "Fused")]
    Fused,
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
        self.unit.channel_grouping(self.num_features)
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
        self.unit.validate(c)?;
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
