//! MobileNetV2 (Sandler et al., torchvision layout: width multiplier, channels rounded to
//! multiples of 8, last conv 1280, dropout 0.2 before the classifier).
//!
//! CIFAR modification (Davis & Frank §4.4): the first convolution and the 2nd and 3rd
//! bottleneck rows of Sandler et al.'s Table 2 (24 and 32 channels) have stride 1, so a
//! 32×32 input leaves the last stage at 4×4 instead of 1×1.

use bnlab_norm::Precision;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::relu6;
use burn::tensor::{Device, Tensor};

use crate::fold::fold_fields;
use crate::frame::{Classifier, Takes, enter};
use crate::init::ConvShape;
use crate::norms::Builder;
use crate::{ConvNorm, InputNorm, ModelError, ModelOptions};

/// (expansion t, channels c, repeats n, stride s) of Sandler et al.'s Table 2.
const ROWS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Configuration of a [`MobileNetV2`].
#[derive(Config, Debug)]
pub struct MobileNetV2Config {
    /// Width multiplier. Default: 1.0.
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// The CIFAR strides (Davis & Frank §4.4). Default: false.
    #[config(default = false)]
    pub cifar: bool,
    /// Dropout before the classifier. Default: 0.2 (torchvision).
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Classes, input channels, normalization, input normalization, convolution kernels.
    /// Default: 1000 classes, 3 channels, BatchNorm.
    #[config(default = "ModelOptions::new(1000, 3)")]
    pub options: ModelOptions,
}

/// torchvision's `_make_divisible(v, 8)`: the nearest multiple of 8, never 10 % below `v`.
fn make_divisible(v: f64) -> usize {
    let rounded = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * v {
        rounded + 8
    } else {
        rounded
    }
}

impl MobileNetV2Config {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Result<MobileNetV2, ModelError> {
        let width_mult = self.width_mult * self.options.width;
        if !(width_mult.is_finite() && width_mult > 0.0) {
            return Err(ModelError::InvalidConfig(format!(
                "width_mult × options.width must be > 0, got {width_mult}"
            )));
        }
        let (b, input_norm) = self.options.begin(Takes::WIDTH, device)?;
        let first = make_divisible(32.0 * width_mult);
        let last = make_divisible(1280.0 * width_mult.max(1.0));
        let stem_stride = if self.cifar { 1 } else { 2 };
        let stem = ConvNorm::new(
            &b,
            "stem",
            ConvShape::square(self.options.in_channels, first, 3).stride(stem_stride),
        )?;
        let mut blocks = Vec::new();
        let mut cin = first;
        for (row, &(t, c, n, s)) in ROWS.iter().enumerate() {
            let cout = make_divisible(c as f64 * width_mult);
            let s = if self.cifar && (row == 1 || row == 2) {
                1
            } else {
                s
            };
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let path = format!("blocks.{}", blocks.len());
                blocks.push(InvertedResidual::new(&b, &path, cin, cout, stride, t)?);
                cin = cout;
            }
        }
        let last_conv = ConvNorm::new(&b, "last", ConvShape::square(cin, last, 1))?;
        b.finish()?;
        Ok(MobileNetV2 {
            input_norm,
            stem,
            blocks,
            last: last_conv,
            head: self.options.head(last, self.dropout, device),
            in_channels: self.options.in_channels,
            precision: self.options.precision,
        })
    }
}

/// Inverted residual: 1×1 expansion (ReLU6), 3×3 depthwise (ReLU6), linear 1×1 projection,
/// and an identity shortcut where shapes allow.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// The 1×1 expansion (absent when t = 1).
    pub expand: Option<ConvNorm>,
    /// The 3×3 depthwise convolution.
    pub depthwise: ConvNorm,
    /// The linear 1×1 projection.
    pub project: ConvNorm,
    /// Whether the input is added to the output.
    pub residual: bool,
}

impl InvertedResidual {
    fn new(
        b: &Builder,
        path: &str,
        cin: usize,
        cout: usize,
        stride: usize,
        t: usize,
    ) -> Result<Self, ModelError> {
        let hidden = cin * t;
        let expand = (t != 1)
            .then(|| {
                ConvNorm::new(
                    b,
                    &format!("{path}.expand"),
                    ConvShape::square(cin, hidden, 1),
                )
            })
            .transpose()?;
        Ok(Self {
            expand,
            depthwise: ConvNorm::new(
                b,
                &format!("{path}.depthwise"),
                ConvShape::square(hidden, hidden, 3)
                    .stride(stride)
                    .groups(hidden),
            )?,
            project: ConvNorm::new(
                b,
                &format!("{path}.project"),
                ConvShape::square(hidden, cout, 1),
            )?,
            residual: stride == 1 && cin == cout,
        })
    }

    /// The block's output.
    ///
    /// # Shapes
    /// - input `[N, C_in, H, W]`, output `[N, C_out, H/s, W/s]`.
    pub fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<4>, ModelError> {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = relu6(expand.forward(y, d)?);
        }
        y = relu6(self.depthwise.forward(y, d)?);
        y = self.project.forward(y, d)?;
        Ok(if self.residual { x + y } else { y })
    }
}

