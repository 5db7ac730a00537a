//! One training run: epochs of training and validation with per-epoch checkpoints, the
//! best-validation checkpoint, and its evaluation under every scheme of the spec
//! (Davis & Frank §4.2; Wu & Johnson §3–5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bnlab_data::{Batch, Corruption, ImageSet};
use bnlab_models::{InputNormConfig, Network, build};
use bnlab_norm::{
    NormError, NormMode, StatsReducer, StatsSource, SyncReducer, norm_sites, set_norm_mode,
    set_outlier_probe, set_stats_reducer,
};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoints, LoopState, load_model, save_model};
use crate::diagnostics::{
    HistogramProbe, affine_layers, affine_params, gradient_factors, layer_diagnostics,
};
use crate::dist::{ShufflePlan, all_reduce_everyone, all_reduce_grads, select, shard, shuffle};
use crate::eval::{Tally, evaluate_batches, precise_bn, with_source};
use crate::{
    Configuration, Diagnostics, EpochRecord, GroupedOptimizer, InputNormName, LrCurve, Metrics,
    Progress, RESULT_FORMAT, RunConfig, RunData, RunResult, Scheme, Status, TrainError, Worker,
};

/// Burn's CPU random generator is global: seeding and building a network hold this lock, so
/// parallel runs initialize exactly as they would alone.
static INIT: Mutex<()> = Mutex::new(());

/// A number of epochs a process may still train; when it runs out, runs stop with
/// [`TrainError::Interrupted`] after their checkpoint (a controlled stand-in for a kill).
#[derive(Debug)]
pub struct Budget(AtomicUsize);

impl Budget {
    /// A budget of `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Self(AtomicUsize::new(epochs))
    }

    /// Spends one epoch; false once none is left.
    fn spend(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Whether any epoch is left.
    fn left(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// What identifies a run and where it works.
pub struct RunRequest<'a> {
    /// The sweep's name.
    pub sweep: &'a str,
    /// The configuration.
    pub configuration: &'a Configuration,
    /// The run index (1-based).
    pub index: u32,
    /// Its MD5 seed.
    pub seed: u32,
    /// The run's id (progress and logs).
    pub id: &'a str,
    /// Checkpoints and the final model go here.
    pub work_dir: PathBuf,
    /// Progress reporting.
    pub progress: &'a dyn Progress,
    /// An optional epoch budget.
    pub budget: Option<&'a Budget>,
    /// This process's place in a data-parallel job (`train.distributed.workers` > 1).
    pub worker: Option<Worker>,
}

/// What `bnlab eval` needs to rebuild a run's network: written next to its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    /// The configuration's name.
    pub configuration: String,
    /// The run index.
    pub index: u32,
    /// The seed.
    pub seed: u32,
    /// The settings.
    pub config: RunConfig,
    /// Offline input-normalization statistics, if used.
    pub input_stats: Option<(Vec<f64>, Vec<f64>)>,
}

/// The file names inside a run's work directory.
pub const RUN_FILE: &str = "run.json";
/// The evaluated (best-validation) model of a finished run.
pub const MODEL_FILE: &str = "model.bpk";

impl RunFile {
    /// Reads the run file of the run directory `dir`.
    pub fn load(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join(RUN_FILE);
        let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
            path,
            why: format!("not a bnlab run file: {e}"),
        })
    }

    /// Builds the network of this run on `device` and loads the model file of `dir`.
    pub fn network(
        &self,
        dir: &Path,
        data: &RunData,
        device: &Device,
    ) -> Result<Network, TrainError> {
        let net = new_network(
            &self.config,
            data,
            self.seed,
            self.input_stats.clone(),
            device,
        )?;
        load_model(net, &dir.join(MODEL_FILE))
    }
}

/// Builds the network of `config` for `data`, initialized from `seed`.
pub fn new_network(
    config: &RunConfig,
    data: &RunData,
    seed: u32,
    input_stats: Option<(Vec<f64>, Vec<f64>)>,
    device: &Device,
) -> Result<Network, TrainError> {
    let [channels, _, _] = data.input_shape();
    let mut options = config.model_options(data.classes(), channels);
    if let (Some(InputNormConfig::Offline { .. }), Some((mean, std))) =
        (&options.input_norm, input_stats)
    {
        options.input_norm = Some(InputNormConfig::Offline { mean, std });
    }
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    device.seed(seed as u64);
    let network = build(&config.model.name, &options, device)?;
    // parameters initialize lazily: draw them now, while the seeded generator is ours
    network.visit(&mut Materialize);
    Ok(network)
}

