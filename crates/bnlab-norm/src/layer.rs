//! The [`Norm`] module: one normalization layer with every batch, statistics and affine choice.

use burn::module::{Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};

use crate::batch::{Partition, plan};
use crate::fused::{self, FusedStats};
use crate::state::NormState;
use crate::tensors::{accumulation_dtype, is_autodiff, membership, rows_for, to_f64_pair, widen};
use crate::{
    Affine, Kernel, LocalReducer, Moments, NormConfig, NormError, NormMode, RunningStats, StatUnit,
    StatsReducer, StatsSource, VarianceStorage,
};

/// A normalization layer for inputs [N, C] and [N, C, ...] (see [`NormConfig`]).
///
/// Its mode is explicit ([`NormMode`]) and never inferred from autodiff; set it with
/// [`Norm::set_mode`] or, for a whole model, [`set_norm_mode`](crate::set_norm_mode).
/// Affine parameters have shape [A, C], with A = 1 or the number of domains.
#[derive(Module, Debug)]
pub struct Norm {
    /// γ (role `NormGamma`), [A, C].
    pub gamma: Option<Param<Tensor<2>>>,
    /// β (role `NormBeta`), [A, C].
    pub beta: Option<Param<Tensor<2>>>,
    /// γ0 of the A2 tail (role `NormExtra`), [A, C].
    pub gamma0: Option<Param<Tensor<2>>>,
    /// w_v of RBN/IEBN (role `NormExtra`), [A, C].
    pub gate_weight: Option<Param<Tensor<2>>>,
    /// w_b of RBN/IEBN and their minus variants (role `NormExtra`), [A, C].
    pub gate_bias: Option<Param<Tensor<2>>>,
    /// γ̂ of the scale-only input normalization (role `InputNormGamma`), [A, C].
    pub input_gamma: Option<Param<Tensor<2>>>,
    /// Mode, running statistics and PreciseBN accumulator.
    pub state: NormState,
    /// The settings this layer was built with.
    #[module(skip)]
    pub config: NormConfig,
}

impl NormConfig {
    /// Builds the layer on `device`, or says which setting is invalid.
    pub fn init(&self, device: &Device) -> Result<Norm, NormError> {
        self.validate()?;
        let c = self.num_features;
        let a = self.affine_sets();
        let param = |v: f64| Some(Param::from_tensor(Tensor::<2>::full([a, c], v, device)));
        let (mut gamma, mut beta, mut gamma0, mut gate_weight, mut gate_bias, mut input_gamma) =
            (None, None, None, None, None, None);
        match self.affine {
            Affine::Standard {
                gamma_init,
                beta_init,
            } => (gamma, beta) = (param(gamma_init), param(beta_init)),
            Affine::Off => {}
            Affine::A1 { gamma_init } => (gamma, beta) = (param(gamma_init), param(0.0)),
            Affine::A2 { gamma_init } => {
                (gamma, beta, gamma0) = (param(gamma_init), param(0.0), param(1.0))
            }
            Affine::Rbn { gamma_init } | Affine::Iebn { gamma_init } => {
                let wb = if matches!(self.affine, Affine::Rbn { .. }) {
                    1.0
                } else {
                    -1.0
                };
                (gamma, beta) = (param(gamma_init), param(0.0));
                (gate_weight, gate_bias) = (param(0.0), param(wb));
            }
            Affine::RbnMinus { gamma_init } | Affine::IebnMinus { gamma_init } => {
                let wb = if matches!(self.affine, Affine::RbnMinus { .. }) {
                    1.0
                } else {
                    -1.0
                };
                (gamma, beta, gate_bias) = (param(gamma_init), param(0.0), param(wb));
            }
            Affine::ScaleOnly { gamma_init } => input_gamma = param(gamma_init),
        }
        let (_, k) = self.channel_grouping();
        Ok(Norm {
            gamma,
            beta,
            gamma0,
            gate_weight,
            gate_bias,
            input_gamma,
            state: NormState::new(self, self.population_sets(), k, device),
            config: self.clone(),
        })
    }
}

/// Batch statistics of one forward pass.
struct BatchStats {
    /// Per example block, [B, K], accumulation dtype.
    mean: Tensor<2>,
    var: Tensor<2>,
    /// Values per example block (after the reducer).
    unit_count: Vec<f64>,
    /// Pooled over each population set: value count, Σx, Σx² ([P, K], detached).
    pop_count: Vec<f64>,
    pop_sum: Tensor<2>,
    pop_sum_sq: Tensor<2>,
}

impl Norm {
    /// The current mode.
    pub fn mode(&self) -> NormMode {
        self.state.mode
    }

