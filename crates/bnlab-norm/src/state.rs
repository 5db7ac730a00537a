//! The layer's state: mode, running statistics, PreciseBN accumulator and stats reducer.
//!
//! [`NormState`] implements [`Module`] by hand so that the running statistics are saved in
//! records, and so that the tree operations of `tree.rs` can reach every layer of a model
//! through one `map` pass.

use std::sync::{Arc, Mutex};

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
    Param, ParamId, RunningState,
};
use burn::tensor::{Device, Tensor, TensorData};

use crate::stats::population::Accumulator;
use crate::tensors::to_f64;
use crate::tree::{NormSite, TreeOp, site_path};
use crate::{
    BatchPolicy, NormConfig, NormError, NormMode, PopulationEstimator, StatsReducer,
    VarianceStorage,
};

/// Mode, running statistics ([P, K]: population sets × channel groups), update counts,
/// PreciseBN accumulator and stats reducer of one [`Norm`](crate::Norm).
#[derive(Clone)]
pub struct NormState {
    pub(crate) mode: NormMode,
    /// The settings of the owning layer, so tree-wide reads can report them.
    pub(crate) config: NormConfig,
    pub(crate) storage: VarianceStorage,
    pub(crate) running_mean: RunningState<Tensor<2>>,
    pub(crate) running_var: RunningState<Tensor<2>>,
    /// Number of running-statistics updates per population set (for `Cumulative`).
    pub(crate) updates: RunningState<Tensor<1>>,
    pub(crate) collected: Arc<Mutex<Accumulator>>,
    pub(crate) reducer: Option<Arc<dyn StatsReducer>>,
    /// Counts of |x̂| above a threshold, when a probe is installed.
    pub(crate) outliers: Option<Arc<Mutex<Outliers>>>,
    /// The batch policy of `Collect` mode, when it is not the layer's own.
    pub(crate) collect_policy: Option<BatchPolicy>,
}

/// How many normalized values |x̂| exceeded a threshold, out of how many (Davis & Frank §1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outliers {
    /// The threshold on |x̂|.
    pub threshold: f64,
    /// Values above it.
    pub over: u64,
    /// Values seen.
    pub total: u64,
}

impl Outliers {
    /// The share of values above the threshold (0 when none was seen).
    pub fn share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.over as f64 / self.total as f64
        }
    }
}

