//! A STREAM-style triad `a = b + s·c` on both cores: the memory bandwidth the normalization
//! figures are measured against, in the same run.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use rayon::prelude::*;

use super::median;

/// Median bandwidth in GB/s (10⁹ bytes/s) of `reps` triads over arrays of `n` f32, counting
/// two reads and one write per element, on a pool of `threads` threads.
pub fn triad_gbs(n: usize, reps: usize, threads: usize) -> anyhow::Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let c: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
    let mut a = vec![0f32; n];
    let chunk = n.div_ceil(threads * 8).max(1);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps + 1 {
        let t = Instant::now();
        pool.install(|| {
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk))
                .zip(c.par_chunks(chunk))
                .for_each(|((a, b), c)| {
                    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                        *a = b + 3.0 * c;
                    }
                })
        });
        times.push(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&a);
    // the first pass faults the pages of `a` in: not a bandwidth figure
    let t = median(&mut times[1..]);
    Ok(3.0 * 4.0 * n as f64 / t / 1e9)
}

/// Median bandwidth in GB/s of `reps` elementwise sums `a = b + c` of `n` f32 on `device`
/// (two reads and one write per element), each waited for.
pub fn device_triad_gbs(n: usize, reps: usize, device: &Device) -> anyhow::Result<f64> {
    let b = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), device);
    let c = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), device);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps + 1 {
        let t = Instant::now();
        let a = b.clone() + c.clone();
        device.sync()?;
        times.push(t.elapsed().as_secs_f64());
        drop(a);
    }
    let t = median(&mut times[1..]);
    Ok(3.0 * 4.0 * n as f64 / t / 1e9)
}
