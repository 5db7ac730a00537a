//! `bnlab bench …`: speed figures recorded in BENCHMARKS.md.

pub mod conv;
pub mod norm;
mod seed;
pub mod train;
mod triad;

/// Waits until `device` has finished its queued work (a GPU queues it), so that a clock
/// read after it measures the work.
pub fn sync(device: &burn::tensor::Device) -> anyhow::Result<()> {
    device
        .sync()
        .map_err(|e| anyhow::anyhow!("the device failed: {e:?}"))
}

/// The median of `v` (sorted in place); 0 for none.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}
