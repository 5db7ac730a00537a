//! ResNets: He et al.'s ImageNet ResNet-18/34/50/101/152 (torchvision v1.5 layout, stride on the
//! 3×3 of the bottleneck), ResNeXt-50 32×4d (Xie et al.), and He et al.'s CIFAR ResNet-20/32/44/56
//! (§4.2 of "Deep Residual Learning", option-A shortcuts).
//!
//! CIFAR modification (Davis & Frank §4.1): the [`Stem::Cifar`] stem is one 3×3 stride-1 conv
//! with no max-pool, instead of a 7×7 stride-2 conv and a 3×3 stride-2 max-pool.

use bnlab_norm::Precision;
use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::fold::fold_fields;
use crate::frame::{Classifier, Takes, enter};
use crate::init::ConvShape;
use crate::norms::Builder;
use crate::{ConvNorm, InputNorm, ModelError, ModelOptions, zero_pad_shortcut};

/// The residual block of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34, CIFAR ResNets); expansion 1.
    Basic,
    /// 1×1, 3×3 (grouped for ResNeXt), 1×1 convolutions; expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per planes.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The first layers of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stem {
    /// 7×7 stride-2 convolution and a 3×3 stride-2 max-pool (224×224 inputs).
    ImageNet,
    /// One 3×3 stride-1 convolution, no max-pool (32×32 inputs; Davis & Frank §4.1).
    Cifar,
}

/// The shortcut where a block changes resolution or width (He et al. §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shortcut {
    /// Option A: subsample and zero-pad the channels; no parameters (CIFAR ResNets).
    ZeroPad,
    /// Option B: a 1×1 convolution and a normalization layer (ImageNet ResNets).
    Projection,
}

/// Configuration of a [`ResNet`]. Use a named constructor ([`ResNetConfig::resnet`],
/// [`ResNetConfig::cifar`], [`ResNetConfig::resnext50_32x4d`]) and adjust.
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Residual blocks per stage.
    pub blocks: Vec<usize>,
    /// Planes (block width before expansion) per stage; stages after the first stride 2.
    pub widths: Vec<usize>,
    /// The residual block.
    pub block: BlockKind,
    /// The stem. Default: ImageNet.
    #[config(default = "Stem::ImageNet")]
    pub stem: Stem,
    /// Output channels of the stem. Default: 64.
    #[config(default = 64)]
    pub stem_width: usize,
    /// The shortcut where shapes change. Default: projection.
    #[config(default = "Shortcut::Projection")]
    pub shortcut: Shortcut,
    /// Channel groups of the bottleneck 3×3 (ResNeXt cardinality). Default: 1.
    #[config(default = 1)]
    pub groups: usize,
    /// Bottleneck width per group at 64 planes (ResNeXt). Default: 64.
    #[config(default = 64)]
    pub width_per_group: usize,
    /// Classes, input channels, normalization, input normalization, convolution kernels.
    /// Default: 1000 classes, 3 channels, BatchNorm.
    #[config(default = "ModelOptions::new(1000, 3)")]
    pub options: ModelOptions,
}

impl ResNetConfig {
    /// He et al.'s ImageNet ResNet-`depth`, depth ∈ {18, 34, 50, 101, 152}.
    pub fn resnet(depth: usize) -> Result<Self, ModelError> {
        let (blocks, kind) = match depth {
            18 => (vec![2, 2, 2, 2], BlockKind::Basic),
            34 => (vec![3, 4, 6, 3], BlockKind::Basic),
            50 => (vec![3, 4, 6, 3], BlockKind::Bottleneck),
            101 => (vec![3, 4, 23, 3], BlockKind::Bottleneck),
            152 => (vec![3, 8, 36, 3], BlockKind::Bottleneck),
            d => {
                return Err(ModelError::InvalidConfig(format!(
                    "ResNet depth {d}: use 18, 34, 50, 101 or 152"
                )));
            }
        };
        Ok(Self::new(blocks, vec![64, 128, 256, 512], kind))
    }

    /// ResNeXt-50 32×4d (Xie et al.): ResNet-50 with 32 groups of width 4 in each 3×3.
    pub fn resnext50_32x4d() -> Self {
        Self::new(
            vec![3, 4, 6, 3],
            vec![64, 128, 256, 512],
            BlockKind::Bottleneck,
        )
        .with_groups(32)
        .with_width_per_group(4)
    }

