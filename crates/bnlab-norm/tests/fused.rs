//! The fused path against the composed path (the reference), forward and backward, for every
//! unit, ghost split, domain setting, affine tail and mode, on the reference suite's shape and
//! on odd ones; and the fused path's independence of the thread count.

mod common;

use bnlab_norm::{
    Affine, BatchPolicy, GhostSplit, Kernel, NormConfig, NormMode, PopulationEstimator, StatUnit,
    finalize_collected,
};
use common::*;

const FORWARD_TOL: f64 = 1e-5;
const BACKWARD_TOL: f64 = 1e-4;

/// Every unit but `None` (which the fused path does not handle).
fn units() -> Vec<StatUnit> {
    all_units()
        .into_iter()
        .filter(|u| *u != StatUnit::None)
        .collect()
}

const VARIANTS: [Variant; 4] = [
    Variant::Plain,
    Variant::Ghost(GhostSplit::Contiguous),
    Variant::Ghost(GhostSplit::Strided),
    Variant::Domains,
];

/// Everything one run produces: output, input and parameter gradients, running statistics.
struct Outcome {
    y: Vec<f64>,
    dx: Vec<f64>,
    dparams: Vec<Vec<f64>>,
    running: Vec<f64>,
    /// The residual's gradient ([`Tail::LayerAddRelu`], [`Tail::BurnAddRelu`]).
    dr: Vec<f64>,
}

/// What follows the layer in [`run_then`].
#[derive(Clone, Copy, PartialEq, Debug)]
enum Tail {
    /// Nothing.
    None,
    /// `Norm::forward_relu_domains`.
    LayerRelu,
    /// Burn's `relu` after `Norm::forward_domains`.
    BurnRelu,
    /// `Norm::forward_add_relu_domains` with a residual.
    LayerAddRelu,
    /// Burn's `relu(y + residual)` after `Norm::forward_domains`.
    BurnAddRelu,
}

/// Runs one forward and backward of Σ w·y with `kernel` and `tail` after the layer, from the
/// same random state.
fn run_then(
    config: &NormConfig,
    kernel: Kernel,
    mode: NormMode,
    sh: Shape,
    domains: Option<&[usize]>,
    seed: u64,
    tail: Tail,
) -> Outcome {
    let device = device().autodiff();
    let mut rng = Rng(seed);
    let config = config.clone().with_kernel(kernel);
    let mut norm = config.init(&device).expect("valid config");
    randomize_affine(&mut norm, &mut rng);
    let [p, k] = norm.state.running_mean().dims();
    norm.state.set_running(
        tensor(&rng.vec(p * k, -0.5, 0.5), [p, k], &device),
        tensor(&rng.vec(p * k, 0.5, 2.0), [p, k], &device),
    );
    let norm = norm.with_mode(mode);
    let x = tensor(&rng.vec(sh.len(), -2.0, 3.0), [sh.n, sh.c, sh.s], &device).require_grad();
    let w = tensor(&rng.vec(sh.len(), -1.0, 1.0), [sh.n, sh.c, sh.s], &device);
    let r = tensor(&rng.vec(sh.len(), -1.0, 1.0), [sh.n, sh.c, sh.s], &device).require_grad();
    let y = match tail {
        Tail::None => norm.forward_domains(x.clone(), domains),
        Tail::LayerRelu => norm.forward_relu_domains(x.clone(), domains),
        Tail::BurnRelu => norm
            .forward_domains(x.clone(), domains)
            .map(burn::tensor::activation::relu),
        Tail::LayerAddRelu => norm.forward_add_relu_domains(x.clone(), r.clone(), domains),
        Tail::BurnAddRelu => norm
            .forward_domains(x.clone(), domains)
            .map(|y| burn::tensor::activation::relu(y + r.clone())),
    }
    .expect("forward");
    let y_values = values(y.clone());
    let grads = total(y * w).backward();
    let dx = x.grad(&grads).map(values).unwrap_or_default();
    let dr = r.grad(&grads).map(values).unwrap_or_default();
    let dparams = param_tensors(&norm)
        .into_iter()
        .map(|p| p.grad(&grads).map(values).unwrap_or_default())
        .collect();
    let norm = if mode == NormMode::Collect {
        finalize_collected(norm, PopulationEstimator::Pooled).expect("finalize")
    } else {
        norm
    };
    let mut running = values(norm.state.running_mean());
    running.extend(values(norm.state.running_var()));
    Outcome {
        y: y_values,
        dx,
        dparams,
        running,
        dr,
    }
}

