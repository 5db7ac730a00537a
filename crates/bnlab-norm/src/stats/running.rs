//! Running statistics kept in training: [`RunningStats`] (EMA in PyTorch's convention,
//! cumulative, or off) and how the variance is stored ([`VarianceStorage`]).

use serde::{Deserialize, Serialize};

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
#[serde(rename_all = "kebab-case")]
pub enum VarianceStorage {
    /// The biased batch variance (divide by n).
    #[serde(alias = "Biased")]
    Biased,
    /// The unbiased batch variance (divide by n − 1), as PyTorch stores it.
    #[serde(alias = "Unbiased")]
    Unbiased,
}
