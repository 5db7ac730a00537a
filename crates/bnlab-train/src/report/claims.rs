//! Claims: a spec's `[[claim]]` entries (one comparison of two configuration × scheme cells,
//! paired by run, with what the paper expects of it) and their verdicts in the report.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::results::{Metric, SweepResults};
use crate::{Correction, Expect, PairedDifference, TrainError, Verdict};

/// What a claim expects, as written in a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectName {
    /// a − b > 0.
    Greater,
    /// a − b < 0.
    Less,
    /// |a − b| < margin.
    Equivalent,
}

fn population() -> String {
    "population".into()
}

fn accuracy() -> Metric {
    Metric::Accuracy
}

/// One `[[claim]]` of a spec: `a − b` under the claim's metric, paired by run index, or the
/// difference of differences `(a − b) − (c − d)` where `c` and `d` are given (the gain of α at
/// ghost 8 against its gain at 128, Summers & Dinneen Fig. 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSpec {
    /// Its name in the report.
    pub name: String,
    /// The paper's statement or number, quoted in the report.
    #[serde(default)]
    pub paper: Option<String>,
    /// The configuration of side a, as named in run ids.
    pub a: String,
    /// The configuration of side b.
    pub b: String,
    /// The scheme of both sides, unless `a_scheme` / `b_scheme` say otherwise: a test scheme,
    /// or `val@E-F` / `val-precise@E-F` / `val-minibatch@E-F`, the mean validation metric over
    /// epochs E..=F under EMA
    /// or PreciseBN statistics (Wu & Johnson Fig. 4's early epochs).
    #[serde(default = "population")]
    pub scheme: String,
    /// Side a's scheme (scheme against scheme within the same runs).
    #[serde(default)]
    pub a_scheme: Option<String>,
    /// Side b's scheme.
    #[serde(default)]
    pub b_scheme: Option<String>,
    /// The configuration of c, for a difference of differences.
    #[serde(default)]
    pub c: Option<String>,
    /// The configuration of d, for a difference of differences.
    #[serde(default)]
    pub d: Option<String>,
    /// Side c's scheme.
    #[serde(default)]
    pub c_scheme: Option<String>,
    /// Side d's scheme.
    #[serde(default)]
    pub d_scheme: Option<String>,
    /// What the paper expects of a − b; without it the claim is a plain comparison, reported
    /// with every statistic but no verdict.
    #[serde(default)]
    pub expect: Option<ExpectName>,
    /// The equivalence margin (metric units), for `expect = "equivalent"`.
    #[serde(default)]
    pub margin: Option<f64>,
    /// The paper's effect (metric units): the runs' power for it decides "not reproduced"
    /// against "underpowered".
    #[serde(default)]
    pub effect: Option<f64>,
    /// `accuracy`, `error` or `loss`.
    #[serde(default = "accuracy")]
    pub metric: Metric,
}

impl ClaimSpec {
    /// Why the claim cannot be evaluated with `configurations`, if it cannot.
    pub fn check(&self, configurations: &[String]) -> Result<(), String> {
        if self.c.is_some() != self.d.is_some() {
            return Err(format!(
                "claim `{}`: a difference of differences needs both c and d",
                self.name
            ));
        }
        for side in [
            Some(&self.a),
            Some(&self.b),
            self.c.as_ref(),
            self.d.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !configurations.contains(side) {
                return Err(format!(
                    "claim `{}`: `{side}` is not a configuration of this spec ({})",
                    self.name,
                    configurations.join(", ")
                ));
            }
        }
        self.expectation()?;
        Ok(())
    }

    /// The cells of the claim with their signs: a, b, and c, d where given.
    pub fn cells(&self) -> Vec<(f64, &str, &str)> {
        fn pick<'a>(s: &'a Option<String>, default: &'a str) -> &'a str {
            s.as_deref().unwrap_or(default)
        }
        let pick = |s| pick(s, &self.scheme);
        let mut out = vec![
            (1.0, self.a.as_str(), pick(&self.a_scheme)),
            (-1.0, self.b.as_str(), pick(&self.b_scheme)),
        ];
        if let (Some(c), Some(d)) = (&self.c, &self.d) {
            out.push((-1.0, c.as_str(), pick(&self.c_scheme)));
            out.push((1.0, d.as_str(), pick(&self.d_scheme)));
        }
        out
    }

    /// The claim's difference as written: `a:s − b:s`, or `(a:s − b:s) − (c:s − d:s)`.
    pub fn describe(&self) -> String {
        self.describe_with(&[])
    }

