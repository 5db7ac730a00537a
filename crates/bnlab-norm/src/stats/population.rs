//! PreciseBN's population statistics (Wu & Johnson §3, A.2): the batches seen in `Collect`
//! mode are summed on the device ([`Accumulator`]), then turned into population statistics by a
//! [`PopulationEstimator`]: eq. 2, the pooled variance of all samples,
//! `E[μ² + σ²] − E[μ]²`, or eq. 3, the mean of the batch variances.

use burn::tensor::{DType, Tensor, TensorCreationOptions, TensorData};
use serde::{Deserialize, Serialize};

use crate::tensors::to_f64;
use crate::{NormError, VarianceStorage};

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

/// The sums of the batches seen in `Collect` mode, per population set and channel group.
///
/// The sums stay on the device (f64 where it has f64, else f32 with Kahan compensation), so
/// that collecting statistics never waits for a GPU; [`Accumulator::totals`] reads them once,
/// when the statistics are finalized. The per-set value counts are known on the host.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accumulator {
    /// Batches accumulated.
    pub batches: usize,
    /// Σn per population set.
    pub count: Vec<f64>,
    /// [4, P, K]: Σn·μ, Σn·(μ² + σ²), Σn·σ²·n/(n−1) (eq. 3, unbiased storage) and Σn·σ² (eq. 3,
    /// biased storage).
    sums: Option<Tensor<3>>,
    /// The Kahan compensation of `sums`, for devices without f64.
    compensation: Option<Tensor<3>>,
}

/// The accumulator's sums read back to the host, row-major [P, K] each.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    /// Σn per population set.
    pub count: Vec<f64>,
    /// Σn·μ.
    pub sum: Vec<f64>,
    /// Σn·(μ² + σ²).
    pub sum_sq: Vec<f64>,
    /// Σn·σ²·n/(n−1).
    pub unbiased_var: Vec<f64>,
    /// Σn·σ².
    pub biased_var: Vec<f64>,
}

impl Accumulator {
    /// Adds one batch: per set p the value count `n[p]` and the sums of x and x² ([P, K] on
    /// the device, in the accumulation dtype). Sets without values add nothing.
    pub fn add(&mut self, n: &[f64], sum: Tensor<2>, sum_sq: Tensor<2>) {
        let device = sum.device();
        let dtype = sum.dtype();
        let p = n.len();
        let col = |v: Vec<f64>| {
            Tensor::<2>::from_data(
                TensorData::new(v, [p, 1]),
                TensorCreationOptions::new(device.clone()).with_dtype(dtype),
            )
        };
        // n·σ²·n/(n−1) is written as the host loops wrote it, ((σ²·n)·n)/(n−1), so f64
        // results stay bit for bit what they were; sets with n ≤ 1 add 0
        let np = col(n.iter().map(|&c| c.max(1.0)).collect());
        let np_unbiased = col(n.iter().map(|&c| if c > 1.0 { c } else { 0.0 }).collect());
        let np_less_1 = col(n
            .iter()
            .map(|&c| if c > 1.0 { c - 1.0 } else { 1.0 })
            .collect());
        let mean = sum.clone() / np.clone();
        let var = (sum_sq.clone() / np.clone() - mean.clone() * mean).clamp_min(0.0);
        let biased = var * np;
        let unbiased = biased.clone() * np_unbiased / np_less_1;
        let batch = Tensor::stack::<3>(vec![sum, sum_sq, unbiased, biased], 0).detach();
        if self.count.len() != p {
            *self = Accumulator {
                count: vec![0.0; p],
                ..Accumulator::default()
            };
        }
        self.batches += 1;
        for (total, &np) in self.count.iter_mut().zip(n) {
            if np > 0.0 {
                *total += np;
            }
        }
        let (sums, compensation) = match self.sums.take() {
            None => (batch.clone(), batch.zeros_like()),
            Some(sums) => {
                let sums = sums.to_device(&device);
                match self.compensation.take() {
                    // f64: a plain sum
                    None => {
                        let zeros = batch.zeros_like();
                        (sums + batch, zeros)
                    }
                    // Kahan: y = batch − c, t = sums + y, c = (t − sums) − y
                    Some(c) => {
                        let y = batch - c.to_device(&device);
                        let t = sums.clone() + y.clone();
                        let c = (t.clone() - sums) - y;
                        (t, c)
                    }
                }
            }
        };
        self.compensation = (dtype != DType::F64).then_some(compensation);
        self.sums = Some(sums);
    }

