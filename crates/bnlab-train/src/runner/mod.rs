//! The sweep runner: every configuration × seed of a spec, each run's result written
//! atomically as one JSON file, runs resumed from their epoch checkpoints, several at once
//! with `jobs`.
//!
//! Layout of the output directory:
//! - `sweep.json`: the spec's name, baseline, configurations (with axes) and seeds;
//! - `results/<run id>.json`: one [`RunResult`] per finished (or failed) run;
//! - `runs/<run id>/`: `run.json`, `model.bpk` (the evaluated model) and, while the run is
//!   unfinished, `checkpoints/` and the worker's `claim-N` ([`crate::claim`]);
//! - `superseded/<run id>.<n>/`: the files of runs retrained by `--restart-changed`.
//!
//! Every run carries its configuration's [`Fingerprint`]. Before training, the sweep compares
//! it with what each run on disk was trained with: a run trained under other settings is
//! neither skipped nor continued (see [`SweepOptions::restart_changed`]).

mod changes;
mod files;
mod reevaluate;
mod workers;

pub use files::*;

use changes::{recorded_change, supersede};
use reevaluate::{reevaluate, stale_evaluation};
use workers::{one_run, record_error};

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::claim::{Busy, Claim};
use crate::{Budget, Progress, RunKey, Spec, TrainError};

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
    /// Retrain runs whose settings changed (their files are moved to `superseded/`)
    /// instead of stopping before training.
    pub restart_changed: bool,
    /// Only this part of the runs (a scheduler's job array).
    pub shard: Option<Shard>,
    /// How long a claim lasts without renewal before another worker takes the run over.
    pub lease: Duration,
}

impl SweepOptions {
    /// The lease of [`SweepOptions::lease`] by default: a minute.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

    /// A whole sweep in this process, `jobs` runs at once, reporting to `progress`; nothing
    /// else asked (no budget, shard or restart, threads for data-parallel workers).
    pub fn new(jobs: usize, progress: Arc<dyn Progress>) -> Self {
        Self {
            jobs,
            budget: None,
            progress,
            transport: Transport::default(),
            restart_changed: false,
            shard: None,
            lease: Self::DEFAULT_LEASE,
        }
    }
}

/// Part `index` (1-based) of `count` equal parts of a sweep's runs: the runs at positions
/// `index − 1`, `index − 1 + count`, … of [`Spec::runs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based part.
    pub index: usize,
    /// Number of parts.
    pub count: usize,
}

impl Shard {
    /// The runs of this part.
    pub fn select(self, runs: Vec<RunKey>) -> Vec<RunKey> {
        runs.into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index - 1)
            .map(|(_, r)| r)
            .collect()
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with 1 ≤ I ≤ N.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a shard: write I/N with 1 ≤ I ≤ N, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
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
    /// Runs finished by other workers while this one ran.
    pub elsewhere: usize,
    /// Runs retrained because their settings changed (`--restart-changed`).
    pub restarted: usize,
    /// Finished runs evaluated again because only their evaluation settings changed.
    pub reevaluated: usize,
}