fn compare(config: &NormConfig, mode: NormMode, sh: Shape, domains: Option<&[usize]>, what: &str) {
    let go = |kernel| run_then(config, kernel, mode, sh, domains, 17, Tail::None);
    let (fused, composed) = (go(Kernel::Fused), go(Kernel::Composed));
    let fwd = max_abs_diff(&fused.y, &composed.y);
    assert!(fwd <= FORWARD_TOL, "{what}: forward differs by {fwd}");
    let bwd = rel_err(&fused.dx, &composed.dx);
    assert!(
        bwd <= BACKWARD_TOL,
        "{what}: input gradient differs by {bwd}"
    );
    assert_eq!(fused.dparams.len(), composed.dparams.len());
    for (i, (a, b)) in fused.dparams.iter().zip(&composed.dparams).enumerate() {
        assert!(!b.is_empty(), "{what}: parameter {i} has no gradient");
        let e = rel_err(a, b);
        assert!(
            e <= BACKWARD_TOL,
            "{what}: parameter {i} gradient differs by {e}"
        );
    }
    let run_err = max_abs_diff(&fused.running, &composed.running);
    assert!(
        run_err <= FORWARD_TOL,
        "{what}: running statistics differ by {run_err}"
    );
}

/// Calls `check(config, mode, domain ids, name)` for every unit, variant (ghost splits only on
/// batch units), affine tail and mode on `c` channels; returns how many.
fn for_every_config(
    c: usize,
    mut check: impl FnMut(&NormConfig, NormMode, Option<&[usize]>, &str),
) -> usize {
    let mut checked = 0;
    for unit in units() {
        for variant in VARIANTS {
            if matches!(variant, Variant::Ghost(_)) && unit != StatUnit::Batch {
                continue;
            }
            let ids = matches!(variant, Variant::Domains).then_some(&DOMAINS[..]);
            for affine in all_affines() {
                for mode in all_modes() {
                    let config = variant_config(c, unit, affine, variant);
                    let what = format!("{unit:?} {variant:?} {affine:?} {mode:?}");
                    check(&config, mode, ids, &what);
                    checked += 1;
                }
            }
        }
    }
    checked
}

#[test]
fn fused_matches_composed_for_every_unit_variant_affine_and_mode() {
    let sh = Shape { n: 4, c: 4, s: 3 };
    let checked = for_every_config(sh.c, |config, mode, ids, what| {
        compare(config, mode, sh, ids, what)
    });
    assert_eq!(checked, (4 + 4 * 2) * 9 * 6);
}

