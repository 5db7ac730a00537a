//! Synchronized statistics across workers (threads of one process): K workers under SyncBN
//! against one worker with the concatenated batch, forward, backward and running statistics;
//! unequal and empty workers; equal-per-worker weighting against its closed form; sync
//! groups; distributed PreciseBN; and errors instead of hangs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bnlab_collective::ThreadGroup;
use bnlab_norm::{
    BatchPolicy, GhostSplit, NormConfig, NormError, NormMode, SyncGroups, SyncWeighting,
};
use common::sync_checks::*;
use common::*;

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
                let sync: Option<SyncWith> = Some((Arc::new(h), groups.clone(), weighting));
                scope.spawn(move || step(config, sync, x, w, [n, c, s], mode, 7))
            })
            .collect();
        joins
            .into_iter()
            .map(|j| j.join().expect("worker thread"))
            .collect()
    })
}

/// Runs `case` with one thread per worker and checks it against one worker.
fn check_on_threads(case: &Case) {
    let (parts, all, count) = (case.parts(), SyncGroups::All, SyncWeighting::Count);
    let out: Vec<Outcome> = run_workers(
        &case.worker,
        &parts,
        &case.sizes,
        SHAPE,
        &all,
        count,
        case.mode,
    )
    .into_iter()
    .map(|o| o.unwrap_or_else(|e| panic!("{}: {e}", case.what)))
    .collect();
    case.check(&out);
}

#[test]
fn k_workers_under_syncbn_equal_one_worker_for_bn_ghost_and_batch_group() {
    for k in [2, 4] {
        for case in layer_cases(k) {
            check_on_threads(&case);
        }
    }
}

#[test]
fn unequal_and_empty_workers_equal_the_concatenated_batch() {
    // pytorch#22192 (unequal sizes) and pytorch#36530 (a worker with no examples), in
    // training, mini-batch inference and PreciseBN collection
    for sizes in [vec![3, 0, 5], vec![1, 6, 0, 2], vec![0, 4], vec![3, 5]] {
        for case in unequal_cases(&sizes) {
            check_on_threads(&case);
        }
    }
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
    let run = |h: ThreadGroup, shape: [usize; 3]| {
        let sync: Option<SyncWith> = Some((Arc::new(h), SyncGroups::All, SyncWeighting::Count));
        step(
            &config,
            sync,
            &parts[0][0],
            &parts[0][1],
            shape,
            NormMode::Train,
            7,
        )
    };
    let (a, b) = std::thread::scope(|scope| {
        let good = scope.spawn(|| run(h0, [4, c, s]));
        // 5 channels for a 4-channel layer
        let bad = scope.spawn(|| run(h1, [4, 5, 4]));
        (good.join().unwrap(), bad.join().unwrap())
    });
    assert!(matches!(b, Err(NormError::ChannelMismatch { .. })), "{b:?}");
    assert!(
        matches!(&a, Err(NormError::Collective(e)) if e.to_string().contains("worker 1 left")),
        "{a:?}"
    );
    // a worker in another collective call (a one-value all-reduce, say) is named as out of
    // step, not read as a statistics message
    let mut handles = ThreadGroup::new(2, Duration::from_secs(60));
    let h1 = handles.pop().unwrap();
    let h0 = handles.pop().unwrap();
    let (a, _) = std::thread::scope(|scope| {
        let normalizing = scope.spawn(|| run(h0, [4, c, s]));
        let elsewhere = scope.spawn(move || bnlab_collective::all_gather_f64(&h1, &[1.0]));
        (normalizing.join().unwrap(), elsewhere.join().unwrap())
    });
    assert!(
        matches!(&a, Err(NormError::Reducer(m)) if m.contains("worker 1 sent 1 value(s)") && m.contains("out of step")),
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
        Some((Arc::new(handle), SyncGroups::All, SyncWeighting::Count)),
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
            Arc::new(handles.pop().unwrap()),
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
