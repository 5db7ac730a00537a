//! The training loop of one run ([`train_run`]): prepare its data and schedule, resume from
//! its last checkpoint or start, join the other workers, run the epochs, then evaluate the
//! best-validation checkpoint under every scheme.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bnlab_models::{InputNormName, Network};
use bnlab_norm::{
    LocalReducer, NormMode, PopulationEstimator, StatsReducer, StatsSource, SyncReducer,
    set_norm_mode, set_stats_reducer,
};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;

use crate::checkpoint::{Checkpoints, LoopState, load_model, save_model};
use crate::diagnostics::{
    HistogramProbe, affine_layers, affine_params, gradient_factors, layer_diagnostics,
};
use crate::dist::{all_reduce_everyone, all_reduce_grads};
use crate::eval::{
    Evaluations, Tally, evaluate_batches, evaluate_schemes, precise_bn, precise_estimate,
    with_source,
};
use crate::run::{EVAL_PASS, MODEL_FILE, local_batch, new_network, outlier_shares};
use crate::{
    Diagnostics, EpochRecord, Evaluated, GroupedOptimizer, LrCurve, Metrics, OrderName, PartLoader,
    RESULT_FORMAT, RunConfig, RunData, RunFile, RunRequest, RunResult, Status, TrainError, Worker,
};

/// Trains, validates and evaluates one run; resumes from its last checkpoint.
pub fn train_run(req: &RunRequest) -> Result<RunResult, TrainError> {
    let run = RunContext::prepare(req)?;
    let fresh = new_network(
        run.config,
        &run.data,
        req.seed,
        run.input_stats.clone(),
        &run.ad,
    )?;
    let training = run.resume_or_start(fresh)?;
    let (mut training, sync) = run.join_workers(training)?;
    if run.leads {
        req.progress
            .run_started(req.id, run.config.train.epochs, training.state.epochs_done);
    }
    while training.state.epochs_done < run.config.train.epochs {
        if req
            .cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(TrainError::LeaseLost(req.id.to_string()));
        }
        if let Some(b) = req.budget
            && !b.spend()
        {
            return Err(TrainError::Interrupted);
        }
        training = run.epoch(training, sync.as_deref())?;
        if let Some(b) = req.budget
            && !b.left()
            && training.state.epochs_done < run.config.train.epochs
        {
            return Err(TrainError::Interrupted);
        }
    }
    run.finish(training)
}

/// What training one run needs besides its model: the request, its data and loaders, the
/// devices, the learning-rate curve and the checkpoints.
struct RunContext<'r, 'a> {
    req: &'r RunRequest<'a>,
    config: &'a RunConfig,
    seed: u64,
    data: RunData,
    input_stats: Option<(Vec<f64>, Vec<f64>)>,
    /// With several workers, the leader (rank 0) writes every file of the run.
    leads: bool,
    /// The device of the run's worker, and its autodiff twin that trains.
    device: Device,
    ad: Device,
    /// Forward batches per optimizer update.
    accum: usize,
    updates_per_epoch: usize,
    curve: Arc<LrCurve>,
    ckpts: Checkpoints,
    train_loader: PartLoader,
    eval_loader: PartLoader,
}

/// The state training carries from epoch to epoch.
struct Training {
    model: Network,
    optim: GroupedOptimizer,
    state: LoopState,
    /// The checkpoint of the best validation epoch so far.
    best_file: Option<PathBuf>,
}

impl<'r, 'a> RunContext<'r, 'a> {
    /// Loads the run's data, writes its run file and lays out its schedule.
    fn prepare(req: &'r RunRequest<'a>) -> Result<Self, TrainError> {
        let config = &req.configuration.config;
        let seed = req.seed as u64;
        let data = RunData::load(&config.data, config.scaling())?;
        let input_stats = match config.model.input_norm {
            Some(InputNormName::Offline) => Some(data.offline_stats()?),
            _ => None,
        };
        let leads = req.worker.as_ref().is_none_or(Worker::leads);
        if leads {
            let run_file = RunFile {
                configuration: req.configuration.name.clone(),
                index: req.index,
                seed: req.seed,
                config: config.clone(),
                fingerprint: Some(req.fingerprint.clone()),
                input_stats: input_stats.clone(),
            };
            run_file.save(&req.work_dir)?;
        }
        let device = match &req.worker {
            Some(w) => w.device.clone(),
            None => config.train.device.device()?,
        };
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
        let ghost = config.model.norm.ghost_size;
        let train_loader = data.train_loader(micro, ghost, seed)?;
        let eval_loader = data.loader(
            &data.train,
            config.eval.batch_size,
            false,
            false,
            None,
            seed,
        )?;
        Ok(Self {
            req,
            config,
            seed,
            data,
            input_stats,
            leads,
            device,
            ad,
            accum,
            updates_per_epoch,
            curve,
            ckpts: Checkpoints::new(req.work_dir.join("checkpoints")),
            train_loader,
            eval_loader,
        })
    }

