//! A sweep's results as the report reads them: `sweep.json` and every `results/*.json`,
//! checked file by file, with the runs that are missing or failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{
    AddedEvaluations, EvalKey, Metrics, RESULT_FORMAT, RunResult, Status, SweepFile, TrainError,
};

/// The quantity a table or figure shows for one run and scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Accuracy in %: higher is better.
    Accuracy,
    /// Error in % (100 − accuracy): lower is better.
    Error,
    /// Mean cross-entropy: lower is better.
    Loss,
}

impl Metric {
    /// The value of `m`.
    pub fn of(self, m: &Metrics) -> f64 {
        match self {
            Metric::Accuracy => 100.0 * m.accuracy,
            Metric::Error => 100.0 * (1.0 - m.accuracy),
            Metric::Loss => m.loss,
        }
    }

    /// The metric's name, as used by [`crate::Alternative::for_metric`].
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Error => "error",
            Metric::Loss => "loss",
        }
    }

    /// A label with the unit.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy (%)",
            Metric::Error => "error (%)",
            Metric::Loss => "cross-entropy",
        }
    }

    /// Decimals shown in tables.
    pub fn decimals(self) -> usize {
        match self {
            Metric::Accuracy | Metric::Error => 2,
            Metric::Loss => 4,
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "accuracy" => Ok(Metric::Accuracy),
            "error" => Ok(Metric::Error),
            "loss" => Ok(Metric::Loss),
            other => Err(TrainError::Report(format!(
                "unknown metric `{other}` (accuracy, error or loss)"
            ))),
        }
    }
}

/// Adds the evaluations `bnlab eval` and `bnlab precise-bn` recorded for `run` (in its run
/// directory under `dir`) to its test and validation metrics. A key the sweep evaluated
/// itself keeps the sweep's value.
fn add_evaluations(dir: &Path, run: &mut RunResult) -> Result<(), TrainError> {
    let run_dir = crate::run_dir(dir, &crate::run_id(&run.configuration, run.index));
    for (key, added) in AddedEvaluations::load(&run_dir)?.evaluations {
        if let Some(v) = added.validation {
            run.validation.entry(key.clone()).or_insert(v);
        }
        run.test.entry(key).or_insert(added.test);
    }
    Ok(())
}

/// A run the sweep asks for that has no result file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRun {
    /// The configuration.
    pub configuration: String,
    /// The run index.
    pub index: u32,
}

/// `sweep.json` and the result files of one sweep directory.
#[derive(Debug, Clone)]
pub struct SweepResults {
    /// The sweep directory.
    pub dir: PathBuf,
    /// What the spec asked for.
    pub sweep: SweepFile,
    /// Every result, in configuration order then run index.
    pub runs: Vec<RunResult>,
    /// Configuration × seed pairs without a result file.
    pub missing: Vec<MissingRun>,
    /// The settings chosen on the validation split, whose test metrics the runs carry under
    /// `FAMILY@val`.
    pub selections: Vec<super::selection::Selection>,
}

fn corrupt(path: &Path, why: impl Into<String>) -> TrainError {
    TrainError::Corrupt {
        path: path.into(),
        why: why.into(),
    }
}

