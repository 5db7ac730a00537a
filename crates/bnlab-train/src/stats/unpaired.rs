//! An unpaired difference of two arms: Welch's t with its interval and a stratified
//! bootstrap interval.

use serde::{Deserialize, Serialize};

use super::bootstrap;
use super::difference::LEVEL;
use super::ttest::{Interval, PValues, t_interval, t_p_values, welch};
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
        let (mean, se, df) = welch(a, b)?;
        let t = mean / se;
        Ok(Self {
            n_a: a.len(),
            n_b: b.len(),
            mean,
            t,
            df,
            t_p: t_p_values(t, df)?,
            t_ci: t_interval(mean, se, df, LEVEL)?,
            bootstrap_ci: bootstrap::stratified(a, b, LEVEL, bootstrap::RESAMPLES, bootstrap::SEED),
        })
    }
}
