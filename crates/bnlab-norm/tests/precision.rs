//! Mixed precision: f16 and bf16 activations are normalized around f32 statistics and f32
//! parameters, against the plain f64 reference. The tolerances come from each format's
//! machine epsilon ε (f16: 2⁻¹⁰, bf16: 2⁻⁷): the output is the f32 result rounded once to
//! the format, so each value is within ε/2 of the reference (relative), plus f32 arithmetic;
//! the statistics never pass through the format, so they hold f32's tolerance.

mod common;

use bnlab_norm::{NormConfig, Precision, StatUnit};
use burn::tensor::{DType, Device, Tensor};
use common::*;

const EPS: f64 = 1e-5;

/// The formats with their machine epsilon.
const FORMATS: [(Precision, f64); 2] = [
    (Precision::F16, 1.0 / 1024.0),
    (Precision::BF16, 1.0 / 128.0),
];

/// The formats the test device has (Flex has both; lavapipe has no bf16), and at least one.
fn formats(device: &Device) -> Vec<(Precision, f64)> {
    let have: Vec<_> = FORMATS
        .into_iter()
        .filter(|(p, _)| device.supports_dtype(DType::from(p.dtype())))
        .collect();
    assert!(
        !have.is_empty(),
        "the test device has no half-precision format"
    );
    if have.len() < FORMATS.len() {
        eprintln!("the test device lacks some formats: testing {have:?} only");
    }
    have
}

#[test]
fn half_inputs_are_normalized_in_f32_and_rounded_once() {
    let sh = Shape { n: 8, c: 4, s: 5 };
    let device = device();
    let mut rng = Rng(0x4a1f);
    for (precision, eps) in formats(&device) {
        for unit in [StatUnit::Batch, StatUnit::Group { groups: 2 }] {
            let mut norm = NormConfig::new(sh.c).with_unit(unit).init(&device).unwrap();
            let p = randomize_affine(&mut norm, &mut rng);
            // the input as the format holds it: the reference sees the same rounded values
            let x = precision.apply(tensor(
                &rng.vec(sh.len(), -3.0, 5.0),
                [sh.n, sh.c, sh.s],
                &device,
            ));
            let rounded = values(x.clone());
            let y = norm.forward(x).unwrap();
            assert_eq!(
                y.dtype(),
                DType::from(precision.dtype()),
                "{precision:?} {unit:?}"
            );
            let blocks = ref_blocks(unit, None, sh.n, None);
            let xhat = ref_xhat_batch(&rounded, sh, unit, &blocks, EPS);
            let affine = norm.config.affine;
            let expected = ref_affine(&rounded, &xhat, sh, affine, &p, &vec![0; sh.n]);
            for (got, want) in values(y).iter().zip(&expected) {
                let tol = eps / 2.0 * want.abs() + 1e-5 * (1.0 + want.abs());
                assert!(
                    (got - want).abs() <= tol,
                    "{precision:?} {unit:?}: {got} vs {want}"
                );
            }
            if unit != StatUnit::Batch {
                continue; // GroupNorm keeps no running statistics
            }
            // running statistics: f32, from the f32 moments (a half-precision mean would be off
            // by ~ε·|mean|, far beyond this tolerance)
            let groups = ref_channel_groups(unit, sh.c);
            let mean = values(norm.state.running_mean());
            let var = values(norm.state.running_var());
            assert_eq!(norm.state.running_mean().dtype(), DType::F32);
            for (k, group) in groups.iter().enumerate() {
                let (m, v) = ref_moments(&rounded, sh, &blocks[0], group);
                let count = (sh.n * group.len() * sh.s) as f64;
                let want_var = 0.9 + 0.1 * v * count / (count - 1.0);
                assert!(
                    (mean[k] - 0.1 * m).abs() < 1e-6,
                    "{precision:?} {unit:?} mean"
                );
                assert!(
                    (var[k] - want_var).abs() < 1e-6,
                    "{precision:?} {unit:?} var"
                );
            }
        }
    }
}