/// Refuses results that cannot be paired: runs of one configuration trained under different
/// settings or data (their fingerprints differ), or a result whose fingerprint is not the
/// one `sweep.json` records for its configuration.
fn check_fingerprints(sweep: &SweepFile, runs: &[(usize, RunResult)]) -> Result<(), TrainError> {
    let short = |f: Option<&crate::Fingerprint>| {
        f.map_or("none (format 1)".to_string(), |f| f.result[..8].to_string())
    };
    let mut first: BTreeMap<&str, &RunResult> = BTreeMap::new();
    for (_, run) in runs {
        let name = run.configuration.as_str();
        if let Some(expected) = sweep.fingerprints.get(name)
            && run.fingerprint.as_ref() != Some(expected)
        {
            return Err(TrainError::Report(format!(
                "`{name}` run {} has fingerprint {}, but the sweep's configuration has {}: it \
                 was trained under other settings or data; rerun the sweep (it lists what \
                 changed) or report it apart",
                run.index,
                short(run.fingerprint.as_ref()),
                short(Some(expected))
            )));
        }
        match first.get(name) {
            None => {
                first.insert(name, run);
            }
            Some(other) if other.fingerprint != run.fingerprint => {
                return Err(TrainError::Report(format!(
                    "`{name}` runs {} and {} were trained under different settings or data \
                     (fingerprints {} and {}): they cannot be paired",
                    other.index,
                    run.index,
                    short(other.fingerprint.as_ref()),
                    short(run.fingerprint.as_ref())
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

impl SweepResults {
    /// Reads `dir/sweep.json` and every `dir/results/*.json`. A malformed or empty file is an
    /// error naming it; so is a result of another sweep or of an unknown configuration.
    pub fn load(dir: &Path) -> Result<Self, TrainError> {
        let sweep_path = dir.join("sweep.json");
        let sweep = SweepFile::load(dir)?;

        let results_dir = dir.join("results");
        let mut files = Vec::new();
        if results_dir.is_dir() {
            for entry in std::fs::read_dir(&results_dir).map_err(TrainError::io(&results_dir))? {
                let path = entry.map_err(TrainError::io(&results_dir))?.path();
                if path.extension().is_some_and(|e| e == "json") && path.is_file() {
                    files.push(path);
                }
            }
        }
        if files.is_empty() {
            return Err(TrainError::Report(format!(
                "no result files in {}: run the sweep first",
                results_dir.display()
            )));
        }
        files.sort();

        let position = |name: &str| sweep.order.iter().position(|c| c == name);
        let mut seen: BTreeMap<(usize, u32), PathBuf> = BTreeMap::new();
        let mut runs = Vec::new();
        for path in files {
            let mut run = RunResult::load(&path)?;
            if run.format != RESULT_FORMAT {
                return Err(corrupt(
                    &path,
                    format!(
                        "result format {} (this bnlab reads {RESULT_FORMAT})",
                        run.format
                    ),
                ));
            }
            if run.sweep != sweep.name {
                return Err(corrupt(
                    &path,
                    format!("belongs to sweep `{}`, not `{}`", run.sweep, sweep.name),
                ));
            }
            let Some(c) = position(&run.configuration) else {
                return Err(corrupt(
                    &path,
                    format!(
                        "configuration `{}` is not in {}",
                        run.configuration,
                        sweep_path.display()
                    ),
                ));
            };
            if let Some(other) = seen.insert((c, run.index), path.clone()) {
                return Err(corrupt(
                    &path,
                    format!(
                        "a second result for `{}` run {} (also {})",
                        run.configuration,
                        run.index,
                        other.display()
                    ),
                ));
            }
            add_evaluations(dir, &mut run)?;
            runs.push((c, run));
        }
        runs.sort_by_key(|(c, r)| (*c, r.index));
        check_fingerprints(&sweep, &runs)?;
        let missing = sweep
            .order
            .iter()
            .enumerate()
            .flat_map(|(c, name)| {
                let seen = &seen;
                sweep
                    .seeds
                    .iter()
                    .filter(move |&&index| !seen.contains_key(&(c, index)))
                    .map(move |&index| MissingRun {
                        configuration: name.clone(),
                        index,
                    })
            })
            .collect();
        let mut runs: Vec<RunResult> = runs.into_iter().map(|(_, r)| r).collect();
        let selections = super::selection::choose_on_validation(&mut runs);
        Ok(Self {
            dir: dir.to_path_buf(),
            runs,
            sweep,
            missing,
            selections,
        })
    }

    /// Keeps only the configurations in `keep` (a claim folder's report of a shared pool):
    /// their runs, missing runs and validation choices.
    pub fn focus(&mut self, keep: &std::collections::BTreeSet<String>) {
        self.sweep.order.retain(|c| keep.contains(c));
        self.sweep.configurations.retain(|c, _| keep.contains(c));
        self.runs.retain(|r| keep.contains(&r.configuration));
        self.missing.retain(|m| keep.contains(&m.configuration));
        self.selections.retain(|s| keep.contains(&s.configuration));
    }

    /// The finished runs of `configuration`.
    pub fn finished<'a>(&'a self, configuration: &'a str) -> impl Iterator<Item = &'a RunResult> {
        self.runs
            .iter()
            .filter(move |r| r.configuration == configuration && r.status == Status::Finished)
    }

    /// The failed runs.
    pub fn failed(&self) -> impl Iterator<Item = &RunResult> {
        self.runs.iter().filter(|r| r.status != Status::Finished)
    }

    /// `metric` under test scheme `scheme` of every finished run of `configuration`, by run
    /// index.
    pub fn values(&self, configuration: &str, scheme: &str, metric: Metric) -> BTreeMap<u32, f64> {
        self.finished(configuration)
            .filter_map(|r| r.test.get(scheme).map(|m| (r.index, metric.of(m))))
            .collect()
    }

    /// Every test scheme of a finished run, in a reading order: population, precise, the
    /// mini-batch sizes ascending, α ascending, the training-set schemes, Adaptive BN.
    pub fn schemes(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.status == Status::Finished)
            .flat_map(|r| r.test.keys().cloned())
            .collect();
        all.sort_by(|a, b| {
            scheme_rank(a)
                .partial_cmp(&scheme_rank(b))
                .unwrap_or(a.cmp(b))
        });
        all.dedup();
        all
    }

    /// The axes of configuration `name`.
    pub fn axes(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.sweep.configurations.get(name)
    }
}

/// A scheme's place in [`SweepResults::schemes`]: (group, number, name).
fn scheme_rank(name: &str) -> (u8, f64, String) {
    let (group, n) = EvalKey::parse(name).map_or((6, 0.0), |k| k.rank());
    (group, n, name.to_string())
}

/// Runs present in both `a` and `b` (by run index) as paired vectors, and the indices
/// present in only one of them.
pub fn pair(a: &BTreeMap<u32, f64>, b: &BTreeMap<u32, f64>) -> Pairs {
    let mut pairs = Pairs::default();
    for (i, x) in a {
        match b.get(i) {
            Some(y) => {
                pairs.indices.push(*i);
                pairs.a.push(*x);
                pairs.b.push(*y);
            }
            None => pairs.unmatched.push(*i),
        }
    }
    pairs
        .unmatched
        .extend(b.keys().filter(|i| !a.contains_key(i)));
    pairs.unmatched.sort_unstable();
    pairs
}

/// The result of [`pair`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairs {
    /// Run indices present in both.
    pub indices: Vec<u32>,
    /// Values of the first sample at `indices`.
    pub a: Vec<f64>,
    /// Values of the second sample at `indices`.
    pub b: Vec<f64>,
    /// Run indices present in only one sample: skipped.
    pub unmatched: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_keeps_matched_indices_and_names_the_rest() {
        let a = BTreeMap::from([(1, 10.0), (2, 11.0), (4, 13.0)]);
        let b = BTreeMap::from([(1, 9.0), (3, 8.0), (4, 12.5)]);
        let p = pair(&a, &b);
        assert_eq!(p.indices, vec![1, 4]);
        assert_eq!(p.a, vec![10.0, 13.0]);
        assert_eq!(p.b, vec![9.0, 12.5]);
        assert_eq!(p.unmatched, vec![2, 3]);
    }

    #[test]
    fn schemes_sort_numerically_within_groups() {
        let mut v = vec![
            "alpha-0.5",
            "minibatch-32",
            "alpha-0.05",
            "minibatch-4",
            "precise",
        ];
        v.sort_by(|a, b| scheme_rank(a).partial_cmp(&scheme_rank(b)).unwrap());
        assert_eq!(
            v,
            [
                "precise",
                "minibatch-4",
                "minibatch-32",
                "alpha-0.05",
                "alpha-0.5"
            ]
        );
    }

    #[test]
    fn metrics_convert() {
        let m = Metrics {
            loss: 0.5,
            accuracy: 0.8125,
            examples: 16,
        };
        assert_eq!(Metric::Accuracy.of(&m), 81.25);
        assert_eq!(Metric::Error.of(&m), 18.75);
        assert_eq!(Metric::Loss.of(&m), 0.5);
        assert!("bogus".parse::<Metric>().is_err());
    }
}
