//! The layer's explicit mode, and helpers that set it on every [`Norm`](crate::Norm) in a module tree.

use burn::module::Module;
use serde::{Deserialize, Serialize};

use crate::state::{NormSite, TreeOp, run_tree_op};
use crate::{NormError, PopulationEstimator, StatsReducer};
use std::sync::Arc;

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

/// Sets `mode` on every [`Norm`](crate::Norm) in `module` and returns the module.
pub fn set_norm_mode<M: Module>(module: M, mode: NormMode) -> M {
    run_tree_op(TreeOp::SetMode(mode), module).0
}

/// Sets `modes[i]` on the i-th [`Norm`](crate::Norm) of `module` in tree order (the order of
/// [`norm_sites`]); layers past the end of `modes` keep their mode.
///
/// With [`finalize_collected`], this gives layer-by-layer population statistics (Wu & Johnson
/// A.3): earlier layers in `Eval`, one layer in `Collect`.
pub fn set_norm_modes<M: Module>(module: M, modes: &[NormMode]) -> M {
    let op = TreeOp::SetModes {
        modes: modes.to_vec(),
        next: 0,
    };
    run_tree_op(op, module).0
}

/// Installs (with `Some(threshold)`) or removes a probe on every [`Norm`](crate::Norm) of
/// `module` that counts the normalized values with |x̂| > `threshold` in every later forward
/// pass; [`norm_sites`] reports the counts. The count costs one extra reduction per layer.
pub fn set_outlier_probe<M: Module>(module: M, threshold: Option<f64>) -> M {
    run_tree_op(TreeOp::SetOutlierProbe(threshold), module).0
}

/// Installs `reducer` (for example a SyncBN all-reduce) on every [`Norm`](crate::Norm) in `module`.
pub fn set_stats_reducer<M: Module>(module: M, reducer: Arc<dyn StatsReducer>) -> M {
    run_tree_op(TreeOp::SetReducer(reducer), module).0
}

/// Clears the PreciseBN accumulator of every [`Norm`](crate::Norm) in `module`.
pub fn reset_collected<M: Module>(module: M) -> M {
    run_tree_op(TreeOp::ResetCollect, module).0
}

/// Writes the statistics collected in `Collect` mode into the running statistics of every
/// [`Norm`](crate::Norm) of `module` that is in `Collect` mode, then clears their accumulators.
/// Layers in other modes are left alone.
///
/// Fails if a layer in `Collect` mode collected nothing.
pub fn finalize_collected<M: Module>(
    module: M,
    estimator: PopulationEstimator,
) -> Result<M, NormError> {
    let (module, _, errors) = run_tree_op(TreeOp::Finalize(estimator), module);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

/// The mode of every [`Norm`](crate::Norm) in `module`, in tree order.
pub fn norm_modes<M: Module>(module: M) -> (M, Vec<NormMode>) {
    let (module, sites) = norm_sites(module);
    (module, sites.into_iter().map(|s| s.mode).collect())
}

/// Every [`Norm`](crate::Norm) in `module`, in tree order, with its path, settings and mode.
pub fn norm_sites<M: Module>(module: M) -> (M, Vec<NormSite>) {
    match run_tree_op(TreeOp::ReadSites(Vec::new()), module) {
        (module, TreeOp::ReadSites(sites), _) => (module, sites),
        (module, _, _) => (module, Vec::new()),
    }
}
