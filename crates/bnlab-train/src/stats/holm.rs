//! Holm's step-down correction for many comparisons (Holm 1979): it controls the chance of any
//! false discovery among m tests, and never rejects less than Bonferroni.

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// How the p-values of one table are corrected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Correction {
    /// Holm for tables with more than [`AUTO_ABOVE`] comparisons, none otherwise.
    #[default]
    Auto,
    /// Holm–Bonferroni, always.
    Holm,
    /// Raw p-values.
    None,
}

/// [`Correction::Auto`] corrects tables with more comparisons than this.
pub const AUTO_ABOVE: usize = 3;

impl Correction {
    /// Whether a table of `m` comparisons is corrected.
    pub fn applies(self, m: usize) -> bool {
        match self {
            Correction::Auto => m > AUTO_ABOVE,
            Correction::Holm => true,
            Correction::None => false,
        }
    }

    /// The p-values of a table of `raw`, corrected where [`Self::applies`].
    pub fn adjust(self, raw: &[f64]) -> Vec<f64> {
        if self.applies(raw.len()) {
            holm(raw)
        } else {
            raw.to_vec()
        }
    }
}

impl std::str::FromStr for Correction {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Correction::Auto),
            "holm" => Ok(Correction::Holm),
            "none" => Ok(Correction::None),
            other => Err(TrainError::Report(format!(
                "unknown correction `{other}` (auto, holm or none)"
            ))),
        }
    }
}

/// Holm-adjusted p-values, in the order of `raw`: the k-th smallest becomes
/// max over j ≤ k of min(1, (m − j + 1)·p₍ⱼ₎). NaN p-values sort last and stay NaN.
pub fn holm(raw: &[f64]) -> Vec<f64> {
    let m = raw.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| raw[i].total_cmp(&raw[j]));
    let mut adjusted = vec![f64::NAN; m];
    let mut running: f64 = 0.0;
    for (k, &i) in order.iter().enumerate() {
        if raw[i].is_nan() {
            continue;
        }
        running = running.max(((m - k) as f64 * raw[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}
