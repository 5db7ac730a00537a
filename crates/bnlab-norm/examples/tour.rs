//! A tour of the layer on synthetic class-conditional images: training-mode statistics,
//! PreciseBN (Collect + finalize), the three inference sources, and folding into a convolution.
//!
//! Run with `cargo run --release -p bnlab-norm --example tour`.

use bnlab_norm::{
    BatchPolicy, GhostSplit, Norm, NormConfig, NormError, NormMode, PopulationEstimator,
    StatsSource, finalize_collected, set_norm_mode,
};
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

/// conv → Norm → ReLU → conv → Norm → global average pool.
#[derive(Module, Debug)]
struct Net {
    conv1: Conv2d,
    norm1: Norm,
    conv2: Conv2d,
    norm2: Norm,
}

impl Net {
    fn new(norm: &NormConfig, device: &Device) -> Result<Self, NormError> {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Ok(Self {
            conv1: conv(1, 8),
            norm1: norm.for_channels(8).init(device)?,
            conv2: conv(8, 8),
            norm2: norm.for_channels(8).init(device)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Result<Tensor<2>, NormError> {
        let h = relu(self.norm1.forward(self.conv1.forward(x))?);
        let h = self.norm2.forward(self.conv2.forward(h))?;
        Ok(h.mean_dim(3).mean_dim(2).flatten(1, 3))
    }
}

/// `n` 1×8×8 images whose brightness pattern depends on the class (deterministic).
fn images(n: usize, offset: usize, device: &Device) -> Tensor<4> {
    let mut v = Vec::with_capacity(n * 64);
    for i in 0..n {
        let class = (i + offset) % 4;
        for p in 0..64 {
            let (r, c) = (p / 8, p % 8);
            let signal = if (r / 4) * 2 + c / 4 == class {
                2.0
            } else {
                0.0
            };
            let noise = (((i + offset) * 7919 + p * 104729) % 1000) as f32 / 500.0 - 1.0;
            v.push(signal + noise);
        }
    }
    Tensor::from_data(TensorData::new(v, [n, 1, 8, 8]), device)
}

fn mean_abs(t: Tensor<2>) -> f32 {
    t.abs().mean().into_scalar::<f32>()
}

fn main() -> Result<(), NormError> {
    let device = Device::flex();
    let config = NormConfig::new(8).with_batch(BatchPolicy::ghost(16, GhostSplit::Strided));
    let net = Net::new(&config, &device)?;

    // Train mode: ghost-batch statistics, EMA running statistics (momentum 0.1)
    for step in 0..20 {
        net.forward(images(64, step * 64, &device))?;
    }
    let ema_mean = net.norm2.state.running_mean();

    // PreciseBN: Collect over 40 batches, then finalize with Wu & Johnson eq. 2
    let net = set_norm_mode(net, NormMode::Collect);
    for step in 0..40 {
        net.forward(images(64, 10_000 + step * 64, &device))?;
    }
    let net = finalize_collected(net, PopulationEstimator::Pooled)?;
    let precise_mean = net.norm2.state.running_mean();
    println!(
        "layer 2 running mean: EMA vs PreciseBN differ by {:.4} on average",
        mean_abs(ema_mean - precise_mean)
    );

    // Inference under three statistic sources, on the same test batch
    let test = images(32, 50_000, &device);
    let population = set_norm_mode(net.clone(), NormMode::EVAL).forward(test.clone())?;
    println!("| source | mean abs. difference from population |");
    println!("|---|---|");
    for (name, source) in [
        ("population", StatsSource::Population),
        ("mini-batch (ghost 16)", StatsSource::MiniBatch),
        (
            "example-weighed α=0.1",
            StatsSource::ExampleWeighed { alpha: 0.1 },
        ),
    ] {
        let out = set_norm_mode(net.clone(), NormMode::Eval(source)).forward(test.clone())?;
        println!("| {name} | {:.5} |", mean_abs(out - population.clone()));
    }

    // Deployment: fold the first layer into its convolution
    let eval = set_norm_mode(net, NormMode::EVAL);
    let folded = eval.norm1.fold_into_conv(&eval.conv1)?;
    let a = eval.norm1.forward(eval.conv1.forward(test.clone()))?;
    let b = folded.forward(test);
    let diff: f32 = (a - b).abs().max().into_scalar::<f32>();
    println!("fold_into_conv: max |difference| = {diff:.2e}");
    Ok(())
}
