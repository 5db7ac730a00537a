//! The sweep runner: every configuration × seed of a spec, each run's result written
//! atomically as one JSON file, runs resumed from their epoch checkpoints, several at once
//! with `jobs`.
//!
//! Layout of the output directory:
//! - `sweep.json`: the spec's name, baseline, configurations (with axes) and seeds;
//! - `results/<run id>.json`: one [`RunResult`] per finished (or failed) run;
//! - `runs/<run id>/`: `run.json`, `model.bpk` (the evaluated model) and, while the run is
//!   unfinished, `checkpoints/`.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bnlab_norm::NormError;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoints;
use crate::{
    Budget, Progress, RESULT_FORMAT, RunKey, RunRequest, RunResult, Spec, Status, TrainError,
    Worker, is_run_failure, train_run,
};

/// How a sweep runs.
pub struct SweepOptions {
    /// Runs trained at once (≥ 1).
    pub jobs: usize,
    /// Stop after this many epochs in this process (then rerun to continue).
    pub budget: Option<usize>,
    /// Progress reporting.
    pub progress: Arc<dyn Progress>,
    /// How runs with `train.distributed.workers` > 1 reach their workers.
    pub transport: Transport,
}

/// Where the workers of a data-parallel run live.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// Threads of this process, one per worker (`bnlab run --distributed threads`).
    #[default]
    Threads,
    /// This process is one worker of a job of several (`mpirun … bnlab run --distributed
    /// mpi`); every process runs the same sweep and rank 0 writes results.
    Processes(Arc<dyn bnlab_norm::Collective>),
    /// Threads of this process, one per device, talking through Burn's device all-reduce
    /// ([`bnlab_collective::DeviceGroup`]: CUDA devices, `bnlab run --distributed cuda`); a run of
    /// K workers uses the first K devices.
    Devices(Vec<burn::tensor::Device>),
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepSummary {
    /// Runs finished by this invocation.
    pub finished: usize,
    /// Runs recorded as failed by this invocation.
    pub failed: usize,
    /// Runs already done before it.
    pub already_done: usize,
}

/// `sweep.json`: what the report needs to know about the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepFile {
    /// The spec's name.
    pub name: String,
    /// The baseline configuration or variant.
    pub baseline: Option<String>,
    /// Configuration name → axes.
    pub configurations: BTreeMap<String, BTreeMap<String, String>>,
    /// The configurations in spec order.
    pub order: Vec<String>,
    /// Run indices.
    pub seeds: Vec<u32>,
}

impl SweepFile {
    /// What `spec` asks for.
    pub fn of(spec: &Spec) -> Self {
        Self {
            name: spec.name.clone(),
            baseline: spec.baseline.clone(),
            configurations: spec
                .configurations
                .iter()
                .map(|c| (c.name.clone(), c.axes.clone()))
                .collect(),
            order: spec.configurations.iter().map(|c| c.name.clone()).collect(),
            seeds: spec.seeds.clone(),
        }
    }
}

/// Where the result of run `id` goes.
pub fn result_path(out: &Path, id: &str) -> PathBuf {
    out.join("results").join(format!("{id}.json"))
}

/// Where run `id` works.
pub fn run_dir(out: &Path, id: &str) -> PathBuf {
    out.join("runs").join(id)
}

