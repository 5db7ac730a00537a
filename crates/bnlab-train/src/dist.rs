//! Data-parallel pieces of a run: each worker's shard of a batch, Shuffle BN's all-to-all
//! (Wu & Johnson §6.1), and the gradient all-reduce.

use std::ops::Range;
use std::sync::Arc;

use bnlab_collective::{Collective, all_gather_f64, all_reduce_sum};
use bnlab_data::HostBatch;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::TrainError;

/// This process's place in a data-parallel job.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The transport to the other workers.
    pub collective: Arc<dyn Collective>,
    /// The device this worker computes on.
    pub device: Device,
}

impl Worker {
    /// A worker that talks through `collective` and computes on `device` (threads and MPI
    /// processes; CUDA workers come from their device group).
    pub fn new(collective: Arc<dyn Collective>, device: Device) -> Self {
        Worker { collective, device }
    }

    /// This worker's rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// The number of workers.
    pub fn size(&self) -> usize {
        self.collective.size()
    }

    /// Whether this worker writes checkpoints, results and validates (rank 0).
    pub fn leads(&self) -> bool {
        self.rank() == 0
    }
}

/// Positions `rank` holds of a batch of `n` split over `size` workers (contiguous shards
/// whose sizes differ by at most one, larger ones first).
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// The examples `positions` of `batch`, in that order.
pub fn select(batch: &HostBatch, positions: &[usize]) -> HostBatch {
    let [_, c, h, w] = batch.shape;
    let plane = c * h * w;
    HostBatch {
        pixels: positions
            .iter()
            .flat_map(|&i| batch.pixels[i * plane..(i + 1) * plane].iter().copied())
            .collect(),
        shape: [positions.len(), c, h, w],
        labels: positions.iter().map(|&i| batch.labels[i]).collect(),
        domains: batch
            .domains
            .as_ref()
            .map(|d| positions.iter().map(|&i| d[i]).collect()),
        indices: positions.iter().map(|&i| batch.indices[i]).collect(),
    }
}

/// Where Shuffle BN sends every example of one forward batch: the global positions each
/// worker holds before (owners' shards) and after the shuffle, from a permutation that every
/// worker draws from the same seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleAssignment {
    /// Global positions processed by each worker after the shuffle.
    pub processed: Vec<Vec<usize>>,
    /// Global batch size.
    pub n: usize,
}

impl ShuffleAssignment {
    /// A random assignment of `n` examples to `size` workers (as many each as its own shard).
    pub fn new(n: usize, size: usize, seed: u64) -> Self {
        let mut perm: Vec<usize> = (0..n).collect();
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        for i in (1..n).rev() {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            perm.swap(i, (z % (i as u64 + 1)) as usize);
        }
        let processed = (0..size)
            .map(|q| perm[shard(n, q, size)].to_vec())
            .collect();
        Self { processed, n }
    }
}

/// Rows of `values` (`row` values each, one row per local example) exchanged so that worker q
/// ends with the rows of the global positions `to[q]`, in that order; `from[r]` lists the
/// global positions worker r holds now, in its row order.
fn exchange_rows(
    c: &dyn Collective,
    values: &[f64],
    row: usize,
    from: &[Vec<usize>],
    to: &[Vec<usize>],
) -> Result<Vec<f64>, TrainError> {
    let all = all_gather_f64(c, values)?;
    let me = c.rank();
    let mut out = Vec::with_capacity(to[me].len() * row);
    for &g in &to[me] {
        let (r, j) = from
            .iter()
            .enumerate()
            .find_map(|(r, held)| held.iter().position(|&h| h == g).map(|j| (r, j)))
            .ok_or_else(|| TrainError::Distributed(format!("position {g} is held by no worker")))?;
        let theirs = all[r].get(j * row..(j + 1) * row).ok_or_else(|| {
            TrainError::Distributed(format!("worker {r} sent too few rows for position {g}"))
        })?;
        out.extend_from_slice(theirs);
    }
    Ok(out)
}

