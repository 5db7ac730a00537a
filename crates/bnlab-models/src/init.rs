//! Davis & Frank §4.1 initialization: Kaiming normal (fan-in, ReLU gain) for convolutions,
//! PyTorch's uniform fan-in for linear weights, zero biases.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

/// The ReLU gain √2 of Kaiming initialization.
pub const RELU_GAIN: f64 = std::f64::consts::SQRT_2;

/// Convolution kernels: N(0, σ²) with σ = √2 / √fan_in (Kaiming normal, fan-in, ReLU gain).
pub fn conv_initializer() -> Initializer {
    Initializer::KaimingNormal {
        gain: RELU_GAIN,
        fan_out_only: false,
    }
}

/// Linear weights: U(−1/√fan_in, 1/√fan_in), PyTorch's default `nn.Linear` weight init.
pub fn linear_initializer() -> Initializer {
    Initializer::KaimingUniform {
        gain: 1.0 / 3f64.sqrt(),
        fan_out_only: false,
    }
}

/// The shape of one convolution: channels, kernel, stride, padding and groups; no bias.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size (height, width).
    pub kernel: [usize; 2],
    /// Stride (both axes).
    pub stride: usize,
    /// Padding (height, width), on both sides.
    pub padding: [usize; 2],
    /// Channel groups (1 = dense; `cin` = depthwise).
    pub groups: usize,
}

impl ConvShape {
    /// A square k×k convolution with "same" padding k/2, stride 1 and one group.
    pub fn square(cin: usize, cout: usize, k: usize) -> Self {
        Self {
            cin,
            cout,
            kernel: [k, k],
            stride: 1,
            padding: [k / 2, k / 2],
            groups: 1,
        }
    }

    /// This shape with stride `stride`.
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    /// This shape with padding `padding` on both axes.
    pub fn pad(self, padding: usize) -> Self {
        Self {
            padding: [padding, padding],
            ..self
        }
    }

    /// This shape with `groups` channel groups.
    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// An h×w kernel with padding (h/2, w/2), as Inception's factorized 1×7 and 7×1.
    pub fn rect(cin: usize, cout: usize, h: usize, w: usize) -> Self {
        Self {
            kernel: [h, w],
            padding: [h / 2, w / 2],
            ..Self::square(cin, cout, 1)
        }
    }

    /// The Burn configuration of this shape, bias-free, Kaiming-normal initialized.
    pub fn config(&self) -> Conv2dConfig {
        let [ph, pw] = self.padding;
        Conv2dConfig::new([self.cin, self.cout], self.kernel)
            .with_stride([self.stride, self.stride])
            .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
            .with_groups(self.groups)
            .with_bias(false)
            .with_initializer(conv_initializer())
    }

    /// The convolution, on `device`.
    pub fn init(&self, device: &Device) -> Conv2d {
        self.config().init(device)
    }
}

/// A fully connected layer `d_in → d_out` with uniform fan-in weights and a zero bias.
pub fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_initializer(linear_initializer())
        .init(device);
    layer.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    layer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::device;

    fn moments(t: Tensor<4>) -> (f64, f64, usize) {
        let v: Vec<f32> = t.into_data().try_to_vec().unwrap();
        let n = v.len();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var.sqrt(), n)
    }

    #[test]
    fn conv_weights_are_kaiming_normal_fan_in() {
        device().seed(11);
        // fan_in = 64·9 = 576 differs from fan_out = 512·9, so either mistake shows
        let conv = ConvShape::square(64, 512, 3).init(&device());
        let (mean, std, n) = moments(conv.weight.val());
        let expected = (2.0f64 / 576.0).sqrt();
        // the sample std's relative standard error is 1/√(2n) ≈ 0.1 %; allow 1 %
        assert!(
            (std / expected - 1.0).abs() < 0.01,
            "std {std} vs {expected}"
        );
        assert!(
            mean.abs() < 5.0 * expected / (n as f64).sqrt(),
            "mean {mean}"
        );
        assert!(conv.bias.is_none());
    }

    #[test]
    fn linear_weights_are_uniform_fan_in_and_bias_zero() {
        device().seed(12);
        let layer = linear(512, 1000, &device());
        let w: Vec<f32> = layer.weight.val().into_data().try_to_vec().unwrap();
        let bound = 1.0 / 512f64.sqrt();
        assert!(w.iter().all(|&x| (x as f64).abs() <= bound + 1e-7));
        let var = w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / w.len() as f64;
        let expected = bound * bound / 3.0;
        assert!(
            (var / expected - 1.0).abs() < 0.01,
            "var {var} vs {expected}"
        );
        let b: Vec<f32> = layer.bias.unwrap().val().into_data().try_to_vec().unwrap();
        assert!(b.iter().all(|&x| x == 0.0));
    }
}