/// The ReLU, and the residual sum and ReLU, fused into the layer give Burn's operations after
/// the layer bit for bit (forward, gradients, running statistics), and the composed layer
/// within the tolerances, for every unit, variant, affine tail and mode.
#[test]
fn fused_tails_match_the_layer_then_burns_operations() {
    // 37 values a plane: one block of the vector kernels and a tail
    let sh = Shape { n: 4, c: 4, s: 37 };
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let (mut zeroed, mut total) = (0, 0);
    let checked = for_every_config(sh.c, |config, mode, ids, what| {
        let go = |kernel, tail| run_then(config, kernel, mode, sh, ids, 23, tail);
        for (ours, theirs) in [
            (Tail::LayerRelu, Tail::BurnRelu),
            (Tail::LayerAddRelu, Tail::BurnAddRelu),
        ] {
            let fused = go(Kernel::Fused, ours);
            let after = go(Kernel::Fused, theirs);
            let what = format!("{what} {ours:?}");
            assert_eq!(
                bits(&fused.dr),
                bits(&after.dr),
                "{what}: residual gradient"
            );
            assert_eq!(bits(&fused.y), bits(&after.y), "{what}: forward");
            assert_eq!(bits(&fused.dx), bits(&after.dx), "{what}: input gradient");
            assert_eq!(fused.dparams.len(), after.dparams.len());
            for (a, b) in fused.dparams.iter().zip(&after.dparams) {
                assert_eq!(bits(a), bits(b), "{what}: parameter gradient");
            }
            assert_eq!(bits(&fused.running), bits(&after.running), "{what}");
            let composed = go(Kernel::Composed, ours);
            let fwd = max_abs_diff(&fused.y, &composed.y);
            assert!(fwd <= FORWARD_TOL, "{what}: forward differs by {fwd}");
            let bwd = rel_err(&fused.dx, &composed.dx);
            assert!(bwd <= BACKWARD_TOL, "{what}: dx differs by {bwd}");
            if ours == Tail::LayerAddRelu {
                let bwd = rel_err(&fused.dr, &composed.dr);
                assert!(
                    bwd <= BACKWARD_TOL,
                    "{what}: residual gradient differs by {bwd}"
                );
            }
            assert_eq!(fused.dr.is_empty(), ours == Tail::LayerRelu, "{what}");
            zeroed += fused.y.iter().filter(|&&v| v == 0.0).count();
            total += fused.y.len();
        }
    });
    assert_eq!(checked, (4 + 4 * 2) * 9 * 6);
    // the ReLU cut a real share of the values (the masks were exercised)
    assert!(
        zeroed * 5 > total && zeroed * 5 < 4 * total,
        "{zeroed} of {total}"
    );
}

/// Values per statistic unit of `unit` on `sh` (ghost size `ghost` for Batch).
fn unit_values(unit: StatUnit, sh: Shape, ghost: Option<usize>) -> usize {
    match unit {
        StatUnit::Batch => ghost.unwrap_or(sh.n) * sh.s,
        StatUnit::Group { groups } => sh.c / groups * sh.s,
        StatUnit::Layer => sh.c * sh.s,
        StatUnit::Instance => sh.s,
        StatUnit::BatchGroup {
            channel_groups,
            example_groups,
        } => sh.n / example_groups * (sh.c / channel_groups) * sh.s,
        StatUnit::None => 0,
    }
}

