//! Training the claimed runs: on threads of this process, one run at a time per job.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bnlab_norm::NormError;

use super::{Stamp, SweepOptions, SweepSummary, Transport, result_path, run_dir};
use crate::checkpoint::Checkpoints;
use crate::claim::Claim;
use crate::{
    Budget, RunKey, RunRequest, RunResult, Spec, Status, TrainError, Worker, is_run_failure,
    on_compute_pool, train_run,
};

/// Stops the sweep's workers with `e`, unless an earlier error did.
pub(super) fn record_error(stop: &AtomicBool, slot: &Mutex<Option<TrainError>>, e: TrainError) {
    stop.store(true, Ordering::SeqCst);
    if let Ok(mut slot) = slot.lock()
        && slot.is_none()
    {
        *slot = Some(e);
    }
}

/// Trains one run with `workers` data-parallel workers on threads of this process; the
/// leader's (rank 0) outcome, or the error that stopped the group.
pub(super) fn train_on_threads(
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
            let train = &request.configuration.config.train;
            let timeout = std::time::Duration::from_secs(train.distributed.timeout_secs);
            let device = train.device.device()?;
            bnlab_collective::ThreadGroup::new(workers, timeout)
                .into_iter()
                .map(|h| Worker::new(Arc::new(h), device.clone()))
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

/// Trains one run and records its result or failure (if `claim` still holds).
#[allow(clippy::too_many_arguments)]
pub(super) fn one_run(
    spec: &Spec,
    out: &Path,
    key: &RunKey,
    stamp: &Stamp,
    options: &SweepOptions,
    budget: Option<&Budget>,
    claim: Option<&Claim>,
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
        fingerprint: &stamp.fingerprint,
        provenance: &stamp.provenance,
        cancel: claim.map(Claim::lost),
    };
    tracing::info!(run = %key.id, seed = key.seed, "run starts");
    let workers = configuration.config.train.distributed.workers;
    let (outcome, leads) = match &options.transport {
        // a single-worker run in a multi-process job: rank 0 trains it alone
        Transport::Processes(c) if workers <= 1 && c.rank() > 0 => return Ok(()),
        // one worker per thread of this process: its kernels' loops start on the compute pool
        _ if workers <= 1 => (on_compute_pool(|| train_run(&request)), true),
        Transport::Processes(c) => {
            let device = configuration.config.train.device.device()?;
            let worker = Worker::new(c.clone(), device);
            let leads = worker.leads();
            let request = RunRequest {
                worker: Some(worker),
                ..request
            };
            (on_compute_pool(|| train_run(&request)), leads)
        }
        // (thread workers stay on threads of their own: one of them parked on a thread of the
        // pool would take that thread from the others)
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
            RunResult::untrained(
                spec,
                key,
                stamp,
                Status::Failed {
                    reason: crate::error::chain(&e),
                },
            )
        }
        Err(e) => {
            if !matches!(e, TrainError::Interrupted) {
                tracing::error!(run = %key.id, error = %crate::error::chain(&e), "sweep stops");
            }
            return Err(e);
        }
    };
    if let Some(c) = claim
        && !c.holds()?
    {
        return Err(TrainError::LeaseLost(key.id.clone()));
    }
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
