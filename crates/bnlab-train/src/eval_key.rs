//! [`EvalKey`]: the name under which one evaluation of a run is stored in its result, and what
//! it measures. Keys are written, read, ordered and described here only.

use std::fmt;

use bnlab_data::CorruptionKind;

/// One evaluation of a run, as stored under [`RunResult::test`](crate::RunResult::test).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalKey {
    /// `population`: the test set with the training EMA's population statistics.
    Population,
    /// `precise`, `precise-nN-bB`, then `-whole` when PreciseBN batches were normalized
    /// whole, `-exact` when estimated layer by layer (Wu & Johnson A.3) and `-eq3` with the
    /// mean of per-batch variances (A.2's eq. 3): the test set with PreciseBN's population
    /// statistics. Without N and B the key is the spec's first N and B (the PreciseBN of
    /// per-epoch validation, FrozenBN and Adaptive BN).
    Precise {
        /// (N, B) when they are not the spec's first.
        size: Option<(usize, usize)>,
        /// Whether PreciseBN's batches were normalized whole rather than under the training
        /// batch policy (ghost batches).
        whole: bool,
        /// Layer by layer.
        exact: bool,
        /// Eq. 3 rather than eq. 2.
        eq3: bool,
    },
    /// `minibatch-B`: each test mini-batch of B normalized by its own statistics.
    MiniBatch(usize),
    /// `alpha-A`: example weighing at inference with α = A (Summers & Dinneen §3.1).
    Alpha(f64),
    /// `train-minibatch`: the training set under mini-batch statistics at the training batch.
    TrainMiniBatch,
    /// `train-population`: the training set under the EMA's population statistics.
    TrainPopulation,
    /// `adapt-KIND-S-reverse`: the clean test set with statistics re-estimated on the
    /// corrupted training images (Wu & Johnson Table 4's reverse rows).
    AdaptReverse {
        /// The corruption family.
        kind: CorruptionKind,
        /// Its severity, 1 to 5.
        severity: u8,
    },
    /// `FAMILY@val` (`precise@val`, `minibatch@val`, `alpha@val`): the test set under the key
    /// of that family with the best mean validation accuracy of the run's configuration
    /// (chosen by the report from the runs' `validation` metrics).
    ChosenOnValidation(Family),
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

/// Keys whose setting a report can choose on the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// `precise…`: PreciseBN's N, B and batch policy.
    Precise,
    /// `minibatch-B`: the mini-batch size.
    MiniBatch,
    /// `alpha-A`: α of example weighing.
    Alpha,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 3] = [Family::Precise, Family::MiniBatch, Family::Alpha];

    /// Its name in keys.
    pub fn name(self) -> &'static str {
        match self {
            Family::Precise => "precise",
            Family::MiniBatch => "minibatch",
            Family::Alpha => "alpha",
        }
    }

    /// Whether `key` is one of this family's evaluations.
    pub fn contains(self, key: &EvalKey) -> bool {
        matches!(
            (self, key),
            (Family::Precise, EvalKey::Precise { .. })
                | (Family::MiniBatch, EvalKey::MiniBatch(_))
                | (Family::Alpha, EvalKey::Alpha(_))
        )
    }
}

/// The suffix of a key chosen on the validation split.
const ON_VALIDATION: &str = "@val";

/// The suffixes of a PreciseBN key: batches normalized whole, layer by layer, eq. 3.
const WHOLE: &str = "-whole";
const EXACT: &str = "-exact";
const EQ3: &str = "-eq3";

/// The PreciseBN key whose name is `precise` followed by `rest`.
fn parse_precise(rest: &str) -> Option<EvalKey> {
    let mut rest = rest;
    let mut flag = |suffix: &str| match rest.strip_suffix(suffix) {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    };
    // suffixes come in the order whole, exact, eq3: strip them from the end
    let (eq3, exact, whole) = (flag(EQ3), flag(EXACT), flag(WHOLE));
    let size = if rest.is_empty() {
        None
    } else {
        let (n, b) = rest.strip_prefix("-n")?.split_once("-b")?;
        Some((n.parse().ok()?, b.parse().ok()?))
    };
    Some(EvalKey::Precise {
        size,
        whole,
        exact,
        eq3,
    })
}

/// The name of a corruption family inside a key (`contrast`, `gaussiannoise`, `jpeg`).
fn kind_name(kind: CorruptionKind) -> String {
    format!("{kind:?}").to_lowercase()
}

