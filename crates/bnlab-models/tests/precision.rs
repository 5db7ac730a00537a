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
        // 19 layers each round their activations once (≤ ε/2 relative): to first order the
        // logits move by at most 19·ε/2 ≈ 10ε of their scale
        let scale = full.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = half
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
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
