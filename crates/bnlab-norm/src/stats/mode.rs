//! The layer's explicit mode ([`NormMode`]), never inferred from autodiff, and where inference
//! takes its statistics from ([`StatsSource`]). `tree.rs` sets them on a whole model.

use serde::{Deserialize, Serialize};

/// Where inference takes its statistics from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum StatsSource {
    /// The running (population) statistics.
    Population,
    /// The inference batch's own statistics, under the training batch policy (Wu & Johnson §4.2).
    MiniBatch,
    /// Summers & Dinneen eq. 3: mix each example's own moments with the population ones,
    /// `μ = α·E[xᵢ] + (1−α)·m_x`, `σ² = α·E[xᵢ²] + (1−α)·m_{x²} − μ²`.
    ExampleWeighed {
        /// The example's weight α in [0, 1]; 0 is `Population`.
        alpha: f64,
    },
}

/// What a forward pass does. It is never inferred from whether autodiff is on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum NormMode {
    /// Batch statistics; running statistics updated (unless `Off`); gradients flow through them.
    #[default]
    Train,
    /// Batch statistics for the output; accumulated for PreciseBN; running statistics untouched.
    Collect,
    /// Inference with statistics from `source`.
    Eval(StatsSource),
    /// Population statistics used as constants while training (FrozenBN, Wu & Johnson §4.3).
    Frozen,
}

impl NormMode {
    /// Whether this mode normalizes with the batch's own statistics (Train, Collect,
    /// Eval(MiniBatch)).
    pub fn uses_batch_stats(self) -> bool {
        matches!(
            self,
            NormMode::Train | NormMode::Collect | NormMode::Eval(StatsSource::MiniBatch)
        )
    }

    /// Inference with population statistics.
    pub const EVAL: NormMode = NormMode::Eval(StatsSource::Population);
}
