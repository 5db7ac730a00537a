//! Batch moments of one forward pass: Σx and Σx² per example and channel group, combined into
//! the statistic units of the batch plan and pooled per population set, through the stats
//! reducer (local, or synced across workers); and what each mode records of them (the running
//! update in `Train`, the PreciseBN accumulator in `Collect`).

use burn::tensor::{DType, Tensor, TensorCreationOptions, TensorData};

use crate::batch::Partition;
use crate::tensors::{accumulation_dtype, member_sums, membership, to_f64_pair, widen};
use crate::{LocalReducer, Moments, Norm, NormError, NormMode, StatsReducer};

/// Batch statistics of one forward pass.
pub(crate) struct BatchStats {
    /// Per example block, [B, K], accumulation dtype.
    pub(crate) mean: Tensor<2>,
    pub(crate) var: Tensor<2>,
    /// Values per example block (after the reducer).
    pub(crate) unit_count: Vec<f64>,
    /// Pooled over each population set: value count, Σx, Σx² ([P, K], detached).
    pub(crate) pop_count: Vec<f64>,
    pub(crate) pop_sum: Tensor<2>,
    pub(crate) pop_sum_sq: Tensor<2>,
}

impl Norm {
    /// Train: the running-statistics update; Collect: the PreciseBN accumulator.
    pub(crate) fn record_batch_stats(&self, stats: &BatchStats) -> Result<(), NormError> {
        match self.state.mode {
            NormMode::Train => self.update_running(stats),
            NormMode::Collect => self.accumulate(stats)?,
            _ => {}
        }
        Ok(())
    }

    /// Adds this batch's pooled statistics to the PreciseBN accumulator.
    pub(crate) fn accumulate(&self, stats: &BatchStats) -> Result<(), NormError> {
        self.state
            .collected
            .lock()
            .map_err(|_| NormError::Reducer("accumulator lock poisoned".into()))?
            .add(
                &stats.pop_count,
                stats.pop_sum.clone(),
                stats.pop_sum_sq.clone(),
            );
        Ok(())
    }

    /// Per example and channel group: Σx and Σx² ([N, K], accumulation dtype) and values per entry.
    pub(crate) fn example_sums(
        &self,
        x3: &Tensor<3>,
        acc: Option<DType>,
    ) -> (Tensor<2>, Tensor<2>, f64) {
        let [n, _, s] = x3.dims();
        let (cpg, k) = self.config.channel_grouping();
        let xg = widen(x3.clone().reshape([n, k, cpg * s]), acc);
        let s1 = xg.clone().sum_dim(2).reshape([n, k]);
        let s2 = xg.square().sum_dim(2).reshape([n, k]);
        (s1, s2, (cpg * s) as f64)
    }

    /// Batch statistics per example block and pooled per population set, combined by the reducer.
    pub(crate) fn batch_stats(
        &self,
        x3: &Tensor<3>,
        plan: &Partition,
        shape: &[usize],
    ) -> Result<BatchStats, NormError> {
        let (s1, s2, values) = self.example_sums(x3, accumulation_dtype(&x3.device()));
        self.batch_stats_from(s1, s2, values, plan, shape)
    }

    /// [`Self::batch_stats`] from Σx and Σx² per example and channel group ([N, K]) over
    /// `values` values each.
    pub(crate) fn batch_stats_from(
        &self,
        s1: Tensor<2>,
        s2: Tensor<2>,
        values: f64,
        plan: &Partition,
        shape: &[usize],
    ) -> Result<BatchStats, NormError> {
        let device = s1.device();
        let dtype = s1.dtype();
        let n = plan.block_of.len();
        let b = plan.blocks.len();
        let (unit_sum, unit_sq) = if plan.is_identity() {
            (s1.clone(), s2.clone())
        } else if b == 1 {
            (s1.clone().sum_dim(0), s2.clone().sum_dim(0))
        } else {
            let a = membership(b, n, |i| plan.block_of[i], &device, dtype);
            (
                member_sums(a.clone(), s1.clone()),
                member_sums(a, s2.clone()),
            )
        };
        let p = self.config.population_sets();
        let (s1d, s2d) = (s1.detach(), s2.detach());
        let (pop_sum, pop_sq) = if p == 1 {
            (s1d.sum_dim(0), s2d.sum_dim(0))
        } else {
            let m = membership(p, n, |i| plan.pop_of[i], &device, dtype);
            (member_sums(m.clone(), s1d), member_sums(m, s2d))
        };
        let mut count: Vec<f64> = plan
            .blocks
            .iter()
            .map(|bl| bl.len() as f64 * values)
            .collect();
        let mut pop_count = vec![0.0; p];
        for &set in &plan.pop_of {
            pop_count[set] += values;
        }
        count.extend_from_slice(&pop_count);
        let local = Moments {
            count,
            sum: Tensor::cat(vec![unit_sum, pop_sum], 0),
            sum_sq: Tensor::cat(vec![unit_sq, pop_sq], 0),
            units: b,
            per_example: self.config.unit.is_per_example(),
            mode: self.state.mode,
        };
        let combined = match &self.state.reducer {
            Some(r) => r.reduce(local)?,
            None => LocalReducer.reduce(local)?,
        };
        // a worker without examples takes the unit rows of its group
        let b = if n == 0 { combined.units } else { b };
        if combined.count.len() != b + p || combined.units != b {
            return Err(NormError::Reducer(format!(
                "returned {} rows ({} units), expected {} ({b} units)",
                combined.count.len(),
                combined.units,
                b + p
            )));
        }
        let (cpg, _) = self.config.channel_grouping();
        if let Some(i) = combined.count[..b].iter().position(|&c| c < 2.0) {
            return Err(NormError::TooFewValues {
                shape: shape.to_vec(),
                unit: format!(
                    "{:?} over examples {:?} × {cpg} channel(s) × {} position(s)",
                    self.config.unit,
                    plan.blocks.get(i).map_or(&[][..], |b| &b[..]),
                    values as usize / cpg
                ),
                values: combined.count[i] as usize,
            });
        }
        let counts = |range: std::ops::Range<usize>| {
            let v: Vec<f64> = combined.count[range.clone()].to_vec();
            Tensor::<2>::from_data(
                TensorData::new(v, [range.len(), 1]),
                TensorCreationOptions::new(device.clone()).with_dtype(dtype),
            )
        };
        let unit_n = counts(0..b);
        let mean = combined.sum.clone().narrow(0, 0, b) / unit_n.clone();
        let var = (combined.sum_sq.clone().narrow(0, 0, b) / unit_n - mean.clone().square())
            .clamp_min(0.0);
        if self.config.check_finite {
            let (m, v) = to_f64_pair(mean.clone(), var.clone(), "the batch statistics")?;
            for (what, values) in [("mean", m), ("variance", v)] {
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(NormError::NonFinite {
                        shape: shape.to_vec(),
                        what: what.into(),
                    });
                }
            }
        }
        Ok(BatchStats {
            mean,
            var,
            unit_count: combined.count[..b].to_vec(),
            pop_count: combined.count[b..].to_vec(),
            pop_sum: combined.sum.narrow(0, b, p).detach(),
            pop_sum_sq: combined.sum_sq.narrow(0, b, p).detach(),
        })
    }
}
