//! Property tests of the layer's invariants.

mod common;

use bnlab_norm::{
    Affine, BatchPolicy, GhostSplit, NormConfig, NormMode, PopulationEstimator, RunningStats,
    StatUnit, StatsSource, VarianceStorage, finalize_collected, set_norm_mode,
};
use common::*;
use proptest::prelude::*;

const TINY_EPS: f64 = 1e-12;

fn run(config: &NormConfig, mode: NormMode, x: &[f64], sh: Shape) -> Vec<f64> {
    let device = device();
    let norm = config.init(&device).unwrap().with_mode(mode);
    values(
        norm.forward(tensor(x, [sh.n, sh.c, sh.s], &device))
            .unwrap(),
    )
}

fn data(
    n: std::ops::Range<usize>,
    c: usize,
    s: std::ops::Range<usize>,
) -> impl Strategy<Value = (Shape, Vec<f64>)> {
    (n, s).prop_flat_map(move |(n, s)| {
        let sh = Shape { n, c, s };
        (Just(sh), prop::collection::vec(-3.0f64..3.0, sh.len()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn train_xhat_has_zero_mean_unit_variance_and_bounded_range((sh, x) in data(2..9, 4, 1..5), ui in 0usize..5) {
        let unit = all_units()[ui];
        prop_assume!(!matches!(unit, StatUnit::BatchGroup { .. }) || sh.n % 2 == 0);
        let blocks = ref_blocks(unit, None, sh.n, None);
        let groups = ref_channel_groups(unit, sh.c);
        let m = blocks[0].len() * groups[0].len() * sh.s;
        prop_assume!(m >= 2);
        // skip degenerate units whose values are (nearly) all equal
        let mut min_var = f64::INFINITY;
        for b in &blocks { for g in &groups {
            let var = ref_moments(&x, sh, b, g).1;
            prop_assume!(var > 1e-6);
            min_var = min_var.min(var);
        } }
        let config = NormConfig::new(sh.c).with_unit(unit).with_affine(Affine::Off).with_epsilon(TINY_EPS);
        let y = run(&config, NormMode::Train, &x, sh);
        // f32 centring loses about ε·|x|/σ relatively: the tolerances follow the conditioning
        // of the worst unit (1.5e-5 seen at |x| = 2.3, σ = 0.008; a mean of 1.0e-4 at σ ≈ 0.01)
        let max_abs = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let conditioning = 4.0 * f32::EPSILON as f64 * max_abs / min_var.sqrt();
        let bound = ((m - 1) as f64).sqrt();
        for b in &blocks {
            for g in &groups {
                let (mean, var) = ref_moments(&y, sh, b, g);
                prop_assert!(mean.abs() < 1e-4 + 4.0 * conditioning, "mean {}", mean);
                prop_assert!((var - 1.0).abs() < 1e-3 + 8.0 * conditioning, "var {}", var);
            }
        }
        let tol = 1e-5 + conditioning;
        for v in &y { prop_assert!(v.abs() <= bound * (1.0 + tol) + 1e-6, "|x̂| = {} > √(m−1) = {} (tolerance {})", v, bound, tol); }
    }

    #[test]
    fn ghost_equals_batch_on_each_ghost_batch((sh, x) in data(1..4, 3, 1..4), strided in any::<bool>()) {
        // N = 2 ghost batches of size b = 2·n0
        let b = 2 * sh.n;
        let big = Shape { n: 2 * b, ..sh };
        let x: Vec<f64> = x.iter().cycle().enumerate().map(|(i, v)| v + (i as f64 * 0.37).sin()).take(big.len()).collect();
        let split = if strided { GhostSplit::Strided } else { GhostSplit::Contiguous };
        let ghost = NormConfig::new(sh.c).with_batch(BatchPolicy::ghost(b, split));
        let y = run(&ghost, NormMode::Train, &x, big);
        let plain = NormConfig::new(sh.c);
        let groups = if strided { big.n / b } else { 0 };
        for g in 0..2 {
            let members: Vec<usize> = if strided { (0..big.n).filter(|i| i % groups == g).collect() } else { (g * b..(g + 1) * b).collect() };
            let sub_sh = Shape { n: b, ..sh };
            let sub: Vec<f64> = members.iter().flat_map(|&i| x[i * sh.c * sh.s..(i + 1) * sh.c * sh.s].to_vec()).collect();
            let expected = run(&plain, NormMode::Train, &sub, sub_sh);
            let got: Vec<f64> = members.iter().flat_map(|&i| y[i * sh.c * sh.s..(i + 1) * sh.c * sh.s].to_vec()).collect();
            prop_assert!(max_abs_diff(&got, &expected) < 1e-5);
        }
    }

    #[test]
    fn batch_group_extremes_equal_batch_and_group((sh, x) in data(2..7, 4, 1..4)) {
        let bg = |cg, eg| NormConfig::new(sh.c).with_unit(StatUnit::BatchGroup { channel_groups: cg, example_groups: eg });
        let batch = run(&NormConfig::new(sh.c), NormMode::Train, &x, sh);
        prop_assert!(max_abs_diff(&run(&bg(sh.c, 1), NormMode::Train, &x, sh), &batch) < 1e-5);
        let group = run(&NormConfig::new(sh.c).with_unit(StatUnit::Group { groups: 2 }), NormMode::Train, &x, sh);
        prop_assert!(max_abs_diff(&run(&bg(2, sh.n), NormMode::Train, &x, sh), &group) < 1e-5);
    }

    #[test]
    fn example_weighing_at_alpha_zero_is_population((sh, x) in data(1..6, 4, 1..4), ui in 0usize..5) {
        let unit = all_units()[ui];
        let config = NormConfig::new(sh.c).with_unit(unit);
        let device = device();
        let norm = config.init(&device).unwrap();
        let k = ref_channel_groups(unit, sh.c).len();
        let mut rng = Rng(sh.len() as u64 + 1);
        norm.state.set_running(tensor(&rng.vec(k, -1.0, 1.0), [1, k], &device), tensor(&rng.vec(k, 0.2, 3.0), [1, k], &device));
        let input = tensor(&x, [sh.n, sh.c, sh.s], &device);
        let pop = values(norm.clone().with_mode(NormMode::EVAL).forward(input.clone()).unwrap());
        let w0 = values(norm.with_mode(NormMode::Eval(StatsSource::ExampleWeighed { alpha: 0.0 })).forward(input).unwrap());
        prop_assert!(max_abs_diff(&pop, &w0) < 1e-5);
    }

    #[test]
    fn collect_then_finalize_equals_one_pass((sh, x) in data(6..7, 3, 1..4), k in 1usize..5, unbiased in any::<bool>()) {
        // k batches of sizes 2, 3, … (uneven) concatenated from the generated data
        let storage = if unbiased { VarianceStorage::Unbiased } else { VarianceStorage::Biased };
        let config = NormConfig::new(sh.c).with_variance(storage);
        let device = device();
        let norm = set_norm_mode(config.init(&device).unwrap(), NormMode::Collect);
        let mut all = Vec::new();
        let per = sh.c * sh.s;
        for b in 0..k {
            let n = 2 + b;
            let batch: Vec<f64> = (0..n * per).map(|i| x[i % x.len()] * (1.0 + b as f64) + b as f64).collect();
            norm.forward(tensor(&batch, [n, sh.c, sh.s], &device)).unwrap();
            all.extend(batch);
        }
        let norm = finalize_collected(norm, PopulationEstimator::Pooled).unwrap();
        let total = all.len() / per;
        let whole = Shape { n: total, ..sh };
        let m = (total * sh.s) as f64;
        for ch in 0..sh.c {
            let (mean, var) = ref_moments(&all, whole, &(0..total).collect::<Vec<_>>(), &[ch]);
            let var = if unbiased { var * m / (m - 1.0) } else { var };
            let got_mean = values(norm.state.running_mean())[ch];
            let got_var = values(norm.state.running_var())[ch];
            prop_assert!((got_mean - mean).abs() <= 1e-5 * (1.0 + mean.abs()), "mean {} vs {}", got_mean, mean);
            prop_assert!((got_var - var).abs() <= 1e-5 * (1.0 + var.abs()), "var {} vs {}", got_var, var);
        }
    }

    #[test]
    fn mean_of_variances_averages_the_batch_variances((sh, x) in data(6..7, 3, 1..4), k in 1usize..5, unbiased in any::<bool>()) {
        // Wu & Johnson A.2 eq. 3: the count-weighted mean of the batches' means, and the
        // count-weighted mean of their variances (each unbiased within its batch when stored so)
        let storage = if unbiased { VarianceStorage::Unbiased } else { VarianceStorage::Biased };
        let config = NormConfig::new(sh.c).with_variance(storage);
        let device = device();
        let norm = set_norm_mode(config.init(&device).unwrap(), NormMode::Collect);
        let per = sh.c * sh.s;
        let (mut mean_sum, mut var_sum, mut count) = (vec![0.0; sh.c], vec![0.0; sh.c], 0.0);
        for b in 0..k {
            let n = 2 + b;
            let batch: Vec<f64> = (0..n * per).map(|i| x[i % x.len()] * (1.0 + b as f64) + b as f64).collect();
            norm.forward(tensor(&batch, [n, sh.c, sh.s], &device)).unwrap();
            let m = (n * sh.s) as f64;
            let shape = Shape { n, ..sh };
            for ch in 0..sh.c {
                let (bm, bv) = ref_moments(&batch, shape, &(0..n).collect::<Vec<_>>(), &[ch]);
                mean_sum[ch] += m * bm;
                var_sum[ch] += m * if unbiased { bv * m / (m - 1.0) } else { bv };
            }
            count += m;
        }
        let norm = finalize_collected(norm, PopulationEstimator::MeanOfVariances).unwrap();
        let (got_mean, got_var) = (values(norm.state.running_mean()), values(norm.state.running_var()));
        for ch in 0..sh.c {
            let (mean, var) = (mean_sum[ch] / count, var_sum[ch] / count);
            prop_assert!((got_mean[ch] - mean).abs() <= 1e-5 * (1.0 + mean.abs()), "mean {} vs {}", got_mean[ch], mean);
            prop_assert!((got_var[ch] - var).abs() <= 1e-5 * (1.0 + var.abs()), "var {} vs {}", got_var[ch], var);
        }
    }

    #[test]
    fn ema_and_cumulative_follow_their_formulas((sh, x) in data(2..5, 3, 1..3), momentum in 0.0f64..1.0, steps in 1usize..5) {
        let device = device();
        let ema = NormConfig::new(sh.c).with_running(RunningStats::Ema { momentum }).with_variance(VarianceStorage::Biased).init(&device).unwrap();
        let cumulative = NormConfig::new(sh.c).with_running(RunningStats::Cumulative).init(&device).unwrap();
        let mut expect_ema = (vec![0.0; sh.c], vec![1.0; sh.c]);
        let mut sums = (vec![0.0; sh.c], vec![0.0; sh.c]);
        let m = (sh.n * sh.s) as f64;
        for t in 0..steps {
            let batch: Vec<f64> = x.iter().map(|v| v * (t + 1) as f64 - t as f64).collect();
            let input = tensor(&batch, [sh.n, sh.c, sh.s], &device);
            ema.forward(input.clone()).unwrap();
            cumulative.forward(input).unwrap();
            for ch in 0..sh.c {
                let (bm, bv) = ref_moments(&batch, sh, &(0..sh.n).collect::<Vec<_>>(), &[ch]);
                expect_ema.0[ch] = (1.0 - momentum) * expect_ema.0[ch] + momentum * bm;
                expect_ema.1[ch] = (1.0 - momentum) * expect_ema.1[ch] + momentum * bv;
                sums.0[ch] += bm;
                sums.1[ch] += bv * m / (m - 1.0);
            }
        }
        prop_assert!(max_abs_diff(&values(ema.state.running_mean()), &expect_ema.0) < 1e-4);
        prop_assert!(max_abs_diff(&values(ema.state.running_var()), &expect_ema.1) < 1e-4);
        let mean: Vec<f64> = sums.0.iter().map(|s| s / steps as f64).collect();
        let var: Vec<f64> = sums.1.iter().map(|s| s / steps as f64).collect();
        prop_assert!(max_abs_diff(&values(cumulative.state.running_mean()), &mean) < 1e-4);
        prop_assert!(max_abs_diff(&values(cumulative.state.running_var()), &var) < 1e-4);
    }
}
