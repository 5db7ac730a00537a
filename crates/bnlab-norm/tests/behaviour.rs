//! Errors, domains (Wu & Johnson Table 5), the stats reducer, tree helpers, roles and folding.

mod common;

use std::sync::Arc;

use bnlab_norm::{
    Affine, BatchPolicy, DomainChoice, DomainConfig, GhostSplit, Moments, NormConfig, NormError,
    NormMode, ParamRole, RunningStats, StatUnit, StatsReducer, VarianceStorage, norm_modes,
    param_roles, set_norm_mode, set_stats_reducer,
};
use burn::module::Module;
use burn::tensor::{DType, Tensor, TensorCreationOptions, TensorData};
use common::*;

#[test]
fn too_few_values_is_an_error_naming_shape_and_unit() {
    let device = device();
    let norm = NormConfig::new(3).init(&device).unwrap();
    for mode in [NormMode::Train, NormMode::Collect] {
        let err = norm
            .clone()
            .with_mode(mode)
            .forward(Tensor::<2>::ones([1, 3], &device))
            .unwrap_err();
        match err {
            NormError::TooFewValues {
                shape,
                unit,
                values,
            } => {
                assert_eq!(shape, vec![1, 3]);
                assert_eq!(values, 1);
                assert!(unit.contains("Batch"), "{unit}");
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    let ghost1 = NormConfig::new(3).with_batch(BatchPolicy::ghost(1, GhostSplit::Contiguous));
    let err = ghost1
        .init(&device)
        .unwrap()
        .forward(Tensor::<2>::ones([4, 3], &device));
    assert!(
        matches!(err, Err(NormError::TooFewValues { .. })),
        "{err:?}"
    );
    // inference with population statistics accepts a single example
    let eval = norm
        .with_mode(NormMode::EVAL)
        .forward(Tensor::<2>::ones([1, 3], &device));
    assert!(eval.is_ok());
}

#[test]
fn empty_batch_gives_empty_output_and_updates_nothing() {
    let device = device();
    let norm = NormConfig::new(3)
        .with_running(RunningStats::Ema { momentum: 1.0 })
        .init(&device)
        .unwrap();
    let y = norm
        .forward(Tensor::<4>::zeros([0, 3, 2, 2], &device))
        .unwrap();
    assert_eq!(y.dims(), [0, 3, 2, 2]);
    assert_eq!(values(norm.state.running_mean()), vec![0.0; 3]);
    assert_eq!(values(norm.state.running_var()), vec![1.0; 3]);
    assert_eq!(values(norm.state.updates()), vec![0.0]);
}

#[test]
fn bad_inputs_and_configs_are_typed_errors() {
    let device = device();
    let norm = NormConfig::new(3).init(&device).unwrap();
    assert!(matches!(
        norm.forward(Tensor::<4>::ones([2, 4, 2, 2], &device)),
        Err(NormError::ChannelMismatch {
            expected: 3,
            got: 4,
            ..
        })
    ));
    assert!(matches!(
        norm.forward(Tensor::<1>::ones([3], &device)),
        Err(NormError::Rank { .. })
    ));
    assert!(matches!(
        NormConfig::new(6)
            .with_unit(StatUnit::Group { groups: 4 })
            .init(&device),
        Err(NormError::InvalidConfig(_))
    ));
    assert!(matches!(
        NormConfig::new(6)
            .with_running(RunningStats::Ema { momentum: 1.5 })
            .init(&device),
        Err(NormError::InvalidConfig(_))
    ));
    let dc = DomainConfig {
        count: 2,
        train_stats: DomainChoice::PerDomain,
        population_stats: DomainChoice::Shared,
        affine: DomainChoice::Shared,
    };
    let norm = NormConfig::new(3)
        .with_domains(Some(dc))
        .init(&device)
        .unwrap();
    let x = Tensor::<2>::ones([4, 3], &device);
    assert!(matches!(
        norm.forward_domains(x.clone(), Some(&[0, 1, 2, 0])),
        Err(NormError::Domain(_))
    ));
    assert!(matches!(norm.forward(x), Err(NormError::Domain(_))));

    let finite = NormConfig::new(2)
        .with_check_finite(true)
        .init(&device)
        .unwrap();
    let x = tensor(&[1.0, f64::NAN, 2.0, 3.0], [2, 2], &device);
    assert!(matches!(
        finite.forward(x),
        Err(NormError::NonFinite { .. })
    ));
}

#[test]
fn all_eight_domain_combinations_follow_table_5() {
    use DomainChoice::{PerDomain, Shared};
    let device = device();
    let sh = Shape { n: 6, c: 2, s: 2 };
    let ids = [0usize, 1, 1, 0, 1, 0];
    let mut rng = Rng(42);
    let x = rng.vec(sh.len(), -1.0, 2.0);
    let dom = |d: usize| (0..sh.n).filter(|&i| ids[i] == d).collect::<Vec<_>>();
    let all: Vec<usize> = (0..sh.n).collect();
    for train in [Shared, PerDomain] {
        for pop in [Shared, PerDomain] {
            for aff in [Shared, PerDomain] {
                let dc = DomainConfig {
                    count: 2,
                    train_stats: train,
                    population_stats: pop,
                    affine: aff,
                };
                let mut norm = NormConfig::new(sh.c)
                    .with_domains(Some(dc))
                    .with_running(RunningStats::Ema { momentum: 1.0 })
                    .with_variance(VarianceStorage::Biased)
                    .init(&device)
                    .unwrap();
                let p = randomize_affine(&mut norm, &mut rng);
                let input = tensor(&x, [sh.n, sh.c, sh.s], &device);
                let y = values(norm.forward_domains(input.clone(), Some(&ids)).unwrap());
                // training output: statistics over the whole batch or per domain
                let blocks = ref_blocks(
                    StatUnit::Batch,
                    None,
                    sh.n,
                    (train == PerDomain).then_some(&ids[..]),
                );
                let xhat = ref_xhat_batch(&x, sh, StatUnit::Batch, &blocks, 1e-5);
                let aff_of: Vec<usize> = if aff == PerDomain {
                    ids.to_vec()
                } else {
                    vec![0; sh.n]
                };
                let expected = ref_affine(&x, &xhat, sh, Affine::default(), &p, &aff_of);
                let name = format!("{train:?}/{pop:?}/{aff:?}");
                assert!(max_abs_diff(&y, &expected) < 2e-5, "{name}: train output");
                // population statistics: one set over all examples, or one per domain
                let sets: Vec<Vec<usize>> = if pop == PerDomain {
                    vec![dom(0), dom(1)]
                } else {
                    vec![all.clone()]
                };
                let (mut em, mut ev) = (Vec::new(), Vec::new());
                for set in &sets {
                    for ch in 0..sh.c {
                        let (m, v) = ref_moments(&x, sh, set, &[ch]);
                        em.push(m);
                        ev.push(v);
                    }
                }
                assert!(
                    max_abs_diff(&values(norm.state.running_mean()), &em) < 1e-5,
                    "{name}: running mean"
                );
                assert!(
                    max_abs_diff(&values(norm.state.running_var()), &ev) < 1e-5,
                    "{name}: running var"
                );
                // inference picks the example's own set
                let eval = values(
                    norm.clone()
                        .with_mode(NormMode::EVAL)
                        .forward_domains(input, Some(&ids))
                        .unwrap(),
                );
                let pop_of: Vec<usize> = if pop == PerDomain {
                    ids.to_vec()
                } else {
                    vec![0; sh.n]
                };
                let rows = |v: &[f64]| v.chunks(sh.c).map(|r| r.to_vec()).collect::<Vec<_>>();
                let xhat = ref_xhat_population(
                    &x,
                    sh,
                    StatUnit::Batch,
                    &pop_of,
                    &rows(&em),
                    &rows(&ev),
                    1e-5,
                );
                let expected = ref_affine(&x, &xhat, sh, Affine::default(), &p, &aff_of);
                assert!(max_abs_diff(&eval, &expected) < 2e-5, "{name}: inference");
            }
        }
    }
}

/// One row of moments: (count, Σx per channel, Σx² per channel).
type Row = (f64, Vec<f64>, Vec<f64>);

/// Simulates other workers: adds their moments (computed here in f64) to the local ones.
struct SimulatedWorkers {
    /// Per row of the local moments.
    others: Vec<Row>,
}

impl SimulatedWorkers {
    fn new(data: &[Vec<f64>], sh: Shape) -> Self {
        let mut row = (0.0, vec![0.0; sh.c], vec![0.0; sh.c]);
        for x in data {
            let n = x.len() / (sh.c * sh.s);
            row.0 += (n * sh.s) as f64;
            for i in 0..n {
                for ch in 0..sh.c {
                    for p in 0..sh.s {
                        let v = x[(i * sh.c + ch) * sh.s + p];
                        row.1[ch] += v;
                        row.2[ch] += v * v;
                    }
                }
            }
        }
        // one unit row (whole batch) and one population row
        Self {
            others: vec![row.clone(), row],
        }
    }
}

impl StatsReducer for SimulatedWorkers {
    fn reduce(&self, local: Moments) -> Result<Moments, NormError> {
        let device = local.sum.device();
        let k = local.sum.dims()[1];
        let opts = TensorCreationOptions::new(device).with_dtype(local.sum.dtype());
        let flat = |f: fn(&Row) -> &Vec<f64>| {
            let v: Vec<f64> = self.others.iter().flat_map(|r| f(r).clone()).collect();
            Tensor::<2>::from_data(TensorData::new(v, [self.others.len(), k]), opts.clone())
        };
        Ok(Moments {
            count: local
                .count
                .iter()
                .zip(&self.others)
                .map(|(a, b)| a + b.0)
                .collect(),
            sum: local.sum + flat(|r| &r.1),
            sum_sq: local.sum_sq + flat(|r| &r.2),
            ..local
        })
    }
}

#[test]
fn reducer_combines_workers_count_weighted_including_empty_ones() {
    let device = device();
    let sh = Shape { n: 1, c: 3, s: 2 };
    let mut rng = Rng(5);
    let local = rng.vec(3 * sh.c * sh.s, -1.0, 1.0); // 3 local examples
    let other_a = rng.vec(5 * sh.c * sh.s, 0.0, 4.0); // 5 examples elsewhere
    let empty: Vec<f64> = Vec::new(); // a worker with no examples
    let config = NormConfig::new(sh.c)
        .with_running(RunningStats::Ema { momentum: 1.0 })
        .with_variance(VarianceStorage::Unbiased);

    let synced = set_stats_reducer(
        config.init(&device).unwrap(),
        Arc::new(SimulatedWorkers::new(&[other_a.clone(), empty], sh)),
    );
    let y = values(
        synced
            .forward(tensor(&local, [3, sh.c, sh.s], &device))
            .unwrap(),
    );
    let mut all = local.clone();
    all.extend(&other_a);
    let whole = config.init(&device).unwrap();
    let y_all = values(
        whole
            .forward(tensor(&all, [8, sh.c, sh.s], &device))
            .unwrap(),
    );
    assert!(
        max_abs_diff(&y, &y_all[..local.len()]) < 2e-5,
        "output equals the concatenated batch"
    );
    assert!(
        max_abs_diff(
            &values(synced.state.running_mean()),
            &values(whole.state.running_mean())
        ) < 1e-5
    );
    assert!(
        max_abs_diff(
            &values(synced.state.running_var()),
            &values(whole.state.running_var())
        ) < 1e-5
    );

    // only empty workers: the same as local statistics
    let alone = set_stats_reducer(
        config.init(&device).unwrap(),
        Arc::new(SimulatedWorkers::new(&[Vec::new()], sh)),
    );
    let y_alone = values(
        alone
            .forward(tensor(&local, [3, sh.c, sh.s], &device))
            .unwrap(),
    );
    let y_local = values(
        config
            .init(&device)
            .unwrap()
            .forward(tensor(&local, [3, sh.c, sh.s], &device))
            .unwrap(),
    );
    assert!(max_abs_diff(&y_alone, &y_local) < 1e-6);

    // with one local example on [N, C], the combined unit has enough values
    let one = set_stats_reducer(
        config.init(&device).unwrap(),
        Arc::new(SimulatedWorkers::new(&[other_a], sh)),
    );
    assert!(
        one.forward(tensor(&local[..sh.c * sh.s], [1, sh.c, sh.s], &device))
            .is_ok()
    );
}

#[derive(Module, Debug)]
struct Tiny {
    conv: burn::nn::conv::Conv2d,
    first: bnlab_norm::Norm,
    rest: Vec<bnlab_norm::Norm>,
}

fn tiny(config: &NormConfig) -> Tiny {
    let device = device();
    Tiny {
        conv: burn::nn::conv::Conv2dConfig::new([2, 3], [3, 3]).init(&device),
        first: config.init(&device).unwrap(),
        rest: vec![
            config
                .clone()
                .with_unit(StatUnit::Group { groups: 3 })
                .init(&device)
                .unwrap(),
            NormConfig::new(3)
                .with_affine(Affine::input_norm(1.0))
                .init(&device)
                .unwrap(),
        ],
    }
}

#[test]
fn tree_helpers_reach_every_norm_and_roles_come_from_the_tree() {
    let model = tiny(&NormConfig::new(3).with_affine(Affine::A2 { gamma_init: 0.1 }));
    let model = set_norm_mode(model, NormMode::Frozen);
    let (model, modes) = norm_modes(model);
    assert_eq!(modes, vec![NormMode::Frozen; 3]);
    let roles = param_roles(&model);
    let role = |p: &burn::module::Param<Tensor<2>>| roles.get(&p.id).copied();
    assert_eq!(
        role(model.first.affine.gamma.as_ref().unwrap()),
        Some(ParamRole::NormGamma)
    );
    assert_eq!(
        role(model.first.affine.beta.as_ref().unwrap()),
        Some(ParamRole::NormBeta)
    );
    assert_eq!(
        role(model.first.affine.gamma0.as_ref().unwrap()),
        Some(ParamRole::NormExtra)
    );
    assert_eq!(
        role(model.rest[1].affine.input_gamma.as_ref().unwrap()),
        Some(ParamRole::InputNormGamma)
    );
    assert_eq!(
        roles.get(&model.conv.weight.id),
        Some(&ParamRole::ConvWeight)
    );
    assert_eq!(
        roles.get(&model.conv.bias.as_ref().unwrap().id),
        Some(&ParamRole::Bias)
    );
    // γ, β, γ0 of two A2 layers, γ̂ of the input norm, conv weight and bias
    assert_eq!(roles.len(), 3 + 3 + 1 + 2);
    // ScaleOnly starts at 0.58·γ and has no β
    assert!(model.rest[1].affine.beta.is_none());
    assert!(
        (values(model.rest[1].affine.input_gamma.as_ref().unwrap().val())[0] - 0.58).abs() < 1e-6
    );
}

#[test]
fn running_statistics_survive_a_record_round_trip() {
    let device = device();
    let norm = NormConfig::new(2)
        .with_running(RunningStats::Ema { momentum: 1.0 })
        .init(&device)
        .unwrap();
    norm.forward(tensor(&[1.0, 5.0, 3.0, 9.0], [2, 2], &device))
        .unwrap();
    let record = norm.clone().into_record();
    let fresh = NormConfig::new(2)
        .init(&device)
        .unwrap()
        .load_record(record);
    assert_eq!(values(fresh.state.running_mean()), vec![2.0, 7.0]);
}

#[test]
fn a_module_map_keeps_updated_statistics_and_their_ids() {
    /// Maps nothing: what comes out must be what went in.
    struct Same;
    impl burn::module::ModuleMapper for Same {}
    /// The ids of every float tensor, in visit order.
    struct Ids(Vec<burn::module::ParamId>);
    impl burn::module::ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0.push(p.id);
        }
    }
    let ids = |n: &bnlab_norm::Norm| {
        let mut v = Ids(Vec::new());
        n.visit(&mut v);
        v.0
    };
    let device = device();
    let norm = NormConfig::new(2)
        .with_running(RunningStats::Ema { momentum: 1.0 })
        .init(&device)
        .unwrap();
    // the update is pending on this thread until a sync: a map must see it
    norm.forward(tensor(&[1.0, 5.0, 3.0, 9.0], [2, 2], &device))
        .unwrap();
    let before = ids(&norm);
    let mapped = norm.map(&mut Same);
    assert_eq!(values(mapped.state.running_mean()), vec![2.0, 7.0]);
    // unbiased (the default): (1−2)²+(3−2)² over 1, (5−7)²+(9−7)² over 1
    assert_eq!(values(mapped.state.running_var()), vec![2.0, 8.0]);
    assert_eq!(ids(&mapped), before);
}

#[test]
fn fold_into_conv_matches_conv_then_norm() {
    let device = device();
    let mut rng = Rng(11);
    for affine in [
        Affine::default(),
        Affine::Off,
        Affine::A1 { gamma_init: 0.3 },
        Affine::A2 { gamma_init: 0.3 },
        Affine::RbnMinus { gamma_init: 1.0 },
        Affine::ScaleOnly { gamma_init: 0.58 },
    ] {
        let conv = burn::nn::conv::Conv2dConfig::new([2, 3], [3, 3]).init(&device);
        let mut norm = NormConfig::new(3)
            .with_affine(affine)
            .init(&device)
            .unwrap();
        randomize_affine(&mut norm, &mut rng);
        norm.state.set_running(
            tensor(&rng.vec(3, -1.0, 1.0), [1, 3], &device),
            tensor(&rng.vec(3, 0.1, 2.0), [1, 3], &device),
        );
        let norm = norm.with_mode(NormMode::EVAL);
        let x = tensor(&rng.vec(2 * 2 * 5 * 5, -1.0, 1.0), [2, 2, 5, 5], &device);
        let reference = values(norm.forward(conv.forward(x.clone())).unwrap());
        let folded = norm.fold_into_conv(&conv).unwrap();
        let got = values(folded.forward(x));
        assert!(max_abs_diff(&got, &reference) < 1e-4, "{affine:?}");
    }
    // batch statistics cannot be folded
    let norm = NormConfig::new(3).init(&device).unwrap();
    let conv = burn::nn::conv::Conv2dConfig::new([2, 3], [3, 3]).init(&device);
    assert!(matches!(
        norm.fold_into_conv(&conv),
        Err(NormError::NotFoldable(_))
    ));
}

#[test]
fn accumulation_is_in_f64_on_flex() {
    // a large mean with a small spread: E[x²] − E[x]² in f32 would lose the variance
    let device = device();
    if !device.supports_dtype(DType::F64) {
        eprintln!("skipped: {device:?} has no f64, so reductions run in f32 there");
        return;
    }
    let norm = NormConfig::new(1)
        .with_affine(Affine::Off)
        .init(&device)
        .unwrap();
    let x: Vec<f64> = (0..64)
        .map(|i| 1000.0 + if i % 2 == 0 { 0.01 } else { -0.01 })
        .collect();
    let y = values(norm.forward(tensor(&x, [64, 1], &device)).unwrap());
    let (m, v) = ref_moments(
        &x.iter().map(|v| *v as f32 as f64).collect::<Vec<_>>(),
        Shape { n: 64, c: 1, s: 1 },
        &(0..64).collect::<Vec<_>>(),
        &[0],
    );
    let expected: Vec<f64> = x
        .iter()
        .map(|xv| ((*xv as f32 as f64) - m) / (v + 1e-5).sqrt())
        .collect();
    assert!(
        max_abs_diff(&y, &expected) < 1e-2,
        "max error {}",
        max_abs_diff(&y, &expected)
    );
}

#[test]
fn norm_sites_report_paths_and_settings_and_parameters_exclude_buffers() {
    let model = tiny(&NormConfig::new(3));
    let (model, sites) = bnlab_norm::norm_sites(model);
    let paths: Vec<&str> = sites.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["first", "rest.0", "rest.1"]);
    assert_eq!(sites[1].config.unit, StatUnit::Group { groups: 3 });
    assert_eq!(sites[1].config.num_features, 3);
    // conv 3·2·3·3 + 3 bias; γ, β of two layers; γ̂ of the input norm; running stats excluded
    let by_hand = 3 * 2 * 9 + 3 + 2 * (3 + 3) + 3;
    assert_eq!(bnlab_norm::count_parameters(&model), by_hand);
    assert!(
        model.num_params() > by_hand,
        "Burn's count includes the running statistics"
    );
}

