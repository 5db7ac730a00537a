//! Student's t: the paired t-test (runs paired by seed, Davis & Frank §4.3) and Welch's
//! unpaired test, their p-values under each alternative, and t confidence intervals.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::summary::summary;
use crate::TrainError;

/// The alternative hypothesis of a one-sided test about `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alternative {
    /// `a` is greater (accuracy: higher is better).
    Greater,
    /// `a` is less (error, loss: lower is better).
    Less,
}

impl Alternative {
    /// The direction in which metric `name` improves: `Less` for names containing `error` or
    /// `loss`, else `Greater`.
    pub fn for_metric(name: &str) -> Self {
        let name = name.to_lowercase();
        if name.contains("error") || name.contains("loss") {
            Alternative::Less
        } else {
            Alternative::Greater
        }
    }
}

/// The outcome of a t-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    /// The t statistic.
    pub statistic: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// The one-sided p-value.
    pub p_value: f64,
}

/// The p-values of one statistic under each alternative.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PValues {
    /// Two-sided.
    pub two_sided: f64,
    /// One-sided, the difference greater than zero.
    pub greater: f64,
    /// One-sided, the difference less than zero.
    pub less: f64,
}

impl PValues {
    /// The one-sided p-value for `alternative`.
    pub fn one_sided(&self, alternative: Alternative) -> f64 {
        match alternative {
            Alternative::Greater => self.greater,
            Alternative::Less => self.less,
        }
    }
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// `[+low, +high]`, with signs, to the formatter's precision (3 by default).
impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = f.precision().unwrap_or(3);
        write!(f, "[{:+.d$}, {:+.d$}]", self.low, self.high)
    }
}

impl Interval {
    /// Whether `x` lies in the closed interval.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// Student's t with `df` degrees of freedom.
fn students_t(df: f64) -> Result<StudentsT, TrainError> {
    if df.is_nan() || df <= 0.0 {
        return Err(invalid(format!("t distribution undefined for df = {df}")));
    }
    StudentsT::new(0.0, 1.0, df).map_err(|e| invalid(e.to_string()))
}

/// The p-values of `t` with `df` degrees of freedom.
pub fn t_p_values(t: f64, df: f64) -> Result<PValues, TrainError> {
    if !t.is_finite() {
        return Err(invalid(format!(
            "t-test undefined: t = {t} (zero variance?)"
        )));
    }
    let dist = students_t(df)?;
    let (greater, less) = (dist.sf(t), dist.cdf(t));
    Ok(PValues {
        two_sided: (2.0 * greater.min(less)).min(1.0),
        greater,
        less,
    })
}

/// The two-sided `level` (0.95) t interval around `mean` with standard error `se`.
pub fn t_interval(mean: f64, se: f64, df: f64, level: f64) -> Result<Interval, TrainError> {
    let q = students_t(df)?.inverse_cdf(0.5 + level / 2.0);
    Ok(Interval {
        low: mean - q * se,
        high: mean + q * se,
    })
}

fn invalid(msg: String) -> TrainError {
    TrainError::Config(msg)
}

/// The one-sided test of `t` with `df` degrees of freedom.
fn one_sided(t: f64, df: f64, alternative: Alternative) -> Result<TTest, TrainError> {
    Ok(TTest {
        statistic: t,
        df,
        p_value: t_p_values(t, df)?.one_sided(alternative),
    })
}

/// The paired t-test of `a` against `b` (pairs `a[i]`, `b[i]`), as scipy's
/// `ttest_rel(a, b, alternative=…)`.
pub fn paired_t_test(a: &[f64], b: &[f64], alternative: Alternative) -> Result<TTest, TrainError> {
    if a.len() != b.len() || a.len() < 2 {
        return Err(invalid(format!(
            "a paired t-test needs two equal-length samples of at least 2, got {} and {}",
            a.len(),
            b.len()
        )));
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let s = summary(&d).ok_or_else(|| invalid("no pairs".into()))?;
    let t = s.mean / (s.std / (s.n as f64).sqrt());
    one_sided(t, (s.n - 1) as f64, alternative)
}

/// Welch's mean difference mean(a) − mean(b), its standard error and its Welch–Satterthwaite
/// degrees of freedom (at least 2 values per sample).
pub(super) fn welch(a: &[f64], b: &[f64]) -> Result<(f64, f64, f64), TrainError> {
    let (Some(x), Some(y)) = (summary(a), summary(b)) else {
        return Err(invalid("Welch's test needs two non-empty samples".into()));
    };
    if x.n < 2 || y.n < 2 {
        return Err(invalid(format!(
            "Welch's test needs at least 2 values per sample, got {} and {}",
            x.n, y.n
        )));
    }
    let (vx, vy) = (x.std.powi(2) / x.n as f64, y.std.powi(2) / y.n as f64);
    let df = (vx + vy).powi(2) / (vx.powi(2) / (x.n - 1) as f64 + vy.powi(2) / (y.n - 1) as f64);
    Ok((x.mean - y.mean, (vx + vy).sqrt(), df))
}

/// Welch's unpaired t-test of `a` against `b`, as scipy's
/// `ttest_ind(a, b, equal_var=False, alternative=…)`.
pub fn welch_t_test(a: &[f64], b: &[f64], alternative: Alternative) -> Result<TTest, TrainError> {
    let (mean, se, df) = welch(a, b)?;
    one_sided(mean / se, df, alternative)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed once with scipy 1.17.1 (throw-away venv):
    //   stats.ttest_rel(A, B, alternative='greater') → (3.472081587967863, 0.006635023109729726)
    //   stats.ttest_rel(B, A, alternative='less')    → (-3.472081587967863, 0.006635023109729726)
    //   stats.ttest_ind(C, D, equal_var=False, alternative='greater')
    //                                                → (3.3292221130188757, 0.00499505965994803)
    //   ... alternative='less'                       → p = 0.9950049403400519
    //   stats.ttest_rel(E, F, alternative='less')    → (-0.755928946018458, 0.26429773960448333)
    //   numpy mean(A), std(A, ddof=1)                → 93.04285714285713, 0.28199966227605455
    const A: [f64; 7] = [93.1, 92.8, 93.5, 92.9, 93.3, 93.0, 92.7];
    const B: [f64; 7] = [92.5, 92.9, 92.6, 92.4, 92.8, 92.2, 92.6];
    const C: [f64; 5] = [71.2, 70.8, 71.9, 70.5, 71.4];
    const D: [f64; 6] = [70.1, 70.9, 69.8, 70.4, 70.0, 69.5];
    const E: [f64; 3] = [0.31, 0.29, 0.35];
    const F: [f64; 3] = [0.33, 0.30, 0.34];

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "{a} vs {b}");
    }

