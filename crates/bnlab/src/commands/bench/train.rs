//! `bnlab bench train`: images/s of one training step of a registered network on Flex
//! (forward, backward, optimizer step), on random CIFAR-shaped batches.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bnlab_data::Batch;
use bnlab_models::{ModelOptions, NormSpec, build};
use bnlab_norm::{Kernel, NormConfig};
use bnlab_train::{
    GroupedOptimizer, LrCurve, OptimizerConfig, Schedule, cross_entropy_sum, precise_bn,
};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor};

use super::median;
use crate::args::{KernelArg, TrainBenchArgs};

/// Training-set size the PreciseBN cost is compared against (CIFAR).
const EPOCH_IMAGES: usize = 50_000;

/// Times `steps` training steps of `model` at `batch` (after `warmup` untimed ones) and prints
/// images/s of the forward pass, the backward pass, the optimizer step and the whole step;
/// with `precise`, also PreciseBN over that many samples as a share of one epoch.
pub fn train(args: &TrainBenchArgs) -> Result<()> {
    let TrainBenchArgs {
        ref model,
        batch,
        steps,
        warmup,
        size,
        kernel,
        precise,
    } = *args;
    if batch == 0 || steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let device = Device::flex();
    let ad = device.clone().autodiff();
    device.seed(1);
    let options = ModelOptions {
        num_classes: 10,
        in_channels: 3,
        norm: NormSpec::new(NormConfig::new(1).with_kernel(match kernel {
            KernelArg::Fused => Kernel::Auto,
            KernelArg::Composed => Kernel::Composed,
        })),
        input_norm: None,
        zero_init_residual: false,
    };
    let mut net = build(model, &options, &ad).with_context(|| format!("building {model}"))?;
    let curve = Arc::new(LrCurve {
        schedule: Schedule::Constant,
        steps_per_epoch: 1,
        total_steps: steps + warmup,
        warmup_steps: 0,
        rewarm: None,
    });
    let mut optim = GroupedOptimizer::new(&net, &OptimizerConfig::default(), curve, 0)?;
    let x = Tensor::<4>::random([batch, 3, size, size], Distribution::Normal(0.0, 1.0), &ad);
    let labels = Tensor::<1, Int>::from_data(
        (0..batch)
            .map(|i| (i % 10) as i64)
            .collect::<Vec<_>>()
            .as_slice(),
        &ad,
    );
    let (mut fwd, mut bwd, mut opt, mut total) = (vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let logits = net.forward(x.clone(), None)?;
        let loss = cross_entropy_sum(logits, labels.clone()).div_scalar(batch as f64);
        let value: f32 = loss.clone().into_scalar();
        let t1 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let t2 = Instant::now();
        net = optim.step(net, grads);
        let t3 = Instant::now();
        if !value.is_finite() {
            bail!("the loss is {value} at step {i}");
        }
        if i >= warmup {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            opt.push((t3 - t2).as_secs_f64());
            total.push((t3 - t0).as_secs_f64());
        }
    }
    let rate = |v: &mut Vec<f64>| batch as f64 / median(v);
    let (f, b, o, s) = (
        median(&mut fwd),
        median(&mut bwd),
        median(&mut opt),
        median(&mut total),
    );
    println!(
        "{model} batch {batch} at {size}×{size}, {steps} timed steps after {warmup} (medians):"
    );
    println!(
        "  forward    {:8.1} ms  {:8.1} img/s",
        1e3 * f,
        rate(&mut fwd)
    );
    println!(
        "  backward   {:8.1} ms  {:8.1} img/s",
        1e3 * b,
        rate(&mut bwd)
    );
    println!("  optimizer  {:8.1} ms", 1e3 * o);
    println!("  whole step {:8.1} ms", 1e3 * s);
    println!("step {:.1} img/s", rate(&mut total));
    if precise > 0 {
        let t = precise_time(net.valid(), precise, batch, size, &device)?;
        let epoch = s * EPOCH_IMAGES as f64 / batch as f64;
        println!(
            "PreciseBN over {precise} samples: {t:.2} s = {:.2} % of one {EPOCH_IMAGES}-image epoch ({epoch:.1} s)",
            100.0 * t / epoch
        );
    }
    Ok(())
}

/// Seconds of PreciseBN over `samples` random images in batches of `batch`.
fn precise_time(
    net: bnlab_models::Network,
    samples: usize,
    batch: usize,
    size: usize,
    device: &Device,
) -> Result<f64> {
    // the batches are made before the clock starts: only PreciseBN itself is timed
    let batches: Vec<Batch> = (0..samples.div_ceil(batch))
        .map(|b| {
            let n = batch.min(samples - b * batch);
            Batch {
                images: Tensor::random([n, 3, size, size], Distribution::Normal(0.0, 1.0), device),
                labels: Tensor::zeros([n], device),
                domains: None,
                indices: Vec::new(),
            }
        })
        .collect();
    let start = Instant::now();
    precise_bn(net, batches.into_iter().map(Ok))?;
    Ok(start.elapsed().as_secs_f64())
}
