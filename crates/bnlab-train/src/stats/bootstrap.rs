//! Seeded percentile bootstrap intervals of a mean difference (Bouthillier et al. 2021;
//! Agarwal et al. 2021): paired (runs resampled as pairs) and stratified (each arm resampled
//! on its own). The same input and seed give the same interval.

use bnlab_data::Rng;

use super::ttest::Interval;

/// Resamples per interval.
pub const RESAMPLES: usize = 10_000;

/// The seed of every interval in a report (any fixed value would do: it makes reports
/// reproducible, not better).
pub const SEED: u64 = 20_211_001;

/// Stream id of the bootstrap's draws (apart from bnlab-data's streams).
const STREAM: u64 = 0xB007;

/// The mean of `values[i]` over `n` indices drawn with replacement.
fn resampled_mean(values: &[f64], rng: &mut Rng) -> f64 {
    let n = values.len();
    (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64
}

/// The `q` quantile of sorted `v`, interpolated linearly (numpy's default).
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// The central `level` interval of `stats`.
fn percentile(mut stats: Vec<f64>, level: f64) -> Interval {
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Interval {
        low: quantile(&stats, tail),
        high: quantile(&stats, 1.0 - tail),
    }
}

/// The paired bootstrap interval of the mean of the differences `d` (at least one).
pub fn paired(d: &[f64], level: f64, resamples: usize, seed: u64) -> Interval {
    let mut rng = Rng::new(seed, STREAM, 0, 0);
    let stats = (0..resamples)
        .map(|_| resampled_mean(d, &mut rng))
        .collect();
    percentile(stats, level)
}

/// The stratified bootstrap interval of mean(a) − mean(b) (each at least one value).
pub fn stratified(a: &[f64], b: &[f64], level: f64, resamples: usize, seed: u64) -> Interval {
    let mut rng = Rng::new(seed, STREAM, 1, 0);
    let stats = (0..resamples)
        .map(|_| resampled_mean(a, &mut rng) - resampled_mean(b, &mut rng))
        .collect();
    percentile(stats, level)
}