    /// [`Self::describe`] with each side's mean after it, where `means` has one per side.
    pub fn describe_with(&self, means: &[f64]) -> String {
        let cells = self.cells();
        let cell = |i: usize| match means.get(i) {
            Some(m) if means.len() == cells.len() => {
                format!("{}:{} ({m:.2})", cells[i].1, cells[i].2)
            }
            _ => format!("{}:{}", cells[i].1, cells[i].2),
        };
        if cells.len() == 4 {
            format!("({} − {}) − ({} − {})", cell(0), cell(1), cell(2), cell(3))
        } else {
            format!("{} − {}", cell(0), cell(1))
        }
    }

    /// The expectation, with its margin; `None` for a plain comparison.
    pub fn expectation(&self) -> Result<Option<Expect>, String> {
        match (self.expect, self.margin) {
            (None, None) => Ok(None),
            (Some(ExpectName::Greater), None) => Ok(Some(Expect::Greater)),
            (Some(ExpectName::Less), None) => Ok(Some(Expect::Less)),
            (Some(ExpectName::Equivalent), Some(margin)) if margin > 0.0 => {
                Ok(Some(Expect::Equivalent { margin }))
            }
            (Some(ExpectName::Equivalent), _) => Err(format!(
                "claim `{}`: expect = \"equivalent\" needs a margin > 0",
                self.name
            )),
            (_, Some(_)) => Err(format!(
                "claim `{}`: a margin belongs to expect = \"equivalent\" only",
                self.name
            )),
        }
    }
}

/// Epochs `E-F` (1-based, inclusive) of a per-epoch cell.
fn epoch_range(range: &str) -> Option<(usize, usize)> {
    let (from, to) = range.split_once('-')?;
    let (from, to) = (from.trim().parse().ok()?, to.trim().parse().ok()?);
    (1 <= from && from <= to).then_some((from, to))
}

/// Run index → value of one cell: a test scheme, or `val@E-F` / `val-precise@E-F`, the mean
/// over epochs E..=F of the validation metric under EMA or PreciseBN statistics (runs missing
/// any of those epochs are left out).
fn cell_values(
    results: &SweepResults,
    configuration: &str,
    scheme: &str,
    metric: Metric,
) -> Result<BTreeMap<u32, f64>, TrainError> {
    let (kind, range) = match scheme.split_once('@') {
        Some(cell) if crate::EvalKey::parse(scheme).is_none() => cell,
        _ => return Ok(results.values(configuration, scheme, metric)),
    };
    let Some((from, to)) = epoch_range(range) else {
        return Err(TrainError::Report(format!(
            "`{scheme}`: epochs are written E-F with 1 ≤ E ≤ F"
        )));
    };
    let pick = match kind {
        "val" => |e: &crate::EpochRecord| e.val,
        "val-precise" => |e: &crate::EpochRecord| e.val_precise,
        "val-minibatch" => |e: &crate::EpochRecord| e.val_minibatch,
        other => {
            return Err(TrainError::Report(format!(
                "`{other}@{range}`: per-epoch cells are val@E-F, val-precise@E-F or val-minibatch@E-F"
            )));
        }
    };
    Ok(results
        .finished(configuration)
        .filter_map(|r| {
            let values: Vec<f64> = (from..=to)
                .map(|epoch| {
                    r.epochs
                        .iter()
                        .find(|e| e.epoch == epoch)
                        .and_then(pick)
                        .map(|m| metric.of(&m))
                })
                .collect::<Option<_>>()?;
            Some((r.index, values.iter().sum::<f64>() / values.len() as f64))
        })
        .collect())
}

/// The mean of one side of a claim (configuration × scheme) over the runs it was compared on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideMean {
    /// The configuration.
    pub configuration: String,
    /// The scheme (a test scheme, or a per-epoch validation range).
    pub scheme: String,
    /// The metric's mean over the compared runs.
    pub mean: f64,
    /// How many runs.
    pub n: usize,
}

/// A claim's outcome: its difference and verdict, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimOutcome {
    /// The claim.
    pub claim: ClaimSpec,
    /// Each side's mean over the compared runs (a, b, then c, d).
    pub sides: Vec<SideMean>,
    /// The paired difference.
    pub difference: Option<PairedDifference>,
    /// The two-sided p after Holm's correction across the claims (where it applies).
    pub p_adjusted: Option<f64>,
    /// The verdict.
    pub verdict: Option<Verdict>,
    /// Why there is no verdict.
    pub error: Option<String>,
}

