//! An unpaired difference of two arms: Welch's t with its interval and a stratified
//! bootstrap interval.

use serde::{Deserialize, Serialize};

use super::bootstrap;
use super::difference::LEVEL;
use super::summary::summary;
use super::ttest::{Interval, PValues, t_interval, t_p_values};
use crate::TrainError;

/// mean(a) − mean(b) over all finished runs of each arm, unpaired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnpairedDifference {
    /// Runs of `a`.
    pub n_a: usize,
    /// Runs of `b`.
    pub n_b: usize,
    /// mean(a) − mean(b).
    pub mean: f64,
    /// Welch's t.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Welch p-values.
    pub t_p: PValues,
    /// The 95 % Welch interval.
    pub t_ci: Interval,
    /// The 95 % stratified bootstrap interval (10,000 resamples, seeded).
    pub bootstrap_ci: Interval,
}

impl UnpairedDifference {
    /// The comparison of `a` with `b` (at least 2 runs each, not all equal).
    pub fn of(a: &[f64], b: &[f64]) -> Result<Self, TrainError> {
        let (Some(x), Some(y)) = (summary(a), summary(b)) else {
            return Err(TrainError::Report(
                "Welch's test needs two non-empty arms".into(),
            ));
        };
        if x.n < 2 || y.n < 2 {
            return Err(TrainError::Report(format!(
                "Welch's test needs at least 2 runs per arm, got {} and {}",
                x.n, y.n
            )));
        }
        let (vx, vy) = (x.std.powi(2) / x.n as f64, y.std.powi(2) / y.n as f64);
        let se = (vx + vy).sqrt();
        let mean = x.mean - y.mean;
        let t = mean / se;
        let df =
            (vx + vy).powi(2) / (vx.powi(2) / (x.n - 1) as f64 + vy.powi(2) / (y.n - 1) as f64);
        Ok(Self {
            n_a: x.n,
            n_b: y.n,
            mean,
            t,
            df,
            t_p: t_p_values(t, df)?,
            t_ci: t_interval(mean, se, df, LEVEL)?,
            bootstrap_ci: bootstrap::stratified(a, b, LEVEL, bootstrap::RESAMPLES, bootstrap::SEED),
        })
    }
}
