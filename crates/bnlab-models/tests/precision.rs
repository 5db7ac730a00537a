//! Mixed precision through a whole network: a ResNet-20 with f16 or bf16 activations keeps
//! f32 parameters, gradients and logits, and its logits follow the f32 network's (the same
//! weights) within a tolerance set by the format's machine epsilon ε (f16: 2⁻¹⁰, bf16: 2⁻⁷).

use bnlab_models::{ModelOptions, Network, build};
use bnlab_norm::Precision;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Gradients, Tensor, TensorData};

/// Every parameter's dtype, and its gradient's in `grads` (none for the running statistics).
struct Params<'a> {
    grads: &'a Gradients,
    seen: Vec<(DType, Option<DType>)>,
}

impl ModuleVisitor for Params<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let grad = param.val().grad(self.grads).map(|g| g.dtype());
        self.seen.push((param.val().dtype(), grad));
    }
}

fn values(t: Tensor<2>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap()
}

#[test]
fn a_half_precision_resnet_keeps_f32_parameters_and_follows_the_f32_one() {
    let device = Device::flex().autodiff();
    let build = |precision: Precision| -> Network {
        let options = ModelOptions {
            precision,
            ..ModelOptions::new(10, 3)
        };
        build("resnet20", &options, &device).unwrap()
    };
    let weights = build(Precision::F32).into_record();
    let pixels: Vec<f32> = (0..8 * 3 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [8, 3, 8, 8]), &device);
    let seen = |net: &Network, logits: Tensor<2>| {
        let grads = logits.powf_scalar(2.0).sum().backward();
        let mut params = Params {
            grads: &grads,
            seen: Vec::new(),
        };
        net.visit(&mut params);
        params.seen
    };
    let net = build(Precision::F32).load_record(weights.clone());
    let logits = net.forward(x.clone(), None).unwrap();
    let full = values(logits.clone());
    let full_params = seen(&net, logits);
    assert!(full_params.iter().any(|(_, g)| g.is_some()));
    for (precision, eps) in [
        (Precision::F16, 1.0 / 1024.0),
        (Precision::BF16, 1.0 / 128.0),
    ] {
        let net = build(precision).load_record(weights.clone());
        let logits = net.forward(x.clone(), None).unwrap();
        assert_eq!(logits.dtype(), DType::F32, "{precision:?}: logits");
        let half = values(logits.clone());
        // 19 layers each round their activations once (≤ ε/2 relative each); a first-order
        // estimate (not a bound: normalization and sums can amplify it) is 19·ε/2 ≈ 10ε of
        // the logits' scale. Measured: about 2.4ε for f16.
        let scale = full.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = half
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            // (`total_cmp` keeps a NaN error, failing every bound; `f64::max` drops it)
            .max_by(f64::total_cmp)
            .unwrap_or(0.0);
        assert!(
            err <= 10.0 * eps * scale,
            "{precision:?}: logits differ by {err} (scale {scale})"
        );
        assert!(
            err > 0.0,
            "{precision:?}: the activations were not rounded at all"
        );
        // every parameter stays f32, and those trained in f32 get an f32 gradient
        assert_eq!(seen(&net, logits), full_params, "{precision:?}");
    }
}

#[test]
fn every_architecture_trains_a_step_in_half_precision() {
    // one network of each family, small: its kernels in f16 and bf16 (grouped and depthwise
    // convolutions, relu6, average pooling, concatenation, RepVGG's deploy form)
    let device = Device::flex().autodiff();
    let cases: [(&str, f64, usize); 6] = [
        ("resnext50-32x4d-cifar", 0.25, 8),
        ("mobilenetv2-cifar", 0.25, 8),
        ("repvgg-a0-cifar", 1.0, 8),
        ("vgg11", 0.25, 32),
        ("plain-cnn", 1.0, 8),
        ("inception-v3", 1.0, 75),
    ];
    for (name, width, side) in cases {
        for precision in [Precision::F16, Precision::BF16] {
            let options = ModelOptions {
                precision,
                width,
                ..ModelOptions::new(10, 3)
            };
            let net = build(name, &options, &device).unwrap();
            let pixels: Vec<f32> = (0..2 * 3 * side * side)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let x = Tensor::<4>::from_data(TensorData::new(pixels, [2, 3, side, side]), &device);
            let logits = net.forward(x.clone(), None).unwrap();
            assert_eq!(logits.dtype(), DType::F32, "{name} {precision:?}");
            assert!(
                values(logits.clone()).iter().all(|v| v.is_finite()),
                "{name} {precision:?}: logits"
            );
            let grads = logits.powf_scalar(2.0).sum().backward();
            let mut params = Params {
                grads: &grads,
                seen: Vec::new(),
            };
            net.visit(&mut params);
            assert!(
                params.seen.iter().any(|(_, g)| *g == Some(DType::F32)),
                "{name} {precision:?}: no gradient"
            );
            assert!(
                params
                    .seen
                    .iter()
                    .all(|(v, g)| *v == DType::F32 && g.is_none_or(|g| g == DType::F32)),
                "{name} {precision:?}: a parameter or gradient left f32"
            );
            if name.starts_with("repvgg") {
                // straight from the training model: deploy leaves the autodiff graph itself
                let deployed = bnlab_norm::set_norm_mode(net, bnlab_norm::NormMode::EVAL)
                    .deploy()
                    .unwrap();
                let y = deployed.forward(x.inner(), None).unwrap();
                assert_eq!(y.dtype(), DType::F32, "{name} {precision:?}: deployed");
            }
        }
    }
}