    /// He et al.'s CIFAR ResNet-`depth` (depth = 6n + 2: 20, 32, 44, 56, 110): a 3×3 stem of
    /// 16 channels, three stages of n basic blocks of widths 16, 32, 64, option-A shortcuts.
    pub fn cifar(depth: usize) -> Result<Self, ModelError> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(ModelError::InvalidConfig(format!(
                "CIFAR ResNet depth {depth} is not 6n + 2 (20, 32, 44, 56, 110)"
            )));
        }
        let n = (depth - 2) / 6;
        Ok(Self::new(vec![n; 3], vec![16, 32, 64], BlockKind::Basic)
            .with_stem(Stem::Cifar)
            .with_stem_width(16)
            .with_shortcut(Shortcut::ZeroPad)
            .with_options(ModelOptions::new(10, 3)))
    }

    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Result<ResNet, ModelError> {
        if self.blocks.len() != self.widths.len() || self.blocks.is_empty() {
            return Err(ModelError::InvalidConfig(format!(
                "ResNet needs one width per stage: {} stages, {} widths",
                self.blocks.len(),
                self.widths.len()
            )));
        }
        if self.groups == 0 || self.width_per_group == 0 {
            return Err(ModelError::InvalidConfig(
                "groups and width_per_group must be at least 1".into(),
            ));
        }
        let (b, input_norm) = self.options.begin(
            Takes {
                residual: true,
                width: true,
            },
            device,
        )?;
        let stem_width = self.options.scaled(self.stem_width);
        let stem_shape = match self.stem {
            Stem::ImageNet => ConvShape::square(self.options.in_channels, stem_width, 7).stride(2),
            Stem::Cifar => ConvShape::square(self.options.in_channels, stem_width, 3),
        };
        let stem = ConvNorm::new(&b, "stem", stem_shape)?;
        let mut inplanes = stem_width;
        let mut stages = Vec::with_capacity(self.blocks.len());
        for (i, (&count, &width)) in self.blocks.iter().zip(&self.widths).enumerate() {
            let planes = self.options.scaled(width);
            let mut stage = Vec::with_capacity(count);
            for j in 0..count {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                let path = format!("stages.{i}.{j}");
                stage.push(self.block_at(&b, &path, inplanes, planes, stride)?);
                inplanes = planes * self.block.expansion();
            }
            stages.push(stage);
        }
        b.finish()?;
        Ok(ResNet {
            input_norm,
            stem,
            max_pool: self.stem == Stem::ImageNet,
            stages,
            head: self.options.head(inplanes, 0.0, device),
            in_channels: self.options.in_channels,
            precision: self.options.precision,
        })
    }

    fn block_at(
        &self,
        b: &Builder,
        path: &str,
        inplanes: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Residual, ModelError> {
        let out = planes * self.block.expansion();
        let zero_last = |c: bnlab_norm::NormConfig| {
            if self.options.zero_init_residual {
                let affine = c.affine.with_gamma_init(0.0);
                c.with_affine(affine)
            } else {
                c
            }
        };
        let (conv1, conv2, conv3) = match self.block {
            BlockKind::Basic => (
                ConvNorm::new(
                    b,
                    &format!("{path}.conv1"),
                    ConvShape::square(inplanes, planes, 3).stride(stride),
                )?,
                ConvNorm::with_norm(
                    b,
                    &format!("{path}.conv2"),
                    ConvShape::square(planes, planes, 3),
                    zero_last,
                )?,
                None,
            ),
            BlockKind::Bottleneck => {
                let width = planes * self.width_per_group / 64 * self.groups;
                (
                    ConvNorm::new(
                        b,
                        &format!("{path}.conv1"),
                        ConvShape::square(inplanes, width, 1),
                    )?,
                    ConvNorm::new(
                        b,
                        &format!("{path}.conv2"),
                        ConvShape::square(width, width, 3)
                            .stride(stride)
                            .groups(self.groups),
                    )?,
                    Some(ConvNorm::with_norm(
                        b,
                        &format!("{path}.conv3"),
                        ConvShape::square(width, out, 1),
                        zero_last,
                    )?),
                )
            }
        };
        let reshape = stride != 1 || inplanes != out;
        let (projection, pad, pad_stride) = match (reshape, self.shortcut) {
            (false, _) => (None, 0, 1),
            (true, Shortcut::Projection) => (
                Some(ConvNorm::new(
                    b,
                    &format!("{path}.projection"),
                    ConvShape::square(inplanes, out, 1).stride(stride),
                )?),
                0,
                1,
            ),
            (true, Shortcut::ZeroPad) => {
                if out < inplanes {
                    return Err(ModelError::InvalidConfig(format!(
                        "a zero-pad shortcut cannot narrow {inplanes} to {out} channels"
                    )));
                }
                (None, out - inplanes, stride)
            }
        };
        Ok(Residual {
            conv1,
            conv2,
            conv3,
            projection,
            pad,
            pad_stride,
        })
    }
}

