//! [`EvalKey`]: the name under which one evaluation of a run is stored in its result, and what
//! it measures. Keys are written, read, ordered and described here only.

use std::fmt;

use bnlab_data::CorruptionKind;

/// One evaluation of a run, as stored under [`RunResult::test`](crate::RunResult::test).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalKey {
    /// `population`: the test set with the training EMA's population statistics.
    Population,
    /// `precise`: the test set with PreciseBN's population statistics.
    Precise,
    /// `minibatch-B`: each test mini-batch of B normalized by its own statistics.
    MiniBatch(usize),
    /// `alpha-A`: example weighing at inference with α = A (Summers & Dinneen §3.1).
    Alpha(f64),
    /// `train-minibatch`: the training set under mini-batch statistics at the training batch.
    TrainMiniBatch,
    /// `train-population`: the training set under the EMA's population statistics.
    TrainPopulation,
    /// `adapt-KIND-S-source` or `adapt-KIND-S-adapted`: the corrupted test set, with the
    /// source statistics or statistics re-estimated on it (Adaptive BN, Wu & Johnson §5.1).
    Adapt {
        /// The corruption family.
        kind: CorruptionKind,
        /// Its severity, 1 to 5.
        severity: u8,
        /// Statistics re-estimated on the corrupted data.
        adapted: bool,
    },
}

/// The name of a corruption family inside a key (`contrast`, `gaussiannoise`, `jpeg`).
fn kind_name(kind: CorruptionKind) -> String {
    format!("{kind:?}").to_lowercase()
}

impl fmt::Display for EvalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalKey::Population => write!(f, "population"),
            EvalKey::Precise => write!(f, "precise"),
            EvalKey::MiniBatch(b) => write!(f, "minibatch-{b}"),
            EvalKey::Alpha(a) => write!(f, "alpha-{a}"),
            EvalKey::TrainMiniBatch => write!(f, "train-minibatch"),
            EvalKey::TrainPopulation => write!(f, "train-population"),
            EvalKey::Adapt {
                kind,
                severity,
                adapted,
            } => {
                let which = if *adapted { "adapted" } else { "source" };
                write!(f, "adapt-{}-{severity}-{which}", kind_name(*kind))
            }
        }
    }
}

impl EvalKey {
    /// The key stored under `name`; `None` for a name bnlab does not write.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "population" => EvalKey::Population,
            "precise" => EvalKey::Precise,
            "train-minibatch" => EvalKey::TrainMiniBatch,
            "train-population" => EvalKey::TrainPopulation,
            _ => {
                if let Some(b) = name.strip_prefix("minibatch-") {
                    return b.parse().ok().map(EvalKey::MiniBatch);
                }
                if let Some(a) = name.strip_prefix("alpha-") {
                    return a.parse().ok().map(EvalKey::Alpha);
                }
                let rest = name.strip_prefix("adapt-")?;
                let (what, which) = rest.rsplit_once('-')?;
                let adapted = match which {
                    "adapted" => true,
                    "source" => false,
                    _ => return None,
                };
                let (kind, severity) = what.rsplit_once('-')?;
                let kind = CorruptionKind::ALL
                    .into_iter()
                    .find(|k| kind_name(*k) == kind)?;
                EvalKey::Adapt {
                    kind,
                    severity: severity.parse().ok()?,
                    adapted,
                }
            }
        })
    }

    /// What the evaluation measures, for headings.
    pub fn describe(&self) -> String {
        match self {
            EvalKey::Population => "test set, population statistics from the training EMA".into(),
            EvalKey::Precise => "test set, PreciseBN population statistics".into(),
            EvalKey::MiniBatch(b) => {
                format!("test set, statistics of each test mini-batch of {b}")
            }
            EvalKey::Alpha(a) => format!("test set, example weighing at inference with α = {a}"),
            EvalKey::TrainMiniBatch => {
                "training set, mini-batch statistics at the training normalization batch".into()
            }
            EvalKey::TrainPopulation => {
                "training set, population statistics from the training EMA".into()
            }
            EvalKey::Adapt {
                kind,
                severity,
                adapted,
            } => {
                let source = if *adapted {
                    "statistics re-estimated on it (Adaptive BN)"
                } else {
                    "the source population statistics"
                };
                format!(
                    "test set corrupted by {} at severity {severity}, {source}",
                    kind_name(*kind)
                )
            }
        }
    }

    /// Where the key sorts in a report: (group, number within the group).
    pub fn rank(&self) -> (u8, f64) {
        match self {
            EvalKey::Population => (0, 0.0),
            EvalKey::Precise => (1, 0.0),
            EvalKey::MiniBatch(b) => (2, *b as f64),
            EvalKey::Alpha(a) => (3, *a),
            EvalKey::TrainMiniBatch => (4, 0.0),
            EvalKey::TrainPopulation => (5, 0.0),
            EvalKey::Adapt { .. } => (6, 0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_reads_back_as_written() {
        let keys = [
            ("population", EvalKey::Population),
            ("precise", EvalKey::Precise),
            ("minibatch-32", EvalKey::MiniBatch(32)),
            ("alpha-0.05", EvalKey::Alpha(0.05)),
            ("alpha-0", EvalKey::Alpha(0.0)),
            ("train-minibatch", EvalKey::TrainMiniBatch),
            ("train-population", EvalKey::TrainPopulation),
            (
                "adapt-gaussiannoise-3-adapted",
                EvalKey::Adapt {
                    kind: CorruptionKind::GaussianNoise,
                    severity: 3,
                    adapted: true,
                },
            ),
            (
                "adapt-contrast-5-source",
                EvalKey::Adapt {
                    kind: CorruptionKind::Contrast,
                    severity: 5,
                    adapted: false,
                },
            ),
        ];
        for (name, key) in keys {
            assert_eq!(key.to_string(), name);
            assert_eq!(EvalKey::parse(name), Some(key), "{name}");
        }
        for unknown in [
            "minibatch-x",
            "alpha-",
            "adapt-fog-3-adapted",
            "adapt-jpeg-3",
            "other",
        ] {
            assert_eq!(EvalKey::parse(unknown), None, "{unknown}");
        }
    }
}
