//! Operations on every [`Norm`](crate::Norm) of a module tree at once: set the mode, the
//! stats reducer or the outlier probe, reset and finalize PreciseBN's collection, and read the
//! sites. Each is one `map` pass that carries a [`TreeOp`] to every [`NormState`](crate::NormState).

use std::cell::RefCell;
use std::sync::Arc;

use burn::module::{Module, ModuleMapper};

use crate::{
    BatchPolicy, NormConfig, NormError, NormMode, Outliers, PopulationEstimator, StatsReducer,
};

/// An operation applied to every [`NormState`](crate::NormState) of a module tree by one `map` pass.
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
    SetCollectPolicy(Option<BatchPolicy>),
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
pub(crate) fn site_path(path: &[String]) -> String {
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

/// Runs `f` on the operation of the pass in progress, with its errors and the module path, if
/// a pass is running on this thread (called by [`NormState`](crate::NormState)'s `map`).
pub(crate) fn with_pending(f: impl FnOnce(&mut TreeOp, &mut Vec<NormError>, &[String])) {
    PENDING.with(|p| {
        if let Some(pending) = p.borrow_mut().as_mut() {
            f(&mut pending.op, &mut pending.errors, &pending.path);
        }
    });
}

/// Applies `op` to every [`NormState`](crate::NormState) in `module`; returns the module, the op (with anything it
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

/// Sets `mode` on every [`Norm`](crate::Norm) in `module` and returns the module.
pub fn set_norm_mode<M: Module>(module: M, mode: NormMode) -> M {
    run_tree_op(TreeOp::SetMode(mode), module).0
}

/// Sets `modes[i]` on the i-th [`Norm`](crate::Norm) of `module` in tree order (the order of
/// [`norm_sites`]); layers past the end of `modes` keep their mode.
///
/// With [`finalize_collected`], this gives layer-by-layer population statistics (Wu & Johnson
/// A.3): earlier layers in `Eval`, one layer in `Collect`.
pub fn set_norm_modes<M: Module>(module: M, modes: &[NormMode]) -> M {
    let op = TreeOp::SetModes {
        modes: modes.to_vec(),
        next: 0,
    };
    run_tree_op(op, module).0
}

/// Installs (with `Some(threshold)`) or removes a probe on every [`Norm`](crate::Norm) of
/// `module` that counts the normalized values with |x̂| > `threshold` in every later forward
/// pass; [`norm_sites`] reports the counts. The count costs one extra reduction per layer.
pub fn set_outlier_probe<M: Module>(module: M, threshold: Option<f64>) -> M {
    run_tree_op(TreeOp::SetOutlierProbe(threshold), module).0
}

/// Sets the batch policy every [`Norm`](crate::Norm) of `module` normalizes under in `Collect`
/// mode (PreciseBN), instead of its own: `Some(BatchPolicy::default())` collects over whole
/// batches a model trained with ghost batches (Wu & Johnson Table 2's B); `None` restores each
/// layer's own policy.
pub fn set_collect_policy<M: Module>(module: M, policy: Option<BatchPolicy>) -> M {
    run_tree_op(TreeOp::SetCollectPolicy(policy), module).0
}

/// Installs `reducer` (for example a SyncBN all-reduce) on every [`Norm`](crate::Norm) in `module`.
pub fn set_stats_reducer<M: Module>(module: M, reducer: Arc<dyn StatsReducer>) -> M {
    run_tree_op(TreeOp::SetReducer(reducer), module).0
}

/// Clears the PreciseBN accumulator of every [`Norm`](crate::Norm) in `module`.
pub fn reset_collected<M: Module>(module: M) -> M {
    run_tree_op(TreeOp::ResetCollect, module).0
}

/// Writes the statistics collected in `Collect` mode into the running statistics of every
/// [`Norm`](crate::Norm) of `module` that is in `Collect` mode, then clears their accumulators.
/// Layers in other modes are left alone.
///
/// Fails if a layer in `Collect` mode collected nothing.
pub fn finalize_collected<M: Module>(
    module: M,
    estimator: PopulationEstimator,
) -> Result<M, NormError> {
    let (module, _, errors) = run_tree_op(TreeOp::Finalize(estimator), module);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

/// The mode of every [`Norm`](crate::Norm) in `module`, in tree order.
pub fn norm_modes<M: Module>(module: M) -> (M, Vec<NormMode>) {
    let (module, sites) = norm_sites(module);
    (module, sites.into_iter().map(|s| s.mode).collect())
}

/// Every [`Norm`](crate::Norm) in `module`, in tree order, with its path, settings and mode.
pub fn norm_sites<M: Module>(module: M) -> (M, Vec<NormSite>) {
    match run_tree_op(TreeOp::ReadSites(Vec::new()), module) {
        (module, TreeOp::ReadSites(sites), _) => (module, sites),
        (module, _, _) => (module, Vec::new()),
    }
}
