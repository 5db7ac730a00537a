//! A training step of a whole network on bnlab's convolution kernels agrees with Burn's
//! convolution.

use bnlab_models::ConvKernel;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

#[test]
fn a_resnet_step_agrees_with_burns_convolution() {
    // the same ResNet-20 (one set of weights, loaded into both) on either kernel: loss and
    // the stem's weight gradient agree within rounding
    let device = Device::flex().autodiff();
    let build = |kernel: ConvKernel| {
        let options = bnlab_models::ModelOptions {
            conv_kernel: kernel,
            ..bnlab_models::ModelOptions::new(10, 3)
        };
        bnlab_models::build("resnet20", &options, &device).unwrap()
    };
    let weights = build(ConvKernel::Auto).into_record();
    let run = |kernel: ConvKernel| {
        let net = build(kernel).load_record(weights.clone());
        // fixed inputs, independent of Burn's RNG
        let values: Vec<f32> = (0..4 * 3 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [4, 3, 8, 8]), &device);
        let loss = net.forward(x, None).unwrap().powf_scalar(2.0).sum();
        let grads = loss.backward();
        let bnlab_models::Network::ResNet(resnet) = &net else {
            panic!("resnet20 is a ResNet")
        };
        let stem = resnet.stem.conv.weight.val();
        let grad = stem.grad(&grads).unwrap().into_data();
        (grad.try_to_vec::<f32>().unwrap(), loss.into_scalar::<f32>())
    };
    let (fast, burn) = (run(ConvKernel::Auto), run(ConvKernel::Burn));
    assert!(
        (fast.1 - burn.1).abs() <= 1e-4 * burn.1.abs().max(1.0),
        "{} vs {}",
        fast.1,
        burn.1
    );
    // max |fast − burn| / max(1, max |burn|)
    let scale = burn.0.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = fast
        .0
        .iter()
        .zip(&burn.0)
        .map(|(a, b)| (a - b).abs())
        // (`total_cmp` keeps a NaN error, failing every bound; `f32::max` drops it)
        .max_by(f32::total_cmp)
        .unwrap_or(0.0)
        / scale;
    assert!(err <= 1e-3, "stem gradient differs by {err}");
}
