//! Running statistics kept in training: [`RunningStats`] (EMA in PyTorch's convention,
//! cumulative, or off) and how the variance is stored ([`VarianceStorage`]).

use burn::tensor::{DType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::Norm;
use crate::stats::moments::BatchStats;
use crate::tensors::widen;

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

impl RunningStats {
    /// PyTorch's convention: running = (1 − m)·running + m·batch (`momentum`, 0.1 by default).
    pub fn pytorch(momentum: f64) -> Self {
        RunningStats::Ema { momentum }
    }

    /// Keras' convention: running = d·running + (1 − d)·batch (`momentum` there, a decay;
    /// 0.99 by default): PyTorch's momentum 1 − d.
    pub fn keras(decay: f64) -> Self {
        RunningStats::Ema {
            momentum: 1.0 - decay,
        }
    }

    /// The Keras decay d of an EMA (1 − PyTorch's momentum).
    pub fn keras_decay(&self) -> Option<f64> {
        match *self {
            RunningStats::Ema { momentum } => Some(1.0 - momentum),
            _ => None,
        }
    }
}

/// How the running variance is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VarianceStorage {
    /// The biased batch variance (divide by n).
    #[serde(alias = "Biased")]
    Biased,
    /// The unbiased batch variance (divide by n − 1), as PyTorch stores it.
    #[serde(alias = "Unbiased")]
    Unbiased,
}

impl VarianceStorage {
    /// `var`, stored in this convention from batches of `n` values per unit, in convention
    /// `to`: biased = unbiased·(n − 1)/n. PyTorch keeps no n with its statistics, so a
    /// conversion needs the n the statistics were collected with (N·H·W for BN).
    pub fn convert(self, var: f64, to: VarianceStorage, n: f64) -> f64 {
        match (self, to) {
            (VarianceStorage::Biased, VarianceStorage::Unbiased) => var * n / (n - 1.0),
            (VarianceStorage::Unbiased, VarianceStorage::Biased) => var * (n - 1.0) / n,
            _ => var,
        }
    }
}

impl Norm {
    /// Moves the running statistics towards this batch's pooled statistics.
    pub(crate) fn update_running(&self, stats: &BatchStats) {
        let weight = match self.config.running {
            RunningStats::Off => return,
            RunningStats::Ema { momentum } => Some(momentum),
            RunningStats::Cumulative => None,
        };
        let device = stats.pop_sum.device();
        let p = stats.pop_count.len();
        let col = |v: Vec<f64>| Tensor::<2>::from_data(TensorData::new(v, [p, 1]), &device);
        let seen: Vec<f64> = stats
            .pop_count
            .iter()
            .map(|&c| if c > 0.0 { 1.0 } else { 0.0 })
            .collect();
        let n = col(stats.pop_count.iter().map(|&c| c.max(1.0)).collect());
        let n_wide = widen(n.clone(), Some(stats.pop_sum.dtype()));
        let mean_wide = stats.pop_sum.clone() / n_wide.clone();
        let var_wide =
            (stats.pop_sum_sq.clone() / n_wide - mean_wide.clone().square()).clamp_min(0.0);
        let mut var = var_wide.cast(DType::F32);
        if self.config.variance == VarianceStorage::Unbiased {
            let factor: Vec<f64> = stats
                .pop_count
                .iter()
                .map(|&c| if c > 1.0 { c / (c - 1.0) } else { 1.0 })
                .collect();
            var = var * col(factor);
        }
        let mean = mean_wide.cast(DType::F32);
        let seen_t = col(seen.clone());
        let w = match weight {
            Some(m) => seen_t.mul_scalar(m),
            None => {
                let t = self.state.updates().to_device(&device).reshape([p, 1]);
                seen_t / t.add_scalar(1.0)
            }
        };
        self.state.blend(w, mean, var);
        let seen_1d = Tensor::<1>::from_data(TensorData::new(seen, [p]), &device);
        self.state.count_updates(seen_1d);
    }
}
