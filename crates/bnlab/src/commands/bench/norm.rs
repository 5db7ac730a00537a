//! `bnlab bench norm`: time of the normalization variants per training forward and per
//! forward + backward, as effective bandwidth against a triad measured in the same run, with
//! Burn's own `burn-nn` BatchNorm beside them, and how often each training call waits for
//! the device to read statistics back to the host ("reads"). The backward is seeded with a
//! ∂L/∂y made before the clock starts ([`backward_with`]), as PyTorch's `y.backward(dy)`.

use std::time::Instant;

use anyhow::{Result, bail};
use bnlab_norm::{
    BatchPolicy, GhostSplit, Kernel, Norm, NormConfig, NormMode, StatUnit, StatsSource, host_reads,
};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::{Device, Distribution, Tensor};

use super::median;
use super::seed::backward_with;
use super::triad::{Triad, device_triad_gbs, triad_gbs};
use bnlab_norm::DeviceName;

/// The shapes of the issue, (N, C, H, W).
const SHAPES: [[usize; 4]; 4] = [
    [128, 64, 32, 32],
    [128, 256, 8, 8],
    [32, 512, 4, 4],
    [8, 256, 56, 56],
];

/// A layer under test.
enum Layer {
    Ours(Box<Norm>),
    BurnNn(Box<BatchNorm>),
}

impl Layer {
    fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        Ok(match self {
            Layer::Ours(n) => n.forward(x)?,
            Layer::BurnNn(b) => b.forward(x),
        })
    }
}

/// (name, has a backward pass, layer) of every variant at `c` channels.
fn variants(c: usize, device: &Device) -> Vec<(&'static str, bool, Result<Layer>)> {
    let ours = |config: NormConfig, mode: NormMode| -> Result<Layer> {
        Ok(Layer::Ours(Box::new(config.init(device)?.with_mode(mode))))
    };
    let train = NormMode::Train;
    vec![
        ("plain BN", true, ours(NormConfig::new(c), train)),
        (
            "Ghost 32 contiguous",
            true,
            ours(
                NormConfig::new(c).with_batch(BatchPolicy::ghost(32, GhostSplit::Contiguous)),
                train,
            ),
        ),
        (
            "Ghost 32 strided",
            true,
            ours(
                NormConfig::new(c).with_batch(BatchPolicy::ghost(32, GhostSplit::Strided)),
                train,
            ),
        ),
        (
            "BatchGroup 32 × 2",
            true,
            ours(
                NormConfig::new(c).with_unit(StatUnit::BatchGroup {
                    channel_groups: 32,
                    example_groups: 2,
                }),
                train,
            ),
        ),
        (
            "GroupNorm 32",
            true,
            ours(
                NormConfig::new(c).with_unit(StatUnit::Group { groups: 32 }),
                train,
            ),
        ),
        (
            "ExampleWeighed eval α=0.5",
            false,
            ours(
                NormConfig::new(c),
                NormMode::Eval(StatsSource::ExampleWeighed { alpha: 0.5 }),
            ),
        ),
        (
            "Collect",
            false,
            ours(NormConfig::new(c), NormMode::Collect),
        ),
        (
            "fused BN (statistics planned on the host)",
            true,
            ours(NormConfig::new(c).with_kernel(Kernel::Fused), train),
        ),
        (
            "composed BN (reference)",
            true,
            ours(NormConfig::new(c).with_kernel(Kernel::Composed), train),
        ),
        (
            "burn-nn BatchNorm",
            true,
            Ok(Layer::BurnNn(Box::new(
                BatchNormConfig::new(c).init(device),
            ))),
        ),
    ]
}

/// Median seconds of `reps` calls of `f` after one untimed call, each call waiting until
/// `device` has finished its work.
fn time(reps: usize, device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut call = || -> Result<()> {
        f()?;
        super::sync(device)
    };
    call()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        call()?;
        t.push(start.elapsed().as_secs_f64());
    }
    Ok(median(&mut t))
}