    #[test]
    fn paired_and_welch_equal_scipy() {
        let r = paired_t_test(&A, &B, Alternative::Greater).unwrap();
        close(r.statistic, 3.472081587967863);
        close(r.p_value, 0.006635023109729726);
        let r = paired_t_test(&B, &A, Alternative::Less).unwrap();
        close(r.statistic, -3.472081587967863);
        close(r.p_value, 0.006635023109729726);
        let r = welch_t_test(&C, &D, Alternative::Greater).unwrap();
        close(r.statistic, 3.3292221130188757);
        close(r.p_value, 0.00499505965994803);
        let r = welch_t_test(&C, &D, Alternative::Less).unwrap();
        close(r.p_value, 0.9950049403400519);
        let r = paired_t_test(&E, &F, Alternative::Less).unwrap();
        close(r.statistic, -0.755928946018458);
        close(r.p_value, 0.26429773960448333);
    }

    #[test]
    fn mean_and_sample_std() {
        let s = summary(&A).unwrap();
        assert_eq!(s.n, 7);
        close(s.mean, 93.04285714285713);
        close(s.std, 0.28199966227605455);
        assert_eq!(summary(&[2.5]).unwrap().std, 0.0);
        assert!(summary(&[]).is_none());
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        assert!(paired_t_test(&A, &C, Alternative::Greater).is_err());
        assert!(paired_t_test(&[1.0], &[2.0], Alternative::Greater).is_err());
        assert!(paired_t_test(&[1.0, 2.0], &[0.0, 1.0], Alternative::Greater).is_err());
        assert!(welch_t_test(&[1.0], &C, Alternative::Less).is_err());
    }

    #[test]
    fn the_direction_follows_the_metric() {
        assert_eq!(Alternative::for_metric("accuracy"), Alternative::Greater);
        assert_eq!(Alternative::for_metric("test error"), Alternative::Less);
        assert_eq!(Alternative::for_metric("Loss"), Alternative::Less);
    }
}
