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

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bnlab_norm::NormError;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoints;
use crate::claim::{Busy, Claim};
use crate::{
    Budget, Fingerprint, Progress, Provenance, RESULT_FORMAT, RunConfig, RunFile, RunKey,
    RunRequest, RunResult, Spec, Status, TrainError, Worker, changes, is_run_failure, train_run,
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
    /// Configuration name → its fingerprint.
    #[serde(default)]
    pub fingerprints: BTreeMap<String, Fingerprint>,
    /// The spec's claims (outside the fingerprint: they change the report, not the runs).
    #[serde(default)]
    pub claims: Vec<crate::ClaimSpec>,
}

impl SweepFile {
    /// What `spec` asks for, with each configuration's fingerprint.
    pub fn of(spec: &Spec, stamps: &[Stamp]) -> Self {
        Self {
            name: spec.name.clone(),
            baseline: spec.baseline.clone(),
            claims: spec.claims.clone(),
            configurations: spec
                .configurations
                .iter()
                .map(|c| (c.name.clone(), c.axes.clone()))
                .collect(),
            order: spec.configurations.iter().map(|c| c.name.clone()).collect(),
            seeds: spec.seeds.clone(),
            fingerprints: spec
                .configurations
                .iter()
                .zip(stamps)
                .map(|(c, s)| (c.name.clone(), s.fingerprint.clone()))
                .collect(),
        }
    }
}

/// A configuration's fingerprint and the provenance of its data.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// Where its data comes from.
    pub provenance: Provenance,
}

/// The stamp of every configuration of `spec`, in order (each data folder digested once).
pub fn stamps(spec: &Spec) -> Result<Vec<Stamp>, TrainError> {
    let mut provenances: BTreeMap<String, Provenance> = BTreeMap::new();
    spec.configurations
        .iter()
        .map(|c| {
            let data = &c.config.data;
            let key = format!("{}|{:?}", data.dataset, crate::data_folder(data)?);
            let provenance = match provenances.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let p = Provenance::of(data)?;
                    provenances.insert(key, p.clone());
                    p
                }
            };
            Ok(Stamp {
                fingerprint: Fingerprint::of(&c.config, &provenance)?,
                provenance,
            })
        })
        .collect()
}

/// Where the result of run `id` goes.
pub fn result_path(out: &Path, id: &str) -> PathBuf {
    out.join("results").join(format!("{id}.json"))
}

/// Where run `id` works.
pub fn run_dir(out: &Path, id: &str) -> PathBuf {
    out.join("runs").join(id)
}

/// Why run `key`'s files on disk do not belong to `stamp`'s settings, if they do not: its
/// result or its checkpoint was made under other settings or data, or cannot be read.
/// A run another worker is training is only compared, not verified.
fn recorded_change(
    out: &Path,
    spec: &Spec,
    key: &RunKey,
    stamp: &Stamp,
    lease: Duration,
) -> Result<Option<Vec<String>>, TrainError> {
    let config = &spec.configurations[key.configuration].config;
    let describe =
        |old: &RunConfig, old_data: Option<&Provenance>| -> Result<Vec<String>, TrainError> {
            let mut out = changes(old, config)?;
            if let Some(p) = old_data
                && p.files != stamp.provenance.files
            {
                out.push(format!(
                    "data files: {} → {}",
                    describe_files(&p.files),
                    describe_files(&stamp.provenance.files)
                ));
            }
            if out.is_empty() {
                out.push("the fingerprint differs (another results format or data)".into());
            }
            Ok(out)
        };
    let result = result_path(out, &key.id);
    if result.exists() {
        return match RunResult::load(&result) {
            Err(e) => Ok(Some(vec![format!(
                "its result cannot be read: {}",
                crate::error::chain(&e)
            )])),
            Ok(r) => match &r.fingerprint {
                None => Ok(Some(vec![format!(
                    "recorded before fingerprints (results format {})",
                    r.format
                )])),
                Some(f) if *f == stamp.fingerprint => Ok(None),
                Some(_) => describe(&r.config, r.provenance.as_ref()).map(Some),
            },
        };
    }
    let dir = run_dir(out, &key.id);
    let ckpts = Checkpoints::new(dir.join("checkpoints"));
    let checkpoint = match ckpts.peek() {
        Err(e) => {
            return Ok(Some(vec![format!(
                "its checkpoint cannot be read: {}",
                crate::error::chain(&e)
            )]));
        }
        Ok(None) => return Ok(None),
        Ok(Some(c)) => c,
    };
    if checkpoint.state.fingerprint != stamp.fingerprint.training {
        return Ok(Some(match RunFile::load(&dir) {
            Ok(file) => describe(&file.config, None)?,
            Err(_) => vec![format!(
                "its checkpoint {} was trained with other settings",
                checkpoint.dir.display()
            )],
        }));
    }
    let busy = crate::claim::latest_claim(&dir)?
        .is_some_and(|(_, c)| c.live(crate::claim::now_ms(), lease));
    if !busy && let Err(e) = checkpoint.verify() {
        return Ok(Some(vec![format!(
            "its checkpoint is damaged: {}",
            crate::error::chain(&e)
        )]));
    }
    Ok(None)
}

/// `name (bytes, md5)` of each file, for a change list.
fn describe_files(files: &[bnlab_data::FileDigest]) -> String {
    if files.is_empty() {
        return "none (generated)".into();
    }
    files
        .iter()
        .map(|f| format!("{} ({} bytes, md5 {})", f.name, f.bytes, f.md5))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Moves run `id`'s result and work directory to `superseded/<id>.<n>/`, the first free n.
fn supersede(out: &Path, id: &str) -> Result<PathBuf, TrainError> {
    let base = out.join("superseded");
    let target = (1..)
        .map(|n| base.join(format!("{id}.{n}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| base.join(id));
    std::fs::create_dir_all(&target).map_err(TrainError::io(&target))?;
    let result = result_path(out, id);
    if result.exists() {
        let to = target.join("result.json");
        std::fs::rename(&result, &to).map_err(TrainError::io(&to))?;
    }
    let dir = run_dir(out, id);
    if dir.exists() {
        let to = target.join("run");
        std::fs::rename(&dir, &to).map_err(TrainError::io(&to))?;
    }
    Ok(target)
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
    let sweep = SweepFile::of(spec, &stamps);
    let json = serde_json::to_vec_pretty(&sweep).map_err(|e| TrainError::Corrupt {
        path: out.join("sweep.json"),
        why: e.to_string(),
    })?;
    if leads {
        bnlab_data::write_atomic(&out.join("sweep.json"), &json)?;
    }

    let (done, pending): (Vec<RunKey>, Vec<RunKey>) = runs
        .into_iter()
        .partition(|r| result_path(out, &r.id).exists());
    let summary = Mutex::new(SweepSummary {
        already_done: done.len(),
        restarted,
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

/// Stops the sweep's workers with `e`, unless an earlier error did.
fn record_error(stop: &AtomicBool, slot: &Mutex<Option<TrainError>>, e: TrainError) {
    stop.store(true, Ordering::SeqCst);
    if let Ok(mut slot) = slot.lock()
        && slot.is_none()
    {
        *slot = Some(e);
    }
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

/// Trains one run and records its result or failure (if `claim` still holds).
#[allow(clippy::too_many_arguments)]
fn one_run(
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
                fingerprint: Some(stamp.fingerprint.clone()),
                provenance: Some(stamp.provenance.clone()),
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