    /// PreciseBN statistics for a copy of `model` without autodiff, from the training pool
    /// (pass `pass` of the loader), each worker on its shard, with the spec's first N, B and
    /// policy.
    fn precise(&self, model: &Network, pass: u64) -> Result<Network, TrainError> {
        let e = &self.config.eval;
        // statistics need no gradients: on the training model every batch's graph would be
        // kept (14 GB for a ResNet-20 FrozenBN run)
        precise_estimate(
            model.valid(),
            &self.data,
            e.primary_precise(),
            e,
            None,
            (self.seed, pass),
            self.req.worker.as_ref(),
            &self.device,
        )
    }

    /// Validation of `model` under mini-batch statistics, in batches of one worker's forward
    /// batch built in `eval.minibatch_order`.
    fn minibatch_validation(&self, model: &Network) -> Result<Metrics, TrainError> {
        let (t, e) = (&self.config.train, &self.config.eval);
        let batch = t.micro_batch() / t.distributed.workers.max(1);
        let order = e.minibatch_order.unwrap_or(OrderName::Shuffle);
        let ghost = self.config.model.norm.ghost_size;
        let loader =
            self.data
                .ordered_loader(&self.data.train, (order, ghost), batch, false, self.seed)?;
        let batches = loader.epoch(&self.data.val_pool, EVAL_PASS)?;
        // the leader validates alone: a SyncBN reducer would wait for workers that do not
        // take part, so the replica normalizes with its own batches
        let alone = set_stats_reducer(model.valid(), Arc::new(LocalReducer));
        let m = with_source(alone, StatsSource::MiniBatch);
        evaluate_batches(&m, batches, &self.device)
    }

    /// The training state of the last checkpoint, or a fresh start from `fresh` (with the
    /// first-step gradient factors γ/√(σ²+ε) measured on an independent copy).
    fn resume_or_start(&self, fresh: Network) -> Result<Training, TrainError> {
        let (config, curve) = (self.config, self.curve.clone());
        if let Some(ck) = self.ckpts.latest()? {
            if ck.state.fingerprint != self.req.fingerprint.training {
                return Err(TrainError::Changed {
                    runs: vec![(
                        self.req.id.to_string(),
                        vec![format!(
                            "its checkpoint {} was trained with other settings",
                            ck.dir.display()
                        )],
                    )],
                });
            }
            let mut model = load_model(fresh, &ck.model())?;
            if ck.state.frozen {
                model = set_norm_mode(model, NormMode::Frozen);
            }
            crate::checkpoint::verify(&ck.optimizer())?;
            let optim =
                GroupedOptimizer::new(&model, &config.optimizer, curve, ck.state.updates_done)?
                    .load(&ck.optimizer())?;
            return Ok(Training {
                model,
                optim,
                state: ck.state.clone(),
                best_file: Some(ck.best()),
            });
        }
        let first = self
            .train_loader
            .epoch(&self.data.train_pool, 0)?
            .take(1)
            .map(|b| {
                b.map(|b| b.to_device(&self.device))
                    .map_err(TrainError::from)
            });
        let probe = precise_bn(fresh.valid(), first, PopulationEstimator::Pooled)?;
        let state = LoopState {
            fingerprint: self.req.fingerprint.training.clone(),
            epochs_done: 0,
            updates_done: 0,
            history: Vec::new(),
            best: None,
            frozen: false,
            init_affine: affine_params(&fresh)?,
            gradient_factors: gradient_factors(&probe, config.model.norm.epsilon)?,
            histograms: BTreeMap::new(),
        };
        let optim = GroupedOptimizer::new(&fresh, &config.optimizer, curve, 0)?;
        Ok(Training {
            model: fresh,
            optim,
            state,
            best_file: None,
        })
    }

