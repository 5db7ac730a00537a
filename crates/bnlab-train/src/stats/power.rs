//! Power of the two-sided paired t-test (as statsmodels' `TTestPower`): the chance to detect a
//! true mean difference δ with n pairs whose differences have standard deviation σ, the
//! minimum detectable effect at 80 % power, and the pairs needed for a target effect.
//!
//! The noncentral t's distribution function is an integral over the chi-distributed
//! denominator, P(T′ ≤ x) = E[Φ(x·S − λ)] with S = √(χ²_df / df) and λ = δ√n / σ, computed with
//! Simpson's rule (statrs has no noncentral t).

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
use statrs::function::gamma::ln_gamma;

/// The power sought for the minimum detectable effect and the seeds needed.
pub const POWER: f64 = 0.8;

/// The most pairs [`pairs_needed`] looks for.
const MAX_PAIRS: usize = 100_000;

/// Simpson intervals over S (even).
const STEPS: usize = 4000;

/// P(T′ ≤ x) for the noncentral t with `df` degrees of freedom and noncentrality `ncp`.
fn noncentral_t_cdf(x: f64, df: f64, ncp: f64) -> f64 {
    let normal = Normal::standard();
    // density of S = √(V/df), V ~ χ²(df): 2·df·s·f_χ²(df·s²), in logs
    let log_norm = (df / 2.0) * (df / 2.0).ln() + std::f64::consts::LN_2 - ln_gamma(df / 2.0);
    let density = |s: f64| {
        if s <= 0.0 {
            return if df == 1.0 { log_norm.exp() } else { 0.0 };
        }
        (log_norm + (df - 1.0) * s.ln() - df * s * s / 2.0).exp()
    };
    let f = |s: f64| density(s) * normal.cdf(x * s - ncp);
    let hi = 1.0 + 40.0 / (2.0 * df).sqrt();
    let h = hi / STEPS as f64;
    let mut sum = f(0.0) + f(hi);
    for i in 1..STEPS {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        sum += w * f(i as f64 * h);
    }
    (sum * h / 3.0).clamp(0.0, 1.0)
}

/// The two-sided critical t at `alpha` with `df` degrees of freedom.
fn critical(alpha: f64, df: f64) -> Option<f64> {
    let t = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(t.inverse_cdf(1.0 - alpha / 2.0))
}

/// The power of the two-sided paired t-test at `alpha` to detect a true mean difference of
/// `effect` standard deviations with `n` pairs; `None` for n < 2.
pub fn power(effect: f64, n: usize, alpha: f64) -> Option<f64> {
    if n < 2 || !effect.is_finite() {
        return None;
    }
    let df = (n - 1) as f64;
    let crit = critical(alpha, df)?;
    let ncp = effect * (n as f64).sqrt();
    Some((1.0 - noncentral_t_cdf(crit, df, ncp)) + noncentral_t_cdf(-crit, df, ncp))
}

/// The smallest effect, in standard deviations of the difference, that `n` pairs detect with
/// [`POWER`] at `alpha` (two-sided); `None` for n < 2.
pub fn minimum_detectable_effect(n: usize, alpha: f64) -> Option<f64> {
    let reaches = |d: f64| power(d, n, alpha).is_some_and(|p| p >= POWER);
    let (mut lo, mut hi) = (0.0, 1.0);
    while !reaches(hi) {
        hi *= 2.0;
        if hi > 1e6 {
            return None;
        }
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if reaches(mid) { hi = mid } else { lo = mid }
    }
    Some(hi)
}

/// The fewest pairs (at least 2) that detect `effect` standard deviations with [`POWER`] at
/// `alpha`; `None` when more than 100,000 would be needed or the effect is zero.
pub fn pairs_needed(effect: f64, alpha: f64) -> Option<usize> {
    let effect = effect.abs();
    if effect == 0.0 || !effect.is_finite() {
        return None;
    }
    let reaches = |n: usize| power(effect, n, alpha).is_some_and(|p| p >= POWER);
    if reaches(2) {
        return Some(2);
    }
    let (mut lo, mut hi) = (2, 4);
    while !reaches(hi) {
        lo = hi;
        hi *= 2;
        if hi > MAX_PAIRS {
            return None;
        }
    }
    // the power grows with n: the first n that reaches it lies in (lo, hi]
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if reaches(mid) { hi = mid } else { lo = mid }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_central_t_is_students() {
        let t = StudentsT::new(0.0, 1.0, 7.0).unwrap();
        for x in [-3.0, -1.0, 0.0, 0.5, 2.4] {
            assert!(
                (noncentral_t_cdf(x, 7.0, 0.0) - t.cdf(x)).abs() < 1e-9,
                "{x}"
            );
        }
        let one = StudentsT::new(0.0, 1.0, 1.0).unwrap();
        assert!((noncentral_t_cdf(1.3, 1.0, 0.0) - one.cdf(1.3)).abs() < 1e-7);
    }

    #[test]
    fn no_effect_has_the_level_as_power() {
        assert!((power(0.0, 8, 0.05).unwrap() - 0.05).abs() < 1e-9);
        assert!(power(0.5, 1, 0.05).is_none());
    }
}
