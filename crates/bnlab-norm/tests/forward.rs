//! Forward pass against the plain f64 reference, for every unit × affine × mode.

mod common;

use bnlab_norm::{NormConfig, NormMode, StatUnit, StatsSource};
use common::*;

const EPS: f64 = 1e-5;

#[test]
fn every_unit_affine_and_mode_matches_the_f64_reference() {
    let sh = Shape { n: 4, c: 4, s: 3 };
    let device = device();
    let mut rng = Rng(0x5eed);
    let mut checked = 0;
    for unit in all_units() {
        for affine in all_affines() {
            for mode in all_modes() {
                let config = NormConfig::new(sh.c).with_unit(unit).with_affine(affine);
                let mut norm = config.init(&device).expect("valid config");
                let p = randomize_affine(&mut norm, &mut rng);
                let k = ref_channel_groups(unit, sh.c).len();
                let run_mean = rng.vec(k, -0.5, 0.5);
                let run_var = rng.vec(k, 0.5, 2.0);
                norm.state.set_running(
                    tensor(&run_mean, [1, k], &device),
                    tensor(&run_var, [1, k], &device),
                );
                let norm = norm.with_mode(mode);
                let x = rng.vec(sh.len(), -2.0, 3.0);
                let y = norm
                    .forward(tensor(&x, [sh.n, sh.c, sh.s], &device))
                    .expect("forward");
                let sets = vec![0; sh.n];
                let xhat = if unit == StatUnit::None {
                    x.clone()
                } else {
                    match mode {
                        NormMode::Train
                        | NormMode::Collect
                        | NormMode::Eval(StatsSource::MiniBatch) => {
                            ref_xhat_batch(&x, sh, unit, &ref_blocks(unit, None, sh.n, None), EPS)
                        }
                        NormMode::Eval(StatsSource::Population) | NormMode::Frozen => {
                            ref_xhat_population(
                                &x,
                                sh,
                                unit,
                                &sets,
                                std::slice::from_ref(&run_mean),
                                std::slice::from_ref(&run_var),
                                EPS,
                            )
                        }
                        NormMode::Eval(StatsSource::ExampleWeighed { alpha }) => ref_xhat_weighed(
                            &x,
                            sh,
                            unit,
                            &sets,
                            std::slice::from_ref(&run_mean),
                            std::slice::from_ref(&run_var),
                            alpha,
                            EPS,
                        ),
                    }
                };
                let expected = ref_affine(&x, &xhat, sh, affine, &p, &sets);
                let got = values(y);
                let err = max_abs_diff(&got, &expected);
                assert!(err < 2e-5, "{unit:?} {affine:?} {mode:?}: max error {err}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * 9 * 6);
}

#[test]
fn two_dimensional_inputs_and_ghost_batches_match_the_reference() {
    use bnlab_norm::{BatchPolicy, GhostSplit};
    let device = device();
    let mut rng = Rng(7);
    for split in [GhostSplit::Contiguous, GhostSplit::Strided] {
        // [N, C] input: S = 1
        let sh = Shape { n: 8, c: 3, s: 1 };
        let config = NormConfig::new(sh.c).with_batch(BatchPolicy::ghost(4, split));
        let norm = config.init(&device).unwrap();
        let x = rng.vec(sh.len(), -1.0, 1.0);
        let y = norm.forward(tensor(&x, [sh.n, sh.c], &device)).unwrap();
        let blocks = ref_blocks(StatUnit::Batch, Some((4, split)), sh.n, None);
        let expected = ref_xhat_batch(&x, sh, StatUnit::Batch, &blocks, EPS);
        assert!(max_abs_diff(&values(y), &expected) < 2e-5, "{split:?}");
    }
}
