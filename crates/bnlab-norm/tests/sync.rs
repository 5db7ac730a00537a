//! Synchronized statistics across workers (threads of one process): K workers under SyncBN
//! against one worker with the concatenated batch, forward, backward and running statistics;
//! unequal and empty workers; equal-per-worker weighting against its closed form; sync
//! groups; distributed PreciseBN; and errors instead of hangs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bnlab_norm::{
    BatchPolicy, GhostSplit, NormConfig, NormError, NormMode, PopulationEstimator, RunningStats,
    StatUnit, SyncGroups, SyncReducer, SyncWeighting, ThreadGroup, finalize_collected,
};
use burn::tensor::Device;
use common::*;

const TOL: f64 = 1e-5;

/// What one worker (or the single reference worker) produced.
#[derive(Debug, Clone)]
struct Outcome {
    y: Vec<f64>,
    dx: Vec<f64>,
    dparams: Vec<Vec<f64>>,
    running: Vec<f64>,
}

/// Forward and backward of Σ w·y on `x` ([n, c, s]) with a layer of `config` whose affine
/// parameters come from `seed`, synchronized through `sync` when given.
fn step(
    config: &NormConfig,
    sync: Option<(ThreadGroup, SyncGroups, SyncWeighting)>,
    x: &[f64],
    w: &[f64],
    [n, c, s]: [usize; 3],
    mode: NormMode,
    seed: u64,
) -> Result<Outcome, NormError> {
    let device = Device::flex().autodiff();
    let mut norm = config.init(&device)?;
    randomize_affine(&mut norm, &mut Rng(seed));
    if let Some((handle, groups, weighting)) = sync {
        norm.set_reducer(Arc::new(SyncReducer::new(
            Arc::new(handle),
            groups,
            weighting,
        )?));
    }
    let norm = norm.with_mode(mode);
    let xt = tensor(x, [n, c, s], &device).require_grad();
    let y = norm.forward(xt.clone())?;
    let y_values = values(y.clone());
    let grads = (y * tensor(w, [n, c, s], &device)).sum().backward();
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

/// Runs one worker per entry of `parts` ([x, w] each) on threads, each with its own handle.
fn run_workers(
    config: &NormConfig,
    parts: &[[Vec<f64>; 2]],
    sizes: &[usize],
    shape: [usize; 2],
    groups: &SyncGroups,
    weighting: SyncWeighting,
    mode: NormMode,
) -> Vec<Result<Outcome, NormError>> {
    let [c, s] = shape;
    let handles = ThreadGroup::new(parts.len(), Duration::from_secs(60));
    std::thread::scope(|scope| {
        let joins: Vec<_> = handles
            .into_iter()
            .zip(parts.iter().zip(sizes))
            .map(|(h, ([x, w], &n))| {
                let sync = Some((h, groups.clone(), weighting));
                scope.spawn(move || step(config, sync, x, w, [n, c, s], mode, 7))
            })
            .collect();
        joins
            .into_iter()
            .map(|j| j.join().expect("worker thread"))
            .collect()
    })
}

/// Random [x, w] per worker: `sizes[k]` examples of `plane` values each.
fn random_parts(rng: &mut Rng, sizes: &[usize], plane: usize) -> Vec<[Vec<f64>; 2]> {
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

/// K workers under `groups` against one worker per group with the group's examples in
/// reference order: outputs, input gradients, summed parameter gradients and running
/// statistics.
#[allow(clippy::too_many_arguments)]
fn check_against_one_worker(
    what: &str,
    worker_config: &NormConfig,
    single_config: &NormConfig,
    sizes: &[usize],
    blocks: usize,
    contiguous: bool,
    mode: NormMode,
    seed: u64,
) {
    let (c, s) = (4, 5);
    let plane = c * s;
    let mut rng = Rng(seed);
    let parts = random_parts(&mut rng, sizes, plane);
    let out = run_workers(
        worker_config,
        &parts,
        sizes,
        [c, s],
        &SyncGroups::All,
        SyncWeighting::Count,
        mode,
    );
    let out: Vec<Outcome> = out
        .into_iter()
        .map(|o| o.unwrap_or_else(|e| panic!("{what}: {e}")))
        .collect();
    let order = layout(sizes, blocks, contiguous);
    let gather = |f: &dyn Fn(usize) -> Vec<f64>| -> Vec<f64> {
        order
            .iter()
            .flat_map(|&(k, j)| f(k)[j * plane..(j + 1) * plane].to_vec())
            .collect()
    };
    let x = gather(&|k| parts[k][0].clone());
    let w = gather(&|k| parts[k][1].clone());
    let n: usize = sizes.iter().sum();
    let single = step(single_config, None, &x, &w, [n, c, s], mode, 7).expect("single worker");
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

fn train_config(c: usize) -> NormConfig {
    NormConfig::new(c).with_running(RunningStats::Ema { momentum: 0.3 })
}

#[test]
fn k_workers_under_syncbn_equal_one_worker_for_bn_ghost_and_batch_group() {
    for k in [2, 4] {
        let sizes = vec![16 / k; k];
        // plain BN
        let bn = train_config(4);
        check_against_one_worker(
            &format!("BN K={k}"),
            &bn,
            &bn,
            &sizes,
            1,
            false,
            NormMode::Train,
            1,
        );
        // Ghost BN: global ghost size 8 is 8/K per worker, both splits
        for split in [GhostSplit::Contiguous, GhostSplit::Strided] {
            let worker = train_config(4).with_batch(BatchPolicy::ghost(8 / k, split));
            let single = train_config(4).with_batch(BatchPolicy::ghost(8, split));
            let contiguous = split == GhostSplit::Contiguous;
            let what = format!("Ghost {split:?} K={k}");
            check_against_one_worker(
                &what,
                &worker,
                &single,
                &sizes,
                2,
                contiguous,
                NormMode::Train,
                2,
            );
        }
        // Batch-Group Norm: 2 channel groups × 2 example groups, both splits
        for split in [GhostSplit::Contiguous, GhostSplit::Strided] {
            let unit = StatUnit::BatchGroup {
                channel_groups: 2,
                example_groups: 2,
            };
            let policy = BatchPolicy {
                split,
                ..BatchPolicy::default()
            };
            let config = train_config(4).with_unit(unit).with_batch(policy);
            let contiguous = split == GhostSplit::Contiguous;
            let what = format!("BatchGroup {split:?} K={k}");
            check_against_one_worker(
                &what,
                &config,
                &config,
                &sizes,
                2,
                contiguous,
                NormMode::Train,
                3,
            );
        }
    }
}

#[test]
fn unequal_and_empty_workers_equal_the_concatenated_batch() {
    // pytorch#22192 (unequal sizes) and pytorch#36530 (a worker with no examples)
    let bn = train_config(4);
    for sizes in [vec![3, 0, 5], vec![1, 6, 0, 2], vec![0, 4]] {
        let what = format!("sizes {sizes:?}");
        check_against_one_worker(&what, &bn, &bn, &sizes, 1, false, NormMode::Train, 4);
    }
}

#[test]
fn mini_batch_inference_and_precise_bn_sync_the_same_way() {
    let bn = train_config(4);
    let minibatch = NormMode::Eval(bnlab_norm::StatsSource::MiniBatch);
    check_against_one_worker("mini-batch eval", &bn, &bn, &[3, 5], 1, false, minibatch, 5);
    check_against_one_worker("collect", &bn, &bn, &[3, 5], 1, false, NormMode::Collect, 6);
}

/// Closed form of equal-per-worker weighting in f64: per channel, mean = average of the
/// workers' means, E[x²] likewise (workers without examples left out); loss Σ w·y.
fn equal_weighted_loss(
    parts: &[Vec<f64>],
    ws: &[Vec<f64>],
    c: usize,
    s: usize,
    eps: f64,
) -> (Vec<Vec<f64>>, f64) {
    let mut ys: Vec<Vec<f64>> = parts.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut loss = 0.0;
    for ch in 0..c {
        let (mut mean, mut sq, mut workers) = (0.0, 0.0, 0.0);
        for p in parts.iter().filter(|p| !p.is_empty()) {
            let n = p.len() / (c * s);
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| (0..s).map(move |q| (i * c + ch) * s + q))
                .map(|idx| p[idx])
                .collect();
            let m = vals.len() as f64;
            mean += vals.iter().sum::<f64>() / m;
            sq += vals.iter().map(|v| v * v).sum::<f64>() / m;
            workers += 1.0;
        }
        let (mean, sq) = (mean / workers, sq / workers);
        let rstd = 1.0 / (sq - mean * mean + eps).sqrt();
        for (k, p) in parts.iter().enumerate() {
            let n = p.len() / (c * s);
            for i in 0..n {
                for q in 0..s {
                    let idx = (i * c + ch) * s + q;
                    ys[k][idx] = (p[idx] - mean) * rstd;
                    loss += ws[k][idx] * ys[k][idx];
                }
            }
        }
    }
    (ys, loss)
}

#[test]
fn equal_per_worker_weighting_equals_its_closed_form() {
    let (c, s) = (3, 4);
    let sizes = [2, 5, 0, 3];
    let mut rng = Rng(11);
    let xs: Vec<Vec<f64>> = sizes
        .iter()
        .map(|&n| rng.vec(n * c * s, -1.0, 2.0))
        .collect();
    let ws: Vec<Vec<f64>> = sizes
        .iter()
        .map(|&n| rng.vec(n * c * s, -1.0, 1.0))
        .collect();
    // γ = 1, β = 0: the closed form is x̂ itself
    let config = NormConfig::new(c).with_affine(bnlab_norm::Affine::Off);
    let parts: Vec<[Vec<f64>; 2]> = xs
        .iter()
        .zip(&ws)
        .map(|(x, w)| [x.clone(), w.clone()])
        .collect();
    let out = run_workers(
        &config,
        &parts,
        &sizes,
        [c, s],
        &SyncGroups::All,
        SyncWeighting::EqualPerWorker,
        NormMode::Train,
    );
    let eps = config.epsilon;
    let (ys, _) = equal_weighted_loss(&xs, &ws, c, s, eps);
    for (k, o) in out.into_iter().enumerate() {
        let o = o.expect("worker");
        assert!(max_abs_diff(&o.y, &ys[k]) < TOL, "worker {k} forward");
        // input gradient against central differences of the closed-form total loss
        for idx in 0..xs[k].len() {
            let h = 1e-5;
            let mut plus = xs.clone();
            plus[k][idx] += h;
            let mut minus = xs.clone();
            minus[k][idx] -= h;
            let fd = (equal_weighted_loss(&plus, &ws, c, s, eps).1
                - equal_weighted_loss(&minus, &ws, c, s, eps).1)
                / (2.0 * h);
            assert!(
                (o.dx[idx] - fd).abs() < 1e-4 * (1.0 + fd.abs()),
                "worker {k} ∂L/∂x[{idx}]: {} vs finite difference {fd}",
                o.dx[idx]
            );
        }
    }
}

#[test]
fn sync_groups_normalize_within_each_group_only() {
    let (c, s) = (4, 5);
    let sizes = [3, 2, 4, 1];
    let mut rng = Rng(12);
    let parts = random_parts(&mut rng, &sizes, c * s);
    let config = train_config(c);
    let out = run_workers(
        &config,
        &parts,
        &sizes,
        [c, s],
        &SyncGroups::consecutive(4, 2),
        SyncWeighting::Count,
        NormMode::Train,
    );
    for group in [[0usize, 1], [2, 3]] {
        let cat =
            |f: usize| -> Vec<f64> { group.iter().flat_map(|&k| parts[k][f].clone()).collect() };
        let n = sizes[group[0]] + sizes[group[1]];
        let single = step(
            &config,
            None,
            &cat(0),
            &cat(1),
            [n, c, s],
            NormMode::Train,
            7,
        )
        .unwrap();
        let y: Vec<f64> = group
            .iter()
            .flat_map(|&k| out[k].as_ref().unwrap().y.clone())
            .collect();
        let dx: Vec<f64> = group
            .iter()
            .flat_map(|&k| out[k].as_ref().unwrap().dx.clone())
            .collect();
        assert!(max_abs_diff(&y, &single.y) < TOL, "group {group:?} forward");
        assert!(
            max_abs_diff(&dx, &single.dx) < 1e-4,
            "group {group:?} backward"
        );
    }
    // per worker: each worker alone
    let out = run_workers(
        &config,
        &parts,
        &sizes,
        [c, s],
        &SyncGroups::PerWorker,
        SyncWeighting::Count,
        NormMode::Train,
    );
    for (k, o) in out.into_iter().enumerate() {
        let alone = step(
            &config,
            None,
            &parts[k][0],
            &parts[k][1],
            [sizes[k], c, s],
            NormMode::Train,
            7,
        );
        let (o, alone) = (o.unwrap(), alone.unwrap());
        assert_eq!(o.y, alone.y, "worker {k}");
        assert_eq!(o.dx, alone.dx, "worker {k}");
    }
}

#[test]
fn distributed_precise_bn_gives_every_rank_identical_statistics() {
    // per-worker batch statistics, but the PreciseBN accumulator spans every rank
    let (c, s, k) = (4, 5, 3);
    let sizes = [4, 2, 6];
    let mut rng = Rng(13);
    let parts: Vec<[Vec<f64>; 2]> = sizes
        .iter()
        .map(|&n| [rng.vec(n * c * s, -2.0, 3.0), vec![0.0; n * c * s]])
        .collect();
    let config = train_config(c);
    let out = run_workers(
        &config,
        &parts,
        &sizes,
        [c, s],
        &SyncGroups::PerWorker,
        SyncWeighting::Count,
        NormMode::Collect,
    );
    let out: Vec<Outcome> = out.into_iter().map(|o| o.expect("worker")).collect();
    for o in &out[1..] {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&o.running),
            bits(&out[0].running),
            "bit-identical across ranks"
        );
    }
    let all: Vec<f64> = parts.iter().flat_map(|p| p[0].clone()).collect();
    let n: usize = sizes.iter().sum();
    let single = step(
        &config,
        None,
        &all,
        &vec![0.0; all.len()],
        [n, c, s],
        NormMode::Collect,
        7,
    )
    .unwrap();
    assert!(max_abs_diff(&out[0].running, &single.running) < TOL);
    assert_eq!(k, out.len());
}