/// MobileNetV2 with a [`bnlab_norm::Norm`] at every normalization site.
#[derive(Module, Debug)]
pub struct MobileNetV2 {
    /// Optional input normalization.
    pub input_norm: Option<InputNorm>,
    /// The first 3×3 convolution.
    pub stem: ConvNorm,
    /// The inverted residual blocks.
    pub blocks: Vec<InvertedResidual>,
    /// The last 1×1 convolution (1280 channels at width 1).
    pub last: ConvNorm,
    /// Pooling, dropout and the classifier.
    pub head: Classifier,
    /// Expected input channels.
    pub in_channels: usize,
    /// The activations' dtype (mixed precision).
    #[module(skip)]
    pub precision: Precision,
}

impl MobileNetV2 {
    /// Logits; `domains` are the examples' domain ids for domain-aware normalization.
    ///
    /// # Shapes
    /// - input `[N, in_channels, H, W]`, output `[N, num_classes]`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<2>, ModelError> {
        let x = enter(
            &self.input_norm,
            self.in_channels,
            1,
            self.precision,
            x,
            domains,
        )?;
        let mut x = relu6(self.stem.forward(x, domains)?);
        for block in &self.blocks {
            x = block.forward(x, domains)?;
        }
        let x = relu6(self.last.forward(x, domains)?);
        Ok(self.head.forward(x))
    }
}

fold_fields!(InvertedResidual {
    expand,
    depthwise,
    project
});
fold_fields!(MobileNetV2 { stem, blocks, last });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FoldNorms;
    use crate::testing::{bn_last_batch, device, input, max_diff, with_inference_stats};
    use bnlab_norm::{NormMode, count_parameters, set_norm_mode};

    /// torchvision 0.29.2 `mobilenet_v2()` and `mobilenet_v2(num_classes=10)`.
    #[test]
    fn parameter_counts_equal_torchvision() {
        let count = |c: MobileNetV2Config| count_parameters(&c.init(&device()).unwrap());
        assert_eq!(count(MobileNetV2Config::new()), 3_504_872);
        assert_eq!(
            count(MobileNetV2Config::new().with_options(ModelOptions::new(10, 3))),
            2_236_682
        );
        // the CIFAR strides change no shapes of parameters
        assert_eq!(count(MobileNetV2Config::new().with_cifar(true)), 3_504_872);
    }

    #[test]
    fn output_shapes_at_224_and_cifar_32() {
        let net = set_norm_mode(
            MobileNetV2Config::new().init(&device()).unwrap(),
            NormMode::EVAL,
        );
        assert_eq!(
            net.forward(input([1, 3, 224, 224], 1), None)
                .unwrap()
                .dims(),
            [1, 1000]
        );
        // CIFAR: total stride 8 instead of 32, so the last feature map of a 32×32 input is 4×4
        let cifar = MobileNetV2Config::new()
            .with_cifar(true)
            .with_options(ModelOptions::new(10, 3));
        let net = cifar.init(&device()).unwrap();
        let strides: Vec<usize> = net
            .blocks
            .iter()
            .map(|b| b.depthwise.conv.stride[0])
            .collect();
        assert_eq!(net.stem.conv.stride, [1, 1]);
        assert_eq!(strides.iter().product::<usize>(), 4, "{strides:?}");
        assert_eq!(
            net.forward(input([2, 3, 32, 32], 2), None).unwrap().dims(),
            [2, 10]
        );
    }

    #[test]
    fn forward_and_backward_cifar() {
        let device = device().autodiff();
        let net = MobileNetV2Config::new()
            .with_cifar(true)
            .with_options(ModelOptions::new(10, 3))
            .init(&device)
            .unwrap();
        let y = net
            .forward(input([2, 3, 16, 16], 3).to_device(&device), None)
            .unwrap();
        let grads = y.sum().backward();
        let g = net.stem.conv.weight.grad(&grads).expect("stem gradient");
        assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
    }

    #[test]
    fn fold_norms_keeps_outputs() {
        let config = MobileNetV2Config::new()
            .with_cifar(true)
            .with_options(ModelOptions::new(10, 3).with_norm(bn_last_batch()));
        let net = with_inference_stats(
            config.init(&device()).unwrap(),
            |m, x| m.forward(x, None),
            [8, 3, 16, 16],
        );
        let x = input([3, 3, 16, 16], 4);
        let before = net.forward(x.clone(), None).unwrap();
        let after = net.fold_norms().unwrap().forward(x, None).unwrap();
        let (diff, scale) = max_diff(before, after);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "diff {diff} at scale {scale}"
        );
    }

    #[test]
    fn make_divisible_matches_torchvision_rounding() {
        // by hand: int(v + 4) // 8 * 8, raised by 8 when it falls below 0.9·v
        assert_eq!(make_divisible(32.0), 32);
        assert_eq!(make_divisible(24.0 * 0.5), 16);
        assert_eq!(make_divisible(16.0 * 0.35), 8);
        assert_eq!(make_divisible(1280.0 * 1.4), 1792);
        assert_eq!(make_divisible(96.0 * 0.35), 32);
    }
}
