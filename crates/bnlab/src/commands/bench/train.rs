//! `bnlab bench train`: images/s of one training step of a registered network on Flex or a
//! GPU (forward, backward, optimizer step), on random CIFAR-shaped batches.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bnlab_data::{Batch, HostBatch};
use bnlab_models::{ConvKernel, ModelOptions, NormSpec, build};
use bnlab_norm::{
    DeviceName, Kernel, NormConfig, SyncGroups, SyncReducer, SyncWeighting, set_stats_reducer,
};
use bnlab_train::{
    GroupedOptimizer, LrCurve, OptimizerConfig, Schedule, ShuffleAssignment, Worker,
    all_reduce_grads, cross_entropy_sum, precise_bn, shuffle,
};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};

use super::median;
use crate::args::{Distributed, KernelArg, SyncArg, TrainBenchArgs};

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
        conv,
        precise,
        distributed,
        sync,
        precision,
        device: which,
    } = *args;
    if batch == 0 || steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    // the MPI universe lives until the benchmark returns (dropping it finalizes MPI)
    let which = which.or(DeviceName::Flex);
    let device = which.device()?;
    precision.check(&device, which)?;
    let (_mpi, worker) = workers(distributed, &device)?;
    let (rank, k) = worker.as_ref().map_or((0, 1), |w| (w.rank(), w.size()));
    if !batch.is_multiple_of(k) {
        bail!("--batch {batch} must be a multiple of the {k} workers");
    }
    let local = batch / k;
    let ad = device.clone().autodiff();
    device.seed(1);
    let options = ModelOptions {
        num_classes: 10,
        in_channels: 3,
        norm: NormSpec::new(NormConfig::new(1).with_kernel(match kernel {
            KernelArg::Auto => Kernel::Auto,
            KernelArg::Fused => Kernel::Fused,
            KernelArg::Composed => Kernel::Composed,
        })),
        input_norm: None,
        zero_init_residual: false,
        width: 1.0,
        conv_kernel: match conv {
            KernelArg::Auto | KernelArg::Fused => ConvKernel::Auto,
            KernelArg::Composed => ConvKernel::Burn,
        },
        precision,
    };
    let mut net = build(model, &options, &ad).with_context(|| format!("building {model}"))?;
    if let Some(w) = &worker
        && sync == SyncArg::All
    {
        let reducer =
            SyncReducer::new(w.collective.clone(), SyncGroups::All, SyncWeighting::Count)?;
        net = set_stats_reducer(net, Arc::new(reducer));
    }
    let curve = Arc::new(LrCurve {
        schedule: Schedule::Constant,
        steps_per_epoch: 1,
        total_steps: steps + warmup,
        warmup_steps: 0,
        rewarm: None,
    });
    let mut optim = GroupedOptimizer::new(&net, &OptimizerConfig::default(), curve, 0)?;
    let pixels: Vec<f32> = Tensor::<4>::random(
        [local, 3, size, size],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
    .into_data()
    .convert::<f32>()
    .try_into_vec::<f32>()
    .map_err(|e| anyhow::anyhow!("reading the random batch back: {e:?}"))?;
    let own = HostBatch {
        pixels,
        shape: [local, 3, size, size],
        labels: (0..local).map(|i| (rank * local + i) % 10).collect(),
        domains: None,
        indices: (rank * local..(rank + 1) * local).collect(),
    };
    let (mut fwd, mut bwd, mut opt, mut total) = (vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        // the step's examples: own ones, or with Shuffle BN those the all-to-all brings
        let host = match &worker {
            Some(w) if sync == SyncArg::Shuffle => {
                let plan = ShuffleAssignment::new(batch, k, i as u64);
                shuffle(w.collective.as_ref(), &own, &plan)?
            }
            _ => own.clone(),
        };
        let b = host.to_device(&ad);
        let logits = net.forward(b.images, None)?;
        let loss = cross_entropy_sum(logits, b.labels).div_scalar(batch as f64);
        let value: f32 = loss.clone().into_scalar();
        let t1 = Instant::now();
        let mut grads = GradientsParams::from_grads(loss.backward(), &net);
        if let Some(w) = &worker {
            grads = all_reduce_grads(w.collective.as_ref(), &net, grads)?;
        }
        let t2 = Instant::now();
        net = optim.step(net, grads);
        // a GPU queues the step: wait for it, so that the clock measures the work
        super::sync(&device)?;
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
    if rank > 0 {
        return Ok(());
    }
    let rate = |v: &mut Vec<f64>| batch as f64 / median(v);
    let (f, b, o, s) = (
        median(&mut fwd),
        median(&mut bwd),
        median(&mut opt),
        median(&mut total),
    );
    println!(
        "{model} batch {batch} at {size}×{size} on {}, {precision:?} activations, {steps} timed steps after {warmup} (medians):",
        which
    );
    if k > 1 {
        println!(
            "  {k} workers × {local} examples, {sync:?} statistics (backward includes the gradient all-reduce)"
        );
    }
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

/// What keeps a transport alive, and this process's worker, in a `--distributed` benchmark.
type Guarded = (Option<Box<dyn std::any::Any>>, Option<Worker>);

/// This process's worker in a `--distributed` benchmark.
#[cfg(feature = "mpi")]
fn workers(distributed: Option<Distributed>, device: &Device) -> Result<Guarded> {
    match distributed {
        None => Ok((None, None)),
        Some(Distributed::Threads | Distributed::Cuda) => {
            bail!("bench train runs one worker per process: use mpi")
        }
        Some(Distributed::Mpi) => {
            let (universe, world) =
                bnlab_collective::MpiGroup::start(std::time::Duration::from_secs(600))?;
            Ok((
                Some(Box::new(universe)),
                Some(Worker::new(world, device.clone())),
            ))
        }
    }
}

/// Without the `mpi` feature there is no multi-process benchmark.
#[cfg(not(feature = "mpi"))]
fn workers(distributed: Option<Distributed>, _: &Device) -> Result<Guarded> {
    match distributed {
        None => Ok((None, None)),
        Some(_) => bail!("build with `--features mpi` and launch under mpirun"),
    }
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
    precise_bn(
        net,
        batches.into_iter().map(Ok),
        bnlab_norm::PopulationEstimator::Pooled,
    )?;
    Ok(start.elapsed().as_secs_f64())
}