/// Reads every parameter once, which runs its (lazy) initializer.
struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        let _ = param.val();
    }
}

/// Batches of `set` at `pool` for statistics: `samples` images in batches of `batch`
/// (training augmentation, full batches only), pass `pass` of the run's shuffling; with a
/// worker, its shard of each.
#[allow(clippy::too_many_arguments)]
fn stat_batches<'a>(
    data: &RunData,
    set: &Arc<ImageSet>,
    pool: &[usize],
    samples: usize,
    batch: usize,
    corruption: Option<Corruption>,
    seed: u64,
    pass: u64,
    worker: Option<&'a Worker>,
    device: &'a Device,
) -> Result<impl Iterator<Item = Result<Batch, TrainError>> + 'a, TrainError> {
    let loader = data.loader(set, batch, true, true, corruption, seed)?;
    let batches = loader.epoch(pool, None, pass)?;
    Ok(batches.take(samples.div_ceil(batch.max(1))).map(move |b| {
        let b = b?;
        let b = match worker {
            Some(w) => {
                let mine: Vec<usize> = shard(b.labels.len(), w.rank(), w.size()).collect();
                select(&b, &mine)
            }
            None => b,
        };
        Ok(b.to_device(device))
    }))
}

/// This worker's examples of a global forward batch: its shard, or with Shuffle BN the
/// examples the step's shuffle sends it.
fn local_batch(
    worker: &Worker,
    batch: bnlab_data::HostBatch,
    shuffle_bn: bool,
    step_seed: u64,
) -> Result<bnlab_data::HostBatch, TrainError> {
    let n = batch.labels.len();
    let mine: Vec<usize> = shard(n, worker.rank(), worker.size()).collect();
    let own = select(&batch, &mine);
    if !shuffle_bn {
        return Ok(own);
    }
    let plan = ShufflePlan::new(n, worker.size(), step_seed);
    shuffle(worker.collective.as_ref(), &own, &plan)
}

/// Streams of the evaluation loaders, far from the training epochs'.
const EVAL_PASS: u64 = 1 << 32;

