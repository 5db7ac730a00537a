//! Settings chosen on the validation split: for each configuration, the α, PreciseBN (N, B,
//! policy) or mini-batch size with the best mean validation accuracy, reported on the test set
//! under `FAMILY@val` (Summers & Dinneen §3.1 choose α on a validation set; choosing it on the
//! test set would leak the test set into the number reported).

use serde::Serialize;

use crate::{EvalKey, Family, RunResult, Status};

/// One setting chosen on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    /// The configuration.
    pub configuration: String,
    /// What was chosen: `precise`, `minibatch` or `alpha`.
    pub family: &'static str,
    /// The chosen key (`alpha-0.1`, …), whose test metrics appear under `FAMILY@val`.
    pub chosen: String,
    /// Its mean validation accuracy over the configuration's finished runs.
    pub validation_accuracy: f64,
    /// Every candidate with its mean validation accuracy, in key order.
    pub candidates: Vec<(String, f64)>,
}

/// Chooses, for every configuration and [`Family`] with at least two keys evaluated on the
/// validation split by every finished run of the configuration, the key with the highest
/// mean validation accuracy (the first in report order on a tie), and gives each finished
/// run the test metrics of that key under `FAMILY@val`.
pub(crate) fn choose_on_validation(runs: &mut [RunResult]) -> Vec<Selection> {
    let mut configurations: Vec<String> = runs.iter().map(|r| r.configuration.clone()).collect();
    configurations.dedup();
    let mut out = Vec::new();
    for configuration in configurations {
        let finished =
            |r: &RunResult| r.configuration == configuration && r.status == Status::Finished;
        for family in Family::ALL {
            // the keys of this family every finished run has on validation and test
            let mut common: Option<Vec<String>> = None;
            for r in runs.iter().filter(|r| finished(r)) {
                let keys: Vec<String> = r
                    .validation
                    .keys()
                    .filter(|k| EvalKey::parse(k).is_some_and(|key| family.contains(&key)))
                    .filter(|k| r.test.contains_key(*k))
                    .cloned()
                    .collect();
                common = Some(match common {
                    None => keys,
                    Some(c) => c.into_iter().filter(|k| keys.contains(k)).collect(),
                });
            }
            let mut keys = common.unwrap_or_default();
            if keys.len() < 2 {
                continue;
            }
            keys.sort_by(|a, b| rank(a).partial_cmp(&rank(b)).unwrap_or(a.cmp(b)));
            let candidates: Vec<(String, f64)> = keys
                .iter()
                .map(|k| {
                    let values: Vec<f64> = runs
                        .iter()
                        .filter(|r| finished(r))
                        .map(|r| 100.0 * r.validation[k].accuracy)
                        .collect();
                    (k.clone(), values.iter().sum::<f64>() / values.len() as f64)
                })
                .collect();
            let mut best = &candidates[0];
            for c in &candidates[1..] {
                if c.1 > best.1 {
                    best = c;
                }
            }
            let chosen = best.0.clone();
            let name = EvalKey::ChosenOnValidation(family).to_string();
            for r in runs.iter_mut().filter(|r| finished(r)) {
                let m = r.test[&chosen];
                r.test.insert(name.clone(), m);
            }
            out.push(Selection {
                configuration: configuration.clone(),
                family: family.name(),
                chosen,
                validation_accuracy: best.1,
                candidates,
            });
        }
    }
    out
}

/// A key's place in report order.
fn rank(key: &str) -> (u8, f64) {
    EvalKey::parse(key).map_or((u8::MAX, 0.0), |k| k.rank())
}

/// The report's section on the settings chosen on validation (empty without any).
pub(crate) fn selections_markdown(selections: &[Selection]) -> String {
    if selections.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "## Settings chosen on the validation split\n\n\
         Per configuration, the key with the best mean validation accuracy; its test metrics \
         appear under `FAMILY@val` in the tables and claims.\n\n\
         | configuration | family | chosen | mean validation accuracy (%) | candidates (mean validation accuracy) |\n\
         |---|---|---|---|---|\n",
    );
    for s in selections {
        let candidates: Vec<String> = s
            .candidates
            .iter()
            .map(|(k, v)| format!("`{k}` {v:.2}"))
            .collect();
        md.push_str(&format!(
            "| {} | {} | `{}` | {:.2} | {} |\n",
            s.configuration,
            s.family,
            s.chosen,
            s.validation_accuracy,
            candidates.join(", ")
        ));
    }
    md.push('\n');
    md
}