/// Runs every run of `spec` not yet done under `out`.
pub fn run_sweep(
    spec: &Spec,
    out: &Path,
    options: &SweepOptions,
) -> Result<SweepSummary, TrainError> {
    if options.jobs == 0 {
        return Err(TrainError::Config("jobs must be at least 1".into()));
    }
    if matches!(options.transport, Transport::Devices(_)) && options.jobs != 1 {
        return Err(TrainError::Config(
            "device workers share one communication group: use jobs = 1".into(),
        ));
    }
    if let Transport::Processes(c) = &options.transport {
        if options.jobs != 1 {
            return Err(TrainError::Config(
                "a multi-process job trains one run at a time: use jobs = 1".into(),
            ));
        }
        // every process must see the same sweep and the same runs already done
        let runs: Vec<String> = spec
            .runs()
            .into_iter()
            .filter(|r| !result_path(out, &r.id).exists())
            .map(|r| r.id)
            .collect();
        bnlab_collective::check_same(c.as_ref(), "the pending runs", &runs.join(","))?;
    }
    let leads = match &options.transport {
        Transport::Processes(c) => c.rank() == 0,
        Transport::Threads | Transport::Devices(_) => true,
    };
    let sweep = SweepFile::of(spec);
    let json = serde_json::to_vec_pretty(&sweep).map_err(|e| TrainError::Corrupt {
        path: out.join("sweep.json"),
        why: e.to_string(),
    })?;
    if leads {
        bnlab_data::write_atomic(&out.join("sweep.json"), &json)?;
    }

    let runs = spec.runs();
    let (done, pending): (Vec<RunKey>, Vec<RunKey>) = runs
        .into_iter()
        .partition(|r| result_path(out, &r.id).exists());
    let summary = Mutex::new(SweepSummary {
        already_done: done.len(),
        ..SweepSummary::default()
    });
    tracing::info!(
        sweep = %spec.name,
        done = done.len(),
        pending = pending.len(),
        "sweep starts"
    );
    let queue = Mutex::new(VecDeque::from(pending));
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<TrainError>> = Mutex::new(None);
    let budget = options.budget.map(Budget::new);

    let worker = || {
        while !stop.load(Ordering::SeqCst) {
            let Some(key) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                return;
            };
            if let Err(e) = one_run(spec, out, &key, options, budget.as_ref(), &summary) {
                stop.store(true, Ordering::SeqCst);
                if let Ok(mut slot) = first_error.lock()
                    && slot.is_none()
                {
                    *slot = Some(e);
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..options.jobs {
            s.spawn(worker);
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let summary = *summary
        .lock()
        .map_err(|_| TrainError::Config("poisoned".into()))?;
    tracing::info!(?summary, "sweep done");
    Ok(summary)
}

/// Trains one run with `workers` data-parallel workers on threads of this process; the
/// leader's (rank 0) outcome, or the error that stopped the group.
fn train_on_threads(
    request: &RunRequest,
    workers: usize,
    transport: &Transport,
) -> Result<RunResult, TrainError> {
    let handles: Vec<Worker> = match transport {
        Transport::Devices(devices) => {
            if devices.len() < workers {
                return Err(TrainError::Config(format!(
                    "train.distributed.workers = {workers}, but only {} devices were given",
                    devices.len()
                )));
            }
            bnlab_collective::DeviceGroup::new(devices[..workers].to_vec())?
                .into_iter()
                .map(|g| Worker {
                    device: g.device().clone(),
                    collective: Arc::new(g),
                })
                .collect()
        }
        _ => {
            let timeout = request.configuration.config.train.distributed.timeout_secs;
            let timeout = std::time::Duration::from_secs(timeout);
            bnlab_collective::ThreadGroup::new(workers, timeout)
                .into_iter()
                .map(|h| Worker::on_cpu(Arc::new(h)))
                .collect()
        }
    };
    let outcomes: Vec<Result<RunResult, TrainError>> = std::thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .map(|worker| {
                let request = RunRequest {
                    worker: Some(worker),
                    work_dir: request.work_dir.clone(),
                    ..*request
                };
                s.spawn(move || train_run(&request))
            })
            .collect();
        joins
            .into_iter()
            .map(|j| {
                j.join().unwrap_or_else(|_| {
                    Err(TrainError::Distributed("a worker thread panicked".into()))
                })
            })
            .collect()
    });
    // the first error that is not just another worker hearing about it
    let mut outcomes = outcomes.into_iter();
    let leader = outcomes
        .next()
        .unwrap_or_else(|| Err(TrainError::Config("no workers".into())));
    // (a worker hearing that another left sees a collective or distributed error)
    let secondary = |e: &TrainError| {
        matches!(
            e,
            TrainError::Distributed(_)
                | TrainError::Collective(_)
                | TrainError::Norm(NormError::Collective(_))
        )
    };
    match leader {
        Err(first) if secondary(&first) => Err(outcomes
            .filter_map(Result::err)
            .find(|e| !secondary(e))
            .unwrap_or(first)),
        other => other,
    }
}

/// Trains one run and records its result or failure.
fn one_run(
    spec: &Spec,
    out: &Path,
    key: &RunKey,
    options: &SweepOptions,
    budget: Option<&Budget>,
    summary: &Mutex<SweepSummary>,
) -> Result<(), TrainError> {
    let configuration = &spec.configurations[key.configuration];
    let work_dir = run_dir(out, &key.id);
    let request = RunRequest {
        sweep: &spec.name,
        configuration,
        index: key.index,
        seed: key.seed,
        id: &key.id,
        work_dir: work_dir.clone(),
        progress: options.progress.as_ref(),
        budget,
        worker: None,
    };
    tracing::info!(run = %key.id, seed = key.seed, "run starts");
    let workers = configuration.config.train.distributed.workers;
    let (outcome, leads) = match &options.transport {
        // a single-worker run in a multi-process job: rank 0 trains it alone
        Transport::Processes(c) if workers <= 1 && c.rank() > 0 => return Ok(()),
        _ if workers <= 1 => (train_run(&request), true),
        Transport::Processes(c) => {
            let worker = Worker::on_cpu(c.clone());
            let leads = worker.leads();
            let request = RunRequest {
                worker: Some(worker),
                ..request
            };
            (train_run(&request), leads)
        }
        Transport::Threads | Transport::Devices(_) => (
            train_on_threads(&request, workers, &options.transport),
            true,
        ),
    };
    if !leads {
        // the leader records the run (or its failure, which every worker reaches together)
        // and goes on to the next; so do the others
        return match outcome {
            Err(e) if is_run_failure(&e) => Ok(()),
            other => other.map(|_| ()),
        };
    }
    let result = match outcome {
        Ok(result) => result,
        Err(e) if is_run_failure(&e) => {
            tracing::warn!(run = %key.id, error = %crate::error::chain(&e), "run failed");
            RunResult {
                format: RESULT_FORMAT,
                sweep: spec.name.clone(),
                configuration: configuration.name.clone(),
                axes: configuration.axes.clone(),
                index: key.index,
                seed: key.seed,
                config: configuration.config.clone(),
                status: Status::Failed {
                    reason: crate::error::chain(&e),
                },
                epochs: Vec::new(),
                best_epoch: None,
                test: BTreeMap::new(),
                diagnostics: Default::default(),
            }
        }
        Err(e) => {
            if !matches!(e, TrainError::Interrupted) {
                tracing::error!(run = %key.id, error = %crate::error::chain(&e), "sweep stops");
            }
            return Err(e);
        }
    };
    result.save(&result_path(out, &key.id))?;
    Checkpoints::new(work_dir.join("checkpoints")).clear()?;
    let line = match &result.status {
        Status::Finished => {
            let acc = result
                .test
                .get("population")
                .or_else(|| result.test.values().next())
                .map_or(String::new(), |m| {
                    format!("test acc {:.2}%", 100.0 * m.accuracy)
                });
            format!("finished, {acc}")
        }
        Status::Failed { reason } => format!("failed: {reason}"),
    };
    tracing::info!(run = %key.id, "{line}");
    options.progress.run_done(&key.id, &line);
    if let Ok(mut s) = summary.lock() {
        match result.status {
            Status::Finished => s.finished += 1,
            Status::Failed { .. } => s.failed += 1,
        }
    }
    Ok(())
}
