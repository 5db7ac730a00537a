//! Synchronized batch statistics across data-parallel workers ([`SyncReducer`]): per worker,
//! all workers (SyncBN) or groups of workers, count-weighted or equal per worker
//! (Wu & Johnson §5.3, A.5).

use std::sync::{Arc, Mutex};

use burn::tensor::{Tensor, TensorCreationOptions, TensorData};
use serde::{Deserialize, Serialize};

use crate::tensors::to_f64;
use crate::{Moments, NormError, NormMode, StatsReducer};
use bnlab_collective::{Collective, all_gather_f64, all_reduce_sum};

/// Which workers' examples form one normalization batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SyncGroups {
    /// Each worker alone: what plain data parallelism does.
    #[default]
    PerWorker,
    /// All workers: SyncBN.
    All,
    /// Disjoint groups of ranks that cover every rank (flax's `axis_index_groups`).
    Groups(Vec<Vec<usize>>),
}

impl SyncGroups {
    /// Groups of `size` consecutive ranks out of `workers`.
    pub fn consecutive(workers: usize, size: usize) -> Self {
        let size = size.max(1);
        Self::Groups(
            (0..workers)
                .step_by(size)
                .map(|s| (s..(s + size).min(workers)).collect())
                .collect(),
        )
    }

    /// The ranks whose statistics `rank` combines with, in rank order.
    pub fn members(&self, rank: usize, workers: usize) -> Vec<usize> {
        match self {
            Self::PerWorker => vec![rank],
            Self::All => (0..workers).collect(),
            Self::Groups(groups) => {
                let mut g = groups
                    .iter()
                    .find(|g| g.contains(&rank))
                    .cloned()
                    .unwrap_or_else(|| vec![rank]);
                g.sort_unstable();
                g
            }
        }
    }

    /// Whether any worker's normalization batch spans more than one worker.
    pub fn spans_workers(&self, workers: usize) -> bool {
        match self {
            Self::PerWorker => false,
            Self::All => workers > 1,
            Self::Groups(groups) => groups.iter().any(|g| g.len() > 1),
        }
    }

    /// Checks that explicit groups are disjoint and cover ranks `0..workers` exactly.
    pub fn validate(&self, workers: usize) -> Result<(), NormError> {
        let Self::Groups(groups) = self else {
            return Ok(());
        };
        let mut seen = vec![false; workers];
        for &r in groups.iter().flatten() {
            match seen.get_mut(r) {
                None => {
                    return Err(NormError::InvalidConfig(format!(
                        "sync group names rank {r}, but there are {workers} workers"
                    )));
                }
                Some(s) if *s => {
                    return Err(NormError::InvalidConfig(format!(
                        "rank {r} is in two sync groups"
                    )));
                }
                Some(s) => *s = true,
            }
        }
        match seen.iter().position(|s| !s) {
            Some(r) => Err(NormError::InvalidConfig(format!(
                "rank {r} is in no sync group"
            ))),
            None => Ok(()),
        }
    }
}

/// How the workers of a group are weighted in the batch statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SyncWeighting {
    /// Every value counts once: the statistics of the concatenated batch.
    #[default]
    Count,
    /// Every worker with examples counts once: mean = average of the workers' means, E\[x²\]
    /// likewise (detectron2's `stats_mode = "N"`). Running statistics stay count-weighted.
    EqualPerWorker,
}

/// A [`StatsReducer`] over a [`Collective`]: combines unit statistics within the worker's
/// sync group (forward) and the gradient sums of the backward, and population statistics
/// within the group when training and over all workers when collecting (distributed PreciseBN,
/// so every rank ends with identical statistics).
///
/// Every worker sums in rank order, so all members hold bit-identical statistics.
pub struct SyncReducer {
    collective: Arc<dyn Collective>,
    groups: SyncGroups,
    weighting: SyncWeighting,
    failure: Mutex<Option<NormError>>,
}

impl std::fmt::Debug for SyncReducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncReducer")
            .field("rank", &self.collective.rank())
            .field("workers", &self.collective.size())
            .field("groups", &self.groups)
            .field("weighting", &self.weighting)
            .finish()
    }
}

/// One rank's message: its unit and population rows.
struct Sent {
    units: usize,
    count: Vec<f64>,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

impl SyncReducer {
    /// A reducer for this worker of `collective`, or an error when `groups` do not fit it.
    pub fn new(
        collective: Arc<dyn Collective>,
        groups: SyncGroups,
        weighting: SyncWeighting,
    ) -> Result<Self, NormError> {
        groups.validate(collective.size())?;
        Ok(Self {
            collective,
            groups,
            weighting,
            failure: Mutex::new(None),
        })
    }

    fn members(&self) -> Vec<usize> {
        self.groups
            .members(self.collective.rank(), self.collective.size())
    }

