//! Host-side planning of one forward pass: which examples form each statistic unit, and which
//! population set and affine set each example uses.

use crate::{GhostSplit, NormConfig, NormError, Remainder, StatUnit};

/// The example partition and per-example set indices of one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Partition {
    /// Examples of each example block (statistic units are blocks × channel groups).
    pub blocks: Vec<Vec<usize>>,
    /// Block of each example.
    pub block_of: Vec<usize>,
    /// Population set of each example.
    pub pop_of: Vec<usize>,
    /// Affine set of each example.
    pub affine_of: Vec<usize>,
}

impl Partition {
    /// Whether every block is one example, in order (no gather needed).
    pub fn is_identity(&self) -> bool {
        self.blocks.len() == self.block_of.len()
            && self.blocks.iter().enumerate().all(|(i, b)| b == &[i])
    }
}

/// Splits `n` examples into `groups` blocks as evenly as possible (sizes differ by ≤ 1).
fn even_split(n: usize, groups: usize, split: GhostSplit) -> Vec<Vec<usize>> {
    match split {
        GhostSplit::Strided => (0..groups)
            .map(|g| (g..n).step_by(groups).collect())
            .collect(),
        GhostSplit::Contiguous => {
            let (base, extra) = (n / groups, n % groups);
            let mut start = 0;
            (0..groups)
                .map(|g| {
                    let len = base + usize::from(g < extra);
                    let block = (start..start + len).collect();
                    start += len;
                    block
                })
                .collect()
        }
    }
}

/// Ghost batches of size `b` for a batch of `n`.
fn ghost_blocks(
    n: usize,
    b: usize,
    split: GhostSplit,
    remainder: Remainder,
) -> Result<Vec<Vec<usize>>, NormError> {
    let err = |reason: String| Err(NormError::BatchSplit { batch: n, reason });
    if !n.is_multiple_of(b) && remainder == Remainder::Error {
        return err(format!(
            "ghost_size = {b} does not divide the batch of {n} (allow a partial ghost batch with remainder = Allow)"
        ));
    }
    let blocks = match split {
        GhostSplit::Contiguous => (0..n)
            .step_by(b)
            .map(|s| (s..(s + b).min(n)).collect())
            .collect(),
        GhostSplit::Strided => even_split(n, n.div_ceil(b), GhostSplit::Strided),
    };
    if !n.is_multiple_of(b) {
        check_min_examples(n, &blocks, "partial ghost batch")?;
    }
    Ok(blocks)
}

fn check_min_examples(n: usize, blocks: &[Vec<usize>], what: &str) -> Result<(), NormError> {
    if n < 2 {
        return Ok(()); // a single example fails later with the value count
    }
    match blocks.iter().position(|b| b.len() < 2) {
        Some(i) => Err(NormError::BatchSplit {
            batch: n,
            reason: format!(
                "{what} {i} would hold {} example(s); it needs at least 2",
                blocks[i].len()
            ),
        }),
        None => Ok(()),
    }
}

/// Splits every block by domain id, keeping order and dropping empty parts.
fn split_by_domain(blocks: Vec<Vec<usize>>, domains: &[usize], count: usize) -> Vec<Vec<usize>> {
    blocks
        .into_iter()
        .flat_map(|block| {
            let mut parts = vec![Vec::new(); count];
            for i in block {
                parts[domains[i]].push(i);
            }
            parts.into_iter().filter(|p| !p.is_empty())
        })
        .collect()
}

/// Checks domain ids against the config; `Ok(None)` when the layer has no domains.
pub(crate) fn check_domains<'a>(
    config: &NormConfig,
    n: usize,
    domains: Option<&'a [usize]>,
) -> Result<Option<&'a [usize]>, NormError> {
    let Some(dc) = config.domains else {
        return Ok(None);
    };
    let Some(ids) = domains else {
        let needed =
            config.train_per_domain() || config.population_sets() > 1 || config.affine_sets() > 1;
        return if needed {
            Err(NormError::Domain(format!(
                "the layer keeps per-domain settings for {} domains, but no domain ids were given",
                dc.count
            )))
        } else {
            Ok(None)
        };
    };
    if ids.len() != n {
        return Err(NormError::Domain(format!(
            "{} ids given for a batch of {n}",
            ids.len()
        )));
    }
    if let Some((i, &d)) = ids.iter().enumerate().find(|(_, d)| **d >= dc.count) {
        return Err(NormError::Domain(format!(
            "example {i} has domain id {d}, but the layer has {} domains",
            dc.count
        )));
    }
    Ok(Some(ids))
}