    /// Sets the mode of this layer.
    pub fn set_mode(&mut self, mode: NormMode) {
        self.state.mode = mode;
    }

    /// This layer with `mode`.
    pub fn with_mode(mut self, mode: NormMode) -> Self {
        self.set_mode(mode);
        self
    }

    /// Forward pass without domain ids.
    ///
    /// # Shapes
    /// - input: `[N, C]` or `[N, C, ...]`
    /// - output: same as input
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        self.forward_domains(input, None)
    }

    /// Forward pass with one domain id per example (required when any domain choice is
    /// `PerDomain`).
    ///
    /// # Shapes
    /// - input: `[N, C]` or `[N, C, ...]`
    /// - domains: `N` ids, each `< domains.count`
    /// - output: same as input
    pub fn forward_domains<const D: usize>(
        &self,
        input: Tensor<D>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<D>, NormError> {
        let shape = input.dims();
        if D < 2 {
            return Err(NormError::Rank {
                shape: shape.to_vec(),
                rank: D,
            });
        }
        let c = self.config.num_features;
        if shape[1] != c {
            return Err(NormError::ChannelMismatch {
                shape: shape.to_vec(),
                expected: c,
                got: shape[1],
            });
        }
        let n = shape[0];
        let s: usize = shape[2..].iter().product();
        let batch_stats = self.state.mode.uses_batch_stats();
        // a worker without examples still takes part in its group's statistics
        let takes_part = batch_stats && self.state.reducer.is_some();
        if s == 0 || (n == 0 && !takes_part) {
            return Ok(input);
        }
        let x3: Tensor<3> = input.reshape([n, c, s]);
        let plan = plan(&self.config, n, domains, batch_stats)?;
        let fused = self.uses_fused(&x3);
        if self.synced_units() && batch_stats && !fused && (n == 0 || is_autodiff(&x3)) {
            return Err(NormError::Reducer(
                "statistics synchronized across workers need the fused path (f32 on Flex or a GPU, kernel = Auto) for training and for empty batches".into(),
            ));
        }
        if fused {
            return Ok(self.forward_fused(x3, &plan, &shape)?.reshape(shape));
        }
        let xhat = if self.config.unit == StatUnit::None {
            x3.clone()
        } else {
            match self.state.mode {
                NormMode::Train | NormMode::Collect | NormMode::Eval(StatsSource::MiniBatch) => {
                    self.forward_batch(&x3, &plan, &shape)?
                }
                NormMode::Eval(StatsSource::Population) | NormMode::Frozen => {
                    self.forward_population(&x3, &plan)
                }
                NormMode::Eval(StatsSource::ExampleWeighed { alpha }) => {
                    self.forward_weighed(&x3, &plan, alpha)
                }
            }
        };
        self.record_outliers(&xhat);
        Ok(self.affine(&x3, xhat, &plan).reshape(shape))
    }

    /// Counts |x̂| above the probe's threshold, when a probe is attached.
    fn record_outliers(&self, xhat: &Tensor<3>) {
        if let Some(probe) = &self.state.outliers
            && let Ok(mut o) = probe.lock()
        {
            let over = xhat
                .clone()
                .abs()
                .greater_elem(o.threshold)
                .int()
                .sum()
                .into_scalar::<i64>();
            o.over += over.max(0) as u64;
            o.total += xhat.shape().num_elements() as u64;
        }
    }

    /// Whether this call takes the fused path: asked for and supported by the backend.
    fn uses_fused(&self, x3: &Tensor<3>) -> bool {
        self.config.kernel == Kernel::Auto
            && self.config.unit != StatUnit::None
            && fused::supported(x3)
    }

    /// Whether batch statistics of this layer's units combine other workers' examples (its
    /// reducer syncs units, and units span examples).
    fn synced_units(&self) -> bool {
        !self.config.unit.is_per_example()
            && self.state.reducer.as_ref().is_some_and(|r| r.syncs_units())
    }

    /// Every mode on the fused path. Affine tails that depend on x̂ itself (RBN/IEBN), and the
    /// outlier probe, apply the composed affine to the fused x̂.
    fn forward_fused(
        &self,
        x3: Tensor<3>,
        plan: &Partition,
        shape: &[usize],
    ) -> Result<Tensor<3>, NormError> {
        let [n, c, _] = x3.dims();
        let folded = match self.state.outliers {
            Some(_) => None,
            None => self.folded_affine(),
        };
        let Some((scale, shift)) = folded else {
            let ones = Tensor::<2>::ones([1, c], &x3.device());
            let (zeros, rows) = (ones.zeros_like(), vec![0; n]);
            let xhat = self.fused_normalize(x3.clone(), [ones, zeros], rows, plan, shape)?;
            self.record_outliers(&xhat);
            return Ok(self.affine(&x3, xhat, plan));
        };
        self.fused_normalize(x3, [scale, shift], plan.affine_of.clone(), plan, shape)
    }

    /// y = x̂·scale + shift ([A, C] each, row `affine_row[i]` for example i) with this mode's
    /// statistics: from one read pass on the host, then one normalize + affine pass; per-example
    /// units with batch statistics are normalized unit by unit while in cache.
    fn fused_normalize(
        &self,
        x3: Tensor<3>,
        [scale, shift]: [Tensor<2>; 2],
        affine_row: Vec<usize>,
        plan: &Partition,
        shape: &[usize],
    ) -> Result<Tensor<3>, NormError> {
        let [n, c, s] = x3.dims();
        let (cpg, k) = self.config.channel_grouping();
        let values = (cpg * s) as f64;
        let device = x3.device();
        let acc = accumulation_dtype(&device);
        let host = |v: Vec<f64>| {
            Tensor::<2>::from_data(
                TensorData::new(v, [n, k]),
                TensorCreationOptions::new(device.clone()).with_dtype(acc.unwrap_or(DType::F32)),
            )
        };
        let mut fused_plan = FusedStats {
            shape: [n, c, s],
            cpg,
            stat_row: (0..n).collect(),
            affine_row,
            mean: Vec::new(),
            rstd: Vec::new(),
            count: vec![values; n],
            alpha: 1.0,
            epsilon: self.config.epsilon,
            sync: None,
        };
        let mode = self.state.mode;
        let synced = mode.uses_batch_stats() && self.synced_units();
        if mode.uses_batch_stats() && plan.is_identity() && !synced {
            let (y, s1, s2) = fused::normalize_units(x3, scale, shift, fused_plan)?;
            let stats = self.batch_stats_from(host(s1), host(s2), values, plan, shape)?;
            self.record_batch_stats(&stats)?;
            return Ok(y);
        }
        let (stat_row, mean, var, count, alpha) = match mode {
            NormMode::Train | NormMode::Collect | NormMode::Eval(StatsSource::MiniBatch) => {
                let (s1, s2) = fused::example_sums(&x3, cpg)?;
                let stats = self.batch_stats_from(host(s1), host(s2), values, plan, shape)?;
                self.record_batch_stats(&stats)?;
                let (mean, var) = to_f64_pair(stats.mean, stats.var, "the batch statistics")?;
                (plan.block_of.clone(), mean, var, stats.unit_count, 1.0)
            }
            NormMode::Eval(StatsSource::Population) | NormMode::Frozen => {
                let (mean, var) = to_f64_pair(
                    self.state.running_mean(),
                    self.state.running_var(),
                    "the population statistics",
                )?;
                let rows = mean.len() / k.max(1);
                (plan.pop_of.clone(), mean, var, vec![1.0; rows], 0.0)
            }
            NormMode::Eval(StatsSource::ExampleWeighed { alpha }) => {
                let (s1, s2) = fused::example_sums(&x3, cpg)?;
                let (pop_mean, pop_var) = to_f64_pair(
                    self.state.running_mean(),
                    self.state.running_var(),
                    "the population statistics",
                )?;
                let (mut mean, mut var) = (Vec::with_capacity(n * k), Vec::with_capacity(n * k));
                for i in 0..n {
                    for g in 0..k {
                        let (m, v) = (
                            pop_mean[plan.pop_of[i] * k + g],
                            pop_var[plan.pop_of[i] * k + g],
                        );
                        let mu = alpha * s1[i * k + g] / values + (1.0 - alpha) * m;
                        let sq = alpha * s2[i * k + g] / values + (1.0 - alpha) * (v + m * m);
                        mean.push(mu);
                        var.push((sq - mu * mu).max(0.0));
                    }
                }
                ((0..n).collect(), mean, var, vec![values; n], alpha)
            }
        };
        let eps = self.config.epsilon;
        fused_plan.stat_row = stat_row;
        fused_plan.rstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        fused_plan.mean = mean;
        fused_plan.count = count;
        fused_plan.alpha = alpha;
        if synced {
            fused_plan.sync = self.state.reducer.clone().map(fused::GradSync);
        }
        Ok(fused::apply(x3, scale, shift, fused_plan))
    }

    /// Train: the running-statistics update; Collect: the PreciseBN accumulator.
    fn record_batch_stats(&self, stats: &BatchStats) -> Result<(), NormError> {
        match self.state.mode {
            NormMode::Train => self.update_running(stats),
            NormMode::Collect => self.accumulate(stats)?,
            _ => {}
        }
        Ok(())
    }

    /// The affine tail as y = x̂·scale + shift with scale and shift [A, C] computed from the
    /// parameters, when it has that form (every tail but RBN/IEBN, which depend on x̂ itself).
    fn folded_affine(&self) -> Option<(Tensor<2>, Tensor<2>)> {
        let val = |p: &Option<Param<Tensor<2>>>| p.as_ref().map(|p| p.val().cast(DType::F32));
        let (gamma, beta) = (val(&self.gamma), val(&self.beta));
        match self.config.affine {
            Affine::Standard { .. } => Some((gamma?, beta?)),
            Affine::A1 { .. } => {
                let (g, b) = (gamma?, beta?);
                Some((g.clone(), b * g))
            }
            Affine::A2 { .. } => {
                let (g, b, g0) = (gamma?, beta?, val(&self.gamma0)?);
                Some((g0 * g.clone(), b * g))
            }
            Affine::RbnMinus { .. } | Affine::IebnMinus { .. } => {
                Some((gamma? * sigmoid(val(&self.gate_bias)?), beta?))
            }
            Affine::ScaleOnly { .. } => {
                let g = val(&self.input_gamma)?;
                Some((g.clone(), g.zeros_like()))
            }
            Affine::Off | Affine::Rbn { .. } | Affine::Iebn { .. } => None,
        }
    }

    /// `Train`, `Collect` and `Eval(MiniBatch)`: batch statistics under the batch policy,
    /// recorded as the mode asks (running update, PreciseBN accumulator, nothing).
    fn forward_batch(
        &self,
        x3: &Tensor<3>,
        plan: &Partition,
        shape: &[usize],
    ) -> Result<Tensor<3>, NormError> {
        let stats = self.batch_stats(x3, plan, shape)?;
        self.record_batch_stats(&stats)?;
        Ok(self.normalize(x3, stats.mean, stats.var, &plan.block_of))
    }

    /// Adds this batch's pooled statistics to the PreciseBN accumulator.
    fn accumulate(&self, stats: &BatchStats) -> Result<(), NormError> {
        let (sum, sum_sq) = to_f64_pair(
            stats.pop_sum.clone(),
            stats.pop_sum_sq.clone(),
            "the PreciseBN sums",
        )?;
        self.state
            .collected
            .lock()
            .map_err(|_| NormError::Reducer("accumulator lock poisoned".into()))?
            .add(&stats.pop_count, &sum, &sum_sq);
        Ok(())
    }

    /// `Eval(Population)` and `Frozen`: running statistics as constants.
    fn forward_population(&self, x3: &Tensor<3>, plan: &Partition) -> Tensor<3> {
        let device = x3.device();
        let mean = self.state.running_mean().to_device(&device).detach();
        let var = self.state.running_var().to_device(&device).detach();
        self.normalize(x3, mean, var, &plan.pop_of)
    }

    /// `Eval(ExampleWeighed)`: Summers & Dinneen eq. 3.
    fn forward_weighed(&self, x3: &Tensor<3>, plan: &Partition, alpha: f64) -> Tensor<3> {
        let device = x3.device();
        let acc = accumulation_dtype(&device);
        let (s1, s2, values) = self.example_sums(x3, acc);
        let m = widen(
            rows_for(self.state.running_mean().to_device(&device), &plan.pop_of),
            acc,
        );
        let v = widen(
            rows_for(self.state.running_var().to_device(&device), &plan.pop_of),
            acc,
        );
        let m_sq = v + m.clone().square();
        let mean = s1.div_scalar(values).mul_scalar(alpha) + m.mul_scalar(1.0 - alpha);
        let var = (s2.div_scalar(values).mul_scalar(alpha) + m_sq.mul_scalar(1.0 - alpha)
            - mean.clone().square())
        .clamp_min(0.0);
        let n = x3.dims()[0];
        let identity: Vec<usize> = (0..n).collect();
        self.normalize(x3, mean, var, &identity)
    }

    /// Per example and channel group: Σx and Σx² ([N, K], accumulation dtype) and values per entry.
    fn example_sums(&self, x3: &Tensor<3>, acc: Option<DType>) -> (Tensor<2>, Tensor<2>, f64) {
        let [n, _, s] = x3.dims();
        let (cpg, k) = self.config.channel_grouping();
        let xg = widen(x3.clone().reshape([n, k, cpg * s]), acc);
        let s1 = xg.clone().sum_dim(2).reshape([n, k]);
        let s2 = xg.square().sum_dim(2).reshape([n, k]);
        (s1, s2, (cpg * s) as f64)
    }

    /// Batch statistics per example block and pooled per population set, combined by the reducer.
    fn batch_stats(
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
    fn batch_stats_from(
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
            (a.clone().matmul(s1.clone()), a.matmul(s2.clone()))
        };
        let p = self.config.population_sets();
        let (s1d, s2d) = (s1.detach(), s2.detach());
        let (pop_sum, pop_sq) = if p == 1 {
            (s1d.sum_dim(0), s2d.sum_dim(0))
        } else {
            let m = membership(p, n, |i| plan.pop_of[i], &device, dtype);
            (m.clone().matmul(s1d), m.matmul(s2d))
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

    /// Moves the running statistics towards this batch's pooled statistics.
    fn update_running(&self, stats: &BatchStats) {
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

    /// x̂ = (x − mean[row]) / √(var[row] + ε) with `rows[i]` the stats row of example i.
    ///
    /// `mean` and `var` are [R, K] per channel group; the result has x's dtype.
    fn normalize(
        &self,
        x3: &Tensor<3>,
        mean: Tensor<2>,
        var: Tensor<2>,
        rows: &[usize],
    ) -> Tensor<3> {
        let [n, c, s] = x3.dims();
        let (cpg, k) = self.config.channel_grouping();
        let dtype = x3.dtype();
        let mean = rows_for(mean, rows);
        // rstd = 1/√v written so that its gradient takes only sums and products: Burn
        // differentiates √ through powf, and Vulkan's SPIR-V has no f64 powf (GLSL.std.450 Pow
        // is 16/32-bit only), so an f64 variance failed to compile there. The value is 1/√v
        // itself, since v − v.detach() is 0; its derivative is −½·v^(−3/2).
        let v = rows_for(var, rows).add_scalar(self.config.epsilon);
        let inv = v.clone().detach().sqrt().recip();
        let slope = (inv.clone() * inv.clone() * inv.clone()).mul_scalar(-0.5);
        let rstd = inv + (v.clone() - v.detach()) * slope;
        let r = mean.dims()[0];
        let mean = mean.cast(dtype).reshape([r, k, 1]);
        let rstd = rstd.cast(dtype).reshape([r, k, 1]);
        let xg = x3.clone().reshape([n, k, cpg * s]);
        ((xg - mean) * rstd).reshape([n, c, s])
    }

    /// The affine parameter `p` as [rows, C, 1] for the examples' affine sets.
    fn per_example(&self, p: &Param<Tensor<2>>, plan: &Partition) -> Tensor<3> {
        let t = rows_for(p.val(), &plan.affine_of);
        let [r, c] = t.dims();
        t.reshape([r, c, 1])
    }

    /// Applies the affine tail to x̂.
    fn affine(&self, x3: &Tensor<3>, xhat: Tensor<3>, plan: &Partition) -> Tensor<3> {
        let get = |p: &Option<Param<Tensor<2>>>| p.as_ref().map(|p| self.per_example(p, plan));
        let (gamma, beta) = (get(&self.gamma), get(&self.beta));
        match self.config.affine {
            Affine::Off => xhat,
            Affine::ScaleOnly { .. } => match get(&self.input_gamma) {
                Some(g) => xhat * g,
                None => xhat,
            },
            Affine::Standard { .. } => match (gamma, beta) {
                (Some(g), Some(b)) => xhat * g + b,
                _ => xhat,
            },
            Affine::A1 { .. } => match (gamma, beta) {
                (Some(g), Some(b)) => (xhat + b) * g,
                _ => xhat,
            },
            Affine::A2 { .. } => match (gamma, beta, get(&self.gamma0)) {
                (Some(g), Some(b), Some(g0)) => (xhat * g0 + b) * g,
                _ => xhat,
            },
            Affine::Rbn { .. } | Affine::Iebn { .. } => {
                let pooled = match self.config.affine {
                    Affine::Rbn { .. } => xhat.clone().mean_dim(2),
                    _ => x3.clone().mean_dim(2),
                };
                match (gamma, beta, get(&self.gate_weight), get(&self.gate_bias)) {
                    (Some(g), Some(b), Some(wv), Some(wb)) => {
                        xhat * g * sigmoid(pooled * wv + wb) + b
                    }
                    _ => xhat,
                }
            }
            Affine::RbnMinus { .. } | Affine::IebnMinus { .. } => {
                match (gamma, beta, get(&self.gate_bias)) {
                    (Some(g), Some(b), Some(wb)) => xhat * g * sigmoid(wb) + b,
                    _ => xhat,
                }
            }
        }
    }
}