impl core::fmt::Debug for NormState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NormState")
            .field("mode", &self.mode)
            .field("storage", &self.storage)
            .field("reducer", &self.reducer.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl NormState {
    /// Fresh state: mean 0, variance 1, no updates, mode `Train`.
    pub(crate) fn new(config: &NormConfig, sets: usize, groups: usize, device: &Device) -> Self {
        Self {
            mode: NormMode::Train,
            config: config.clone(),
            storage: config.variance,
            running_mean: RunningState::new(Tensor::zeros([sets, groups], device)),
            running_var: RunningState::new(Tensor::ones([sets, groups], device)),
            updates: RunningState::new(Tensor::zeros([sets], device)),
            collected: Arc::new(Mutex::new(Accumulator::default())),
            reducer: None,
            outliers: None,
            collect_policy: None,
        }
    }

    /// Folds this thread's pending running-state updates into the shared values, so that
    /// records and mappers see the latest statistics.
    fn sync(&self) {
        let _ = (
            self.running_mean.value_sync(),
            self.running_var.value_sync(),
            self.updates.value_sync(),
        );
    }

    /// The running mean, [P, K].
    pub fn running_mean(&self) -> Tensor<2> {
        self.running_mean.value_sync()
    }

    /// The running variance as stored, [P, K].
    pub fn running_var(&self) -> Tensor<2> {
        self.running_var.value_sync()
    }

    /// How many updates each population set has received, `[P]`.
    pub fn updates(&self) -> Tensor<1> {
        self.updates.value_sync()
    }

    /// Overwrites the running statistics (e.g. from a checkpoint or an offline estimate).
    pub fn set_running(&self, mean: Tensor<2>, var: Tensor<2>) {
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
    }

    /// Moves set rows towards `batch_*` with per-row weights `w` (0 leaves a row alone).
    ///
    /// Computed without autodiff (the running statistics are constants); each state keeps
    /// its own autodiff association.
    pub(crate) fn blend(&self, weights: Tensor<2>, batch_mean: Tensor<2>, batch_var: Tensor<2>) {
        let device = batch_mean.device();
        let [mean, var] = [&self.running_mean, &self.running_var].map(|state| {
            let current = state.value_sync();
            let home = current.is_autodiff();
            (current.without_autodiff().to_device(&device), home)
        });
        let [weights, batch_mean, batch_var] =
            [weights, batch_mean, batch_var].map(Tensor::without_autodiff);
        let blended_mean = mean.0.clone() + weights.clone() * (batch_mean - mean.0);
        let blended_var = var.0.clone() + weights * (batch_var - var.0);
        self.running_mean
            .update(with_autodiff(blended_mean, mean.1));
        self.running_var.update(with_autodiff(blended_var, var.1));
    }

    /// Adds `seen` (1 where a set was updated) to the update counts.
    pub(crate) fn count_updates(&self, seen: Tensor<1>) {
        let current = self.updates.value_sync();
        let home = current.is_autodiff();
        let updates =
            current.without_autodiff().to_device(&seen.device()) + seen.without_autodiff();
        self.updates.update(with_autodiff(updates, home));
    }

    fn finalize(&self, estimator: PopulationEstimator) -> Result<(), NormError> {
        let mut acc = self
            .collected
            .lock()
            .map_err(|_| NormError::Reducer("accumulator lock poisoned".into()))?;
        if acc.batches == 0 {
            return Err(NormError::NothingCollected);
        }
        let device = self.running_mean.value_sync().device();
        let old_mean = to_f64(self.running_mean.value_sync(), "the running mean")?;
        let old_var = to_f64(self.running_var.value_sync(), "the running variance")?;
        let [p_sets, k] = self.running_mean.value_sync().dims();
        let mut mean = old_mean;
        let mut var = old_var;
        let totals = acc.totals()?.unwrap_or_default();
        for (p, stats) in totals
            .finalize(estimator, self.storage)
            .into_iter()
            .enumerate()
        {
            if let Some((m, v)) = stats {
                mean[p * k..(p + 1) * k].copy_from_slice(&m);
                var[p * k..(p + 1) * k].copy_from_slice(&v);
            }
        }
        let as_tensor = |v: Vec<f64>| {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            Tensor::<2>::from_data(TensorData::new(v, [p_sets, k]), &device)
        };
        self.set_running(as_tensor(mean), as_tensor(var));
        let batches = acc.batches as f32;
        self.updates
            .update(Tensor::<1>::full([p_sets], batches, &device));
        *acc = Accumulator::default();
        Ok(())
    }

    fn apply(&mut self, op: &mut TreeOp, errors: &mut Vec<NormError>, path: &[String]) {
        match op {
            TreeOp::SetMode(mode) => self.mode = *mode,
            TreeOp::SetModes { modes, next } => {
                if let Some(mode) = modes.get(*next) {
                    self.mode = *mode;
                }
                *next += 1;
            }
            TreeOp::SetReducer(r) => self.reducer = Some(r.clone()),
            TreeOp::SetCollectPolicy(p) => self.collect_policy = *p,
            TreeOp::ResetCollect => {
                if let Ok(mut acc) = self.collected.lock() {
                    *acc = Accumulator::default();
                }
            }
            TreeOp::Finalize(estimator) => {
                if self.mode != NormMode::Collect {
                    return;
                }
                if let Err(e) = self.finalize(*estimator) {
                    errors.push(e);
                }
            }
            TreeOp::ReadSites(sites) => sites.push(NormSite {
                path: site_path(path),
                config: self.config.clone(),
                mode: self.mode,
                outliers: self
                    .outliers
                    .as_ref()
                    .and_then(|o| o.lock().ok().map(|o| *o)),
            }),
            TreeOp::SetOutlierProbe(threshold) => {
                self.outliers = threshold.map(|threshold| {
                    Arc::new(Mutex::new(Outliers {
                        threshold,
                        over: 0,
                        total: 0,
                    }))
                })
            }
        }
    }
}

/// The container type a [`NormState`] reports to visitors and mappers.
pub(crate) const STATE_CONTAINER: &str = "Struct:NormState";

impl Module for NormState {
    fn collect_devices(&self, devices: Devices) -> Devices {
        let devices = self.running_mean.collect_devices(devices);
        let devices = self.running_var.collect_devices(devices);
        self.updates.collect_devices(devices)
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            running_mean: self.running_mean.fork(device),
            running_var: self.running_var.fork(device),
            updates: self.updates.fork(device),
            ..self
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            running_mean: self.running_mean.to_device(device),
            running_var: self.running_var.to_device(device),
            updates: self.updates.to_device(device),
            ..self
        }
    }

    fn train(self) -> Self {
        Self {
            running_mean: self.running_mean.train(),
            running_var: self.running_var.train(),
            updates: self.updates.train(),
            ..self
        }
    }

    fn valid(&self) -> Self {
        // an independent copy: running statistics and the PreciseBN accumulator
        // (a lock poisoned by a panic elsewhere still holds the accumulator: keep it)
        let collected = match self.collected.lock() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Self {
            running_mean: self.running_mean.valid(),
            running_var: self.running_var.valid(),
            updates: self.updates.valid(),
            collected: Arc::new(Mutex::new(collected)),
            ..self.clone()
        }
    }

    fn materialize(self) -> Self {
        self
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.sync();
        visitor.enter_module("running_mean", STATE_CONTAINER);
        self.running_mean.visit(visitor);
        visitor.exit_module("running_mean", STATE_CONTAINER);
        visitor.enter_module("running_var", STATE_CONTAINER);
        self.running_var.visit(visitor);
        visitor.exit_module("running_var", STATE_CONTAINER);
        visitor.enter_module("updates", STATE_CONTAINER);
        self.updates.visit(visitor);
        visitor.exit_module("updates", STATE_CONTAINER);
    }

    fn map<M: ModuleMapper>(mut self, mapper: &mut M) -> Self {
        self.sync();
        crate::tree::with_pending(|op, errors, path| self.apply(op, errors, path));
        mapper.enter_module("running_mean", STATE_CONTAINER);
        let running_mean = map_keeping_id(self.running_mean, mapper);
        mapper.exit_module("running_mean", STATE_CONTAINER);
        mapper.enter_module("running_var", STATE_CONTAINER);
        let running_var = map_keeping_id(self.running_var, mapper);
        mapper.exit_module("running_var", STATE_CONTAINER);
        mapper.enter_module("updates", STATE_CONTAINER);
        let updates = map_keeping_id(self.updates, mapper);
        mapper.exit_module("updates", STATE_CONTAINER);
        Self {
            running_mean,
            running_var,
            updates,
            ..self
        }
    }
}

