//! Evaluation of a network under an explicit statistics source, PreciseBN (Wu & Johnson §3,
//! A.3), and a run's final evaluation under every scheme of its spec.

use std::collections::BTreeMap;

use bnlab_data::{Batch, Corruption, EpochBatches};
use bnlab_models::Network;
use bnlab_norm::{
    BatchPolicy, NormMode, PopulationEstimator, StatsSource, finalize_collected, norm_sites,
    reset_collected, set_collect_policy, set_norm_mode, set_norm_modes,
};
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::run::{EVAL_PASS, StatDraw, stat_batches};
use crate::{
    EvalConfig, EvalKey, PrecisePolicy, PreciseSetting, RunConfig, RunData, Scheme, Split,
    TrainError, Worker,
};

/// Loss and accuracy over a set of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Share of correct top-1 predictions.
    pub accuracy: f64,
    /// Examples evaluated.
    pub examples: usize,
}

impl Metrics {
    /// 1 − accuracy.
    pub fn error(&self) -> f64 {
        1.0 - self.accuracy
    }
}

/// Sums of a pass: cross-entropy and correct predictions.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) loss: f64,
    pub(crate) correct: usize,
    pub(crate) examples: usize,
}

impl Tally {
    /// Adds one batch of logits against `labels`; returns the batch's summed loss tensor.
    pub(crate) fn add(&mut self, logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
        let n = labels.dims()[0];
        let loss_sum = cross_entropy_sum(logits.clone(), labels.clone());
        let correct = logits
            .argmax(1)
            .flatten::<1>(0, 1)
            .equal(labels)
            .int()
            .sum()
            .into_scalar::<i64>();
        self.loss += loss_sum.clone().into_scalar::<f64>();
        self.correct += correct as usize;
        self.examples += n;
        loss_sum
    }

    /// The metrics so far.
    pub(crate) fn metrics(&self) -> Metrics {
        let n = self.examples.max(1) as f64;
        Metrics {
            loss: self.loss / n,
            accuracy: self.correct as f64 / n,
            examples: self.examples,
        }
    }
}

/// Σᵢ −log softmax(logitsᵢ)\[labelᵢ\], as a one-element tensor (differentiable).
pub fn cross_entropy_sum(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let n = labels.dims()[0];
    let picked = log_softmax(logits, 1).gather(1, labels.reshape([n, 1]));
    picked.sum().neg()
}

/// Runs `model` (already in the mode wanted) over `batches`.
pub fn evaluate_batches(
    model: &Network,
    batches: EpochBatches,
    device: &Device,
) -> Result<Metrics, TrainError> {
    let mut tally = Tally::default();
    for batch in batches {
        let Batch {
            images,
            labels,
            domains,
            ..
        } = batch?.to_device(device);
        let logits = model.forward(images, domains.as_deref())?;
        tally.add(logits, labels);
    }
    Ok(tally.metrics())
}

/// `model` with inference statistics from `source` on every norm layer.
pub fn with_source(model: Network, source: StatsSource) -> Network {
    set_norm_mode(model, NormMode::Eval(source))
}

/// PreciseBN: population statistics of every norm layer from `batches` (Collect mode, the
/// training batch policy), written into the running statistics by `estimator` (Wu & Johnson
/// A.2: eq. 2, [`PopulationEstimator::Pooled`], or eq. 3). Returns the model in
/// `Eval(Population)` mode.
pub fn precise_bn(
    model: Network,
    batches: impl Iterator<Item = Result<Batch, TrainError>>,
    estimator: PopulationEstimator,
) -> Result<Network, TrainError> {
    let model = reset_collected(set_norm_mode(model, NormMode::Collect));
    for batch in batches {
        let batch = batch?;
        model.forward(batch.images, batch.domains.as_deref())?;
    }
    let model = finalize_collected(model, estimator)?;
    Ok(set_norm_mode(model, NormMode::EVAL))
}

