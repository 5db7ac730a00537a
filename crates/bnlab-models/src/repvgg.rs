//! RepVGG (Ding et al., "RepVGG: Making VGG-style ConvNets Great Again"): training-time blocks
//! of a 3×3 conv–norm, a 1×1 conv–norm and an identity norm, summed; [`RepVgg::reparameterize`]
//! merges each block into one 3×3 convolution for deployment.
//!
//! CIFAR modification (Davis & Frank §4.4): stages 0 and 1 have stride 1.

use bnlab_norm::Norm;
use bnlab_norm::Precision;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::at_site;
use crate::frame::{Classifier, Takes, enter};
use crate::init::ConvShape;
use crate::norms::Builder;
use crate::{ConvKernel, ModelOptions, conv2d};
use crate::{ConvNorm, FoldNorms, InputNorm, ModelError};

/// Configuration of a [`RepVgg`]; [`RepVggConfig::a0`] is RepVGG-A0.
#[derive(Config, Debug)]
pub struct RepVggConfig {
    /// Blocks in stages 1–4 (stage 0 is one block).
    pub num_blocks: Vec<usize>,
    /// Width multiplier a of stages 0–3.
    pub width_a: f64,
    /// Width multiplier b of stage 4.
    pub width_b: f64,
    /// The CIFAR strides (Davis & Frank §4.4). Default: false.
    #[config(default = false)]
    pub cifar: bool,
    /// Classes, input channels, normalization, input normalization, convolution kernels.
    /// Default: 1000 classes, 3 channels, BatchNorm.
    #[config(default = "ModelOptions::new(1000, 3)")]
    pub options: ModelOptions,
}

impl RepVggConfig {
    /// RepVGG-A0: blocks (1, 2, 4, 14, 1), a = 0.75, b = 2.5 (widths 48, 48, 96, 192, 1280).
    pub fn a0() -> Self {
        Self::new(vec![2, 4, 14, 1], 0.75, 2.5)
    }

    /// Builds the training-time network on `device`.
    pub fn init(&self, device: &Device) -> Result<RepVgg, ModelError> {
        if self.num_blocks.len() != 4 || !(self.width_a > 0.0 && self.width_b > 0.0) {
            return Err(ModelError::InvalidConfig(
                "RepVGG needs 4 block counts and width multipliers > 0".into(),
            ));
        }
        let (b, input_norm) = self.options.begin(Takes::default(), device)?;
        let a = self.width_a;
        let widths = [
            (64.0 * a).min(64.0) as usize,
            (64.0 * a) as usize,
            (128.0 * a) as usize,
            (256.0 * a) as usize,
            (512.0 * self.width_b) as usize,
        ];
        let counts = [
            1,
            self.num_blocks[0],
            self.num_blocks[1],
            self.num_blocks[2],
            self.num_blocks[3],
        ];
        let mut cin = self.options.in_channels;
        let mut stages = Vec::new();
        for (i, (&width, &count)) in widths.iter().zip(&counts).enumerate() {
            let first_stride = if self.cifar && i < 2 { 1 } else { 2 };
            let mut stage = Vec::new();
            for j in 0..count {
                let stride = if j == 0 { first_stride } else { 1 };
                stage.push(RepVggBlock::new(
                    &b,
                    &format!("stages.{i}.{j}"),
                    cin,
                    width,
                    stride,
                )?);
                cin = width;
            }
            stages.push(stage);
        }
        b.finish()?;
        Ok(RepVgg {
            input_norm,
            stages,
            head: self.options.head(cin, 0.0, device),
            in_channels: self.options.in_channels,
            precision: self.options.precision,
        })
    }
}

/// One RepVGG block: relu(norm(3×3 conv) + norm(1×1 conv) + norm(x)) while training; one
/// biased 3×3 convolution and a ReLU once reparameterized.
#[derive(Module, Debug)]
pub struct RepVggBlock {
    /// The 3×3 branch (`None` once reparameterized).
    pub dense: Option<ConvNorm>,
    /// The 1×1 branch (`None` once reparameterized).
    pub one: Option<ConvNorm>,
    /// The identity branch, where width and resolution are kept.
    pub identity: Option<Norm>,
    /// The merged 3×3 convolution of the deploy network.
    pub fused: Option<Conv2d>,
    /// The convolution kernels.
    #[module(skip)]
    pub kernel: ConvKernel,
    /// The block's path, for error messages.
    #[module(skip)]
    pub site: String,
}

