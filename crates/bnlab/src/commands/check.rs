//! `bnlab check SPEC`: the spec validated as `bnlab run` would (every impossible combination
//! refused with its line), its configurations and runs listed, and the time they take
//! estimated from a few training steps measured on this machine.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bnlab_norm::{NormMode, set_norm_mode};
use bnlab_train::{
    GroupedOptimizer, LrCurve, RunConfig, RunData, Schedule, Spec, cross_entropy_sum, new_network,
};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor};

use super::bench::{median, sync};

/// Training steps timed per distinct network and batch (after one untimed step).
const TIMED_STEPS: usize = 3;

/// `bnlab check`.
pub fn run(path: &Path, timing: bool) -> Result<()> {
    let spec = Spec::load(path)?;
    let runs = spec.runs().len();
    println!(
        "{}: {} configurations × {} seeds = {runs} runs; the spec is valid",
        spec.name,
        spec.configurations.len(),
        spec.seeds.len()
    );
    if !timing {
        for c in &spec.configurations {
            println!("  {}", c.name);
        }
        return Ok(());
    }
    // one measurement per distinct network, normalization and batch
    let mut measured: BTreeMap<String, Seconds> = BTreeMap::new();
    let mut total = 0.0;
    for c in &spec.configurations {
        let key = format!(
            "{:?}",
            (
                &c.config.model,
                c.config.train.micro_batch(),
                &c.config.data
            )
        );
        let seconds = match measured.get(&key) {
            Some(s) => *s,
            None => {
                let s = measure(&c.config).with_context(|| format!("timing `{}`", c.name))?;
                measured.insert(key, s);
                s
            }
        };
        let run = seconds.per_run(&c.config);
        total += run * spec.seeds.len() as f64;
        println!(
            "  {:<40} ≈ {:>6.1} min per run ({:.1} ms per training step of {})",
            c.name,
            run / 60.0,
            1e3 * seconds.step,
            c.config.train.micro_batch()
        );
    }
    println!(
        "estimated time on this machine: {:.1} h for {runs} runs, one at a time",
        total / 3600.0
    );
    Ok(())
}

/// What one configuration's run costs, as measured.
#[derive(Debug, Clone, Copy)]
struct Seconds {
    /// One training step of a forward batch (forward, backward, update).
    step: f64,
    /// One image through the network in evaluation.
    eval_image: f64,
    /// Training images, validation images and test images.
    images: (usize, usize, usize),
}

impl Seconds {
    /// The seconds of one run of `config`: its training steps, per-epoch validation, the
    /// final evaluations and PreciseBN, at the measured speeds.
    fn per_run(&self, config: &RunConfig) -> f64 {
        let (train, val, test) = self.images;
        let t = &config.train;
        let e = &config.eval;
        let steps = (train / t.micro_batch().max(1)) * t.epochs;
        let mut eval_images = val * t.epochs;
        if t.precise_every_epoch {
            eval_images += (e.primary_precise().samples + val) * t.epochs;
        }
        // every evaluation key reads the test set (and the validation images when asked)
        let keys = e.schemes.len().max(1)
            + e.alphas.len()
            + e.minibatch_sizes.len()
            + 2 * e.adapt.len()
            + e.precise_settings().len();
        let splits = if e.splits.len() > 1 { test + val } else { test };
        eval_images += keys * splits;
        eval_images += e
            .precise_settings()
            .iter()
            .map(|(_, s)| s.samples)
            .sum::<usize>();
        steps as f64 * self.step + eval_images as f64 * self.eval_image
    }
}

/// Times a few training steps and an evaluation pass of `config`'s network on random images
/// of its data's shape, on its device.
fn measure(config: &RunConfig) -> Result<Seconds> {
    let data = RunData::load(&config.data, config.scaling())?;
    let device: Device = config.train.device.device()?;
    let ad = device.clone().autodiff();
    let mut net = new_network(config, &data, 1, None, &ad)?;
    let batch = config.train.micro_batch();
    let [c, h, w] = data.input_shape();
    let curve = Arc::new(LrCurve {
        schedule: Schedule::Constant,
        steps_per_epoch: 1,
        total_steps: TIMED_STEPS + 1,
        warmup_steps: 0,
        rewarm: None,
    });
    let mut optim = GroupedOptimizer::new(&net, &config.optimizer, curve, 0)?;
    let classes = data.classes();
    let labels: Vec<i64> = (0..batch).map(|i| (i % classes) as i64).collect();
    let mut times = Vec::new();
    for i in 0..=TIMED_STEPS {
        let x = Tensor::<4>::random([batch, c, h, w], Distribution::Normal(0.0, 1.0), &ad);
        let y = Tensor::<1, Int>::from_data(
            burn::tensor::TensorData::new(labels.clone(), [batch]),
            &ad,
        );
        let start = Instant::now();
        let loss = cross_entropy_sum(net.forward(x, None)?, y).div_scalar(batch as f64);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(net, grads);
        // a GPU queues the step: wait for it, so that the clock measures the work
        sync(&device)?;
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let eval = set_norm_mode(net.valid(), NormMode::EVAL);
    let n = config.eval.batch_size;
    let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    let start = Instant::now();
    eval.forward(x, None)?;
    sync(&device)?;
    let eval_image = start.elapsed().as_secs_f64() / n as f64;
    Ok(Seconds {
        step: median(&mut times),
        eval_image,
        images: (
            data.train_pool.len(),
            data.val_pool.len(),
            data.test_pool.len(),
        ),
    })
}