/// Every worker's own shard positions under `plan`.
fn owned(plan: &ShuffleAssignment) -> Vec<Vec<usize>> {
    let size = plan.processed.len();
    (0..size)
        .map(|r| shard(plan.n, r, size).collect())
        .collect()
}

/// Shuffle BN's forward exchange: this worker's own examples go where `plan` sends them, and
/// it receives the examples it processes (pixels, labels, domains and indices travel along).
pub fn shuffle(
    c: &dyn Collective,
    own: &HostBatch,
    plan: &ShuffleAssignment,
) -> Result<HostBatch, TrainError> {
    let [n, ch, h, w] = own.shape;
    let plane = ch * h * w;
    // one row per example: pixels, label, domain (or −1), dataset index
    let mut rows = Vec::with_capacity(n * (plane + 3));
    for i in 0..n {
        rows.extend(
            own.pixels[i * plane..(i + 1) * plane]
                .iter()
                .map(|&v| f64::from(v)),
        );
        rows.push(own.labels[i] as f64);
        rows.push(own.domains.as_ref().map_or(-1.0, |d| d[i] as f64));
        rows.push(own.indices[i] as f64);
    }
    let got = exchange_rows(c, &rows, plane + 3, &owned(plan), &plan.processed)?;
    let m = got.len() / (plane + 3);
    let mut batch = HostBatch {
        pixels: Vec::with_capacity(m * plane),
        shape: [m, ch, h, w],
        labels: Vec::with_capacity(m),
        domains: own.domains.as_ref().map(|_| Vec::with_capacity(m)),
        indices: Vec::with_capacity(m),
    };
    for r in got.chunks_exact(plane + 3) {
        batch.pixels.extend(r[..plane].iter().map(|&v| v as f32));
        batch.labels.push(r[plane] as usize);
        if let Some(d) = batch.domains.as_mut() {
            d.push(r[plane + 1] as usize);
        }
        batch.indices.push(r[plane + 2] as usize);
    }
    Ok(batch)
}

/// Collects every float parameter's gradient (or its absence) in module order: per parameter
/// a presence flag, then its values (zeros when absent).
struct Flatten<'a> {
    grads: &'a GradientsParams,
    params: Vec<(ParamId, Vec<usize>)>,
    values: Vec<f64>,
    device: Option<Device>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.shape().to_vec();
        let numel: usize = shape.iter().product();
        match self.grads.get::<D>(param.id) {
            Some(g) => {
                self.device.get_or_insert_with(|| g.device());
                self.values.push(1.0);
                self.values.extend(
                    g.into_data()
                        .convert::<f64>()
                        .try_into_vec::<f64>()
                        .unwrap_or_else(|_| vec![f64::NAN; numel]),
                );
            }
            None => {
                self.values.push(0.0);
                self.values.extend(std::iter::repeat_n(0.0, numel));
            }
        }
        self.params.push((param.id, shape));
    }
}

/// Writes summed gradients back, for the parameters some worker had a gradient for.
struct Unflatten<'a> {
    values: &'a [f64],
    at: usize,
    device: &'a Device,
    out: GradientsParams,
}

impl ModuleVisitor for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.shape();
        let numel = shape.num_elements();
        let present = self.values[self.at] != 0.0;
        let data: Vec<f32> = self.values[self.at + 1..self.at + 1 + numel]
            .iter()
            .map(|&v| v as f32)
            .collect();
        self.at += 1 + numel;
        if present {
            let t = Tensor::<D>::from_data(TensorData::new(data, shape.to_vec()), self.device);
            self.out.register::<D>(param.id, t);
        }
    }
}

/// Sums the gradients of `model`'s parameters over every worker (in rank order, so every
/// replica gets the same bits and takes the same optimizer step). Each worker's loss must
/// already be scaled so that the sum is the gradient of the whole batch's loss.
pub fn all_reduce_grads<M: Module>(
    c: &dyn Collective,
    model: &M,
    grads: GradientsParams,
) -> Result<GradientsParams, TrainError> {
    let mut flat = Flatten {
        grads: &grads,
        params: Vec::new(),
        values: Vec::new(),
        device: None,
    };
    model.visit(&mut flat);
    let (mut values, device) = (flat.values, flat.device.unwrap_or_else(Device::flex));
    all_reduce_everyone(c, &mut values)?;
    let mut back = Unflatten {
        values: &values,
        at: 0,
        device: &device,
        out: GradientsParams::new(),
    };
    model.visit(&mut back);
    Ok(back.out)
}