impl RepVggBlock {
    fn new(
        b: &Builder,
        path: &str,
        cin: usize,
        cout: usize,
        stride: usize,
    ) -> Result<Self, ModelError> {
        let identity = (cin == cout && stride == 1)
            .then(|| b.norm(&format!("{path}.identity"), cout))
            .transpose()?;
        Ok(Self {
            dense: Some(ConvNorm::new(
                b,
                &format!("{path}.dense"),
                ConvShape::square(cin, cout, 3).stride(stride),
            )?),
            one: Some(ConvNorm::new(
                b,
                &format!("{path}.one"),
                ConvShape::square(cin, cout, 1).stride(stride),
            )?),
            identity,
            fused: None,
            kernel: b.conv_kernel,
            site: path.to_string(),
        })
    }

    /// The block's output.
    ///
    /// # Shapes
    /// - input `[N, C_in, H, W]`, output `[N, C_out, H/s, W/s]`.
    pub fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<4>, ModelError> {
        if let Some(fused) = &self.fused {
            return Ok(relu(conv2d(fused, x, self.kernel)));
        }
        let mut y: Option<Tensor<4>> = None;
        let mut add = |t: Tensor<4>| {
            y = Some(match y.take() {
                Some(s) => s + t,
                None => t,
            })
        };
        if let Some(dense) = &self.dense {
            add(dense.forward(x.clone(), d)?);
        }
        if let Some(one) = &self.one {
            add(one.forward(x.clone(), d)?);
        }
        if let Some(identity) = &self.identity {
            let site = format!("{}.identity", self.site);
            add(identity
                .forward_domains(x.clone(), d)
                .map_err(at_site(&site))?);
        }
        Ok(relu(y.unwrap_or(x)))
    }

    /// The block as one biased 3×3 convolution (Ding et al. §3.3); the norms must be in
    /// `Eval(Population)` or `Frozen` mode.
    pub fn reparameterize(self) -> Result<Self, ModelError> {
        let (Some(dense), Some(one)) = (self.dense.clone(), self.one.clone()) else {
            return Ok(self);
        };
        let dense = dense.fold_norms()?.conv;
        let one = one.fold_norms()?.conv;
        let [cout, cin, _, _] = dense.weight.dims();
        let device = dense.weight.device();
        let bias_of = |c: &Conv2d| {
            c.bias
                .as_ref()
                .map(|b| b.val())
                .unwrap_or_else(|| Tensor::zeros([cout], &device))
        };
        let mut weight = dense.weight.val() + pad_to_3x3(one.weight.val());
        let mut bias = bias_of(&dense) + bias_of(&one);
        if let Some(identity) = &self.identity {
            let site = format!("{}.identity", self.site);
            let (scale, shift) = identity.inference_affine().map_err(at_site(&site))?;
            let mut eye = vec![0f32; cout * cin * 9];
            for c in 0..cout.min(cin) {
                eye[(c * cin + c) * 9 + 4] = 1.0;
            }
            let eye = Tensor::<4>::from_data(TensorData::new(eye, [cout, cin, 3, 3]), &device);
            weight = weight + eye * scale.reshape([cout, 1, 1, 1]);
            bias = bias + shift;
        }
        let mut fused = ConvShape::square(cin, cout, 3)
            .stride(dense.stride[0])
            .config()
            .with_bias(true)
            .init(&device);
        fused.weight = Param::from_tensor(weight.detach());
        fused.bias = Some(Param::from_tensor(bias.detach()));
        Ok(Self {
            dense: None,
            one: None,
            identity: None,
            fused: Some(fused),
            kernel: self.kernel,
            site: self.site,
        })
    }
}

/// A [cout, cin, 1, 1] kernel as the centre of a zero [cout, cin, 3, 3] kernel.
fn pad_to_3x3(w: Tensor<4>) -> Tensor<4> {
    let [o, i, _, _] = w.dims();
    let device = w.device();
    let zeros = |h: usize, wd: usize| Tensor::<4>::zeros([o, i, h, wd], &device);
    let row = Tensor::cat(vec![zeros(1, 1), w, zeros(1, 1)], 3);
    Tensor::cat(vec![zeros(1, 3), row, zeros(1, 3)], 2)
}

/// RepVGG with a [`bnlab_norm::Norm`] at every normalization site.
#[derive(Module, Debug)]
pub struct RepVgg {
    /// Optional input normalization.
    pub input_norm: Option<InputNorm>,
    /// Stages 0–4.
    pub stages: Vec<Vec<RepVggBlock>>,
    /// Pooling and the classifier.
    pub head: Classifier,
    /// Expected input channels.
    pub in_channels: usize,
    /// The activations' dtype (mixed precision).
    #[module(skip)]
    pub precision: Precision,
}

