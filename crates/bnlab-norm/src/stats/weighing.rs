//! Inference example weighing (Summers & Dinneen §3.1, eq. 3): each example is normalized with
//! α·(its own moments) + (1 − α)·(the population moments). Written once here for the fused and
//! the composed paths.

use burn::tensor::Tensor;

use crate::Norm;
use crate::tensors::{rows_for, widen};

/// Per example and channel group, the example-weighed mean and variance ([N, K] each, in the
/// dtype of `s1`) from the example's Σx and Σx² over `values` values and the population mean
/// and variance of its set (`pop_mean`, `pop_var`, [N, K], same dtype):
/// μ = α·Σx/n + (1 − α)·m and σ² = α·Σx²/n + (1 − α)·(v + m²) − μ², at least 0.
pub(crate) fn example_weighed(
    alpha: f64,
    [s1, s2]: [Tensor<2>; 2],
    values: f64,
    [pop_mean, pop_var]: [Tensor<2>; 2],
) -> (Tensor<2>, Tensor<2>) {
    let m_sq = pop_var + pop_mean.clone().square();
    let mean = s1.mul_scalar(alpha).div_scalar(values) + pop_mean.mul_scalar(1.0 - alpha);
    let var = (s2.mul_scalar(alpha).div_scalar(values) + m_sq.mul_scalar(1.0 - alpha)
        - mean.clone().square())
    .clamp_min(0.0);
    (mean, var)
}

impl Norm {
    /// [`example_weighed`] with this layer's population statistics, for examples whose
    /// population sets are `pop_of`; Σx and Σx² are [N, K] in the accumulation dtype.
    pub(crate) fn weighed_stats(
        &self,
        alpha: f64,
        sums: [Tensor<2>; 2],
        values: f64,
        pop_of: &[usize],
    ) -> (Tensor<2>, Tensor<2>) {
        let device = sums[0].device();
        let acc = Some(sums[0].dtype());
        let population = |t: Tensor<2>| widen(rows_for(t.to_device(&device), pop_of), acc);
        let pop = [
            population(self.state.running_mean()),
            population(self.state.running_var()),
        ];
        example_weighed(alpha, sums, values, pop)
    }
}
