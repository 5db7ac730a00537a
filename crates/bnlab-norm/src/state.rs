//! The layer's state: mode, running statistics, PreciseBN accumulator and stats reducer.
//!
//! [`NormState`] implements [`Module`] by hand so that the running statistics are saved in
//! records, and so that the tree helpers in [`crate::mode`] can reach every layer of a model
//! through one `map` pass.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
    RunningState,
};
use burn::tensor::{Device, Tensor, TensorData};

use crate::{NormConfig, NormError, NormMode, PopulationEstimator, StatsReducer, VarianceStorage};

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
    pub(crate) fn blend(&self, weights: Tensor<2>, batch_mean: Tensor<2>, batch_var: Tensor<2>) {
        let device = batch_mean.device();
        let mean = self.running_mean.value_sync().to_device(&device);
        let var = self.running_var.value_sync().to_device(&device);
        let mean = mean.clone() + weights.clone() * (batch_mean - mean);
        let var = var.clone() + weights * (batch_var - var);
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
    }

    /// Adds `seen` (1 where a set was updated) to the update counts.
    pub(crate) fn count_updates(&self, seen: Tensor<1>) {
        let device = seen.device();
        let updates = self.updates.value_sync().to_device(&device) + seen;
        self.updates.update(updates.detach());
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
        let old_mean = to_f64(self.running_mean.value_sync());
        let old_var = to_f64(self.running_var.value_sync());
        let [p_sets, k] = self.running_mean.value_sync().dims();
        let mut mean = old_mean;
        let mut var = old_var;
        for (p, stats) in acc
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

/// Reads a tensor as f64 values.
pub(crate) fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap_or_default()
}

/// The values of two tensors as f64, read in one transaction (one wait for the device).
pub(crate) fn to_f64_pair<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> (Vec<f64>, Vec<f64>) {
    let data = burn::tensor::Transaction::default()
        .register(a)
        .register(b)
        .try_execute()
        .unwrap_or_default();
    let mut values = data
        .into_iter()
        .map(|d| d.convert::<f64>().try_into_vec::<f64>().unwrap_or_default());
    let a = values.next().unwrap_or_default();
    (a, values.next().unwrap_or_default())
}

/// The container type a [`NormState`] reports to visitors and mappers.
pub(crate) const STATE_CONTAINER: &str = "Struct:NormState";

/// An operation applied to every [`NormState`] of a module tree by one `map` pass.
pub(crate) enum TreeOp {
    SetMode(NormMode),
    /// Mode `modes[i]` for the i-th layer in tree order.
    SetModes {
        modes: Vec<NormMode>,
        next: usize,
    },
    SetReducer(Arc<dyn StatsReducer>),
    ResetCollect,
    Finalize(PopulationEstimator),
    ReadSites(Vec<NormSite>),
    SetOutlierProbe(Option<f64>),
}

/// One [`Norm`](crate::Norm) of a module tree: where it is, how it is set up, its mode.
#[derive(Debug, Clone)]
pub struct NormSite {
    /// Field path from the root module, e.g. `stages.0.blocks.1.conv2.norm`.
    pub path: String,
    /// The layer's settings.
    pub config: NormConfig,
    /// The layer's current mode.
    pub mode: NormMode,
    /// The |x̂| outlier counts, when a probe is installed.
    pub outliers: Option<Outliers>,
}

/// The path of the `Norm` owning a state, from the module path of the state itself.
fn site_path(path: &[String]) -> String {
    path[..path.len().saturating_sub(1)].join(".")
}

struct Pending {
    op: TreeOp,
    errors: Vec<NormError>,
    /// Field names of the modules the mapper is inside.
    path: Vec<String>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Clears the pending operation even if a `map` panics.
struct PendingGuard;

impl Drop for PendingGuard {
    fn drop(&mut self) {
        PENDING.with(|p| p.borrow_mut().take());
    }
}

/// Identity mapper: the tree op is carried by the thread-local, not by the mapper; the mapper
/// only keeps the module path there.
struct Passthrough;

impl ModuleMapper for Passthrough {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        PENDING.with(|p| {
            if let Some(pending) = p.borrow_mut().as_mut() {
                pending.path.push(name.to_string());
            }
        });
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        PENDING.with(|p| {
            if let Some(pending) = p.borrow_mut().as_mut() {
                pending.path.pop();
            }
        });
    }
}

/// Applies `op` to every [`NormState`] in `module`; returns the module, the op (with anything it
/// gathered) and the errors met.
pub(crate) fn run_tree_op<M: Module>(op: TreeOp, module: M) -> (M, TreeOp, Vec<NormError>) {
    let guard = PendingGuard;
    PENDING.with(|p| {
        *p.borrow_mut() = Some(Pending {
            op,
            errors: Vec::new(),
            path: Vec::new(),
        })
    });
    let module = module.map(&mut Passthrough);
    let pending = PENDING.with(|p| p.borrow_mut().take());
    drop(guard);
    match pending {
        Some(Pending { op, errors, .. }) => (module, op, errors),
        None => (module, TreeOp::ReadSites(Vec::new()), Vec::new()),
    }
}

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
        let collected = self.collected.lock().map(|a| a.clone()).unwrap_or_default();
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
        PENDING.with(|p| {
            if let Some(pending) = p.borrow_mut().as_mut() {
                self.apply(&mut pending.op, &mut pending.errors, &pending.path);
            }
        });
        mapper.enter_module("running_mean", STATE_CONTAINER);
        let running_mean = self.running_mean.map(mapper);
        mapper.exit_module("running_mean", STATE_CONTAINER);
        mapper.enter_module("running_var", STATE_CONTAINER);
        let running_var = self.running_var.map(mapper);
        mapper.exit_module("running_var", STATE_CONTAINER);
        mapper.enter_module("updates", STATE_CONTAINER);
        let updates = self.updates.map(mapper);
        mapper.exit_module("updates", STATE_CONTAINER);
        Self {
            running_mean,
            running_var,
            updates,
            ..self
        }
    }
}

impl ModuleDisplayDefault for NormState {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .add_formatted(&format!("NormState(mode={:?})", self.mode))
            .optional()
    }
}

impl ModuleDisplay for NormState {}