#[test]
fn collect_policy_whole_batch_normalizes_a_ghost_layer_over_the_whole_batch() {
    let device = device();
    let sh = Shape { n: 8, c: 3, s: 5 };
    let mut rng = Rng(17);
    let x = rng.vec(sh.len(), -2.0, 3.0);
    let ghost = NormConfig::new(3)
        .with_batch(BatchPolicy::ghost(2, GhostSplit::Contiguous))
        .with_affine(Affine::Off);
    let eps = ghost.epsilon;
    let layer = ghost.init(&device).unwrap().with_mode(NormMode::Collect);
    let input = || tensor(&x, [sh.n, sh.c, sh.s], &device);
    let as_trained = values(layer.forward(input()).unwrap());
    let ghosts = ref_blocks(StatUnit::Batch, Some((2, GhostSplit::Contiguous)), 8, None);
    let want = ref_xhat_batch(&x, sh, StatUnit::Batch, &ghosts, eps);
    assert!(max_abs_diff(&as_trained, &want) < 1e-5);
    let whole = bnlab_norm::set_collect_policy(layer, Some(BatchPolicy::default()));
    let got = values(whole.forward(input()).unwrap());
    let want = ref_xhat_batch(&x, sh, StatUnit::Batch, &[(0..8).collect()], eps);
    assert!(max_abs_diff(&got, &want) < 1e-5, "{:?}", &got[..4]);
    // only Collect mode: mini-batch evaluation keeps the ghost batches
    let minibatch = whole.with_mode(NormMode::Eval(bnlab_norm::StatsSource::MiniBatch));
    let got = values(minibatch.forward(input()).unwrap());
    let want = ref_xhat_batch(&x, sh, StatUnit::Batch, &ghosts, eps);
    assert!(max_abs_diff(&got, &want) < 1e-5);
}

