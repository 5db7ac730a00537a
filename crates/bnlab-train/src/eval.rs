//! Evaluation of a network under an explicit statistics source, PreciseBN (Wu & Johnson §3,
//! A.3), and a run's final evaluation under every scheme of its spec.

use std::collections::BTreeMap;

use bnlab_data::{Batch, Corruption, EpochBatches};
use bnlab_models::Network;
use bnlab_norm::{
    NormMode, PopulationEstimator, StatsSource, finalize_collected, norm_sites, reset_collected,
    set_norm_mode, set_norm_modes,
};
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::run::{EVAL_PASS, stat_batches};
use crate::{EvalKey, RunConfig, RunData, Scheme, TrainError};

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
        precise_bn(m, batches, PopulationEstimator::Pooled)
    };
    for scheme in &e.schemes {
        match scheme {
            Scheme::Population => {
                let m = with_source(model.valid(), StatsSource::Population);
                out.insert(
                    EvalKey::Population.to_string(),
                    test(&m, e.batch_size, false, None)?,
                );
            }
            Scheme::Precise => {
                let m = precise(model.valid(), None)?;
                out.insert(
                    EvalKey::Precise.to_string(),
                    test(&m, e.batch_size, false, None)?,
                );
            }
            Scheme::Minibatch => {
                let m = with_source(model.valid(), StatsSource::MiniBatch);
                for &b in &e.minibatch_sizes {
                    out.insert(EvalKey::MiniBatch(b).to_string(), test(&m, b, true, None)?);
                }
            }
            Scheme::Alpha => {
                for &alpha in &e.alphas {
                    let m = with_source(model.valid(), StatsSource::ExampleWeighed { alpha });
                    out.insert(
                        EvalKey::Alpha(alpha).to_string(),
                        test(&m, e.batch_size, false, None)?,
                    );
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
                    let batches = loader.epoch(&data.train_pool, None, EVAL_PASS)?;
                    out.insert(name.to_string(), evaluate_batches(&m, batches, device)?);
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
        out.insert(
            key(false).to_string(),
            test(&source, e.batch_size, false, corruption)?,
        );
        let adapted = precise(model.valid(), corruption)?;
        out.insert(
            key(true).to_string(),
            test(&adapted, e.batch_size, false, corruption)?,
        );
    }
    Ok(out)
}
