//! The SyncBN checks shared by the thread transport (`tests/sync.rs`) and the MPI transport
//! (`tests/sync_mpi.rs`): K workers under SyncBN against one worker with the concatenated
//! batch, computed independently by the test.

use std::sync::Arc;

use bnlab_norm::{
    BatchPolicy, Collective, GhostSplit, Kernel, NormConfig, NormError, NormMode,
    PopulationEstimator, RunningStats, StatUnit, SyncGroups, SyncReducer, SyncWeighting,
    finalize_collected,
};

use super::*;

/// Tolerance of the SyncBN = one worker comparisons.
pub const TOL: f64 = 1e-5;

/// What one worker (or the single reference worker) produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub y: Vec<f64>,
    pub dx: Vec<f64>,
    pub dparams: Vec<Vec<f64>>,
    pub running: Vec<f64>,
}

impl Outcome {
    /// Flattened with lengths, to travel through a collective.
    pub fn encode(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut put = |v: &[f64]| {
            out.push(v.len() as f64);
            out.extend_from_slice(v);
        };
        put(&self.y);
        put(&self.dx);
        put(&self.running);
        for p in &self.dparams {
            put(p);
        }
        out
    }

    /// The inverse of [`Outcome::encode`].
    pub fn decode(v: &[f64]) -> Outcome {
        let mut at = 0;
        let mut parts = Vec::new();
        while at < v.len() {
            let n = v[at] as usize;
            parts.push(v[at + 1..at + 1 + n].to_vec());
            at += 1 + n;
        }
        let mut parts = parts.into_iter();
        let (y, dx, running) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        Outcome {
            y,
            dx,
            running,
            dparams: parts.collect(),
        }
    }
}

/// A worker's transport and how it syncs.
pub type SyncWith = (Arc<dyn Collective>, SyncGroups, SyncWeighting);

/// Forward and backward of Σ w·y on `x` ([n, c, s]) with a layer of `config` whose affine
/// parameters come from `seed`, synchronized through `sync` when given.
pub fn step(
    config: &NormConfig,
    sync: Option<SyncWith>,
    x: &[f64],
    w: &[f64],
    [n, c, s]: [usize; 3],
    mode: NormMode,
    seed: u64,
) -> Result<Outcome, NormError> {
    let device = super::device().autodiff();
    let mut norm = config.init(&device)?;
    randomize_affine(&mut norm, &mut Rng(seed));
    if let Some((collective, groups, weighting)) = sync {
        let reducer = Arc::new(SyncReducer::new(collective, groups, weighting)?);
        norm = bnlab_norm::set_stats_reducer(norm, reducer);
    }
    let norm = norm.with_mode(mode);
    let xt = tensor(x, [n, c, s], &device).require_grad();
    let y = norm.forward(xt.clone())?;
    let y_values = values(y.clone());
    let grads = total(y * tensor(w, [n, c, s], &device)).backward();
    let dx = xt.grad(&grads).map(values).unwrap_or_default();
    let dparams = param_tensors(&norm)
        .into_iter()
        .map(|p| p.grad(&grads).map(values).unwrap_or_default())
        .collect();
    let norm = if mode == NormMode::Collect {
        finalize_collected(norm, PopulationEstimator::Pooled)?
    } else {
        norm
    };
    let mut running = values(norm.state.running_mean());
    running.extend(values(norm.state.running_var()));
    Ok(Outcome {
        y: y_values,
        dx,
        dparams,
        running,
    })
}

/// Random [x, w] per worker: `sizes[k]` examples of `plane` values each.
pub fn random_parts(rng: &mut Rng, sizes: &[usize], plane: usize) -> Vec<[Vec<f64>; 2]> {
    sizes
        .iter()
        .map(|&n| [rng.vec(n * plane, -2.0, 3.0), rng.vec(n * plane, -1.0, 1.0)])
        .collect()
}

/// The examples (global positions) of each worker, and the reference batch order: worker
/// k's local block r lands in the reference's block r. With contiguous blocks the reference
/// takes block r of every worker in turn; with strided blocks (or one block) the natural
/// order already does.
fn layout(sizes: &[usize], blocks: usize, contiguous: bool) -> Vec<(usize, usize)> {
    let mut order = Vec::new();
    if contiguous {
        for r in 0..blocks {
            for (k, &n) in sizes.iter().enumerate() {
                let m = n / blocks;
                order.extend((r * m..(r + 1) * m).map(|j| (k, j)));
            }
        }
    } else {
        for (k, &n) in sizes.iter().enumerate() {
            order.extend((0..n).map(|j| (k, j)));
        }
    }
    order
}

/// The channels and spatial size of every case.
pub const SHAPE: [usize; 2] = [4, 5];

/// One SyncBN = one worker comparison.
#[derive(Debug, Clone)]
pub struct Case {
    pub what: String,
    /// Each worker's layer.
    pub worker: NormConfig,
    /// The single reference worker's layer.
    pub single: NormConfig,
    pub sizes: Vec<usize>,
    /// Statistic blocks per worker (ghost batches, example groups).
    pub blocks: usize,
    pub contiguous: bool,
    pub mode: NormMode,
    pub seed: u64,
}

impl Case {
    /// Every worker's [x, w].
    pub fn parts(&self) -> Vec<[Vec<f64>; 2]> {
        random_parts(&mut Rng(self.seed), &self.sizes, SHAPE[0] * SHAPE[1])
    }