#[test]
fn fused_matches_composed_on_odd_shapes() {
    // C odd, H·W = 1 and plane sizes that are not multiples of the 16 lanes, N = 2. Units
    // of fewer than 3 values are left out: with 2 values x̂ = ±1 and the exact input gradient
    // is O(ε), so both paths return f32 rounding noise there.
    let shapes = [
        Shape { n: 2, c: 6, s: 5 },
        Shape { n: 6, c: 10, s: 1 },
        Shape { n: 2, c: 2, s: 3 },
        Shape { n: 4, c: 2, s: 67 },
    ];
    let standard = Affine::Standard {
        gamma_init: 0.5,
        beta_init: 0.1,
    };
    let mut checked = 0;
    for sh in shapes {
        for unit in units() {
            if unit_values(unit, sh, None) < 3 {
                continue;
            }
            for mode in all_modes() {
                let config = variant_config(sh.c, unit, standard, Variant::Plain);
                compare(
                    &config,
                    mode,
                    sh,
                    None,
                    &format!("{sh:?} {unit:?} {mode:?}"),
                );
                checked += 1;
            }
        }
        let g = sh.n / 2;
        if g >= 2 && unit_values(StatUnit::Batch, sh, Some(g)) >= 3 {
            for split in [GhostSplit::Contiguous, GhostSplit::Strided] {
                let ghost = variant_config(sh.c, StatUnit::Batch, standard, Variant::Plain)
                    .with_batch(BatchPolicy::ghost(g, split));
                compare(
                    &ghost,
                    NormMode::Train,
                    sh,
                    None,
                    &format!("{sh:?} ghost {g}"),
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 80, "only {checked} cases ran");
}

#[test]
fn fused_results_do_not_depend_on_the_thread_count() {
    let sh = Shape { n: 8, c: 12, s: 50 };
    let standard = Affine::Standard {
        gamma_init: 0.5,
        beta_init: 0.1,
    };
    // two-pass kernels (ghost batches) and the unit-by-unit kernels (GroupNorm, LayerNorm)
    let configs = [
        variant_config(
            sh.c,
            StatUnit::Batch,
            standard,
            Variant::Ghost(GhostSplit::Strided),
        ),
        variant_config(
            sh.c,
            StatUnit::Group { groups: 3 },
            standard,
            Variant::Plain,
        ),
        variant_config(sh.c, StatUnit::Layer, standard, Variant::Plain),
    ];
    let bits = |o: &Outcome| -> Vec<u64> {
        o.y.iter()
            .chain(&o.dx)
            .chain(o.dparams.iter().flatten())
            .chain(&o.running)
            .map(|v| v.to_bits())
            .collect()
    };
    for config in configs {
        let run_with = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            pool.install(|| {
                run_then(
                    &config,
                    Kernel::Fused,
                    NormMode::Train,
                    sh,
                    None,
                    5,
                    Tail::None,
                )
            })
        };
        let (one, two) = (run_with(1), run_with(2));
        assert!(!one.dx.is_empty());
        assert_eq!(bits(&one), bits(&two), "{:?}", config.unit);
    }
}

/// x = 1000 + U(−1, 1) normalized in training, against an f64 reference computed from the same
/// f32 inputs: sums of raw x² in f32 would lose the variance (Σx² ≈ 10⁶ per value against a
/// variance of 1/3), so this checks that the fused reductions keep their precision.
#[test]
fn fused_statistics_keep_their_precision_under_a_large_mean() {
    let sh = Shape { n: 4, c: 3, s: 300 };
    let device = device();
    let mut rng = Rng(3);
    let x: Vec<f64> = rng
        .vec(sh.len(), -1.0, 1.0)
        .into_iter()
        .map(|v| f64::from((1000.0 + v) as f32))
        .collect();
    for (unit, per_example) in [
        (StatUnit::Batch, false),
        (StatUnit::Group { groups: 3 }, true),
    ] {
        let norm = NormConfig::new(sh.c)
            .with_unit(unit)
            .init(&device)
            .expect("valid config")
            .with_mode(NormMode::Train);
        let y = values(
            norm.forward(tensor(&x, [sh.n, sh.c, sh.s], &device))
                .expect("forward"),
        );
        let planes: Vec<Vec<usize>> = if per_example {
            (0..sh.n * sh.c).map(|p| vec![p]).collect()
        } else {
            (0..sh.c)
                .map(|ch| (0..sh.n).map(|i| i * sh.c + ch).collect())
                .collect()
        };
        let mut err = 0.0f64;
        for unit_planes in planes {
            let idx: Vec<usize> = unit_planes
                .iter()
                .flat_map(|p| p * sh.s..(p + 1) * sh.s)
                .collect();
            let m = idx.len() as f64;
            let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
            let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
            for &i in &idx {
                let want = (x[i] - mean) / (var + 1e-5).sqrt();
                // (`total_cmp` keeps a NaN error, which fails the bound; `f64::max` would
                // drop it)
                let e = (y[i] - want).abs();
                if e.total_cmp(&err).is_gt() {
                    err = e;
                }
            }
        }
        // the f32 mean alone moves y by ~1e-4 (an ulp of 1000 times rstd ≈ 1.7)
        assert!(
            err < 1e-3,
            "{unit:?}: y differs from the f64 reference by {err}"
        );
    }
}

/// A residual of another shape than the input is refused with an error, not a panic.
#[test]
fn a_residual_of_another_shape_is_an_error() {
    let device = device().autodiff();
    let norm = NormConfig::new(3).init(&device).expect("valid config");
    let x = tensor(&[0.5; 24], [2, 3, 4], &device);
    let r = tensor(&[0.5; 18], [2, 3, 3], &device);
    let err = norm.forward_add_relu_domains(x, r, None).unwrap_err();
    assert!(
        matches!(err, bnlab_norm::NormError::ResidualShape { .. }),
        "{err}"
    );
}