/// Trains, validates and evaluates one run; resumes from its last checkpoint.
pub fn train_run(req: &RunRequest) -> Result<RunResult, TrainError> {
    let config = &req.configuration.config;
    let seed = req.seed as u64;
    let data = RunData::load(&config.data, config.scaling())?;
    let input_stats = match config.model.input_norm {
        Some(InputNormName::Offline) => Some(data.offline_stats()?),
        _ => None,
    };
    let run_file = RunFile {
        configuration: req.configuration.name.clone(),
        index: req.index,
        seed: req.seed,
        config: config.clone(),
        input_stats: input_stats.clone(),
    };
    // with several workers, the leader (rank 0) writes every file of the run
    let leads = req.worker.as_ref().is_none_or(Worker::leads);
    if leads {
        std::fs::create_dir_all(&req.work_dir).map_err(TrainError::io(&req.work_dir))?;
        let json = serde_json::to_vec_pretty(&run_file).map_err(|e| TrainError::Corrupt {
            path: req.work_dir.join(RUN_FILE),
            why: e.to_string(),
        })?;
        bnlab_data::write_atomic(&req.work_dir.join(RUN_FILE), &json)?;
    }

    let device = req
        .worker
        .as_ref()
        .map_or_else(Device::flex, |w| w.device.clone());
    let ad = device.clone().autodiff();
    let t = &config.train;
    let (micro, accum) = (t.micro_batch(), t.accumulation());
    let updates_per_epoch = data.train_pool.len() / micro / accum;
    if updates_per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "batch_size = {} exceeds the {} training images",
            t.batch_size,
            data.train_pool.len()
        )));
    }
    let curve = Arc::new(LrCurve {
        schedule: config.schedule.clone(),
        steps_per_epoch: updates_per_epoch,
        total_steps: t.epochs * updates_per_epoch,
        warmup_steps: t.warmup_epochs * updates_per_epoch,
        rewarm: t
            .freeze_at_epoch
            .map(|k| (k * updates_per_epoch, updates_per_epoch)),
    });
    let ckpts = Checkpoints::new(req.work_dir.join("checkpoints"));
    let fresh = new_network(config, &data, req.seed, input_stats.clone(), &ad)?;
    let train_loader = data.train_loader(micro, seed)?;
    let eval_loader = data.loader(
        &data.train,
        config.eval.batch_size,
        false,
        false,
        None,
        seed,
    )?;
    let precise = |model: Network, pass: u64| -> Result<Network, TrainError> {
        let batches = stat_batches(
            &data,
            &data.train,
            &data.train_pool,
            config.eval.precise_samples,
            config.eval.precise_batch,
            None,
            seed,
            pass,
            req.worker.as_ref(),
            &device,
        )?;
        precise_bn(model, batches)
    };

    let (mut model, mut optim, mut state, mut best_file) = match ckpts.latest()? {
        Some(ck) => {
            let mut model = load_model(fresh, &ck.model())?;
            if ck.state.frozen {
                model = set_norm_mode(model, NormMode::Frozen);
            }
            let optim =
                GroupedOptimizer::new(&model, &config.optimizer, curve, ck.state.updates_done)?
                    .load(&ck.optimizer())?;
            (model, optim, ck.state.clone(), Some(ck.best()))
        }
        None => {
            // γ/√(σ²+ε) with σ² of the first training batch, on an independent copy
            let first = train_loader
                .epoch(&data.train_pool, None, 0)?
                .take(1)
                .map(|b| b.map(|b| b.to_device(&device)).map_err(TrainError::from));
            let probe = precise_bn(fresh.valid(), first)?;
            let state = LoopState {
                epochs_done: 0,
                updates_done: 0,
                history: Vec::new(),
                best: None,
                frozen: false,
                init_affine: affine_params(&fresh),
                gradient_factors: gradient_factors(&probe, config.model.norm.epsilon),
                histograms: BTreeMap::new(),
            };
            let optim = GroupedOptimizer::new(&fresh, &config.optimizer, curve, 0)?;
            (fresh, optim, state, None)
        }
    };
    let dist = &t.distributed;
    let sync = match &req.worker {
        Some(w) => {
            let c = w.collective.as_ref();
            if c.size() != dist.workers {
                return Err(TrainError::Config(format!(
                    "train.distributed.workers = {} but the job has {} workers",
                    dist.workers,
                    c.size()
                )));
            }
            let fingerprint = format!(
                "{} {} seed {} epochs done {} config {}",
                req.sweep,
                req.configuration.name,
                req.seed,
                state.epochs_done,
                serde_json::to_string(config).unwrap_or_default()
            );
            bnlab_norm::check_same(c, "the run", &fingerprint)?;
            let reducer = Arc::new(SyncReducer::new(
                w.collective.clone(),
                dist.sync_groups(),
                dist.weighting,
            )?);
            model = set_stats_reducer(model, reducer.clone());
            Some(reducer)
        }
        None => None,
    };
    if leads {
        req.progress
            .run_started(req.id, t.epochs, state.epochs_done);
    }

    while state.epochs_done < t.epochs {
        let epoch = state.epochs_done;
        if let Some(b) = req.budget
            && !b.spend()
        {
            return Err(TrainError::Interrupted);
        }
        if t.freeze_at_epoch == Some(epoch) && !state.frozen {
            model = set_norm_mode(precise(model, EVAL_PASS + epoch as u64)?, NormMode::Frozen);
            state.frozen = true;
        }
        let mut probe = (epoch == 0 && leads).then(|| HistogramProbe::new(&model));
        if leads {
            req.progress
                .epoch_started(req.id, epoch + 1, updates_per_epoch * accum);
        }
        let mut tally = Tally::default();
        let mut accumulated = GradientsAccumulator::new();
        let batches = train_loader.epoch(&data.train_pool, None, epoch as u64)?;
        for (i, batch) in batches.take(updates_per_epoch * accum).enumerate() {
            let batch = match &req.worker {
                Some(w) => {
                    let step_seed = seed ^ ((epoch as u64) << 32) ^ i as u64;
                    local_batch(w, batch?, dist.shuffle, step_seed)?
                }
                None => batch?,
            };
            let batch = batch.to_device(&ad);
            let logits = model.forward(batch.images, batch.domains.as_deref())?;
            let before = tally.loss;
            let loss = tally.add(logits, batch.labels);
            let mut step_loss = [tally.loss - before];
            if let Some(w) = &req.worker {
                // every worker stops on the same step when any one diverges
                all_reduce_everyone(w.collective.as_ref(), &mut step_loss)?;
            }
            if !step_loss[0].is_finite() {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    step: state.updates_done,
                    loss: step_loss[0] as f32,
                });
            }
            // each worker's share of the batch's mean loss; their gradients are summed
            let grads = loss.div_scalar(t.batch_size as f64).backward();
            if let Some(e) = sync.as_ref().and_then(|r| r.take_failure()) {
                return Err(e.into());
            }
            accumulated.accumulate(&model, GradientsParams::from_grads(grads, &model));
            if (i + 1) % accum == 0 {
                let mut grads = accumulated.grads();
                if let Some(w) = &req.worker {
                    grads = all_reduce_grads(w.collective.as_ref(), &model, grads)?;
                }
                if let Some(p) = probe.as_mut() {
                    p.record(&model, &grads, i / accum, updates_per_epoch);
                }
                model = optim.step(model, grads);
                state.updates_done += 1;
            }
            if leads {
                let m = tally.metrics();
                req.progress.batch_done(req.id, m.loss, m.accuracy);
            }
        }
        if let Some(p) = probe {
            state.histograms = p.finish();
        }
        if let Some(w) = &req.worker {
            let mut sums = [tally.loss, tally.correct as f64, tally.examples as f64];
            all_reduce_everyone(w.collective.as_ref(), &mut sums)?;
            tally.loss = sums[0];
            (tally.correct, tally.examples) = (sums[1] as usize, sums[2] as usize);
        }
        let trained = tally.metrics();
        let val_batches = |model: &Network| -> Result<Metrics, TrainError> {
            let batches = eval_loader.epoch(&data.val_pool, None, EVAL_PASS)?;
            evaluate_batches(model, batches, &device)
        };
        // PreciseBN runs on every worker (each on its shard); only the leader validates
        let precise_model = if t.precise_every_epoch && !data.val_pool.is_empty() {
            Some(precise(model.valid(), EVAL_PASS + epoch as u64)?)
        } else {
            None
        };
        let (val, val_precise) = if data.val_pool.is_empty() || !leads {
            (None, None)
        } else {
            let val = val_batches(&with_source(model.valid(), StatsSource::Population))?;
            let val_precise = precise_model.as_ref().map(val_batches).transpose()?;
            (Some(val), val_precise)
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            lr: optim.last_lr(),
            train_loss: trained.loss,
            train_accuracy: trained.accuracy,
            val,
            val_precise,
            frozen: state.frozen,
        };
        let is_best = match (val, state.best) {
            (Some(v), Some((_, b))) => v.accuracy > b,
            _ => true,
        };
        if is_best {
            state.best = Some((epoch + 1, val.map_or(f64::NAN, |v| v.accuracy)));
        }
        state.epochs_done += 1;
        state.history.push(record);
        let summary = match val {
            Some(v) => format!(
                "train loss {:.4}, val acc {:.2}%",
                trained.loss,
                100.0 * v.accuracy
            ),
            None => format!("train loss {:.4}", trained.loss),
        };
        if leads {
            let keep = if is_best { None } else { best_file.as_deref() };
            best_file = Some(ckpts.save(&state, &model, &optim, keep)?);
            req.progress.epoch_done(req.id, epoch + 1, &summary);
        }
        if let Some(b) = req.budget
            && !b.left()
            && state.epochs_done < t.epochs
        {
            return Err(TrainError::Interrupted);
        }
    }

    let finished = |state: LoopState, test, diagnostics| RunResult {
        format: RESULT_FORMAT,
        sweep: req.sweep.to_string(),
        configuration: req.configuration.name.clone(),
        axes: req.configuration.axes.clone(),
        index: req.index,
        seed: req.seed,
        config: config.clone(),
        status: Status::Finished,
        epochs: state.history,
        best_epoch: state.best.map(|(e, _)| e),
        test,
        diagnostics,
    };
    if !leads {
        // the other workers' replicas are the leader's; it evaluates and reports
        return Ok(finished(state, BTreeMap::new(), Diagnostics::default()));
    }
    // the evaluated model: the best-validation checkpoint, on the plain device
    let best_path = best_file.ok_or_else(|| TrainError::Corrupt {
        path: req.work_dir.clone(),
        why: "no checkpoint after training".into(),
    })?;
    let best = load_model(
        new_network(config, &data, req.seed, input_stats, &device)?,
        &best_path,
    )?;
    let best = set_norm_mode(best, NormMode::EVAL);
    let test = evaluate_schemes(config, &data, &best, seed, &device)?;
    let diagnostics = Diagnostics {
        layers: layer_diagnostics(
            &state.init_affine,
            &affine_layers(&best),
            &state.gradient_factors,
        ),
        histograms: state.histograms.clone(),
        outlier_share: outlier_shares(&data, &best, seed, config.eval.batch_size, &device)?,
    };
    save_model(&best, &req.work_dir.join(format!("{MODEL_FILE}.tmp")))?;
    std::fs::rename(
        req.work_dir.join(format!("{MODEL_FILE}.tmp")),
        req.work_dir.join(MODEL_FILE),
    )
    .map_err(TrainError::io(req.work_dir.join(MODEL_FILE)))?;
    Ok(finished(state, test, diagnostics))
}

