//! Evaluation of a network under an explicit statistics source, and PreciseBN
//! (Wu & Johnson §3, A.3).

use bnlab_data::{Batch, EpochBatches};
use bnlab_models::Network;
use bnlab_norm::{
    NormMode, PopulationEstimator, StatsSource, finalize_collected, norm_sites, reset_collected,
    set_norm_mode, set_norm_modes,
};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::TrainError;

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
/// training batch policy), written into the running statistics with Wu & Johnson's eq. 2.
/// Returns the model in `Eval(Population)` mode.
pub fn precise_bn(
    model: Network,
    batches: impl Iterator<Item = Result<Batch, TrainError>>,
) -> Result<Network, TrainError> {
    let model = reset_collected(set_norm_mode(model, NormMode::Collect));
    for batch in batches {
        let batch = batch?;
        model.forward(batch.images, batch.domains.as_deref())?;
    }
    let model = finalize_collected(model, PopulationEstimator::Pooled)?;
    Ok(set_norm_mode(model, NormMode::EVAL))
}

/// PreciseBN layer by layer (Wu & Johnson A.3): layer i's statistics are collected with
/// layers 0..i already using their new population statistics, so each layer sees the inputs
/// it will see at inference. `batches(i)` yields the data of pass i (one pass per layer).
pub fn precise_bn_exact<I>(
    model: Network,
    mut batches: impl FnMut(usize) -> Result<I, TrainError>,
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
        model = finalize_collected(model, PopulationEstimator::Pooled)?;
    }
    Ok(set_norm_mode(model, NormMode::EVAL))
}