/// The example blocks of a forward pass over `n` ≥ 1 examples, before any domain refinement:
/// ghost batches, example groups, one block per example, or (without `batch_stats`) the whole
/// batch unsplit. This is the one batch-split rule; [`check_batch`] and [`plan`] both call it.
fn example_blocks(
    config: &NormConfig,
    n: usize,
    batch_stats: bool,
) -> Result<Vec<Vec<usize>>, NormError> {
    let policy = config.batch;
    let unit = if batch_stats {
        config.unit
    } else {
        StatUnit::None
    };
    Ok(match unit {
        StatUnit::Batch => match policy.ghost_size {
            Some(b) => ghost_blocks(n, b, policy.split, policy.remainder)?,
            None => vec![(0..n).collect()],
        },
        StatUnit::BatchGroup { example_groups, .. } => {
            let split_error = |reason: String| NormError::BatchSplit { batch: n, reason };
            if n < example_groups {
                return Err(split_error(format!(
                    "example_groups = {example_groups} exceeds the batch of {n}"
                )));
            }
            if !n.is_multiple_of(example_groups) && policy.remainder == Remainder::Error {
                return Err(split_error(format!(
                    "example_groups = {example_groups} does not divide the batch of {n} (allow uneven groups with remainder = Allow)"
                )));
            }
            even_split(n, example_groups, policy.split)
        }
        StatUnit::Group { .. } | StatUnit::Layer | StatUnit::Instance | StatUnit::None => {
            (0..n).map(|i| vec![i]).collect()
        }
    })
}

/// Checks, before anything runs, that a layer set up as `config` can take forward batches of
/// `n` examples with batch statistics (training, PreciseBN collection, mini-batch evaluation):
/// the configuration is valid and the batch splits as it asks. It applies the same rule as
/// every forward pass, so a check that passes never fails later with [`NormError::BatchSplit`].
///
/// Domain refinement is not checked: it depends on the domain ids of each batch.
pub fn check_batch(config: &NormConfig, n: usize) -> Result<(), NormError> {
    config.validate()?;
    if n == 0 {
        return Err(NormError::BatchSplit {
            batch: 0,
            reason: "a forward batch with batch statistics needs at least 1 example".into(),
        });
    }
    example_blocks(config, n, true).map(|_| ())
}

