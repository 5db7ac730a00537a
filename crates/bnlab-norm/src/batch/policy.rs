//! What "the batch" is for batch statistics: ghost batches ([`BatchPolicy`], [`GhostSplit`],
//! [`Remainder`]) and domains ([`DomainConfig`]).

use serde::{Deserialize, Serialize};

/// How a batch is cut into ghost batches (or example groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GhostSplit {
    /// Ghost batch g holds examples g·B' .. (g+1)·B' (Summers & Dinneen eq. 4).
    #[serde(alias = "Contiguous")]
    Contiguous,
    /// Ghost batch g holds examples g, g + G, g + 2G, … with G = ⌈N / B'⌉ (tf-keras).
    #[serde(alias = "Strided")]
    Strided,
}

/// What to do when the ghost size does not divide the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Remainder {
    /// A batch the ghost size does not divide is an error.
    #[serde(alias = "Error")]
    Error,
    /// Allow a partial ghost batch, provided it holds at least 2 examples.
    #[serde(alias = "Allow")]
    Allow,
}

/// What "the batch" is for batch statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchPolicy {
    /// Ghost size B' (normalization batch ≠ SGD batch); `None` uses the whole batch.
    pub ghost_size: Option<usize>,
    /// How ghost batches and BatchGroup example groups are cut from the batch.
    pub split: GhostSplit,
    /// Whether a partial ghost batch is allowed.
    pub remainder: Remainder,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            ghost_size: None,
            split: GhostSplit::Contiguous,
            remainder: Remainder::Error,
        }
    }
}

impl BatchPolicy {
    /// A ghost policy of size `ghost_size` with the given split and no remainder.
    pub fn ghost(ghost_size: usize, split: GhostSplit) -> Self {
        Self {
            ghost_size: Some(ghost_size),
            split,
            remainder: Remainder::Error,
        }
    }
}

/// Whether something is shared by all domains or kept per domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainChoice {
    /// One for all domains together.
    #[serde(alias = "Shared")]
    Shared,
    /// One per domain.
    #[serde(alias = "PerDomain")]
    PerDomain,
}

/// Multi-domain settings (Wu & Johnson §5.2, Table 5). Each example carries a domain id < `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// Number of domains D.
    pub count: usize,
    /// Statistics used to normalize in SGD training: over all domains or per domain.
    pub train_stats: DomainChoice,
    /// Population statistics: one set, or one per domain (used by the example's domain at inference).
    pub population_stats: DomainChoice,
    /// Affine parameters: one set, or one per domain.
    pub affine: DomainChoice,
}
