//! The `StatsReducer` hook: how per-unit moments are combined before normalizing (SyncBN).

use burn::tensor::Tensor;

use crate::NormError;

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
}

/// Combines the local moments of a forward pass with those of other workers.
///
/// A reducer must return moments of the same shape, where row r combines row r of every
/// participant by adding counts and sums (count-weighted combination). A participant with no
/// examples contributes zero counts and sums. Gradients must flow through `sum` and `sum_sq`.
pub trait StatsReducer: Send + Sync {
    /// Returns the combined moments.
    fn reduce(&self, local: Moments) -> Result<Moments, NormError>;
}

/// The default: statistics of this process's batch alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalReducer;

impl StatsReducer for LocalReducer {
    fn reduce(&self, local: Moments) -> Result<Moments, NormError> {
        Ok(local)
    }
}