/// PreciseBN layer by layer (Wu & Johnson A.3): layer i's statistics are collected with
/// layers 0..i already using their new population statistics, so each layer sees the inputs
/// it will see at inference. `batches(i)` yields the data of pass i (one pass per layer).
pub fn precise_bn_exact<I>(
    model: Network,
    mut batches: impl FnMut(usize) -> Result<I, TrainError>,
    estimator: PopulationEstimator,
) -> Result<Network, TrainError>
where
    I: Iterator<Item = Result<Batch, TrainError>>,
{
    let (mut model, sites) = norm_sites(model);
    let layers = sites.len();
    for i in 0..layers {
        let modes: Vec<NormMode> = (0..layers)
            .map(|j| {
                if j == i {
                    NormMode::Collect
                } else {
                    NormMode::EVAL
                }
            })
            .collect();
        model = reset_collected(set_norm_modes(model, &modes));
        for batch in batches(i)? {
            let batch = batch?;
            model.forward(batch.images, batch.domains.as_deref())?;
        }
        model = finalize_collected(model, estimator)?;
    }
    Ok(set_norm_mode(model, NormMode::EVAL))
}

/// A run's final evaluation: metrics by result key ([`EvalKey`]) on each split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluations {
    /// On the test set (and the training-set schemes).
    pub test: BTreeMap<String, Metrics>,
    /// On the validation images, when `eval.splits` asks for them.
    pub validation: BTreeMap<String, Metrics>,
}

/// PreciseBN of `model` (consumed) under `setting`, with `eval`'s estimator (layer by layer
/// when `eval.exact`), from the training pool of `data` (pass `pass` of the run's shuffling,
/// one more per layer when exact), with training augmentation unless `eval.stats_augment` is
/// off, images corrupted by `corruption`, each worker on its shard. Returns the model in
/// `Eval(Population)` mode.
#[allow(clippy::too_many_arguments)]
pub(crate) fn precise_estimate(
    model: Network,
    data: &RunData,
    setting: PreciseSetting,
    eval: &EvalConfig,
    corruption: Option<Corruption>,
    (seed, pass): (u64, u64),
    worker: Option<&Worker>,
    device: &Device,
) -> Result<Network, TrainError> {
    let whole = setting.policy == PrecisePolicy::WholeBatch;
    let model = set_collect_policy(model, whole.then(BatchPolicy::default));
    let draw = StatDraw {
        samples: setting.samples,
        batch: setting.batch,
        corruption,
        augment: eval.stats_augment,
    };
    let batches = |layer: usize| {
        let pass = pass + layer as u64;
        stat_batches(
            data,
            (&data.train, &data.train_pool),
            draw,
            (seed, pass),
            worker,
            device,
        )
    };
    let model = if eval.exact {
        precise_bn_exact(model, batches, eval.estimator)?
    } else {
        precise_bn(model, batches(0)?, eval.estimator)?
    };
    Ok(set_collect_policy(model, None))
}

/// How an evaluation cuts its images into batches.
#[derive(Debug, Clone, Copy)]
enum Batches {
    /// Every image, in batches of this size (statistics that do not depend on the batch).
    Whole(usize),
    /// Mini-batches of this size, each normalized by its own statistics: a last partial
    /// batch is dropped, and `eval.minibatch_order` builds them.
    MiniBatch(usize),
}

/// Evaluates models on the splits a spec asks for, into [`Evaluations`].
struct Evaluator<'a> {
    config: &'a RunConfig,
    data: &'a RunData,
    seed: u64,
    device: &'a Device,
    out: Evaluations,
}

impl Evaluator<'_> {
    /// Records `model` (in the mode wanted) under `key` on every split, in `batches`, the
    /// images corrupted by `corruption`; with several domains, also each domain alone under
    /// `KEY/DOMAIN`.
    fn record(
        &mut self,
        key: EvalKey,
        model: &Network,
        batches: Batches,
        corruption: Option<Corruption>,
    ) -> Result<(), TrainError> {
        let data = self.data;
        let names = data.domain_names();
        for split in &self.config.eval.splits {
            let (set, pool, into) = match split {
                Split::Test => (&data.test, &data.test_pool, &mut self.out.test),
                Split::Validation => (&data.train, &data.val_pool, &mut self.out.validation),
            };
            let loader = match (batches, self.config.eval.minibatch_order) {
                (Batches::MiniBatch(b), Some(order)) => {
                    let ghost = self.config.model.norm.ghost_size;
                    data.ordered_loader(set, (order, ghost), b, false, self.seed)?
                }
                (Batches::MiniBatch(b), None) => {
                    data.loader(set, b, true, false, corruption, self.seed)?
                }
                (Batches::Whole(b), _) => {
                    data.loader(set, b, false, false, corruption, self.seed)?
                }
            };
            let metrics = evaluate_batches(model, loader.epoch(pool, EVAL_PASS)?, self.device)?;
            into.insert(key.to_string(), metrics);
            if let (Some(ids), true) = (data.domains_of(set), names.len() > 1) {
                for (d, name) in names.iter().enumerate() {
                    let mine: Vec<usize> = pool.iter().copied().filter(|&i| ids[i] == d).collect();
                    let batches = loader.epoch(&mine, EVAL_PASS)?;
                    let metrics = evaluate_batches(model, batches, self.device)?;
                    into.insert(format!("{key}/{name}"), metrics);
                }
            }
        }
        Ok(())
    }

    /// PreciseBN of `model` under `setting` with the spec's estimator, from the (corrupted)
    /// training images.
    fn precise(
        &self,
        model: &Network,
        setting: PreciseSetting,
        corruption: Option<Corruption>,
    ) -> Result<Network, TrainError> {
        let (config, data, device) = (self.config, self.data, self.device);
        final_precise(config, data, model, setting, corruption, self.seed, device)
    }
}