/// The share of |x̂| > 6 per norm layer of `model` over the test set, population statistics.
fn outlier_shares(
    data: &RunData,
    model: &Network,
    seed: u64,
    batch: usize,
    device: &Device,
) -> Result<BTreeMap<String, f64>, TrainError> {
    let probed = set_outlier_probe(
        with_source(model.valid(), StatsSource::Population),
        Some(crate::OUTLIER_THRESHOLD),
    );
    let loader = data.loader(&data.test, batch, false, false, None, seed)?;
    evaluate_batches(
        &probed,
        loader.epoch(&data.test_pool, None, EVAL_PASS)?,
        device,
    )?;
    let (_, sites) = norm_sites(probed);
    Ok(sites
        .into_iter()
        .filter_map(|s| s.outliers.map(|o| (s.path, o.share())))
        .collect())
}

/// Whether an error ends only its run (recorded as a failure) rather than the sweep.
pub fn is_run_failure(e: &TrainError) -> bool {
    matches!(
        e,
        TrainError::Diverged { .. }
            | TrainError::Norm(NormError::NonFinite { .. })
            | TrainError::Model(bnlab_models::ModelError::Norm {
                source: NormError::NonFinite { .. },
                ..
            })
    )
}

/// The test metrics of `model` under every scheme of `config`, by scheme name.
pub fn evaluate_schemes(
    config: &RunConfig,
    data: &RunData,
    model: &Network,
    seed: u64,
    device: &Device,
) -> Result<BTreeMap<String, Metrics>, TrainError> {
    let e = &config.eval;
    let mut out = BTreeMap::new();
    let test = |m: &Network, batch: usize, drop_last: bool, corruption: Option<Corruption>| {
        let loader = data.loader(&data.test, batch, drop_last, false, corruption, seed)?;
        evaluate_batches(m, loader.epoch(&data.test_pool, None, EVAL_PASS)?, device)
    };
    let precise = |m: Network, corruption: Option<Corruption>| {
        let batches = stat_batches(
            data,
            &data.train,
            &data.train_pool,
            e.precise_samples,
            e.precise_batch,
            corruption,
            seed,
            EVAL_PASS + 1,
            None,
            device,
        )?;
        precise_bn(m, batches)
    };
    for scheme in &e.schemes {
        match scheme {
            Scheme::Population => {
                let m = with_source(model.valid(), StatsSource::Population);
                out.insert("population".into(), test(&m, e.batch_size, false, None)?);
            }
            Scheme::Precise => {
                let m = precise(model.valid(), None)?;
                out.insert("precise".into(), test(&m, e.batch_size, false, None)?);
            }
            Scheme::Minibatch => {
                let m = with_source(model.valid(), StatsSource::MiniBatch);
                for &b in &e.minibatch_sizes {
                    out.insert(format!("minibatch-{b}"), test(&m, b, true, None)?);
                }
            }
            Scheme::Alpha => {
                for &alpha in &e.alphas {
                    let m = with_source(model.valid(), StatsSource::ExampleWeighed { alpha });
                    out.insert(
                        format!("alpha-{alpha}"),
                        test(&m, e.batch_size, false, None)?,
                    );
                }
            }
            Scheme::TrainMinibatch => {
                let b = config.train.micro_batch();
                for (name, source) in [
                    ("train-minibatch", StatsSource::MiniBatch),
                    ("train-population", StatsSource::Population),
                ] {
                    let m = with_source(model.valid(), source);
                    let loader = data.loader(&data.train, b, true, false, None, seed)?;
                    let batches = loader.epoch(&data.train_pool, None, EVAL_PASS)?;
                    out.insert(name.into(), evaluate_batches(&m, batches, device)?);
                }
            }
        }
    }
    for a in &e.adapt {
        let corruption = Some(Corruption::new(a.corruption, a.severity)?);
        let name = format!("adapt-{:?}-{}", a.corruption, a.severity).to_lowercase();
        let source = with_source(model.valid(), StatsSource::Population);
        out.insert(
            format!("{name}-source"),
            test(&source, e.batch_size, false, corruption)?,
        );
        let adapted = precise(model.valid(), corruption)?;
        out.insert(
            format!("{name}-adapted"),
            test(&adapted, e.batch_size, false, corruption)?,
        );
    }
    Ok(out)
}