/// Runs every run of `spec` (of `options.shard`) not yet done under `out`. Other processes
/// may work on the same `out`: each run is claimed before it is trained, and this process
/// returns when every run of its part has a result (taking over runs whose worker died).
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
    if options.lease.is_zero() {
        return Err(TrainError::Config(
            "the lease must be longer than zero".into(),
        ));
    }
    // every device the sweep asks for is built in and on this machine, before anything trains
    let devices: std::collections::HashSet<_> = spec
        .configurations
        .iter()
        .map(|c| (c.config.train.device, c.config.train.precision))
        .collect();
    for (name, precision) in devices {
        precision.check(&name.device()?, name)?;
    }
    let mut runs = spec.runs();
    if let Some(shard) = options.shard {
        runs = shard.select(runs);
    }
    let stamps = stamps(spec)?;
    let mut changed = Vec::new();
    for key in &runs {
        if let Some(what) =
            recorded_change(out, spec, key, &stamps[key.configuration], options.lease)?
        {
            changed.push((key.id.clone(), what));
        }
    }
    let leads = match &options.transport {
        Transport::Processes(c) => c.rank() == 0,
        Transport::Threads | Transport::Devices(_) => true,
    };
    let restarted = changed.len();
    if !changed.is_empty() {
        if !options.restart_changed {
            return Err(TrainError::Changed { runs: changed });
        }
        if leads {
            for (id, what) in &changed {
                let to = supersede(out, id)?;
                tracing::warn!(run = %id, moved = %to.display(), changes = %what.join("; "), "retraining a changed run");
            }
        }
    }
    if let Transport::Processes(c) = &options.transport {
        if options.jobs != 1 {
            return Err(TrainError::Config(
                "a multi-process job trains one run at a time: use jobs = 1".into(),
            ));
        }
        // every process must see the same sweep and the same runs already done
        let pending: Vec<&str> = runs
            .iter()
            .filter(|r| !result_path(out, &r.id).exists())
            .map(|r| r.id.as_str())
            .collect();
        bnlab_collective::check_same(c.as_ref(), "the pending runs", &pending.join(","))?;
    }
    if leads {
        SweepFile::of(spec, &stamps).save(out)?;
    }

    let mut reevaluated = 0;
    if leads {
        for key in &runs {
            let stamp = &stamps[key.configuration];
            if let Some(result) = stale_evaluation(out, key, stamp)? {
                tracing::info!(run = %key.id, "evaluation settings changed: evaluating again");
                reevaluate(out, spec, key, stamp, result)?;
                reevaluated += 1;
            }
        }
    }
    let (done, pending): (Vec<RunKey>, Vec<RunKey>) = runs
        .into_iter()
        .partition(|r| result_path(out, &r.id).exists());
    let summary = Mutex::new(SweepSummary {
        already_done: done.len(),
        restarted,
        reevaluated,
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
    // a multi-process job is one worker of the sweep: its ranks train the same run together
    let claims = !matches!(options.transport, Transport::Processes(_));
    let owner = crate::claim::worker_name();
    let poll = (options.lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let count = |f: fn(&mut SweepSummary)| {
        if let Ok(mut s) = summary.lock() {
            f(&mut s);
        }
    };

    let worker = || {
        while !stop.load(Ordering::SeqCst) {
            let Some(key) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                return;
            };
            let stamp = &stamps[key.configuration];
            if result_path(out, &key.id).exists() {
                count(|s| s.elsewhere += 1);
                continue;
            }
            let claim = if claims {
                match Claim::try_take(&run_dir(out, &key.id), &owner, options.lease) {
                    Ok(Ok(claim)) => Some(claim),
                    Ok(Err(Busy::Held(by))) => {
                        tracing::debug!(run = %key.id, owner = %by.owner, "held by another worker");
                        if let Ok(mut q) = queue.lock() {
                            q.push_back(key);
                        }
                        std::thread::sleep(poll);
                        continue;
                    }
                    Err(e) => {
                        record_error(&stop, &first_error, e);
                        return;
                    }
                }
            } else {
                None
            };
            // finished by another worker between the check and the claim
            if result_path(out, &key.id).exists() {
                count(|s| s.elsewhere += 1);
                if let Some(c) = claim {
                    let _ = c.release();
                }
                continue;
            }
            let outcome = one_run(
                spec,
                out,
                &key,
                stamp,
                options,
                budget.as_ref(),
                claim.as_ref(),
                &summary,
            );
            let ended = match (&outcome, claim) {
                (Ok(()), Some(c)) => c.finish(),
                // another worker owns the run now: leave its claim alone
                (Err(TrainError::LeaseLost(_)), Some(c)) => {
                    drop(c);
                    Ok(())
                }
                (Err(_), Some(c)) => c.release(),
                (_, None) => Ok(()),
            };
            match outcome.and(ended) {
                Ok(()) => {}
                Err(TrainError::LeaseLost(id)) => {
                    tracing::warn!(run = %id, "lease lost: another worker continues the run");
                }
                Err(e) => {
                    record_error(&stop, &first_error, e);
                    return;
                }
            }
        }
    };
    // `jobs` runs at once share the cores: each worker computes on a rayon pool of its own
    // with its part of them, instead of all contending for the global pool
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / options.jobs).max(1);
    std::thread::scope(|s| {
        for _ in 0..options.jobs {
            s.spawn(|| {
                if options.jobs == 1 {
                    return worker();
                }
                match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(pool) => pool.install(worker),
                    Err(e) => record_error(
                        &stop,
                        &first_error,
                        TrainError::Config(format!("a thread pool of {threads} threads: {e}")),
                    ),
                }
            });
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