#[test]
fn ema_and_variance_conventions_convert_as_written() {
    // PyTorch's momentum m and Keras' decay d = 1 − m name the same EMA
    assert_eq!(
        RunningStats::pytorch(0.1),
        RunningStats::Ema { momentum: 0.1 }
    );
    assert!(
        matches!(RunningStats::keras(0.99), RunningStats::Ema { momentum } if (momentum - 0.01).abs() < 1e-15)
    );
    assert!((RunningStats::pytorch(0.1).keras_decay().unwrap() - 0.9).abs() < 1e-15);
    // unbiased = biased · n/(n − 1): for n = 4 values 1, 2, 3, 6 (mean 3, squares 14)
    let biased = 14.0 / 4.0;
    let unbiased = 14.0 / 3.0;
    let b = VarianceStorage::Biased;
    let u = VarianceStorage::Unbiased;
    assert!((b.convert(biased, u, 4.0) - unbiased).abs() < 1e-12);
    assert!((u.convert(unbiased, b, 4.0) - biased).abs() < 1e-12);
    assert_eq!(u.convert(unbiased, u, 4.0), unbiased);

    // one EMA step each way, against f64: running = (1 − m)·old + m·batch
    let device = device();
    let x = [1.0, 2.0, 3.0, 6.0, -1.0, 0.5, 2.5, 4.0];
    let (n, c) = (4, 2);
    for (running, m) in [
        (RunningStats::pytorch(0.1), 0.1),
        (RunningStats::keras(0.99), 0.01),
    ] {
        let norm = NormConfig::new(c)
            .with_running(running)
            .with_variance(VarianceStorage::Unbiased)
            .init(&device)
            .unwrap();
        norm.forward(tensor(&x, [n, c], &device)).unwrap();
        let mean = values(norm.state.running_mean());
        let var = values(norm.state.running_var());
        for ch in 0..c {
            let col: Vec<f64> = (0..n).map(|i| x[i * c + ch]).collect();
            let mu = col.iter().sum::<f64>() / n as f64;
            let v = col.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (n - 1) as f64;
            assert!((mean[ch] - m * mu).abs() < 1e-6, "{running:?} mean {ch}");
            assert!(
                (var[ch] - ((1.0 - m) + m * v)).abs() < 1e-5,
                "{running:?} var {ch}"
            );
        }
    }
}