/// Evaluates every claim of the sweep, correcting their p-values together.
pub fn claims(results: &SweepResults, correction: Correction) -> Vec<ClaimOutcome> {
    let mut out: Vec<ClaimOutcome> = results
        .sweep
        .claims
        .iter()
        .map(|c| {
            let outcome = (|| -> Result<(PairedDifference, Vec<SideMean>), TrainError> {
                let metric = c.metric;
                let expect = c.expectation().map_err(TrainError::Report)?;
                let margin = match expect {
                    Some(Expect::Equivalent { margin }) => Some(margin),
                    _ => None,
                };
                // run index → the signed sum, over runs finished in every cell
                let named = c.cells();
                let cells: Vec<(f64, BTreeMap<u32, f64>)> = named
                    .iter()
                    .map(|&(sign, conf, scheme)| {
                        Ok((sign, cell_values(results, conf, scheme, metric)?))
                    })
                    .collect::<Result<_, TrainError>>()?;
                // the runs finished in every cell
                let compared: Vec<u32> = cells[0]
                    .1
                    .keys()
                    .filter(|i| cells.iter().all(|(_, v)| v.contains_key(i)))
                    .copied()
                    .collect();
                let d: Vec<f64> = compared
                    .iter()
                    .map(|i| cells.iter().map(|(sign, v)| sign * v[i]).sum())
                    .collect();
                let sides = named
                    .iter()
                    .zip(&cells)
                    .map(|(&(_, conf, scheme), (_, v))| SideMean {
                        configuration: conf.to_string(),
                        scheme: scheme.to_string(),
                        mean: compared.iter().map(|i| v[i]).sum::<f64>()
                            / compared.len().max(1) as f64,
                        n: compared.len(),
                    })
                    .collect();
                Ok((PairedDifference::of(&d, c.effect, margin)?, sides))
            })();
            let (difference, sides, error) = match outcome {
                Ok((d, sides)) => (Some(d), sides, None),
                Err(e) => (None, Vec::new(), Some(e.to_string())),
            };
            ClaimOutcome {
                claim: c.clone(),
                sides,
                p_adjusted: None,
                verdict: None,
                error,
                difference,
            }
        })
        .collect();
    let raw: Vec<f64> = out
        .iter()
        .filter_map(|o| o.difference.as_ref().map(|d| d.t_p.two_sided))
        .collect();
    let mut adjusted = correction.adjust(&raw).into_iter();
    for o in &mut out {
        let Some(d) = &o.difference else { continue };
        let p = adjusted.next().unwrap_or(f64::NAN);
        o.p_adjusted = Some(p);
        let expect = o.claim.expectation().ok().flatten();
        o.verdict = expect.map(|e| Verdict::of(d, e, p, o.claim.effect));
    }
    out
}

/// The claims' section of `report.md`.
pub fn claims_markdown(outcomes: &[ClaimOutcome]) -> String {
    if outcomes.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "## Claims\n\n| claim | paper | a − b | Δ mean | 95 % CI (t) | 95 % CI (bootstrap) | p (two-sided) | p adj. | MDE | power for the paper's effect (seeds for 80 %) | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let c = &o.claim;
        let means: Vec<f64> = o.sides.iter().map(|s| s.mean).collect();
        let sides = c.describe_with(&means);
        let paper = c.paper.clone().unwrap_or_default();
        match &o.difference {
            Some(d) => md.push_str(&format!(
                "| {} | {paper} | {sides} | {:+.3} | {:.3} | {:.3} | {:.4} | {:.4} | {:.3} | {} | **{}** |\n",
                c.name,
                d.mean,
                d.t_ci,
                d.bootstrap_ci,
                d.t_p.two_sided,
                o.p_adjusted.unwrap_or(f64::NAN),
                d.mde,
                d.target.map_or("–".into(), |t| match t.seeds_needed {
                    Some(n) => format!("{:.2} ({n} seeds for 80 %)", t.power),
                    None => format!("{:.2} (over 100,000 seeds for 80 %)", t.power),
                }),
                o.verdict.map_or("– (no expectation)", Verdict::label)
            )),
            None => md.push_str(&format!(
                "| {} | {paper} | {sides} | – | – | – | – | – | – | – | n/a: {} |\n",
                c.name,
                o.error.clone().unwrap_or_default()
            )),
        }
    }
    md.push_str(&format!("\nVerdicts: {}\n\n", Verdict::RULE));
    md
}