/// A residual block: basic (conv1, conv2) or bottleneck (conv1, conv2, conv3), and its shortcut.
#[derive(Module, Debug)]
pub struct Residual {
    /// First convolution and normalization.
    pub conv1: ConvNorm,
    /// Second convolution and normalization (carries the stride in a bottleneck).
    pub conv2: ConvNorm,
    /// Third (1×1 expanding) convolution of a bottleneck.
    pub conv3: Option<ConvNorm>,
    /// Option-B projection shortcut.
    pub projection: Option<ConvNorm>,
    /// Option-A shortcut: zero channels added.
    pub pad: usize,
    /// Option-A shortcut: subsampling stride.
    pub pad_stride: usize,
}

impl Residual {
    /// relu(F(x) + shortcut(x)).
    ///
    /// # Shapes
    /// - input `[N, C_in, H, W]`, output `[N, C_out, H/s, W/s]`.
    pub fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<4>, ModelError> {
        let out = self.conv1.forward_relu(x.clone(), d)?;
        let shortcut = match &self.projection {
            Some(p) => p.forward(x, d)?,
            None => zero_pad_shortcut(x, self.pad_stride, self.pad, self.conv1.kernel),
        };
        match &self.conv3 {
            Some(conv3) => {
                let out = self.conv2.forward_relu(out, d)?;
                conv3.forward_add_relu(out, shortcut, d)
            }
            None => self.conv2.forward_add_relu(out, shortcut, d),
        }
    }
}

/// A ResNet or ResNeXt with a [`bnlab_norm::Norm`] at every normalization site.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Optional input normalization.
    pub input_norm: Option<InputNorm>,
    /// The stem convolution and its normalization.
    pub stem: ConvNorm,
    /// Whether a 3×3 stride-2 max-pool follows the stem.
    pub max_pool: bool,
    /// The residual stages.
    pub stages: Vec<Vec<Residual>>,
    /// Pooling and the classifier.
    pub head: Classifier,
    /// Expected input channels.
    pub in_channels: usize,
    /// The activations' dtype (mixed precision).
    #[module(skip)]
    pub precision: Precision,
}

impl ResNet {
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
        let mut x = self.stem.forward_relu(x, domains)?;
        if self.max_pool {
            x = MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init()
                .forward(x);
        }
        for block in self.stages.iter().flatten() {
            x = block.forward(x, domains)?;
        }
        Ok(self.head.forward(x))
    }
}