/// Plans a forward pass over `n` examples (no units when `n` = 0). Without `batch_stats` (population
/// statistics) the batch is not split, so no batch-size rule applies.
pub(crate) fn plan(
    config: &NormConfig,
    n: usize,
    domains: Option<&[usize]>,
    batch_stats: bool,
) -> Result<Partition, NormError> {
    let domains = check_domains(config, n, domains)?;
    if n == 0 {
        // an empty worker of a synchronized group: no units of its own
        return Ok(Partition {
            blocks: Vec::new(),
            block_of: Vec::new(),
            pop_of: Vec::new(),
            affine_of: Vec::new(),
        });
    }
    let mut blocks = example_blocks(config, n, batch_stats)?;
    if let (Some(ids), true) = (domains, batch_stats && config.train_per_domain()) {
        blocks = split_by_domain(blocks, ids, config.domain_count());
    }
    let mut block_of = vec![0; n];
    for (b, block) in blocks.iter().enumerate() {
        for &i in block {
            block_of[i] = b;
        }
    }
    let set_of = |sets: usize| match (domains, sets > 1) {
        (Some(ids), true) => ids.to_vec(),
        _ => vec![0; n],
    };
    Ok(Partition {
        blocks,
        block_of,
        pop_of: set_of(config.population_sets()),
        affine_of: set_of(config.affine_sets()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchPolicy, DomainChoice, DomainConfig};

    #[test]
    fn contiguous_and_strided_ghosts() {
        let c = NormConfig::new(3).with_batch(BatchPolicy::ghost(2, GhostSplit::Contiguous));
        assert_eq!(
            plan(&c, 6, None, true).unwrap().blocks,
            vec![vec![0, 1], vec![2, 3], vec![4, 5]]
        );
        let c = c.with_batch(BatchPolicy::ghost(2, GhostSplit::Strided));
        assert_eq!(
            plan(&c, 6, None, true).unwrap().blocks,
            vec![vec![0, 3], vec![1, 4], vec![2, 5]]
        );
    }

    #[test]
    fn remainder_policy() {
        let mut policy = BatchPolicy::ghost(4, GhostSplit::Contiguous);
        let c = NormConfig::new(3).with_batch(policy);
        assert!(matches!(
            plan(&c, 10, None, true),
            Err(NormError::BatchSplit { .. })
        ));
        policy.remainder = Remainder::Allow;
        let c = c.with_batch(policy);
        assert_eq!(plan(&c, 10, None, true).unwrap().blocks[2], vec![8, 9]);
        // a partial ghost batch of one example is refused even when allowed
        assert!(matches!(
            plan(&c, 9, None, true),
            Err(NormError::BatchSplit { .. })
        ));
    }

    #[test]
    fn domains_refine_blocks_and_pick_sets() {
        let dc = DomainConfig {
            count: 2,
            train_stats: DomainChoice::PerDomain,
            population_stats: DomainChoice::PerDomain,
            affine: DomainChoice::Shared,
        };
        let c = NormConfig::new(3).with_domains(Some(dc));
        let p = plan(&c, 4, Some(&[1, 0, 1, 0]), true).unwrap();
        assert_eq!(p.blocks, vec![vec![1, 3], vec![0, 2]]);
        assert_eq!(p.pop_of, vec![1, 0, 1, 0]);
        assert_eq!(p.affine_of, vec![0; 4]);
        assert!(matches!(
            plan(&c, 4, Some(&[0, 2, 0, 0]), true),
            Err(NormError::Domain(_))
        ));
        assert!(matches!(
            plan(&c, 4, Some(&[0, 1]), true),
            Err(NormError::Domain(_))
        ));
        assert!(matches!(plan(&c, 4, None, true), Err(NormError::Domain(_))));
    }

    #[test]
    fn check_batch_applies_the_forward_rule() {
        let bg = |e: usize, remainder: Remainder| {
            NormConfig::new(16)
                .with_unit(StatUnit::BatchGroup {
                    channel_groups: 4,
                    example_groups: e,
                })
                .with_batch(BatchPolicy {
                    remainder,
                    ..BatchPolicy::default()
                })
        };
        // 3 example groups do not divide 8 unless uneven groups are allowed
        assert!(check_batch(&bg(3, Remainder::Error), 8).is_err());
        assert!(plan(&bg(3, Remainder::Error), 8, None, true).is_err());
        assert!(check_batch(&bg(3, Remainder::Allow), 8).is_ok());
        assert!(check_batch(&bg(9, Remainder::Allow), 8).is_err());
        // a strided ghost of 4 with a remainder splits 9 as 3 + 3 + 3
        let mut policy = BatchPolicy::ghost(4, GhostSplit::Strided);
        policy.remainder = Remainder::Allow;
        let c = NormConfig::new(3).with_batch(policy);
        assert!(check_batch(&c, 9).is_ok());
        assert_eq!(plan(&c, 9, None, true).unwrap().blocks.len(), 3);
        // the contiguous split of the same leaves a last ghost batch of 1
        policy.split = GhostSplit::Contiguous;
        assert!(check_batch(&c.with_batch(policy), 9).is_err());
        // the channel count is the site's own
        let gn = NormConfig::new(16).with_unit(StatUnit::Group { groups: 8 });
        assert!(check_batch(&gn, 2).is_ok());
        assert!(matches!(
            check_batch(&gn.for_channels(12), 2),
            Err(NormError::InvalidConfig(_))
        ));
        assert!(check_batch(&NormConfig::new(3), 0).is_err());
    }
}