#[test]
fn training_under_autodiff_updates_the_running_statistics_as_written_and_keeps_them_autodiff() {
    // the fused path computes the statistics without autodiff; the states it updates must
    // keep their autodiff association and follow the EMA of the f64 reference
    let device = device().autodiff();
    let sh = Shape { n: 6, c: 3, s: 5 };
    let norm = NormConfig::new(sh.c)
        .with_running(RunningStats::Ema { momentum: 0.25 })
        .with_variance(VarianceStorage::Biased)
        .init(&device)
        .unwrap();
    let mut rng = Rng(3);
    let mut expect = (vec![0.0; sh.c], vec![1.0; sh.c]);
    for _ in 0..3 {
        let x = rng.vec(sh.len(), -1.0, 2.0);
        let input = tensor(&x, [sh.n, sh.c, sh.s], &device).require_grad();
        let grads = total(norm.forward(input.clone()).unwrap().powi_scalar(2)).backward();
        assert!(input.grad(&grads).is_some(), "dx flows");
        for ch in 0..sh.c {
            let (m, v) = ref_moments(&x, sh, &(0..sh.n).collect::<Vec<_>>(), &[ch]);
            expect.0[ch] = 0.75 * expect.0[ch] + 0.25 * m;
            expect.1[ch] = 0.75 * expect.1[ch] + 0.25 * v;
        }
    }
    let (mean, var) = (norm.state.running_mean(), norm.state.running_var());
    assert!(mean.is_autodiff() && var.is_autodiff() && norm.state.updates().is_autodiff());
    assert!(max_abs_diff(&values(mean), &expect.0) < 1e-5);
    assert!(max_abs_diff(&values(var), &expect.1) < 1e-5);
    assert_eq!(values(norm.state.updates()), vec![3.0]);
}
