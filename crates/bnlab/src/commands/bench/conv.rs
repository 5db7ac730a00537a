//! `bnlab bench conv`: time of each convolution shape of ResNet-20 and the CIFAR ResNet-18 at
//! one batch size, forward and backward (input and weight gradients), through bnlab's kernels
//! and through Burn's own convolution in the same run. The backward is seeded with a dy made
//! before the clock starts, as PyTorch's `y.backward(dy)` in `bench/torch_conv.py`.

use std::time::Instant;

use anyhow::{Result, bail};
use bnlab_models::{ConvKernel, conv2d};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Distribution, Tensor};

use super::median;
use super::seed::backward_with;

/// (networks, C_in, H = W, C_out, kernel, stride) of every distinct convolution of ResNet-20
/// (option-A shortcuts) and the CIFAR ResNet-18 (projection shortcuts), padding k / 2.
const SHAPES: [(&str, usize, usize, usize, usize, usize); 17] = [
    ("r20", 3, 32, 16, 3, 1),
    ("r20", 16, 32, 16, 3, 1),
    ("r20", 16, 32, 32, 3, 2),
    ("r20", 32, 16, 32, 3, 1),
    ("r20", 32, 16, 64, 3, 2),
    ("r20", 64, 8, 64, 3, 1),
    ("r18", 3, 32, 64, 3, 1),
    ("r18", 64, 32, 64, 3, 1),
    ("r18", 64, 32, 128, 3, 2),
    ("r18", 64, 32, 128, 1, 2),
    ("r18", 128, 16, 128, 3, 1),
    ("r18", 128, 16, 256, 3, 2),
    ("r18", 128, 16, 256, 1, 2),
    ("r18", 256, 8, 256, 3, 1),
    ("r18", 256, 8, 512, 3, 2),
    ("r18", 256, 8, 512, 1, 2),
    ("r18", 512, 4, 512, 3, 1),
];

/// Median milliseconds of (forward, backward) of one convolution on `kernel`.
fn time(
    [cin, hw, cout, k, stride]: [usize; 5],
    batch: usize,
    kernel: ConvKernel,
    reps: usize,
) -> (f64, f64) {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let config = Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_bias(false);
    let (conv, conv_ad) = (config.init(&device), config.init(&ad));
    let x = Tensor::<4>::random(
        [batch, cin, hw, hw],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for i in 0..reps + 1 {
        let t0 = Instant::now();
        let y = conv2d(&conv, x.clone(), kernel);
        let _ = y.into_data();
        let t1 = Instant::now();
        let xa = Tensor::<4>::from_data(x.to_data(), &ad).require_grad();
        let y = conv2d(&conv_ad, xa.clone(), kernel);
        let dy = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &ad);
        let t2 = Instant::now();
        // (on Flex the gradients are computed when the call returns)
        backward_with(y, &dy);
        let t3 = Instant::now();
        // the first repetition warms caches and the allocator
        if i > 0 {
            fwd.push(1e3 * (t1 - t0).as_secs_f64());
            bwd.push(1e3 * (t3 - t2).as_secs_f64());
        }
    }
    (median(&mut fwd), median(&mut bwd))
}

/// Prints, for every shape, forward and backward milliseconds on bnlab's kernels and on Burn's
/// convolution, and their ratios.
pub fn conv(batch: usize, reps: usize, only: Option<&str>) -> Result<()> {
    if batch == 0 || reps == 0 {
        bail!("--batch and --reps must be at least 1");
    }
    if let Some(o) = only
        && !SHAPES.iter().any(|shape| shape.0 == o)
    {
        bail!("--only takes r20 or r18, not {o:?}");
    }
    println!("convolutions at batch {batch} on Flex, medians of {reps} (ms):");
    println!(
        "net  shape                      bnlab fwd   bwd  |  Burn fwd    bwd  | Burn/bnlab fwd  bwd"
    );
    for (net, cin, hw, cout, k, s) in SHAPES {
        if only.is_some_and(|o| o != net) {
            continue;
        }
        let shape = [cin, hw, cout, k, s];
        let (f, b) = time(shape, batch, ConvKernel::Auto, reps);
        let (bf, bb) = time(shape, batch, ConvKernel::Burn, reps);
        println!(
            "{net}  {cin:>3}→{cout:<3} {hw:>2}×{hw:<2} {k}×{k} s{s}     {f:8.2} {b:7.2} | {bf:8.2} {bb:7.2} | {:8.2} {:5.2}",
            bf / f,
            bb / b
        );
    }
    Ok(())
}