    /// With several workers: checks that every worker runs the same run from the same point,
    /// and installs the synchronized statistics reducer.
    fn join_workers(
        &self,
        mut training: Training,
    ) -> Result<(Training, Option<Arc<SyncReducer>>), TrainError> {
        let Some(w) = &self.req.worker else {
            return Ok((training, None));
        };
        let dist = &self.config.train.distributed;
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
            self.req.sweep,
            self.req.configuration.name,
            self.req.seed,
            training.state.epochs_done,
            serde_json::to_string(self.config).map_err(|e| TrainError::Config(format!(
                "the settings cannot be written as JSON: {e}"
            )))?
        );
        bnlab_collective::check_same(c, "the run", &fingerprint)?;
        let reducer = Arc::new(SyncReducer::new(
            w.collective.clone(),
            dist.sync_groups(),
            dist.weighting,
        )?);
        training.model = set_stats_reducer(training.model, reducer.clone());
        Ok((training, Some(reducer)))
    }

    /// One epoch: FrozenBN's switch where due, the training steps, validation (with PreciseBN
    /// statistics where asked) and the checkpoint.
    fn epoch(
        &self,
        mut training: Training,
        sync: Option<&SyncReducer>,
    ) -> Result<Training, TrainError> {
        let t = &self.config.train;
        let epoch = training.state.epochs_done;
        if t.freeze_at_epoch == Some(epoch) && !training.state.frozen {
            // estimated without autodiff, then back in training mode, parameters and their
            // ids unchanged
            let model = self.precise(&training.model, EVAL_PASS + epoch as u64)?;
            training.model = set_norm_mode(model.train(), NormMode::Frozen);
            training.state.frozen = true;
        }
        let (mut training, trained) = self.train_steps(training, sync, epoch)?;
        let val_batches = |model: &Network| -> Result<Metrics, TrainError> {
            let batches = self.eval_loader.epoch(&self.data.val_pool, EVAL_PASS)?;
            evaluate_batches(model, batches, &self.device)
        };
        let data = &self.data;
        // PreciseBN runs on every worker (each on its shard); only the leader validates
        let precise_model = if t.precise_every_epoch && !data.val_pool.is_empty() {
            Some(self.precise(&training.model, EVAL_PASS + epoch as u64)?)
        } else {
            None
        };
        let (val, val_precise, val_minibatch) = if data.val_pool.is_empty() || !self.leads {
            (None, None, None)
        } else {
            let val = val_batches(&with_source(
                training.model.valid(),
                StatsSource::Population,
            ))?;
            let val_precise = precise_model.as_ref().map(val_batches).transpose()?;
            let val_minibatch = if t.minibatch_every_epoch {
                Some(self.minibatch_validation(&training.model)?)
            } else {
                None
            };
            (Some(val), val_precise, val_minibatch)
        };
        let state = &mut training.state;
        let record = EpochRecord {
            epoch: epoch + 1,
            lr: training.optim.last_lr(),
            train_loss: trained.loss,
            train_accuracy: trained.accuracy,
            val,
            val_precise,
            val_minibatch,
            frozen: state.frozen,
        };
        let is_best = match (t.evaluate, val, state.best) {
            (Evaluated::Last, _, _) => true,
            (Evaluated::BestValidation, Some(v), Some((_, b))) => v.accuracy > b,
            (Evaluated::BestValidation, _, _) => true,
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
        if self.leads {
            let keep = if is_best {
                None
            } else {
                training.best_file.as_deref()
            };
            training.best_file =
                Some(
                    self.ckpts
                        .save(&training.state, &training.model, &training.optim, keep)?,
                );
            self.req
                .progress
                .epoch_done(self.req.id, epoch + 1, &summary);
        }
        Ok(training)
    }

    /// The optimizer steps of epoch `epoch` (0-based); returns the training metrics, summed
    /// over the workers.
    fn train_steps(
        &self,
        mut training: Training,
        sync: Option<&SyncReducer>,
        epoch: usize,
    ) -> Result<(Training, Metrics), TrainError> {
        let (req, t, accum) = (self.req, &self.config.train, self.accum);
        let updates_per_epoch = self.updates_per_epoch;
        let mut probe = (epoch == 0 && self.leads)
            .then(|| HistogramProbe::new(&training.model))
            .transpose()?;
        if self.leads {
            req.progress
                .epoch_started(req.id, epoch + 1, updates_per_epoch * accum);
        }
        let mut tally = Tally::default();
        let mut accumulated = GradientsAccumulator::new();
        let batches = self
            .train_loader
            .epoch(&self.data.train_pool, epoch as u64)?;
        for (i, batch) in batches.take(updates_per_epoch * accum).enumerate() {
            let batch = match &req.worker {
                Some(w) => {
                    let step_seed = self.seed ^ ((epoch as u64) << 32) ^ i as u64;
                    local_batch(w, batch?, t.distributed.shuffle, step_seed)?
                }
                None => batch?,
            };
            let batch = batch.to_device(&self.ad);
            let logits = training
                .model
                .forward(batch.images, batch.domains.as_deref())?;
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
                    step: training.state.updates_done,
                    loss: step_loss[0] as f32,
                });
            }
            // each worker's share of the batch's mean loss; their gradients are summed
            let grads = loss.div_scalar(t.batch_size as f64).backward();
            if let Some(e) = sync.and_then(|r| r.take_failure()) {
                return Err(e.into());
            }
            accumulated.accumulate(
                &training.model,
                GradientsParams::from_grads(grads, &training.model),
            );
            if (i + 1) % accum == 0 {
                let mut grads = accumulated.grads();
                if let Some(w) = &req.worker {
                    grads = all_reduce_grads(w.collective.as_ref(), &training.model, grads)?;
                }
                if let Some(p) = probe.as_mut() {
                    p.record(&training.model, &grads, i / accum, updates_per_epoch)?;
                }
                training.model = training.optim.step(training.model, grads);
                training.state.updates_done += 1;
            }
            if self.leads {
                let m = tally.metrics();
                req.progress.batch_done(req.id, m.loss, m.accuracy);
            }
        }
        if let Some(p) = probe {
            training.state.histograms = p.finish();
        }
        if let Some(w) = &req.worker {
            let mut sums = [tally.loss, tally.correct as f64, tally.examples as f64];
            all_reduce_everyone(w.collective.as_ref(), &mut sums)?;
            tally.loss = sums[0];
            (tally.correct, tally.examples) = (sums[1] as usize, sums[2] as usize);
        }
        Ok((training, tally.metrics()))
    }

    /// The run's result: the best-validation checkpoint evaluated under every scheme, with
    /// diagnostics, and its model saved (the leader; the other workers only report).
    fn finish(&self, training: Training) -> Result<RunResult, TrainError> {
        let (req, config) = (self.req, self.config);
        let finished = |state: LoopState, evaluations: Evaluations, diagnostics| RunResult {
            format: RESULT_FORMAT,
            sweep: req.sweep.to_string(),
            configuration: req.configuration.name.clone(),
            axes: req.configuration.axes.clone(),
            index: req.index,
            seed: req.seed,
            config: config.clone(),
            fingerprint: Some(req.fingerprint.clone()),
            provenance: Some(req.provenance.clone()),
            status: Status::Finished,
            epochs: state.history,
            best_epoch: state.best.map(|(e, _)| e),
            test: evaluations.test,
            validation: evaluations.validation,
            diagnostics,
        };
        let state = training.state;
        if !self.leads {
            // the other workers' replicas are the leader's; it evaluates and reports
            return Ok(finished(
                state,
                Evaluations::default(),
                Diagnostics::default(),
            ));
        }
        // the evaluated model: the best-validation checkpoint, on the plain device
        let best_path = training.best_file.ok_or_else(|| TrainError::Corrupt {
            path: req.work_dir.clone(),
            why: "no checkpoint after training".into(),
        })?;
        let best = load_model(
            new_network(
                config,
                &self.data,
                req.seed,
                self.input_stats.clone(),
                &self.device,
            )?,
            &best_path,
        )?;
        let best = set_norm_mode(best, NormMode::EVAL);
        let (data, seed, device) = (&self.data, self.seed, &self.device);
        let evaluations = evaluate_schemes(config, data, &best, seed, device)?;
        let diagnostics = Diagnostics {
            layers: layer_diagnostics(
                &state.init_affine,
                &affine_layers(&best)?,
                &state.gradient_factors,
            ),
            histograms: state.histograms.clone(),
            outlier_share: outlier_shares(data, &best, seed, config.eval.batch_size, device)?,
        };
        save_model(&best, &req.work_dir.join(MODEL_FILE))?;
        Ok(finished(state, evaluations, diagnostics))
    }
}