    /// Every rank's rows, checked for the same population rows and channel groups.
    fn exchange(&self, local: &Moments, k: usize) -> Result<Vec<Sent>, NormError> {
        let (s1, s2) = (
            to_f64(local.sum.clone(), "the unit sums")?,
            to_f64(local.sum_sq.clone(), "the unit sums of squares")?,
        );
        let pops = local.count.len() - local.units;
        let mut msg = vec![local.units as f64, pops as f64, k as f64];
        msg.extend(&local.count);
        msg.extend(&s1);
        msg.extend(&s2);
        let all = all_gather_f64(self.collective.as_ref(), &msg).map_err(NormError::Collective)?;
        all.into_iter()
            .enumerate()
            .map(|(r, m)| {
                let Some(&[u, p, kk]) = m.get(..3) else {
                    return Err(NormError::Reducer(format!(
                        "worker {r} sent {} value(s), not statistics: the workers are out of step (worker {r} is in another collective call)",
                        m.len()
                    )));
                };
                let (units, p, kk) = (u as usize, p as usize, kk as usize);
                let rows = units + p;
                if p != pops || kk != k || m.len() != 3 + rows + 2 * rows * k {
                    return Err(NormError::Reducer(format!(
                        "worker {r} sent statistics for {p} population set(s) × {kk} channel group(s); this worker has {pops} × {k}"
                    )));
                }
                let (count, rest) = m[3..].split_at(rows);
                let (sum, sum_sq) = rest.split_at(rows * k);
                Ok(Sent {
                    units,
                    count: count.to_vec(),
                    sum: sum.to_vec(),
                    sum_sq: sum_sq.to_vec(),
                })
            })
            .collect()
    }
}

impl StatsReducer for SyncReducer {
    fn reduce(&self, local: Moments) -> Result<Moments, NormError> {
        let world = self.collective.size();
        let units_synced = !local.per_example && self.groups.spans_workers(world);
        let collect = local.mode == NormMode::Collect;
        if !(units_synced || (collect && world > 1)) {
            return Ok(local);
        }
        let k = local.sum.dims()[1];
        let sent = self.exchange(&local, k)?;
        let me = self.collective.rank();
        let unit_members = if units_synced {
            self.members()
        } else {
            vec![me]
        };
        let pop_members: Vec<usize> = if collect {
            (0..world).collect()
        } else {
            unit_members.clone()
        };
        // unit rows: every member with examples must have as many as the others
        let with_rows: Vec<usize> = unit_members
            .iter()
            .copied()
            .filter(|&r| sent[r].units > 0)
            .collect();
        let units = with_rows.first().map_or(0, |&r| sent[r].units);
        if let Some(&r) = with_rows.iter().find(|&&r| sent[r].units != units) {
            return Err(NormError::Reducer(format!(
                "worker {r} has {} statistic unit(s) where worker {} has {units}; synchronized units must match (ghost batches and example groups per worker)",
                sent[r].units, with_rows[0]
            )));
        }
        let mut count = vec![0.0f64; units];
        let (mut sum, mut sum_sq) = (vec![0.0f64; units * k], vec![0.0f64; units * k]);
        for (u, row_count) in count.iter_mut().enumerate() {
            let cols = u * k..(u + 1) * k;
            match self.weighting {
                SyncWeighting::Count => {
                    for &r in &with_rows {
                        *row_count += sent[r].count[u];
                        add(&mut sum[cols.clone()], &sent[r].sum[cols.clone()], 1.0);
                        add(
                            &mut sum_sq[cols.clone()],
                            &sent[r].sum_sq[cols.clone()],
                            1.0,
                        );
                    }
                }
                SyncWeighting::EqualPerWorker => {
                    // mean of the workers' means, E[x²] likewise, over `workers` workers with
                    // values; scaled back to sums over this worker's values (or the total for
                    // a worker with none) so the backward sees the right ∂mean/∂x
                    let present: Vec<usize> = with_rows
                        .iter()
                        .copied()
                        .filter(|&r| sent[r].count[u] > 0.0)
                        .collect();
                    let workers = present.len() as f64;
                    let total: f64 = present.iter().map(|&r| sent[r].count[u]).sum();
                    let own = if sent[me].units > 0 {
                        sent[me].count[u]
                    } else {
                        0.0
                    };
                    *row_count = if own > 0.0 { workers * own } else { total };
                    for &r in &present {
                        let w = *row_count / (workers * sent[r].count[u]);
                        add(&mut sum[cols.clone()], &sent[r].sum[cols.clone()], w);
                        add(&mut sum_sq[cols.clone()], &sent[r].sum_sq[cols.clone()], w);
                    }
                }
            }
        }
        // population rows: count-weighted over the group, or over every worker when collecting
        let pops = local.count.len() - local.units;
        for p in 0..pops {
            let (mut c, mut s1, mut s2) = (0.0, vec![0.0f64; k], vec![0.0f64; k]);
            for &r in &pop_members {
                let row = sent[r].units + p;
                c += sent[r].count[row];
                add(&mut s1, &sent[r].sum[row * k..(row + 1) * k], 1.0);
                add(&mut s2, &sent[r].sum_sq[row * k..(row + 1) * k], 1.0);
            }
            count.push(c);
            sum.extend(s1);
            sum_sq.extend(s2);
        }
        let rows = units + pops;
        let opts = TensorCreationOptions::new(local.sum.device()).with_dtype(local.sum.dtype());
        let tensor =
            |v: Vec<f64>| Tensor::<2>::from_data(TensorData::new(v, [rows, k]), opts.clone());
        Ok(Moments {
            count,
            sum: tensor(sum),
            sum_sq: tensor(sum_sq),
            units,
            ..local
        })
    }

    fn syncs_units(&self) -> bool {
        self.groups.spans_workers(self.collective.size())
    }

    fn reduce_grads(&self, sums: &mut [f64]) {
        if !self.syncs_units() {
            return;
        }
        if let Err(e) = all_reduce_sum(self.collective.as_ref(), &self.members(), sums)
            && let Ok(mut slot) = self.failure.lock()
            && slot.is_none()
        {
            *slot = Some(NormError::Collective(e));
        }
    }

    fn take_failure(&self) -> Option<NormError> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }
}

fn add(acc: &mut [f64], values: &[f64], weight: f64) {
    for (a, v) in acc.iter_mut().zip(values) {
        *a += weight * v;
    }
}