/// Maps a (synced) running state and keeps the id the mapper returns. Burn's own
/// `RunningState::map` drops it, so a loaded model kept fresh random ids for its statistics
/// and a model derived from one file (PreciseBN) differed from run to run in its ids.
/// It reads the value with `value_sync`: `value` ignores this thread's pending update, so
/// statistics just written (PreciseBN, finalize) would be dropped on save.
fn map_keeping_id<const D: usize, M: ModuleMapper>(
    state: RunningState<Tensor<D>>,
    mapper: &mut M,
) -> RunningState<Tensor<D>> {
    /// Reads the id, which `RunningState` only shows to visitors.
    struct IdOf(Option<ParamId>);
    impl ModuleVisitor for IdOf {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 = Some(param.id);
        }
    }
    let mut id = IdOf(None);
    state.visit(&mut id);
    let id = id.0.unwrap_or_default();
    let (id, value, _) = mapper
        .map_float(Param::initialized(id, state.value_sync()))
        .consume();
    RunningState::with_id(id, value.set_require_grad(false))
}

impl ModuleDisplayDefault for NormState {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .add_formatted(&format!("NormState(mode={:?})", self.mode))
            .optional()
    }
}

impl ModuleDisplay for NormState {}

/// `t` (a constant) with autodiff when `autodiff`, as the state it replaces had.
fn with_autodiff<const D: usize>(t: Tensor<D>, autodiff: bool) -> Tensor<D> {
    if autodiff { t.autodiff() } else { t }
}
