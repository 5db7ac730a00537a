//! A plain VGG-style CNN (Simonyan & Zisserman's conv–norm–ReLU stacks with 2×2 max-pools,
//! global average pooling and one linear classifier). It has no residual paths: every
//! normalization layer but the last reaches the output only through another one. It is the
//! control for Summers & Dinneen §3.3, who argue weight decay on γ/β helps only where residual
//! paths carry a layer's output to the network's output.

use bnlab_norm::Precision;
use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::{Device, Tensor};

use crate::fold::fold_fields;
use crate::frame::{Classifier, Takes, enter};
use crate::init::ConvShape;
use crate::{ConvNorm, InputNorm, ModelError, ModelOptions};

/// Configuration of a [`Vgg`]: 3×3 conv widths per stage, a 2×2 max-pool after each stage.
#[derive(Config, Debug)]
pub struct VggConfig {
    /// Output channels of each 3×3 convolution, per stage.
    pub stages: Vec<Vec<usize>>,
    /// Classes, input channels, normalization, input normalization, convolution kernels.
    /// Default: 10 classes, 3 channels, BatchNorm.
    #[config(default = "ModelOptions::new(10, 3)")]
    pub options: ModelOptions,
}

impl VggConfig {
    /// VGG-11's convolutions (configuration A), with a GAP head for 32×32 inputs.
    pub fn vgg11() -> Self {
        Self::new(vec![
            vec![64],
            vec![128],
            vec![256, 256],
            vec![512, 512],
            vec![512, 512],
        ])
    }

    /// A small plain CNN: (32, 32), (64, 64), (128, 128), for CPU-sized runs.
    pub fn plain_cnn() -> Self {
        Self::new(vec![vec![32, 32], vec![64, 64], vec![128, 128]])
    }

    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Result<Vgg, ModelError> {
        if self.stages.is_empty() || self.stages.iter().any(|s| s.is_empty() || s.contains(&0)) {
            return Err(ModelError::InvalidConfig(
                "a VGG needs at least one stage, each with at least one conv of width ≥ 1".into(),
            ));
        }
        let (b, input_norm) = self.options.begin(Takes::WIDTH, device)?;
        let mut cin = self.options.in_channels;
        let mut stages = Vec::new();
        for (i, widths) in self.stages.iter().enumerate() {
            let mut stage = Vec::new();
            for (j, &w) in widths.iter().enumerate() {
                let w = self.options.scaled(w);
                stage.push(ConvNorm::new(
                    &b,
                    &format!("stages.{i}.{j}"),
                    ConvShape::square(cin, w, 3),
                )?);
                cin = w;
            }
            stages.push(stage);
        }
        b.finish()?;
        Ok(Vgg {
            input_norm,
            stages,
            head: self.options.head(cin, 0.0, device),
            in_channels: self.options.in_channels,
            precision: self.options.precision,
        })
    }
}

/// A plain VGG-style CNN with a [`bnlab_norm::Norm`] at every normalization site.
#[derive(Module, Debug)]
pub struct Vgg {
    /// Optional input normalization.
    pub input_norm: Option<InputNorm>,
    /// Conv–norm–ReLU stacks, each followed by a 2×2 max-pool.
    pub stages: Vec<Vec<ConvNorm>>,
    /// Pooling and the classifier.
    pub head: Classifier,
    /// Expected input channels.
    pub in_channels: usize,
    /// The activations' dtype (mixed precision).
    #[module(skip)]
    pub precision: Precision,
}

impl Vgg {
    /// Logits; `domains` are the examples' domain ids for domain-aware normalization.
    ///
    /// # Shapes
    /// - input `[N, in_channels, H, W]` with H, W ≥ 2^stages, output `[N, num_classes]`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<2>, ModelError> {
        let min_size = 1 << self.stages.len();
        let mut x = enter(
            &self.input_norm,
            self.in_channels,
            min_size,
            self.precision,
            x,
            domains,
        )?;
        for stage in &self.stages {
            for conv in stage {
                x = conv.forward_relu(x, domains)?;
            }
            x = MaxPool2dConfig::new([2, 2]).init().forward(x);
        }
        Ok(self.head.forward(x))
    }
}

fold_fields!(Vgg { stages });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FoldNorms;
    use crate::testing::{bn_last_batch, device, input, max_diff, with_inference_stats};
    use bnlab_norm::count_parameters;

    #[test]
    fn parameter_count_by_hand() {
        // 3×3 convs 3→32→32→64→64→128→128, each with γ and β, then 128→10
        let convs = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)];
        let by_hand: usize =
            convs.iter().map(|(i, o)| i * o * 9 + 2 * o).sum::<usize>() + 128 * 10 + 10;
        assert_eq!(
            count_parameters(&VggConfig::plain_cnn().init(&device()).unwrap()),
            by_hand
        );
    }

    #[test]
    fn forward_backward_and_fold() {
        let device = device();
        let net = VggConfig::plain_cnn()
            .with_options(ModelOptions::new(10, 1))
            .init(&device.clone().autodiff())
            .unwrap();
        let y = net
            .forward(
                input([2, 1, 28, 28], 1).to_device(&device.clone().autodiff()),
                None,
            )
            .unwrap();
        assert_eq!(y.dims(), [2, 10]);
        let grads = y.sum().backward();
        assert!(net.stages[0][0].conv.weight.grad(&grads).is_some());

        let net = VggConfig::vgg11()
            .with_options(ModelOptions::default().with_norm(bn_last_batch()))
            .init(&device)
            .unwrap();
        let net = with_inference_stats(net, |m, x| m.forward(x, None), [8, 3, 32, 32]);
        let x = input([2, 3, 32, 32], 2);
        let before = net.forward(x.clone(), None).unwrap();
        let (diff, scale) = max_diff(before, net.fold_norms().unwrap().forward(x, None).unwrap());
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "diff {diff} at scale {scale}"
        );
    }

    #[test]
    fn too_small_an_input_is_an_error() {
        let net = VggConfig::vgg11().init(&device()).unwrap();
        assert!(matches!(
            net.forward(input([2, 3, 16, 16], 1), None),
            Err(ModelError::Shape { .. })
        ));
    }
}