impl fmt::Display for EvalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalKey::Population => write!(f, "population"),
            EvalKey::Precise {
                size,
                whole,
                exact,
                eq3,
            } => {
                write!(f, "precise")?;
                if let Some((n, b)) = size {
                    write!(f, "-n{n}-b{b}")?;
                }
                for (on, suffix) in [(whole, WHOLE), (exact, EXACT), (eq3, EQ3)] {
                    if *on {
                        write!(f, "{suffix}")?;
                    }
                }
                Ok(())
            }
            EvalKey::MiniBatch(b) => write!(f, "minibatch-{b}"),
            EvalKey::Alpha(a) => write!(f, "alpha-{a}"),
            EvalKey::TrainMiniBatch => write!(f, "train-minibatch"),
            EvalKey::TrainPopulation => write!(f, "train-population"),
            EvalKey::ChosenOnValidation(family) => write!(f, "{}{ON_VALIDATION}", family.name()),
            EvalKey::AdaptReverse { kind, severity } => {
                write!(f, "adapt-{}-{severity}-reverse", kind_name(*kind))
            }
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
    /// `precise`: the spec's first PreciseBN (N, B), under the training batch policy.
    pub const PRECISE: EvalKey = EvalKey::Precise {
        size: None,
        whole: false,
        exact: false,
        eq3: false,
    };

    /// The key stored under `name`; `None` for a name bnlab does not write.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "population" => EvalKey::Population,
            "train-minibatch" => EvalKey::TrainMiniBatch,
            "train-population" => EvalKey::TrainPopulation,
            _ => {
                if let Some(family) = name.strip_suffix(ON_VALIDATION) {
                    return Family::ALL
                        .into_iter()
                        .find(|f| f.name() == family)
                        .map(EvalKey::ChosenOnValidation);
                }
                if let Some(rest) = name.strip_prefix("precise") {
                    return parse_precise(rest);
                }
                if let Some(b) = name.strip_prefix("minibatch-") {
                    return b.parse().ok().map(EvalKey::MiniBatch);
                }
                if let Some(a) = name.strip_prefix("alpha-") {
                    return a.parse().ok().map(EvalKey::Alpha);
                }
                let rest = name.strip_prefix("adapt-")?;
                let (what, which) = rest.rsplit_once('-')?;
                let (kind, severity) = what.rsplit_once('-')?;
                let kind = CorruptionKind::ALL
                    .into_iter()
                    .find(|k| kind_name(*k) == kind)?;
                let severity = severity.parse().ok()?;
                match which {
                    "adapted" | "source" => EvalKey::Adapt {
                        kind,
                        severity,
                        adapted: which == "adapted",
                    },
                    "reverse" => EvalKey::AdaptReverse { kind, severity },
                    _ => return None,
                }
            }
        })
    }

    /// What the evaluation measures, for headings.
    pub fn describe(&self) -> String {
        match self {
            EvalKey::Population => "test set, population statistics from the training EMA".into(),
            EvalKey::Precise {
                size,
                whole,
                exact,
                eq3,
            } => {
                let mut what = "test set, PreciseBN population statistics".to_string();
                if let Some((n, b)) = size {
                    what += &format!(" from N = {n} images in batches of B = {b}");
                }
                for (on, how) in [
                    (whole, ", batches normalized whole"),
                    (exact, ", layer by layer"),
                    (eq3, ", mean of batch variances (eq. 3)"),
                ] {
                    if *on {
                        what += how;
                    }
                }
                what
            }
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
            EvalKey::AdaptReverse { kind, severity } => format!(
                "clean test set, statistics re-estimated on training images corrupted by {} at severity {severity}",
                kind_name(*kind)
            ),
            EvalKey::ChosenOnValidation(family) => format!(
                "test set, the `{}` setting with the best mean validation accuracy of the configuration",
                family.name()
            ),
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
            EvalKey::Precise {
                size,
                whole,
                exact,
                eq3,
            } => {
                let (n, b) = size.unwrap_or((0, 0));
                let flags: f64 = [whole, exact, eq3]
                    .iter()
                    .zip([0.1, 0.2, 0.4])
                    .map(|(on, v)| if **on { v } else { 0.0 })
                    .sum();
                (1, n as f64 * 1e7 + b as f64 + flags)
            }
            EvalKey::MiniBatch(b) => (2, *b as f64),
            EvalKey::Alpha(a) => (3, *a),
            EvalKey::TrainMiniBatch => (4, 0.0),
            EvalKey::TrainPopulation => (5, 0.0),
            EvalKey::Adapt { .. } | EvalKey::AdaptReverse { .. } => (6, 0.0),
            EvalKey::ChosenOnValidation(family) => {
                let group = match family {
                    Family::Precise => 1,
                    Family::MiniBatch => 2,
                    Family::Alpha => 3,
                };
                (group, f64::INFINITY)
            }
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
            ("precise", EvalKey::PRECISE),
            (
                "precise-whole",
                EvalKey::Precise {
                    size: None,
                    whole: true,
                    exact: false,
                    eq3: false,
                },
            ),
            (
                "precise-n1000-b10-whole-exact-eq3",
                EvalKey::Precise {
                    size: Some((1000, 10)),
                    whole: true,
                    exact: true,
                    eq3: true,
                },
            ),
            (
                "precise-n100-b2-eq3",
                EvalKey::Precise {
                    size: Some((100, 2)),
                    whole: false,
                    exact: false,
                    eq3: true,
                },
            ),
            ("minibatch-32", EvalKey::MiniBatch(32)),
            ("alpha-0.05", EvalKey::Alpha(0.05)),
            ("alpha-0", EvalKey::Alpha(0.0)),
            ("train-minibatch", EvalKey::TrainMiniBatch),
            ("train-population", EvalKey::TrainPopulation),
            ("alpha@val", EvalKey::ChosenOnValidation(Family::Alpha)),
            (
                "adapt-contrast-3-reverse",
                EvalKey::AdaptReverse {
                    kind: CorruptionKind::Contrast,
                    severity: 3,
                },
            ),
            ("precise@val", EvalKey::ChosenOnValidation(Family::Precise)),
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
            "precise-n10",
            "precise-n10-bx",
            "precisely",
            "precise-eq3-whole",
            "population@val",
            "other",
        ] {
            assert_eq!(EvalKey::parse(unknown), None, "{unknown}");
        }
    }
}