#[test]
fn mismatched_workers_and_lost_workers_fail_instead_of_hanging() {
    let (c, s) = (4, 5);
    let mut rng = Rng(14);
    // 2 ghost batches on one worker, 4 on the other
    let sizes = [4, 8];
    let parts = random_parts(&mut rng, &sizes, c * s);
    let ghost = train_config(c).with_batch(BatchPolicy::ghost(2, GhostSplit::Contiguous));
    for o in run_workers(
        &ghost,
        &parts,
        &sizes,
        [c, s],
        &SyncGroups::All,
        SyncWeighting::Count,
        NormMode::Train,
    ) {
        assert!(
            matches!(&o, Err(NormError::Reducer(m)) if m.contains("statistic unit")),
            "{o:?}"
        );
    }
    // a worker whose input is wrong fails locally; the others hear that it left
    let mut handles = ThreadGroup::new(2, Duration::from_secs(60));
    let h1 = handles.pop().unwrap();
    let h0 = handles.pop().unwrap();
    let config = train_config(c);
    let (a, b) = std::thread::scope(|scope| {
        let good = scope.spawn(|| {
            let sync = Some((h0, SyncGroups::All, SyncWeighting::Count));
            step(
                &config,
                sync,
                &parts[0][0],
                &parts[0][1],
                [4, c, s],
                NormMode::Train,
                7,
            )
        });
        let bad = scope.spawn(|| {
            let sync = Some((h1, SyncGroups::All, SyncWeighting::Count));
            // 5 channels for a 4-channel layer
            step(
                &config,
                sync,
                &parts[0][0],
                &parts[0][1],
                [4, 5, 4],
                NormMode::Train,
                7,
            )
        });
        (good.join().unwrap(), bad.join().unwrap())
    });
    assert!(matches!(b, Err(NormError::ChannelMismatch { .. })), "{b:?}");
    assert!(
        matches!(&a, Err(NormError::Reducer(m)) if m.contains("worker 1 left")),
        "{a:?}"
    );
}

#[test]
fn syncbn_training_on_the_composed_path_is_refused() {
    let handles = ThreadGroup::new(1, Duration::from_secs(1));
    let handle = handles.into_iter().next().unwrap();
    let config = train_config(4).with_kernel(bnlab_norm::Kernel::Composed);
    let x = vec![0.5; 2 * 4 * 3];
    // one worker "spans" nothing; two do
    let r = step(
        &config,
        Some((handle, SyncGroups::All, SyncWeighting::Count)),
        &x,
        &x,
        [2, 4, 3],
        NormMode::Train,
        7,
    );
    assert!(r.is_ok(), "a group of one syncs nothing: {r:?}");
    let mut handles = ThreadGroup::new(2, Duration::from_secs(5));
    // rank 1 stays in the group, silent: the refusal comes before any exchange
    let _rank1 = handles.pop();
    let e = step(
        &config,
        Some((
            handles.pop().unwrap(),
            SyncGroups::All,
            SyncWeighting::Count,
        )),
        &x,
        &x,
        [2, 4, 3],
        NormMode::Train,
        7,
    );
    assert!(
        matches!(&e, Err(NormError::Reducer(m)) if m.contains("fused path")),
        "{e:?}"
    );
}