/// Sums `values` over every worker.
pub fn all_reduce_everyone(c: &dyn Collective, values: &mut [f64]) -> Result<(), TrainError> {
    let everyone: Vec<usize> = (0..c.size()).collect();
    all_reduce_sum(c, &everyone, values)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bnlab_collective::ThreadGroup;

    use super::*;

    /// Runs `f(rank handle)` on `k` threads; results in rank order.
    fn on_threads<T: Send>(k: usize, f: impl Fn(ThreadGroup) -> T + Sync) -> Vec<T> {
        let handles = ThreadGroup::new(k, Duration::from_secs(30));
        std::thread::scope(|s| {
            let joins: Vec<_> = handles.into_iter().map(|h| s.spawn(|| f(h))).collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        })
    }

    /// A global batch of `n` 1×1×2 images whose pixels, label and index name the example.
    fn global(n: usize) -> HostBatch {
        HostBatch {
            pixels: (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect(),
            shape: [n, 1, 1, 2],
            labels: (0..n).map(|i| i % 3).collect(),
            domains: Some((0..n).map(|i| i % 2).collect()),
            indices: (0..n).map(|i| 100 + i).collect(),
        }
    }

    #[test]
    fn shards_cover_the_batch_once() {
        for (n, k) in [(10, 3), (4, 4), (3, 4), (0, 2)] {
            let all: Vec<usize> = (0..k).flat_map(|r| shard(n, r, k)).collect();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn shuffle_delivers_the_plans_examples_to_each_worker() {
        let (n, k) = (10, 3);
        let plan = ShuffleAssignment::new(n, k, 42);
        let mut seen: Vec<usize> = plan.processed.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "a permutation");
        assert_ne!(
            plan.processed.concat(),
            (0..n).collect::<Vec<_>>(),
            "shuffled"
        );
        let batch = global(n);
        let out = on_threads(k, |h| {
            let mine: Vec<usize> = shard(n, h.rank(), k).collect();
            let own = select(&batch, &mine);
            shuffle(&h, &own, &plan).unwrap()
        });
        for (q, got) in out.into_iter().enumerate() {
            // the processed examples are exactly the plan's, with their labels, domains, indices
            assert_eq!(got, select(&batch, &plan.processed[q]));
            // the statistics of the shuffled group: the mean of its examples' first pixel
            let mean = got
                .pixels
                .iter()
                .step_by(2)
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / got.labels.len() as f64;
            let want = plan.processed[q].iter().map(|&g| g as f64).sum::<f64>()
                / plan.processed[q].len() as f64;
            assert!((mean - want).abs() < 1e-12);
        }
    }

    #[test]
    fn gradients_are_summed_over_workers() {
        use burn::nn::{Linear, LinearConfig};
        let device = Device::flex().autodiff();
        device.seed(3);
        let model: Linear = LinearConfig::new(3, 2).init(&device);
        let k = 3;
        let out = on_threads(k, |h| {
            let r = h.rank() as f32 + 1.0;
            let x = Tensor::<2>::from_data(TensorData::new(vec![r, 2.0 * r, -r], [1, 3]), &device);
            let grads = model.forward(x).sum().backward();
            let grads = GradientsParams::from_grads(grads, &model);
            let summed = all_reduce_grads(&h, &model, grads).unwrap();
            let w = summed.get::<2>(model.weight.id).unwrap();
            w.into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .unwrap()
        });
        // ∂Σy/∂W[i][j] = x_i for every output j; summed over workers: Σ_r x_i(r), r = 1..3
        let s = 6.0;
        let expect = vec![s, s, 2.0 * s, 2.0 * s, -s, -s];
        for w in out {
            assert_eq!(w, expect);
        }
    }
}