    /// Worker `k`'s outcome under SyncBN (all workers, count-weighted) over `collective`.
    pub fn run_worker(
        &self,
        k: usize,
        collective: Arc<dyn Collective>,
    ) -> Result<Outcome, NormError> {
        let [c, s] = SHAPE;
        let [x, w] = &self.parts()[k];
        let sync = Some((collective, SyncGroups::All, SyncWeighting::Count));
        step(
            &self.worker,
            sync,
            x,
            w,
            [self.sizes[k], c, s],
            self.mode,
            7,
        )
    }

    /// Checks every worker's outcome against one worker with the concatenated batch in
    /// reference order: outputs, input gradients, summed parameter gradients and running
    /// statistics.
    pub fn check(&self, out: &[Outcome]) {
        let what = &self.what;
        let [c, s] = SHAPE;
        let plane = c * s;
        let parts = self.parts();
        let order = layout(&self.sizes, self.blocks, self.contiguous);
        let gather = |f: &dyn Fn(usize) -> Vec<f64>| -> Vec<f64> {
            order
                .iter()
                .flat_map(|&(k, j)| f(k)[j * plane..(j + 1) * plane].to_vec())
                .collect()
        };
        let x = gather(&|k| parts[k][0].clone());
        let w = gather(&|k| parts[k][1].clone());
        let n: usize = self.sizes.iter().sum();
        let single =
            step(&self.single, None, &x, &w, [n, c, s], self.mode, 7).expect("single worker");
        let y = gather(&|k| out[k].y.clone());
        let dx = gather(&|k| out[k].dx.clone());
        assert!(max_abs_diff(&y, &single.y) < TOL, "{what}: forward");
        let scale = single.dx.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert!(
            max_abs_diff(&dx, &single.dx) < TOL * scale,
            "{what}: input gradient off by {}",
            max_abs_diff(&dx, &single.dx)
        );
        for (p, reference) in single.dparams.iter().enumerate() {
            let summed: Vec<f64> = (0..reference.len())
                .map(|i| out.iter().map(|o| o.dparams[p][i]).sum())
                .collect();
            let scale = reference.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&summed, reference) < TOL * scale,
                "{what}: parameter {p} gradient"
            );
        }
        for (k, o) in out.iter().enumerate() {
            assert!(
                max_abs_diff(&o.running, &single.running) < TOL,
                "{what}: running statistics of worker {k}"
            );
        }
    }
}

/// The training layer of the checks.
pub fn train_config(c: usize) -> NormConfig {
    // the fused kernels on every device: synced workers take them (a reducer needs their host
    // plan), and so does the same layer without a reducer, so the two compare bit for bit
    NormConfig::new(c)
        .with_running(RunningStats::Ema { momentum: 0.3 })
        .with_kernel(Kernel::Fused)
}

/// BN, Ghost BN (global ghost size 8, both splits) and Batch-Group Norm (2 channel groups ×
/// 2 example groups, both splits) over `k` workers of 16/k examples each.
pub fn layer_cases(k: usize) -> Vec<Case> {
    let sizes = vec![16 / k; k];
    let bn = train_config(SHAPE[0]);
    let case =
        |what: String, worker: NormConfig, single: NormConfig, blocks, contiguous, seed| Case {
            what,
            worker,
            single,
            sizes: sizes.clone(),
            blocks,
            contiguous,
            mode: NormMode::Train,
            seed,
        };
    let mut cases = vec![case(format!("BN K={k}"), bn.clone(), bn, 1, false, 1)];
    for split in [GhostSplit::Contiguous, GhostSplit::Strided] {
        let contiguous = split == GhostSplit::Contiguous;
        let worker = train_config(SHAPE[0]).with_batch(BatchPolicy::ghost(8 / k, split));
        let single = train_config(SHAPE[0]).with_batch(BatchPolicy::ghost(8, split));
        let what = format!("Ghost {split:?} K={k}");
        cases.push(case(what, worker, single, 2, contiguous, 2));
        let unit = StatUnit::BatchGroup {
            channel_groups: 2,
            example_groups: 2,
        };
        let policy = BatchPolicy {
            split,
            ..BatchPolicy::default()
        };
        let config = train_config(SHAPE[0]).with_unit(unit).with_batch(policy);
        let what = format!("BatchGroup {split:?} K={k}");
        cases.push(case(what, config.clone(), config, 2, contiguous, 3));
    }
    cases
}

/// Plain BN over unequal workers, `sizes` each (pytorch#22192; a zero is pytorch#36530's
/// empty worker), in training, mini-batch inference and PreciseBN collection.
pub fn unequal_cases(sizes: &[usize]) -> Vec<Case> {
    let bn = train_config(SHAPE[0]);
    let minibatch = NormMode::Eval(bnlab_norm::StatsSource::MiniBatch);
    [
        (NormMode::Train, "train"),
        (minibatch, "mini-batch eval"),
        (NormMode::Collect, "collect"),
    ]
    .into_iter()
    .map(|(mode, name)| Case {
        what: format!("{name}, sizes {sizes:?}"),
        worker: bn.clone(),
        single: bn.clone(),
        sizes: sizes.to_vec(),
        blocks: 1,
        contiguous: false,
        mode,
        seed: 4,
    })
    .collect()
}
