//! Everything a report says of one comparison: the paired difference with its intervals,
//! tests, power and equivalence, and the verdict on a claim.

use serde::{Deserialize, Serialize};

use super::summary::summary;
use super::ttest::{Interval, PValues, t_interval, t_p_values};
use super::wilcoxon::{SignedRank, signed_rank};
use super::{bootstrap, power};
use crate::TrainError;

/// The confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// The significance level of the power and equivalence calculations.
pub const ALPHA: f64 = 0.05;

/// The two one-sided tests (TOST) of equivalence within ±margin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tost {
    /// The margin (metric units).
    pub margin: f64,
    /// The larger of the two one-sided p-values: equivalence is shown when it is below α.
    pub p: f64,
}

/// The power of a comparison to detect a target effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetPower {
    /// The target difference (metric units), e.g. the paper's Δ.
    pub effect: f64,
    /// The power of the two-sided paired t-test at α = 0.05 to detect it.
    pub power: f64,
    /// The seeds needed for 80 % power; `None` beyond 100,000.
    pub seeds_needed: Option<usize>,
}

/// A paired difference (runs paired by seed): the values of `a − b` for each pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// Pairs.
    pub n: usize,
    /// Mean difference.
    pub mean: f64,
    /// Sample standard deviation of the differences.
    pub std: f64,
    /// The paired t statistic.
    pub t: f64,
    /// Its degrees of freedom (n − 1).
    pub df: f64,
    /// Paired t p-values.
    pub t_p: PValues,
    /// The 95 % t interval of the mean difference.
    pub t_ci: Interval,
    /// The 95 % paired bootstrap interval (10,000 resamples, seeded).
    pub bootstrap_ci: Interval,
    /// The Wilcoxon signed-rank test; `None` when every difference is zero.
    pub wilcoxon: Option<SignedRank>,
    /// The minimum detectable effect (metric units) at α = 0.05, 80 % power, two-sided.
    pub mde: f64,
    /// Power for a target effect, where one is given.
    pub target: Option<TargetPower>,
    /// Equivalence, where a margin is given.
    pub tost: Option<Tost>,
}

impl PairedDifference {
    /// The comparison of the differences `d`, with the power for `target` and equivalence
    /// within `margin` where given. At least two differences, not all equal.
    pub fn of(d: &[f64], target: Option<f64>, margin: Option<f64>) -> Result<Self, TrainError> {
        let invalid = |m: String| TrainError::Report(m);
        if d.len() < 2 {
            return Err(invalid(format!(
                "a paired comparison needs at least 2 pairs, got {}",
                d.len()
            )));
        }
        if let Some(bad) = d.iter().find(|x| !x.is_finite()) {
            return Err(invalid(format!("a difference is {bad}")));
        }
        let s = summary(d).ok_or_else(|| invalid("no pairs".into()))?;
        if s.std == 0.0 {
            return Err(invalid(format!(
                "every one of the {} differences is {}: no variance to test",
                s.n, s.mean
            )));
        }
        let n = s.n as f64;
        let se = s.std / n.sqrt();
        let df = n - 1.0;
        let t = s.mean / se;
        let mde = power::minimum_detectable_effect(s.n, ALPHA)
            .map(|e| e * s.std)
            .unwrap_or(f64::INFINITY);
        let target = target.map(|effect| TargetPower {
            effect,
            power: power::power(effect / s.std, s.n, ALPHA).unwrap_or(f64::NAN),
            seeds_needed: power::pairs_needed(effect / s.std, ALPHA),
        });
        let tost = match margin {
            Some(margin) if margin > 0.0 => {
                let lower = t_p_values((s.mean + margin) / se, df)?.greater;
                let upper = t_p_values((s.mean - margin) / se, df)?.less;
                Some(Tost {
                    margin,
                    p: lower.max(upper),
                })
            }
            Some(margin) => {
                return Err(invalid(format!(
                    "an equivalence margin must be positive, not {margin}"
                )));
            }
            None => None,
        };
        Ok(Self {
            n: s.n,
            mean: s.mean,
            std: s.std,
            t,
            df,
            t_p: t_p_values(t, df)?,
            t_ci: t_interval(s.mean, se, df, LEVEL)?,
            bootstrap_ci: bootstrap::paired(d, LEVEL, bootstrap::RESAMPLES, bootstrap::SEED),
            wilcoxon: signed_rank(d),
            mde,
            target,
            tost,
        })
    }
}

/// What a claim expects of its difference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "expect")]
pub enum Expect {
    /// The difference is positive.
    Greater,
    /// The difference is negative.
    Less,
    /// The difference lies within ±margin.
    Equivalent {
        /// The margin (metric units).
        margin: f64,
    },
}

/// The verdict on a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Significant in the expected direction (equivalence: TOST significant).
    Reproduced,
    /// Significant in the other direction (equivalence: the 95 % interval lies outside
    /// ±margin).
    Reversed,
    /// Neither, although the runs had 80 % power for the paper's effect (equivalence: the
    /// minimum detectable effect is within the margin).
    NotReproduced,
    /// Neither, and the runs could not have seen the paper's effect reliably.
    Underpowered,
}

impl Verdict {
    /// The rule, in one sentence per verdict, for the report.
    pub const RULE: &'static str = "**reproduced**: significant (two-sided paired t, p < 0.05 \
after the table's correction) in the expected direction; **reversed**: significant in the \
other direction; **not reproduced**: neither, with at least 80 % power for the paper's effect; \
**underpowered**: neither, with less (or no paper effect given). For an equivalence claim: \
**reproduced** when TOST within ±margin gives p < 0.05, **reversed** when the 95 % t interval \
lies outside ±margin, **not reproduced** when neither and the minimum detectable effect is \
within the margin, else **underpowered**.";

    /// How the report writes it.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Reversed => "reversed",
            Verdict::NotReproduced => "not reproduced",
            Verdict::Underpowered => "underpowered",
        }
    }

    /// The verdict on `d` for `expect`, with the two-sided p-value `p` (corrected or not) and
    /// the paper's effect `paper` (power for it is computed from `d`).
    pub fn of(d: &PairedDifference, expect: Expect, p: f64, paper: Option<f64>) -> Self {
        match expect {
            Expect::Equivalent { margin } => {
                if d.tost.is_some_and(|t| t.p < ALPHA) {
                    Verdict::Reproduced
                } else if d.t_ci.low > margin || d.t_ci.high < -margin {
                    Verdict::Reversed
                } else if d.mde <= margin {
                    Verdict::NotReproduced
                } else {
                    Verdict::Underpowered
                }
            }
            Expect::Greater | Expect::Less => {
                let sign = if expect == Expect::Greater { 1.0 } else { -1.0 };
                if p < ALPHA && sign * d.mean > 0.0 {
                    Verdict::Reproduced
                } else if p < ALPHA {
                    Verdict::Reversed
                } else {
                    let powered = paper.and_then(|e| power::power(e / d.std, d.n, ALPHA));
                    if powered.is_some_and(|p| p >= power::POWER) {
                        Verdict::NotReproduced
                    } else {
                        Verdict::Underpowered
                    }
                }
            }
        }
    }
}