/// Runs the benchmark and prints its table; the last line is plain BN forward + backward at
/// (128, 64, 32, 32) as a share of the triad bandwidth; `quick` keeps that shape alone, `shape`
/// measures another one instead, and `only` keeps the variants whose name contains it.
pub fn norm(
    which: DeviceName,
    quick: bool,
    shape: Option<[usize; 4]>,
    reps: usize,
    only: Option<&str>,
) -> Result<()> {
    if reps == 0 {
        bail!("--reps must be at least 1");
    }
    let device = which.device()?;
    let ad = device.clone().autodiff();
    device.seed(1);
    let one;
    let shapes: &[[usize; 4]] = match (shape, quick) {
        (Some(s), _) => {
            one = [s];
            &one
        }
        (None, true) => &SHAPES[..1],
        (None, false) => &SHAPES,
    };
    let largest = shapes.iter().map(|s| s.iter().product::<usize>()).max();
    let n = largest.unwrap_or(1 << 22);
    let triad = if which == DeviceName::Flex {
        let t = triad_gbs(n, 5, 2)?;
        println!("triad (2 threads, 2 reads + 1 write): {t:.2} GB/s");
        t
    } else {
        let t = device_triad_gbs(n, 20, &device)?;
        println!("triad on {which} (a = b + c, 2 reads + 1 write): {t:.2} GB/s");
        t
    };
    // the name column fits the longest variant name
    let name_w = variants(1, &ad)
        .iter()
        .map(|(name, ..)| name.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "{:<name_w$} {:>18} {:>10} {:>8} {:>12} {:>8} {:>7} {:>6}",
        "variant", "shape", "fwd ms", "GB/s", "fwd+bwd ms", "GB/s", "triad", "reads"
    );
    let mut headline = None;
    for &shape in shapes {
        let [n, c, h, w] = shape;
        let bytes = (n * c * h * w * 4) as f64;
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &ad);
        let xg = x.clone().require_grad();
        let dy = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &ad);
        for (name, backward, layer) in variants(c, &ad) {
            if only.is_some_and(|o| !name.contains(o)) {
                continue;
            }
            let shape_text = format!("{n}×{c}×{h}×{w}");
            let layer = match layer {
                Ok(l) => l,
                Err(e) => {
                    println!("{name:<name_w$} {shape_text:>18} n/a: {e}");
                    continue;
                }
            };
            let fwd = match time(reps, &device, || layer.forward(x.clone()).map(|_| ())) {
                Ok(t) => t,
                Err(e) => {
                    println!("{name:<name_w$} {shape_text:>18} n/a: {e}");
                    continue;
                }
            };
            // minimal traffic: forward 2 reads + 1 write, backward 3 reads + 1 write
            let fwd_gbs = 3.0 * bytes / fwd / 1e9;
            let both = if backward {
                let t = time(reps, &device, || {
                    backward_with(layer.forward(xg.clone())?, &dy);
                    Ok(())
                })?;
                Some((t, 7.0 * bytes / t / 1e9))
            } else {
                None
            };
            // the layer's waits for the device in one training call (forward, and backward)
            let before = host_reads();
            let y = layer.forward(xg.clone())?;
            if backward {
                backward_with(y, &dy);
            }
            // (burn-nn's own reads are not counted)
            let reads = match layer {
                Layer::Ours(_) => (host_reads() - before).to_string(),
                Layer::BurnNn(_) => "–".into(),
            };
            let (both_ms, both_gbs, share) = match both {
                Some((t, g)) => (
                    format!("{:.2}", 1e3 * t),
                    format!("{g:.2}"),
                    format!("{:.1} %", 100.0 * g / triad),
                ),
                None => (
                    "–".into(),
                    "–".into(),
                    format!("{:.1} %", 100.0 * fwd_gbs / triad),
                ),
            };
            println!(
                "{name:<name_w$} {shape_text:>18} {:>10.2} {fwd_gbs:>8.2} {both_ms:>12} {both_gbs:>8} {share:>7} {reads:>6}",
                1e3 * fwd,
            );
            if name == "plain BN" && shape == SHAPES[0] {
                headline = both;
            }
        }
    }
    if let Some((t, g)) = headline {
        println!(
            "plain BN forward+backward at (128, 64, 32, 32): {:.2} ms, {g:.2} GB/s = {:.1} % of the triad's {triad:.2} GB/s",
            1e3 * t,
            100.0 * g / triad
        );
        if which == DeviceName::Flex {
            alternated_share(&ad, reps.max(7))?;
        }
    }
    Ok(())
}

/// Plain BN's forward + backward at (128, 64, 32, 32) and the triad over as many elements,
/// alternated pass by pass, `pairs` times: the median and range of BN's share of the triad,
/// each pair's two passes on the same machine state. (The triad measured once, before the
/// table, drifts with the machine: from 15 to 39 GB/s between runs on a 2-core VM.)
fn alternated_share(ad: &Device, pairs: usize) -> Result<()> {
    let shape = SHAPES[0];
    let bytes = (shape.iter().product::<usize>() * 4) as f64;
    let Some((_, _, Ok(layer))) = variants(shape[1], ad)
        .into_iter()
        .find(|(name, ..)| *name == "plain BN")
    else {
        bail!("plain BN does not build at (128, 64, 32, 32)");
    };
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), ad).require_grad();
    let dy = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), ad);
    let mut triad = Triad::new(shape.iter().product(), 2)?;
    let pass = || -> Result<f64> {
        let start = Instant::now();
        backward_with(layer.forward(x.clone())?, &dy);
        Ok(7.0 * bytes / start.elapsed().as_secs_f64() / 1e9)
    };
    pass()?;
    let mut shares = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let t = triad.once();
        shares.push(100.0 * pass()? / t);
    }
    let (lo, hi) = shares
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        });
    println!(
        "plain BN forward+backward at (128, 64, 32, 32), alternated with the triad pass by pass: {:.1} % of the triad (median of {pairs} pairs; {lo:.1} to {hi:.1} %)",
        median(&mut shares)
    );
    Ok(())
}
