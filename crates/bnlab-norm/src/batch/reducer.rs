//! The `StatsReducer` hook: how per-unit moments are combined before normalizing (SyncBN).

use burn::tensor::Tensor;

use crate::{NormError, NormMode};

/// Per-row moments of one forward pass: value count, Σx and Σx².
///
/// Rows are the statistic units of the pass (example blocks, in plan order) followed by the
/// population sets; columns are channel groups. Sums are in the accumulation dtype (f64 where
/// the device supports it).
#[derive(Debug, Clone)]
pub struct Moments {
    /// Number of values per row.
    pub count: Vec<f64>,
    /// Σx per row and channel group, [R, K].
    pub sum: Tensor<2>,
    /// Σx² per row and channel group, [R, K].
    pub sum_sq: Tensor<2>,
    /// How many leading rows are statistic units (the rest are population sets). A worker
    /// with no examples has none.
    pub units: usize,
    /// Whether the unit rows are examples' own (GroupNorm, LayerNorm, InstanceNorm), which
    /// no reducer combines across workers.
    pub per_example: bool,
    /// The layer's mode: `Train` (running update), `Collect` (PreciseBN) or a batch-statistics
    /// evaluation.
    pub mode: NormMode,
}

/// Combines the local moments of a forward pass with those of other workers.
///
/// A reducer must return moments of the same shape, where row r combines row r of every
/// participant by adding counts and sums (count-weighted combination). A participant with no
/// examples contributes no unit rows. A reducer that makes unit statistics depend on other
/// workers' examples must also combine the gradient sums of the backward
/// ([`StatsReducer::reduce_grads`]); the layer then runs on the fused path.
pub trait StatsReducer: Send + Sync {
    /// Returns the combined moments.
    fn reduce(&self, local: Moments) -> Result<Moments, NormError>;

    /// Whether unit statistics combine other workers' examples, so that the backward needs
    /// [`StatsReducer::reduce_grads`].
    fn syncs_units(&self) -> bool {
        false
    }

    /// Combines, in the backward, the per-unit sums [Σγ·dy | Σγ·dy·x̂] (2 × units × K values)
    /// with those of the workers the forward combined statistics with. A failure is kept and
    /// reported by [`StatsReducer::take_failure`], since a backward cannot return errors.
    fn reduce_grads(&self, _sums: &mut [f64]) {}

    /// The first failure of [`StatsReducer::reduce_grads`] since the last call, if any.
    fn take_failure(&self) -> Option<NormError> {
        None
    }
}

/// The default: statistics of this process's batch alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalReducer;

impl StatsReducer for LocalReducer {
    fn reduce(&self, local: Moments) -> Result<Moments, NormError> {
        Ok(local)
    }
}
