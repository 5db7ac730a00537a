//! PreciseBN's population statistics (Wu & Johnson §3, A.2): the batches seen in `Collect`
//! mode are summed in f64 ([`Accumulator`]), then turned into population statistics by a
//! [`PopulationEstimator`]: eq. 2, the pooled variance of all samples,
//! `E[μ² + σ²] − E[μ]²`, or eq. 3, the mean of the batch variances.

use serde::{Deserialize, Serialize};

use crate::VarianceStorage;

/// How `finalize` turns collected batch statistics into population statistics
/// (Wu & Johnson A.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PopulationEstimator {
    /// Eq. 2: the variance of all collected samples, `E[μ² + σ²] − E[μ]²` (count-weighted).
    #[serde(alias = "Pooled")]
    #[default]
    Pooled,
    /// Eq. 3: the average of the per-batch variances.
    #[serde(alias = "MeanOfVariances")]
    MeanOfVariances,
}

/// Host-side f64 sums of the batches seen in `Collect` mode, per population set and channel group.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accumulator {
    /// Batches accumulated.
    pub batches: usize,
    /// Σn per population set.
    pub count: Vec<f64>,
    /// Σn·μ, row-major [P, K].
    pub sum: Vec<f64>,
    /// Σn·(μ² + σ²), row-major [P, K].
    pub sum_sq: Vec<f64>,
    /// Σn·σ²·n/(n−1) (for eq. 3), row-major [P, K].
    pub unbiased_var: Vec<f64>,
    /// Σn·σ² (for eq. 3 with biased storage), row-major [P, K].
    pub biased_var: Vec<f64>,
}

impl Accumulator {
    /// Adds one batch: per set p the value count `n[p]` and the sums of x and x² (row-major [P, K]).
    pub fn add(&mut self, n: &[f64], sum: &[f64], sum_sq: &[f64]) {
        let k = sum.len() / n.len().max(1);
        if self.count.is_empty() {
            self.count = vec![0.0; n.len()];
            self.sum = vec![0.0; sum.len()];
            self.sum_sq = vec![0.0; sum.len()];
            self.unbiased_var = vec![0.0; sum.len()];
            self.biased_var = vec![0.0; sum.len()];
        }
        self.batches += 1;
        for (p, &np) in n.iter().enumerate() {
            if np <= 0.0 {
                continue;
            }
            self.count[p] += np;
            for j in p * k..(p + 1) * k {
                let mean = sum[j] / np;
                let var = (sum_sq[j] / np - mean * mean).max(0.0);
                self.sum[j] += sum[j];
                self.sum_sq[j] += sum_sq[j];
                self.biased_var[j] += np * var;
                self.unbiased_var[j] += if np > 1.0 {
                    np * var * np / (np - 1.0)
                } else {
                    0.0
                };
            }
        }
    }

    /// Population mean and variance, row-major [P, K], by `estimator` and `storage`.
    /// Sets that saw no value keep `None`.
    pub fn finalize(
        &self,
        estimator: PopulationEstimator,
        storage: VarianceStorage,
    ) -> Vec<Option<(Vec<f64>, Vec<f64>)>> {
        let p_sets = self.count.len();
        let k = self.sum.len() / p_sets.max(1);
        (0..p_sets)
            .map(|p| {
                let n = self.count[p];
                if n <= 0.0 {
                    return None;
                }
                let mut means = Vec::with_capacity(k);
                let mut vars = Vec::with_capacity(k);
                for j in p * k..(p + 1) * k {
                    let mean = self.sum[j] / n;
                    let var = match (estimator, storage) {
                        (PopulationEstimator::Pooled, storage) => {
                            let biased = (self.sum_sq[j] / n - mean * mean).max(0.0);
                            match storage {
                                VarianceStorage::Biased => biased,
                                VarianceStorage::Unbiased if n > 1.0 => biased * n / (n - 1.0),
                                VarianceStorage::Unbiased => biased,
                            }
                        }
                        (PopulationEstimator::MeanOfVariances, VarianceStorage::Biased) => {
                            self.biased_var[j] / n
                        }
                        (PopulationEstimator::MeanOfVariances, VarianceStorage::Unbiased) => {
                            self.unbiased_var[j] / n
                        }
                    };
                    means.push(mean);
                    vars.push(var);
                }
                Some((means, vars))
            })
            .collect()
    }
}
