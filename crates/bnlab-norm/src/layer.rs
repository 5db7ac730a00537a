//! The [`Norm`] module: one normalization layer with every batch, statistics and affine choice.

use burn::module::Module;
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};

use crate::batch::{Partition, plan};
use crate::fused::{self, FusedStats};
use crate::state::NormState;
use crate::tensors::{accumulation_dtype, is_autodiff, rows_for, to_f64_pair};
use crate::{AffineParams, Kernel, NormConfig, NormError, NormMode, StatUnit, StatsSource};

/// A normalization layer for inputs [N, C] and [N, C, ...] (see [`NormConfig`]).
///
/// Its mode is explicit ([`NormMode`]) and never inferred from autodiff; set it with
/// [`Norm::set_mode`] or, for a whole model, [`set_norm_mode`](crate::set_norm_mode).
/// Affine parameters have shape [A, C], with A = 1 or the number of domains.
#[derive(Module, Debug)]
pub struct Norm {
    /// The affine tail's parameters, [A, C] each.
    pub affine: AffineParams,
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
        let (_, k) = self.channel_grouping();
        Ok(Norm {
            affine: self
                .affine
                .init_params(self.affine_sets(), self.num_features, device),
            state: NormState::new(self, self.population_sets(), k, device),
            config: self.clone(),
        })
    }
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
    /// Half-precision inputs (f16, bf16: mixed precision) are normalized in f32: statistics,
    /// running statistics and the affine parameters stay f32, and the output is cast back to
    /// the input's dtype. (PyTorch's "expected scalar type Half but found Float" cannot
    /// happen here.)
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
        self.forward_then(input, domains, Tail::None)
    }

    /// The layer followed by a ReLU: `relu(forward(x))`.
    ///
    /// # Shapes
    /// - input: `[N, C]` or `[N, C, ...]`
    /// - output: same as input
    pub fn forward_relu<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        self.forward_relu_domains(input, None)
    }

    /// The layer followed by a ReLU, with domain ids: `relu(forward_domains(x, domains))`.
    ///
    /// On Flex's fused path the ReLU is applied in the normalize pass, and its backward inside
    /// the layer's (which recomputes the ReLU's mask from x), so the activation between the two
    /// is never written nor read again: one pass over the activation less each way. Elsewhere
    /// Burn's `relu` follows the layer. Both give the same values.
    ///
    /// # Shapes
    /// - input: `[N, C]` or `[N, C, ...]`
    /// - domains: `N` ids, each `< domains.count`
    /// - output: same as input
    pub fn forward_relu_domains<const D: usize>(
        &self,
        input: Tensor<D>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<D>, NormError> {
        self.forward_then(input, domains, Tail::Relu)
    }

    /// The end of a residual block: `relu(forward_domains(x, domains) + residual)`.
    ///
    /// On Flex's fused path the sum and the ReLU are applied in the normalize pass (the
    /// normalized activation and the sum are never written); elsewhere Burn's operations
    /// follow the layer. Both give the same values.
    ///
    /// # Shapes
    /// - input and residual: `[N, C]` or `[N, C, ...]`, the same
    /// - domains: `N` ids, each `< domains.count`
    /// - output: same as input
    pub fn forward_add_relu_domains<const D: usize>(
        &self,
        input: Tensor<D>,
        residual: Tensor<D>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<D>, NormError> {
        if residual.dims() != input.dims() {
            return Err(NormError::ResidualShape {
                shape: input.dims().to_vec(),
                residual: residual.dims().to_vec(),
            });
        }
        self.forward_then(input, domains, Tail::AddRelu(Box::new(residual)))
    }

    /// [`Norm::forward_domains`], followed by `tail`.
    fn forward_then<const D: usize>(
        &self,
        input: Tensor<D>,
        domains: Option<&[usize]>,
        tail: Tail<D>,
    ) -> Result<Tensor<D>, NormError> {
        let dtype = input.dtype();
        if crate::is_half(dtype) {
            let tail = tail.map(crate::full_precision);
            let y = self.forward_then(crate::full_precision(input), domains, tail)?;
            return Ok(crate::Precision::of(dtype).apply(y));
        }
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
            return Ok(tail.apply(input));
        }
        let x3: Tensor<3> = input.reshape([n, c, s]);
        let tail = tail.map(|r| r.reshape([n, c, s]));
        let plan = match (self.state.mode, self.state.collect_policy) {
            (NormMode::Collect, Some(batch)) => {
                let config = NormConfig {
                    batch,
                    ..self.config.clone()
                };
                plan(&config, n, domains, batch_stats)?
            }
            _ => plan(&self.config, n, domains, batch_stats)?,
        };
        let fused = self.uses_fused(&x3);
        if self.synced_units() && batch_stats && !fused && (n == 0 || is_autodiff(&x3)) {
            return Err(NormError::Reducer(
                "statistics synchronized across workers need the fused path (f32 on Flex or a GPU, kernel = Auto) for training and for empty batches".into(),
            ));
        }
        if fused {
            return Ok(self.forward_fused(x3, &plan, &shape, tail)?.reshape(shape));
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
        Ok(tail.apply(self.affine(&x3, xhat, &plan)).reshape(shape))
    }

    /// Counts |x̂| above the probe's threshold, when a probe is attached.
    fn record_outliers(&self, xhat: &Tensor<3>) {
        if let Some(probe) = &self.state.outliers
            && let Ok(mut o) = probe.lock()
        {
            crate::tensors::count_host_read();
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
    ///
    /// On a CubeCL device the fused kernels plan their statistics on the host, a wait for the
    /// GPU per call, so they are taken only where a stats reducer needs that plan; otherwise
    /// the composed ops keep statistics, running update and accumulator on the device.
    fn uses_fused(&self, x3: &Tensor<3>) -> bool {
        let possible = self.config.unit != StatUnit::None && fused::supported(x3);
        match self.config.kernel {
            Kernel::Composed => false,
            Kernel::Fused => possible,
            Kernel::Auto => {
                possible && (self.state.reducer.is_some() || !fused::is_cube(&x3.device()))
            }
        }
    }

    /// Whether batch statistics of this layer's units combine other workers' examples (its
    /// reducer syncs units, and units span examples).
    fn synced_units(&self) -> bool {
        !self.config.unit.is_per_example()
            && self.state.reducer.as_ref().is_some_and(|r| r.syncs_units())
    }

    /// Every mode on the fused path, followed by `tail`. Affine tails that depend on x̂ itself
    /// (RBN/IEBN), and the outlier probe, apply the composed affine to the fused x̂.
    fn forward_fused(
        &self,
        x3: Tensor<3>,
        plan: &Partition,
        shape: &[usize],
        tail: Tail<3>,
    ) -> Result<Tensor<3>, NormError> {
        let [n, c, _] = x3.dims();
        let folded = match self.state.outliers {
            Some(_) => None,
            None => self.config.affine.scale_shift(&self.affine),
        };
        let Some((scale, shift)) = folded else {
            let ones = Tensor::<2>::ones([1, c], &x3.device());
            let (zeros, rows) = (ones.zeros_like(), vec![0; n]);
            let none = Tail::None;
            let xhat = self.fused_normalize(x3.clone(), [ones, zeros], rows, plan, shape, none)?;
            self.record_outliers(&xhat);
            return Ok(tail.apply(self.affine(&x3, xhat, plan)));
        };
        self.fused_normalize(
            x3,
            [scale, shift],
            plan.affine_of.clone(),
            plan,
            shape,
            tail,
        )
    }

    /// y = x̂·scale + shift ([A, C] each, row `affine_row[i]` for example i) with this mode's
    /// statistics: from one read pass on the host, then one normalize + affine pass; per-example
    /// units with batch statistics are normalized unit by unit while in cache. Followed by
    /// `tail`: in the same pass on Flex (but the sum of [`Tail::AddRelu`] on per-example
    /// units), after it elsewhere.
    fn fused_normalize(
        &self,
        x3: Tensor<3>,
        [scale, shift]: [Tensor<2>; 2],
        affine_row: Vec<usize>,
        plan: &Partition,
        shape: &[usize],
        tail: Tail<3>,
    ) -> Result<Tensor<3>, NormError> {
        let [n, c, s] = x3.dims();
        // the kernels' tails (and their backward) exist on Flex only: a ReLU goes into the
        // plan, the residual sum (not on per-example units) into `apply_add_relu` below
        let flex = fused::is_flex(&x3.device());
        let fuse_relu = flex && matches!(tail, Tail::Relu);
        let tail = if fuse_relu { Tail::None } else { tail };
        let (cpg, k) = self.config.channel_grouping();
        let values = (cpg * s) as f64;
        // the statistics are not differentiated on this path (the fused backward accounts for
        // them), so their small tensor operations skip autodiff's bookkeeping: on Flex a
        // fifth of the cost per operation
        let device = x3.device().without_autodiff();
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
            relu: fuse_relu,
        };
        let mode = self.state.mode;
        let synced = mode.uses_batch_stats() && self.synced_units();
        if mode.uses_batch_stats() && plan.is_identity() && !synced {
            let (y, s1, s2) = fused::normalize_units(x3, scale, shift, fused_plan)?;
            let stats = self.batch_stats_from(host(s1), host(s2), values, plan, shape)?;
            self.record_batch_stats(&stats)?;
            return Ok(tail.apply(y));
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
                let (mean, var) =
                    self.weighed_stats(alpha, [host(s1), host(s2)], values, &plan.pop_of);
                let (mean, var) = to_f64_pair(mean, var, "the example-weighed statistics")?;
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
        Ok(match tail {
            Tail::AddRelu(r) if flex => fused::apply_add_relu(x3, scale, shift, *r, fused_plan),
            tail => tail.apply(fused::apply(x3, scale, shift, fused_plan)),
        })
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

    /// `Eval(Population)` and `Frozen`: running statistics as constants.
    fn forward_population(&self, x3: &Tensor<3>, plan: &Partition) -> Tensor<3> {
        let device = x3.device();
        let mean = self.state.running_mean().to_device(&device).detach();
        let var = self.state.running_var().to_device(&device).detach();
        self.normalize(x3, mean, var, &plan.pop_of)
    }

    /// `Eval(ExampleWeighed)`: Summers & Dinneen eq. 3.
    fn forward_weighed(&self, x3: &Tensor<3>, plan: &Partition, alpha: f64) -> Tensor<3> {
        let (s1, s2, values) = self.example_sums(x3, accumulation_dtype(&x3.device()));
        let (mean, var) = self.weighed_stats(alpha, [s1, s2], values, &plan.pop_of);
        let identity: Vec<usize> = (0..x3.dims()[0]).collect();
        self.normalize(x3, mean, var, &identity)
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

    /// Applies the affine tail to x̂.
    fn affine(&self, x3: &Tensor<3>, xhat: Tensor<3>, plan: &Partition) -> Tensor<3> {
        self.config
            .affine
            .apply(&self.affine, x3, xhat, &plan.affine_of)
    }
}

/// What follows the normalization in one call of the layer.
enum Tail<const D: usize> {
    /// Nothing.
    None,
    /// A ReLU.
    Relu,
    /// This tensor added, then a ReLU (the end of a residual block).
    AddRelu(Box<Tensor<D>>),
}

impl<const D: usize> Tail<D> {
    /// The same tail with `f` applied to its tensor.
    fn map<const E: usize>(self, f: impl FnOnce(Tensor<D>) -> Tensor<E>) -> Tail<E> {
        match self {
            Tail::None => Tail::None,
            Tail::Relu => Tail::Relu,
            Tail::AddRelu(r) => Tail::AddRelu(Box::new(f(*r))),
        }
    }

    /// The tail applied to `y` with Burn's operations.
    fn apply(self, y: Tensor<D>) -> Tensor<D> {
        use burn::tensor::activation::relu;
        match self {
            Tail::None => y,
            Tail::Relu => relu(y),
            Tail::AddRelu(r) => relu(y + *r),
        }
    }
}