fold_fields!(Residual {
    conv1,
    conv2,
    conv3,
    projection
});
fold_fields!(ResNet { stem, stages });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{bn_last_batch, device, input, max_diff, with_inference_stats};
    use bnlab_norm::norm_sites;

    fn params(config: ResNetConfig) -> usize {
        bnlab_norm::count_parameters(&config.init(&device()).expect("builds"))
    }

    /// torchvision 0.29.2, `sum(p.numel() for p in resnetN().parameters())`, 1000 classes.
    #[test]
    fn parameter_counts_equal_torchvision() {
        for (depth, expected) in [
            (18, 11_689_512),
            (34, 21_797_672),
            (50, 25_557_032),
            (101, 44_549_160),
            (152, 60_192_808),
        ] {
            let config = ResNetConfig::resnet(depth).unwrap();
            assert_eq!(params(config), expected, "ResNet-{depth}");
        }
        assert_eq!(
            params(ResNetConfig::resnext50_32x4d()),
            25_028_904,
            "ResNeXt-50 32x4d"
        );
        // torchvision resnet18(num_classes=10)
        let r18 = ResNetConfig::resnet(18)
            .unwrap()
            .with_options(ModelOptions::new(10, 3));
        assert_eq!(params(r18), 11_181_642);
    }

    #[test]
    fn cifar_resnet20_has_269_722_parameters() {
        // By hand (He et al. §4.2, option A shortcuts have no parameters):
        let stem = 3 * 16 * 9 + 2 * 16; // 3×3 conv 3→16 and its γ, β
        let stage1 = 6 * (16 * 16 * 9 + 2 * 16); // six 3×3 convs 16→16
        let stage2 = 32 * 16 * 9 + 5 * (32 * 32 * 9) + 6 * 2 * 32;
        let stage3 = 64 * 32 * 9 + 5 * (64 * 64 * 9) + 6 * 2 * 64;
        let fc = 64 * 10 + 10;
        let by_hand = stem + stage1 + stage2 + stage3 + fc;
        assert_eq!(by_hand, 269_722);
        assert_eq!(params(ResNetConfig::cifar(20).unwrap()), by_hand);
        // each extra block pair per stage adds the same three blocks' parameters
        let per_n = 2 * (16 * 16 * 9 + 32 * 32 * 9 + 64 * 64 * 9) + 2 * 2 * (16 + 32 + 64);
        assert_eq!(
            params(ResNetConfig::cifar(32).unwrap()),
            by_hand + 2 * per_n
        );
        assert!(ResNetConfig::cifar(21).is_err());
    }

    #[test]
    fn output_shapes_and_backward_on_small_inputs() {
        let device = device().autodiff();
        for (config, hw, classes) in [
            (ResNetConfig::cifar(20).unwrap(), 32, 10),
            (
                ResNetConfig::resnet(18)
                    .unwrap()
                    .with_stem(Stem::Cifar)
                    .with_options(ModelOptions::new(10, 3)),
                32,
                10,
            ),
            (
                ResNetConfig::resnet(50)
                    .unwrap()
                    .with_options(ModelOptions::new(7, 3)),
                64,
                7,
            ),
        ] {
            let net = config.init(&device).unwrap();
            let x = Tensor::<4>::zeros([2, 3, hw, hw], &device)
                + input([2, 3, hw, hw], 1).to_device(&device);
            let y = net.forward(x, None).unwrap();
            assert_eq!(y.dims(), [2, classes]);
            let grads = y.sum().backward();
            let g = net.stem.conv.weight.grad(&grads).expect("stem gradient");
            assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
        }
    }

    #[test]
    fn imagenet_stem_reduces_224_to_7() {
        let net = ResNetConfig::resnet(18).unwrap().init(&device()).unwrap();
        let net = bnlab_norm::set_norm_mode(net, bnlab_norm::NormMode::EVAL);
        let y = net.forward(input([1, 3, 224, 224], 2), None).unwrap();
        assert_eq!(y.dims(), [1, 1000]);
    }

    #[test]
    fn zero_init_residual_zeroes_each_blocks_last_gamma_only() {
        for config in [
            ResNetConfig::cifar(20).unwrap(),
            ResNetConfig::resnet(50).unwrap(),
        ] {
            let last = if config.block == BlockKind::Basic {
                "conv2"
            } else {
                "conv3"
            };
            let mut config = config;
            config.options.zero_init_residual = true;
            let (_, sites) = norm_sites(config.init(&device()).unwrap());
            let mut zeroed = 0;
            for site in &sites {
                let gamma = site.config.affine.gamma_init().unwrap();
                let is_last = site.path.ends_with(&format!("{last}.norm"));
                assert_eq!(gamma == 0.0, is_last, "{}", site.path);
                zeroed += usize::from(is_last);
            }
            assert!(zeroed > 0);
        }
    }

    #[test]
    fn fold_norms_keeps_outputs() {
        for config in [
            ResNetConfig::cifar(20).unwrap(),
            ResNetConfig::resnet(50).unwrap().with_stem(Stem::Cifar),
        ] {
            let options = config.options.clone().with_norm(bn_last_batch());
            let net = config.with_options(options).init(&device()).unwrap();
            let net = with_inference_stats(net, |m, x| m.forward(x, None), [8, 3, 16, 16]);
            let x = input([3, 3, 16, 16], 3);
            let before = net.forward(x.clone(), None).unwrap();
            let folded = net.fold_norms().unwrap();
            let (_, sites) = norm_sites(folded.clone());
            assert!(sites.is_empty(), "every conv norm folded");
            let (diff, scale) = max_diff(before, folded.forward(x, None).unwrap());
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "diff {diff} at scale {scale}"
            );
        }
    }

    #[test]
    fn fold_norms_refuses_training_mode() {
        let net = ResNetConfig::cifar(20).unwrap().init(&device()).unwrap();
        assert!(matches!(net.fold_norms(), Err(ModelError::Norm { .. })));
    }

    use crate::FoldNorms;
}