    /// The sums read back to the host (one read), or `None` before the first batch.
    pub fn totals(&self) -> Result<Option<Totals>, NormError> {
        let Some(sums) = &self.sums else {
            return Ok(None);
        };
        let values = to_f64(sums.clone(), "the PreciseBN sums")?;
        let len = values.len() / 4;
        let part = |i: usize| values[i * len..(i + 1) * len].to_vec();
        Ok(Some(Totals {
            count: self.count.clone(),
            sum: part(0),
            sum_sq: part(1),
            unbiased_var: part(2),
            biased_var: part(3),
        }))
    }
}

impl Totals {
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

#[cfg(test)]
mod tests {
    use super::Accumulator;
    use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};

    fn sums(v: f64, dtype: DType) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(vec![v], [1, 1]),
            TensorCreationOptions::new(Device::flex()).with_dtype(dtype),
        )
    }

    /// f32 sums are Kahan-compensated: 20,000 batches whose sums a plain f32 running sum
    /// rounds away (1 + 1e-4·i/n … added to a total near 2·10⁴) keep the f64 total to f32's
    /// resolution, where the plain f32 sum is off by far more.
    #[test]
    fn f32_sums_are_compensated() {
        let batches = 20_000;
        let n = 1.0;
        let mut acc = Accumulator::default();
        let (mut exact, mut plain) = (0.0f64, 0.0f32);
        for i in 0..batches {
            let v = 1.0 + 1e-4 * (i % 7) as f64 / 7.0 + 1e-5;
            let v32 = v as f32;
            acc.add(&[n], sums(v32 as f64, DType::F32), sums(0.0, DType::F32));
            exact += v32 as f64;
            plain += v32;
        }
        let totals = acc.totals().unwrap().unwrap();
        let got = totals.sum[0];
        let ulp = exact * f32::EPSILON as f64;
        assert!((got - exact).abs() <= ulp, "compensated {got} vs {exact}");
        assert!(
            (plain as f64 - exact).abs() > 4.0 * ulp,
            "the test must be one a plain f32 sum fails: {plain} vs {exact}"
        );
        assert_eq!(totals.count, vec![batches as f64]);
    }

    /// f64 sums and the eq. 3 terms equal the host loops' arithmetic bit for bit, and sets
    /// without values add nothing.
    #[test]
    fn f64_sums_match_the_host_arithmetic() {
        let mut acc = Accumulator::default();
        let batches = [
            ([5.0, 0.0], [3.5, 0.0], [4.25, 0.0]),
            ([7.0, 1.0], [-2.0, 0.3], [9.0, 0.09]),
        ];
        let (mut sum, mut sq, mut unb, mut bia) = ([0.0; 2], [0.0; 2], [0.0; 2], [0.0; 2]);
        for (n, s1, s2) in batches {
            let t = |v: [f64; 2]| {
                Tensor::<2>::from_data(
                    TensorData::new(v.to_vec(), [2, 1]),
                    TensorCreationOptions::new(Device::flex()).with_dtype(DType::F64),
                )
            };
            acc.add(&n, t(s1), t(s2));
            for p in 0..2 {
                let np = n[p];
                if np <= 0.0 {
                    continue;
                }
                let mean = s1[p] / np;
                let var = (s2[p] / np - mean * mean).max(0.0);
                sum[p] += s1[p];
                sq[p] += s2[p];
                bia[p] += np * var;
                unb[p] += if np > 1.0 {
                    np * var * np / (np - 1.0)
                } else {
                    0.0
                };
            }
        }
        let totals = acc.totals().unwrap().unwrap();
        assert_eq!(totals.count, vec![12.0, 1.0]);
        assert_eq!(totals.sum, sum.to_vec());
        assert_eq!(totals.sum_sq, sq.to_vec());
        assert_eq!(totals.unbiased_var, unb.to_vec());
        assert_eq!(totals.biased_var, bia.to_vec());
    }
}
