//! Batch construction policies (Wu & Johnson §5–6): random shuffling, the artificial k × m
//! class pattern of Fig. 8, class-distinct ghost groups (the fix for that leakage), per-domain
//! and mixed-domain batches.

use serde::{Deserialize, Serialize};

use crate::{DataError, Rng};

/// How the images of an epoch are cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOrder {
    /// Uniform random shuffling (the default).
    Shuffle,
    /// Every batch holds `classes_per_batch` (k) classes × `per_class` (m) examples, grouped
    /// by class: a contiguous ghost batch of m examples then holds one class (the leaky
    /// setting of Wu & Johnson Fig. 8).
    ClassPattern {
        /// k.
        classes_per_batch: usize,
        /// m.
        per_class: usize,
    },
    /// The k × m pattern interleaved so that every contiguous ghost batch of `ghost_size`
    /// (≤ k) examples holds distinct classes.
    ClassDistinctGhosts {
        /// k.
        classes_per_batch: usize,
        /// m.
        per_class: usize,
        /// The ghost batch size B' the normalization layer uses.
        ghost_size: usize,
    },
    /// Each batch comes from one domain; batches of all domains are shuffled together.
    PerDomain,
    /// Batches mix domains at random; each example carries its domain id.
    MixedDomains,
}

/// A batch construction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batching {
    /// The order.
    pub order: BatchOrder,
    /// Examples per batch (k · m for the class patterns).
    pub batch_size: usize,
    /// Drop a last, partial batch.
    pub drop_last: bool,
}

/// One batch: dataset indices and, for domain policies, each example's domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    /// Indices into the dataset.
    pub indices: Vec<usize>,
    /// Domain id of each example, for the domain policies.
    pub domains: Option<Vec<usize>>,
}

impl Batching {
    /// Shuffled batches of `batch_size`, dropping a partial last batch when `drop_last`.
    pub fn shuffle(batch_size: usize, drop_last: bool) -> Self {
        Self {
            order: BatchOrder::Shuffle,
            batch_size,
            drop_last,
        }
    }

    /// The batches of epoch `epoch` over the images `pool` (dataset indices) with labels
    /// `labels[i]` and, for domain policies, domains `domains[i]` (indexed like the dataset).
    pub fn epoch(
        &self,
        pool: &[usize],
        labels: &[usize],
        domains: Option<&[usize]>,
        seed: u64,
        epoch: u64,
    ) -> Result<Vec<BatchPlan>, DataError> {
        let b = self.batch_size;
        if b == 0 {
            return Err(DataError::Invalid("batch_size must be at least 1".into()));
        }
        if let Some(&i) = pool.iter().find(|&&i| i >= labels.len()) {
            return Err(DataError::Invalid(format!(
                "index {i} outside the {} labelled images",
                labels.len()
            )));
        }
        let mut rng = Rng::new(seed, 0xba7c, epoch, 0);
        let plain = |idx: Vec<usize>| BatchPlan {
            indices: idx,
            domains: None,
        };
        match self.order {
            BatchOrder::Shuffle => {
                let mut all = pool.to_vec();
                rng.shuffle(&mut all);
                Ok(self.cut(&all).into_iter().map(plain).collect())
            }
            BatchOrder::ClassPattern {
                classes_per_batch: k,
                per_class: m,
            } => Ok(self
                .pattern(pool, labels, k, m, None, &mut rng)?
                .into_iter()
                .map(plain)
                .collect()),
            BatchOrder::ClassDistinctGhosts {
                classes_per_batch: k,
                per_class: m,
                ghost_size: g,
            } => {
                if g == 0 || g > k || b % g != 0 {
                    return Err(DataError::Invalid(format!(
                        "class-distinct ghosts need 1 ≤ ghost_size ({g}) ≤ classes_per_batch ({k}) and ghost_size dividing batch_size ({b})"
                    )));
                }
                Ok(self
                    .pattern(pool, labels, k, m, Some(g), &mut rng)?
                    .into_iter()
                    .map(plain)
                    .collect())
            }
            BatchOrder::PerDomain | BatchOrder::MixedDomains => {
                let domains = domains.ok_or_else(|| {
                    DataError::Invalid("domain policies need each example's domain".into())
                })?;
                if domains.len() != labels.len() {
                    return Err(DataError::Invalid(format!(
                        "{} domain ids for {} images",
                        domains.len(),
                        labels.len()
                    )));
                }
                let with_domains = |idx: Vec<usize>| BatchPlan {
                    domains: Some(idx.iter().map(|&i| domains[i]).collect()),
                    indices: idx,
                };
                if self.order == BatchOrder::MixedDomains {
                    let mut all = pool.to_vec();
                    rng.shuffle(&mut all);
                    return Ok(self.cut(&all).into_iter().map(with_domains).collect());
                }
                let count = pool.iter().map(|&i| domains[i] + 1).max().unwrap_or(0);
                let mut by_domain = vec![Vec::new(); count];
                for &i in pool {
                    by_domain[domains[i]].push(i);
                }
                let mut batches = Vec::new();
                for d in &mut by_domain {
                    rng.shuffle(d);
                    batches.extend(self.cut(d));
                }
                rng.shuffle(&mut batches);
                Ok(batches.into_iter().map(with_domains).collect())
            }
        }
    }

    /// `items` cut into batches, the last one dropped or kept.
    fn cut(&self, items: &[usize]) -> Vec<Vec<usize>> {
        items
            .chunks(self.batch_size)
            .filter(|c| !self.drop_last || c.len() == self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// k × m batches; grouped by class, or interleaved (class 1, …, class k, class 1, …) so any
    /// k consecutive examples are of distinct classes when `ghost` is set. Stops when fewer
    /// than k classes have m images left; a partial pattern batch is never made.
    fn pattern(
        &self,
        pool: &[usize],
        labels: &[usize],
        k: usize,
        m: usize,
        ghost: Option<usize>,
        rng: &mut Rng,
    ) -> Result<Vec<Vec<usize>>, DataError> {
        if k == 0 || m == 0 || k * m != self.batch_size {
            return Err(DataError::Invalid(format!(
                "a class pattern of {k} classes × {m} examples needs batch_size {} = k·m, got {}",
                k * m,
                self.batch_size
            )));
        }
        let classes = pool.iter().map(|&i| labels[i] + 1).max().unwrap_or(0);
        let mut queues = vec![Vec::new(); classes];
        for &i in pool {
            queues[labels[i]].push(i);
        }
        for q in &mut queues {
            rng.shuffle(q);
        }
        let mut batches = Vec::new();
        loop {
            let mut ready: Vec<usize> = (0..classes).filter(|&c| queues[c].len() >= m).collect();
            if ready.len() < k {
                break;
            }
            rng.shuffle(&mut ready);
            let chosen = &ready[..k];
            let takes: Vec<Vec<usize>> = chosen
                .iter()
                .map(|&c| {
                    let q = &mut queues[c];
                    q.split_off(q.len() - m)
                })
                .collect();
            let batch = match ghost {
                None => takes.concat(),
                Some(_) => (0..m)
                    .flat_map(|j| takes.iter().map(move |t| t[j]))
                    .collect(),
            };
            batches.push(batch);
        }
        Ok(batches)
    }
}