#[test]
fn gradients_reach_the_f32_parameters_through_the_cast() {
    let sh = Shape { n: 6, c: 3, s: 4 };
    let device = device().autodiff();
    let mut rng = Rng(0x77);
    for (precision, eps) in formats(&device) {
        let mut norm = NormConfig::new(sh.c).init(&device).unwrap();
        randomize_affine(&mut norm, &mut rng);
        let x = precision.apply(tensor(
            &rng.vec(sh.len(), -2.0, 2.0),
            [sh.n, sh.c, sh.s],
            &device,
        ));
        let rounded = values(x.clone());
        let w = rng.vec(sh.len(), -1.0, 1.0);
        // loss = Σ y·w with w in x's dtype: ∂L/∂γ_c = Σ w·x̂ over channel c
        let grad = |x: Tensor<3>| {
            let precision = Precision::of(x.dtype());
            let x = x.require_grad();
            let w = precision.apply(tensor(&w, [sh.n, sh.c, sh.s], &device));
            let y = norm.forward(x.clone()).unwrap();
            let grads = total(y * w).backward();
            let dx = x.grad(&grads).expect("x has a gradient");
            assert_eq!(
                dx.dtype(),
                DType::from(precision.dtype()),
                "{precision:?}: ∂L/∂x"
            );
            let gamma = norm.affine.gamma.as_ref().unwrap();
            let g = gamma.val().grad(&grads).expect("γ has a gradient");
            assert_eq!(g.dtype(), DType::F32, "{precision:?}: γ's gradient");
            values(g)
        };
        let half = grad(x);
        // the reference: the f64 x̂ of the rounded input against w as the format rounds it;
        // w's rounding moves each term by at most ε/2 of itself
        let blocks = ref_blocks(StatUnit::Batch, None, sh.n, None);
        let xhat = ref_xhat_batch(&rounded, sh, StatUnit::Batch, &blocks, EPS);
        for (ch, got) in half.iter().enumerate() {
            let terms: Vec<f64> = (0..sh.n)
                .flat_map(|i| (0..sh.s).map(move |p| sh.at(i, ch, p)))
                .map(|at| w[at] * xhat[at])
                .collect();
            let want: f64 = terms.iter().sum();
            let size: f64 = terms.iter().map(|t| t.abs()).sum();
            let tol = eps / 2.0 * size + 1e-5 * (1.0 + size);
            assert!(
                (got - want).abs() <= tol,
                "{precision:?} channel {ch}: {got} vs {want} (tolerance {tol})"
            );
        }
    }
}

#[test]
fn a_format_the_device_lacks_is_an_error_that_names_it() {
    let device = device();
    for (precision, _) in FORMATS {
        let has = device.supports_dtype(DType::from(precision.dtype()));
        match precision.check(&device, "the test device") {
            Ok(()) => assert!(has, "{precision:?}"),
            Err(e) => {
                assert!(!has, "{precision:?}");
                assert!(e.to_string().starts_with("the test device has no"), "{e}");
            }
        }
    }
}

/// The fused tails take half-precision inputs and residuals too: relu(x̂·γ + β + r) from the
/// plain f64 reference, rounded once to the format.
#[test]
fn half_inputs_take_the_relu_and_residual_tails() {
    let sh = Shape { n: 8, c: 4, s: 5 };
    let device = device();
    let mut rng = Rng(0x7e11);
    for (precision, eps) in formats(&device) {
        for unit in [StatUnit::Batch, StatUnit::Group { groups: 2 }] {
            let mut norm = NormConfig::new(sh.c).with_unit(unit).init(&device).unwrap();
            let p = randomize_affine(&mut norm, &mut rng);
            let half = |v: Vec<f64>| precision.apply(tensor(&v, [sh.n, sh.c, sh.s], &device));
            let x = half(rng.vec(sh.len(), -3.0, 5.0));
            let r = half(rng.vec(sh.len(), -1.0, 1.0));
            let (xs, rs) = (values(x.clone()), values(r.clone()));
            let blocks = ref_blocks(unit, None, sh.n, None);
            let xhat = ref_xhat_batch(&xs, sh, unit, &blocks, EPS);
            let affine = norm.config.affine;
            let z = ref_affine(&xs, &xhat, sh, affine, &p, &vec![0; sh.n]);
            let relu_y = norm.forward_relu(x.clone()).unwrap();
            let add_y = norm.forward_add_relu_domains(x, r, None).unwrap();
            for (y, residual) in [(relu_y, None), (add_y, Some(&rs))] {
                let what = format!("{precision:?} {unit:?} residual {}", residual.is_some());
                assert_eq!(y.dtype(), DType::from(precision.dtype()), "{what}");
                let got = values(y);
                let mut cut = 0;
                for (i, (g, v)) in got.iter().zip(&z).enumerate() {
                    let want = (v + residual.map_or(0.0, |r| r[i])).max(0.0);
                    cut += usize::from(want == 0.0);
                    let tol = eps / 2.0 * want.abs() + 1e-5 * (1.0 + want.abs());
                    assert!((g - want).abs() <= tol, "{what}: {g} vs {want}");
                }
                assert!(cut > 0 && cut < got.len(), "{what}: {cut} cut");
            }
        }
    }
}