/// PreciseBN of a copy of `model` as a run's final evaluation computes it: under `setting`
/// with `config`'s estimator (and layer by layer when `exact`), from the training pool's
/// evaluation draw (the same images for every evaluation of the run), the images corrupted
/// by `corruption`. Returns the model in `Eval(Population)` mode.
pub fn final_precise(
    config: &RunConfig,
    data: &RunData,
    model: &Network,
    setting: PreciseSetting,
    corruption: Option<Corruption>,
    seed: u64,
    device: &Device,
) -> Result<Network, TrainError> {
    precise_estimate(
        model.valid(),
        data,
        setting,
        &config.eval,
        corruption,
        (seed, EVAL_PASS + 1),
        None,
        device,
    )
}

/// The metrics of `model` under every scheme of `config`, on every split it asks for.
pub fn evaluate_schemes(
    config: &RunConfig,
    data: &RunData,
    model: &Network,
    seed: u64,
    device: &Device,
) -> Result<Evaluations, TrainError> {
    let e = &config.eval;
    let mut ev = Evaluator {
        config,
        data,
        seed,
        device,
        out: Evaluations::default(),
    };
    let whole = Batches::Whole(e.batch_size);
    for scheme in &e.schemes {
        match scheme {
            Scheme::Population => {
                let m = with_source(model.valid(), StatsSource::Population);
                ev.record(EvalKey::Population, &m, whole, None)?;
            }
            Scheme::Precise => {
                for (key, setting) in e.precise_settings() {
                    let m = ev.precise(model, setting, None)?;
                    ev.record(key, &m, whole, None)?;
                }
            }
            Scheme::Minibatch => {
                let m = with_source(model.valid(), StatsSource::MiniBatch);
                for &b in &e.minibatch_sizes {
                    ev.record(EvalKey::MiniBatch(b), &m, Batches::MiniBatch(b), None)?;
                }
            }
            Scheme::Alpha => {
                for &alpha in &e.alphas {
                    let m = with_source(model.valid(), StatsSource::ExampleWeighed { alpha });
                    ev.record(EvalKey::Alpha(alpha), &m, whole, None)?;
                }
            }
            Scheme::TrainMinibatch => {
                let b = config.train.micro_batch();
                for (name, source) in [
                    (EvalKey::TrainMiniBatch, StatsSource::MiniBatch),
                    (EvalKey::TrainPopulation, StatsSource::Population),
                ] {
                    let m = with_source(model.valid(), source);
                    let loader = data.loader(&data.train, b, true, false, None, seed)?;
                    let batches = loader.epoch(&data.train_pool, EVAL_PASS)?;
                    let metrics = evaluate_batches(&m, batches, device)?;
                    ev.out.test.insert(name.to_string(), metrics);
                }
            }
        }
    }
    for a in &e.adapt {
        let corruption = Some(Corruption::new(a.corruption, a.severity)?);
        let key = |adapted| EvalKey::Adapt {
            kind: a.corruption,
            severity: a.severity,
            adapted,
        };
        let source = with_source(model.valid(), StatsSource::Population);
        ev.record(key(false), &source, whole, corruption)?;
        let adapted = ev.precise(model, e.primary_precise(), corruption)?;
        ev.record(key(true), &adapted, whole, corruption)?;
        if a.reverse {
            let reverse = EvalKey::AdaptReverse {
                kind: a.corruption,
                severity: a.severity,
            };
            ev.record(reverse, &adapted, whole, None)?;
        }
    }
    Ok(ev.out)
}