impl RepVgg {
    /// Logits; `domains` are the examples' domain ids for domain-aware normalization.
    ///
    /// # Shapes
    /// - input `[N, in_channels, H, W]`, output `[N, num_classes]`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<2>, ModelError> {
        let mut x = enter(
            &self.input_norm,
            self.in_channels,
            1,
            self.precision,
            x,
            domains,
        )?;
        for block in self.stages.iter().flatten() {
            x = block.forward(x, domains)?;
        }
        Ok(self.head.forward(x))
    }

    /// The plain deploy network: every block one 3×3 convolution, equal outputs in inference.
    pub fn reparameterize(self) -> Result<Self, ModelError> {
        let stages = self
            .stages
            .into_iter()
            .map(|s| s.into_iter().map(RepVggBlock::reparameterize).collect())
            .collect::<Result<_, _>>()?;
        Ok(Self { stages, ..self })
    }
}

impl FoldNorms for RepVgg {
    /// For RepVGG, folding is [`RepVgg::reparameterize`]: the identity branch has no conv of its own.
    fn fold_norms(self) -> Result<Self, ModelError> {
        self.reparameterize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{bn_last_batch, device, input, max_diff, with_inference_stats};
    use bnlab_norm::{NormMode, count_parameters, norm_sites, set_norm_mode};

    /// DingXiaoH/RepVGG's `create_RepVGG_A0` re-typed in PyTorch (equal to timm 1.0.31's
    /// `repvgg_a0`): 9,108,968 training-time and 8,309,384 deploy parameters (the paper's 8.30 M).
    #[test]
    fn parameter_counts_equal_reference() {
        let net = RepVggConfig::a0().init(&device()).unwrap();
        assert_eq!(count_parameters(&net), 9_108_968);
        let widths: Vec<usize> = net
            .stages
            .iter()
            .map(|s| s[0].dense.as_ref().unwrap().conv.weight.dims()[0])
            .collect();
        assert_eq!(widths, [48, 48, 96, 192, 1280]);
        let deploy = set_norm_mode(net, NormMode::EVAL).reparameterize().unwrap();
        assert_eq!(count_parameters(&deploy), 8_309_384);
        let ten = RepVggConfig::a0()
            .with_options(ModelOptions::new(10, 3))
            .init(&device())
            .unwrap();
        assert_eq!(count_parameters(&ten), 7_840_778);
    }

    #[test]
    fn output_shapes_at_224_and_cifar_32() {
        let net = set_norm_mode(RepVggConfig::a0().init(&device()).unwrap(), NormMode::EVAL);
        assert_eq!(
            net.forward(input([1, 3, 224, 224], 1), None)
                .unwrap()
                .dims(),
            [1, 1000]
        );
        let cifar = RepVggConfig::a0()
            .with_cifar(true)
            .with_options(ModelOptions::new(10, 3))
            .init(&device())
            .unwrap();
        let strides: Vec<usize> = cifar
            .stages
            .iter()
            .map(|s| s[0].dense.as_ref().unwrap().conv.stride[0])
            .collect();
        assert_eq!(strides, [1, 1, 2, 2, 2]);
        assert_eq!(
            cifar
                .forward(input([2, 3, 32, 32], 2), None)
                .unwrap()
                .dims(),
            [2, 10]
        );
    }

    #[test]
    fn reparameterize_gives_the_plain_network_with_equal_outputs() {
        let config = RepVggConfig::a0()
            .with_cifar(true)
            .with_options(ModelOptions::new(10, 3).with_norm(bn_last_batch()));
        let net = with_inference_stats(
            config.init(&device()).unwrap(),
            |m, x| m.forward(x, None),
            [8, 3, 16, 16],
        );
        let x = input([3, 3, 16, 16], 5);
        let before = net.forward(x.clone(), None).unwrap();
        let deploy = net.reparameterize().unwrap();
        let (deploy, sites) = norm_sites(deploy);
        assert!(sites.is_empty(), "no normalization left");
        assert!(
            deploy
                .stages
                .iter()
                .flatten()
                .all(|b| b.fused.is_some() && b.dense.is_none())
        );
        let (diff, scale) = max_diff(before, deploy.forward(x, None).unwrap());
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "diff {diff} at scale {scale}"
        );
    }

    #[test]
    fn reparameterize_refuses_batch_statistics() {
        let net = RepVggConfig::a0().with_cifar(true).init(&device()).unwrap();
        assert!(matches!(net.reparameterize(), Err(ModelError::Norm { .. })));
    }

    #[test]
    fn one_by_one_kernel_lands_in_the_centre() {
        let w = Tensor::<4>::ones([2, 3, 1, 1], &device());
        let padded: Vec<f32> = pad_to_3x3(w).into_data().try_to_vec::<f32>().unwrap();
        for (i, v) in padded.iter().enumerate() {
            assert_eq!(*v, if i % 9 == 4 { 1.0 } else { 0.0 }, "index {i}");
        }
    }
}
