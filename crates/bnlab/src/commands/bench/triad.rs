//! A STREAM-style triad `a = b + s·c` on both cores: the memory bandwidth the normalization
//! figures are measured against, in the same run.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use rayon::prelude::*;

use super::median;

/// A triad's arrays and thread pool, kept so that single passes can be timed between other
/// work.
pub struct Triad {
    pool: rayon::ThreadPool,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    chunk: usize,
}

impl Triad {
    /// Arrays of `n` f32 on a pool of `threads` threads, `a`'s pages faulted in by one pass.
    pub fn new(n: usize, threads: usize) -> anyhow::Result<Triad> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let mut triad = Triad {
            pool,
            a: vec![0f32; n],
            b: (0..n).map(|i| (i % 7) as f32).collect(),
            c: (0..n).map(|i| (i % 5) as f32).collect(),
            chunk: n.div_ceil(threads * 8).max(1),
        };
        // the first pass faults the pages of `a` in: not a bandwidth figure
        triad.once();
        Ok(triad)
    }

    /// The bandwidth in GB/s (10⁹ bytes/s) of one pass, counting two reads and one write per
    /// element.
    pub fn once(&mut self) -> f64 {
        let Triad {
            pool,
            a,
            b,
            c,
            chunk,
        } = self;
        let t = Instant::now();
        pool.install(|| {
            a.par_chunks_mut(*chunk)
                .zip(b.par_chunks(*chunk))
                .zip(c.par_chunks(*chunk))
                .for_each(|((a, b), c)| {
                    for ((a, b), c) in a.iter_mut().zip(b.iter()).zip(c.iter()) {
                        *a = b + 3.0 * c;
                    }
                })
        });
        let seconds = t.elapsed().as_secs_f64();
        std::hint::black_box(&self.a);
        3.0 * 4.0 * self.a.len() as f64 / seconds / 1e9
    }
}

/// Median bandwidth in GB/s (10⁹ bytes/s) of `reps` triads over arrays of `n` f32, counting
/// two reads and one write per element, on a pool of `threads` threads.
pub fn triad_gbs(n: usize, reps: usize, threads: usize) -> anyhow::Result<f64> {
    let mut triad = Triad::new(n, threads)?;
    let mut gbs: Vec<f64> = (0..reps).map(|_| triad.once()).collect();
    Ok(median(&mut gbs))
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
