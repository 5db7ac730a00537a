//! Batch construction policies (Wu & Johnson §5–6): random shuffling, the artificial k × m
//! class pattern of Fig. 8, class-distinct ghost groups (the fix for that leakage), per-domain
//! and mixed-domain batches.

use serde::{Deserialize, Serialize};

use crate::rng::stream;
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
pub struct BatchIndices {
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
    ) -> Result<Vec<BatchIndices>, DataError> {
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
        let mut rng = Rng::new(seed, stream::BATCH, epoch, 0);
        if let Some(d) = domains
            && d.len() != labels.len()
        {
            return Err(DataError::Invalid(format!(
                "{} domain ids for {} images",
                d.len(),
                labels.len()
            )));
        }
        // every batch carries its examples' domains when the data set has them
        let plain = |idx: Vec<usize>| BatchIndices {
            domains: domains.map(|d| idx.iter().map(|&i| d[i]).collect()),
            indices: idx,
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
                if g == 0 || g > k || !b.is_multiple_of(g) {
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
                if self.order == BatchOrder::MixedDomains {
                    let mut all = pool.to_vec();
                    rng.shuffle(&mut all);
                    return Ok(self.cut(&all).into_iter().map(plain).collect());
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
                Ok(batches.into_iter().map(plain).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn labels() -> Vec<usize> {
        (0..1000).map(|i| (i * 7) % 10).collect()
    }

    #[test]
    fn shuffle_covers_the_pool_once_and_drop_last_drops() {
        let pool: Vec<usize> = (0..103).collect();
        let keep = Batching::shuffle(10, false)
            .epoch(&pool, &labels(), None, 1, 0)
            .unwrap();
        assert_eq!(keep.len(), 11);
        let mut seen: Vec<usize> = keep.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, pool);
        let drop = Batching::shuffle(10, true)
            .epoch(&pool, &labels(), None, 1, 0)
            .unwrap();
        assert_eq!(drop.len(), 10);
        assert!(drop.iter().all(|b| b.indices.len() == 10));
        let next = Batching::shuffle(10, true)
            .epoch(&pool, &labels(), None, 1, 1)
            .unwrap();
        assert_ne!(drop, next, "epochs differ");
        assert_eq!(
            drop,
            Batching::shuffle(10, true)
                .epoch(&pool, &labels(), None, 1, 0)
                .unwrap()
        );
    }

    #[test]
    fn class_pattern_batches_hold_k_classes_of_m() {
        let labels = labels();
        let pool: Vec<usize> = (0..1000).collect();
        let b = Batching {
            order: BatchOrder::ClassPattern {
                classes_per_batch: 4,
                per_class: 8,
            },
            batch_size: 32,
            drop_last: true,
        };
        let batches = b.epoch(&pool, &labels, None, 3, 0).unwrap();
        assert!(batches.len() >= 25);
        for batch in &batches {
            let mut count = std::collections::HashMap::new();
            for &i in &batch.indices {
                *count.entry(labels[i]).or_insert(0) += 1;
            }
            assert_eq!(count.len(), 4);
            assert!(count.values().all(|&n| n == 8));
            // grouped by class: each contiguous run of m is one class (the leaky layout)
            for run in batch.indices.chunks(8) {
                assert_eq!(
                    run.iter().map(|&i| labels[i]).collect::<HashSet<_>>().len(),
                    1
                );
            }
        }
        let wrong = Batching {
            batch_size: 30,
            ..b
        };
        assert!(wrong.epoch(&pool, &labels, None, 3, 0).is_err());
    }

    #[test]
    fn class_distinct_ghosts_are_distinct() {
        let labels = labels();
        let pool: Vec<usize> = (0..1000).collect();
        for ghost in [2, 3, 4] {
            let b = Batching {
                order: BatchOrder::ClassDistinctGhosts {
                    classes_per_batch: 4,
                    per_class: 6,
                    ghost_size: ghost,
                },
                batch_size: 24,
                drop_last: true,
            };
            for batch in b.epoch(&pool, &labels, None, 4, 2).unwrap() {
                assert_eq!(
                    batch
                        .indices
                        .iter()
                        .map(|&i| labels[i])
                        .collect::<HashSet<_>>()
                        .len(),
                    4
                );
                for g in batch.indices.chunks(ghost) {
                    let classes: HashSet<usize> = g.iter().map(|&i| labels[i]).collect();
                    assert_eq!(classes.len(), g.len(), "ghost {ghost}: {g:?}");
                }
            }
        }
        let too_big = Batching {
            order: BatchOrder::ClassDistinctGhosts {
                classes_per_batch: 4,
                per_class: 6,
                ghost_size: 8,
            },
            batch_size: 24,
            drop_last: true,
        };
        assert!(too_big.epoch(&pool, &labels, None, 4, 2).is_err());
    }

    #[test]
    fn domain_policies_carry_domain_ids() {
        let labels = labels();
        let domains: Vec<usize> = (0..1000).map(|i| i / 400).collect();
        let pool: Vec<usize> = (0..1000).collect();
        let per = Batching {
            order: BatchOrder::PerDomain,
            batch_size: 50,
            drop_last: false,
        };
        let batches = per.epoch(&pool, &labels, Some(&domains), 1, 0).unwrap();
        assert_eq!(batches.len(), 8 + 8 + 4);
        for b in &batches {
            let d = b.domains.as_ref().unwrap();
            assert!(d.iter().all(|&x| x == d[0]), "one domain per batch");
            assert!(b.indices.iter().zip(d).all(|(&i, &x)| domains[i] == x));
        }
        let mixed = Batching {
            order: BatchOrder::MixedDomains,
            ..per
        };
        let batches = mixed.epoch(&pool, &labels, Some(&domains), 1, 0).unwrap();
        assert!(batches.iter().any(|b| {
            b.domains
                .as_ref()
                .unwrap()
                .iter()
                .collect::<HashSet<_>>()
                .len()
                > 1
        }));
        assert!(batches.iter().all(|b| {
            b.indices
                .iter()
                .zip(b.domains.as_ref().unwrap())
                .all(|(&i, &x)| domains[i] == x)
        }));
        assert!(per.epoch(&pool, &labels, None, 1, 0).is_err());
    }
}
