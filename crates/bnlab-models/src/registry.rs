//! Networks by name (`resnet20`, `resnet18-cifar`, `mobilenetv2-cifar`, …), for experiment
//! specs and the CLI.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{
    FoldNorms, InceptionV3, InceptionV3Config, InputNormConfig, MobileNetV2, MobileNetV2Config,
    ModelError, NormSpec, RepVgg, RepVggConfig, ResNet, ResNetConfig, Stem, Vgg, VggConfig,
};

/// Every registered network name, with what it is.
pub const MODELS: &[(&str, &str)] = &[
    ("resnet18", "ResNet-18, ImageNet stem"),
    ("resnet34", "ResNet-34, ImageNet stem"),
    ("resnet50", "ResNet-50, ImageNet stem"),
    ("resnet101", "ResNet-101, ImageNet stem"),
    ("resnet152", "ResNet-152, ImageNet stem"),
    (
        "resnet18-cifar",
        "ResNet-18, CIFAR stem (3×3 stride 1, no max-pool)",
    ),
    ("resnet34-cifar", "ResNet-34, CIFAR stem"),
    ("resnet50-cifar", "ResNet-50, CIFAR stem"),
    ("resnet101-cifar", "ResNet-101, CIFAR stem"),
    ("resnet152-cifar", "ResNet-152, CIFAR stem"),
    (
        "resnet20",
        "He et al.'s CIFAR ResNet-20 (widths 16/32/64, 0.27 M parameters)",
    ),
    ("resnet32", "He et al.'s CIFAR ResNet-32"),
    ("resnet44", "He et al.'s CIFAR ResNet-44"),
    ("resnet56", "He et al.'s CIFAR ResNet-56"),
    ("resnet110", "He et al.'s CIFAR ResNet-110"),
    ("resnext50-32x4d", "ResNeXt-50 32×4d, ImageNet stem"),
    ("resnext50-32x4d-cifar", "ResNeXt-50 32×4d, CIFAR stem"),
    ("mobilenetv2", "MobileNetV2, width 1.0"),
    (
        "mobilenetv2-cifar",
        "MobileNetV2 with CIFAR strides (Davis & Frank §4.4)",
    ),
    ("repvgg-a0", "RepVGG-A0, training-time branches"),
    (
        "repvgg-a0-cifar",
        "RepVGG-A0 with stages 0 and 1 at stride 1",
    ),
    (
        "inception-v3",
        "Inception-v3 for 299×299 inputs, with the auxiliary head",
    ),
    (
        "vgg11",
        "VGG-11 convolutions with a GAP head; no residual paths",
    ),
    ("plain-cnn", "A 6-conv VGG-style CNN without residual paths"),
];

/// What every registered network takes besides its name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelOptions {
    /// Number of classes.
    pub num_classes: usize,
    /// Input channels (1 for Fashion-MNIST, 3 for CIFAR).
    pub in_channels: usize,
    /// The normalization at every site.
    #[serde(default)]
    pub norm: NormSpec,
    /// Input normalization, if any.
    #[serde(default)]
    pub input_norm: Option<InputNormConfig>,
    /// Start each residual block's last γ at 0 (ResNets only).
    #[serde(default)]
    pub zero_init_residual: bool,
}

impl ModelOptions {
    /// `num_classes` classes, `in_channels` input channels, BatchNorm everywhere.
    pub fn new(num_classes: usize, in_channels: usize) -> Self {
        Self {
            num_classes,
            in_channels,
            norm: NormSpec::default(),
            input_norm: None,
            zero_init_residual: false,
        }
    }

    /// These options with normalization `norm`.
    pub fn with_norm(self, norm: NormSpec) -> Self {
        Self { norm, ..self }
    }
}

/// A network built by name.
#[derive(Module, Debug)]
pub enum Network {
    /// ResNets, ResNeXt and the CIFAR ResNets.
    ResNet(ResNet),
    /// MobileNetV2.
    MobileNetV2(MobileNetV2),
    /// RepVGG.
    RepVgg(RepVgg),
    /// Inception-v3.
    InceptionV3(InceptionV3),
    /// Plain VGG-style CNNs.
    Vgg(Vgg),
}

impl Network {
    /// Logits; `domains` are the examples' domain ids for domain-aware normalization.
    ///
    /// # Shapes
    /// - input `[N, C, H, W]`, output `[N, num_classes]`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<2>, ModelError> {
        match self {
            Network::ResNet(m) => m.forward(x, domains),
            Network::MobileNetV2(m) => m.forward(x, domains),
            Network::RepVgg(m) => m.forward(x, domains),
            Network::InceptionV3(m) => m.forward(x, domains),
            Network::Vgg(m) => m.forward(x, domains),
        }
    }

    /// The deploy form: RepVGG reparameterized and every conv–norm pair folded.
    pub fn deploy(self) -> Result<Self, ModelError> {
        self.fold_norms()
    }
}

impl FoldNorms for Network {
    fn fold_norms(self) -> Result<Self, ModelError> {
        Ok(match self {
            Network::ResNet(m) => Network::ResNet(m.fold_norms()?),
            Network::MobileNetV2(m) => Network::MobileNetV2(m.fold_norms()?),
            Network::RepVgg(m) => Network::RepVgg(m.fold_norms()?),
            Network::InceptionV3(m) => Network::InceptionV3(m.fold_norms()?),
            Network::Vgg(m) => Network::Vgg(m.fold_norms()?),
        })
    }
}

/// Every registered name.
pub fn model_names() -> Vec<&'static str> {
    MODELS.iter().map(|(n, _)| *n).collect()
}

/// Builds the network called `name` on `device`; an unknown name lists the known ones.
pub fn build(name: &str, options: &ModelOptions, device: &Device) -> Result<Network, ModelError> {
    let o = options;
    let resnet = |c: ResNetConfig| -> Result<Network, ModelError> {
        let c = c
            .with_num_classes(o.num_classes)
            .with_in_channels(o.in_channels)
            .with_zero_init_residual(o.zero_init_residual)
            .with_input_norm(o.input_norm.clone())
            .with_norm(o.norm.clone());
        Ok(Network::ResNet(c.init(device)?))
    };
    let resnet_depth = |s: &str| s.parse::<usize>().ok();
    let mobilenet = |cifar: bool, dropout: f64| -> Result<Network, ModelError> {
        let c = MobileNetV2Config::new()
            .with_cifar(cifar)
            .with_dropout(dropout)
            .with_num_classes(o.num_classes)
            .with_in_channels(o.in_channels)
            .with_input_norm(o.input_norm.clone())
            .with_norm(o.norm.clone());
        Ok(Network::MobileNetV2(c.init(device)?))
    };
    let repvgg = |cifar: bool| -> Result<Network, ModelError> {
        let c = RepVggConfig::a0()
            .with_cifar(cifar)
            .with_num_classes(o.num_classes)
            .with_in_channels(o.in_channels)
            .with_input_norm(o.input_norm.clone())
            .with_norm(o.norm.clone());
        Ok(Network::RepVgg(c.init(device)?))
    };
    let vgg = |c: VggConfig| -> Result<Network, ModelError> {
        let c = c
            .with_num_classes(o.num_classes)
            .with_in_channels(o.in_channels)
            .with_input_norm(o.input_norm.clone())
            .with_norm(o.norm.clone());
        Ok(Network::Vgg(c.init(device)?))
    };
    let known = || model_names().join(", ");
    if !MODELS.iter().any(|(n, _)| *n == name) {
        return Err(ModelError::UnknownModel {
            name: name.to_string(),
            known: known(),
        });
    }
    match name {
        "resnext50-32x4d" => resnet(ResNetConfig::resnext50_32x4d()),
        "resnext50-32x4d-cifar" => resnet(ResNetConfig::resnext50_32x4d().with_stem(Stem::Cifar)),
        "mobilenetv2" => mobilenet(false, 0.2),
        "mobilenetv2-cifar" => mobilenet(true, 0.0),
        "repvgg-a0" => repvgg(false),
        "repvgg-a0-cifar" => repvgg(true),
        "inception-v3" => {
            let c = InceptionV3Config::new()
                .with_num_classes(o.num_classes)
                .with_in_channels(o.in_channels)
                .with_input_norm(o.input_norm.clone())
                .with_norm(o.norm.clone());
            Ok(Network::InceptionV3(c.init(device)?))
        }
        "vgg11" => vgg(VggConfig::vgg11()),
        "plain-cnn" => vgg(VggConfig::plain_cnn()),
        n => {
            let (depth, cifar_stem) = match n.strip_suffix("-cifar") {
                Some(d) => (d, true),
                None => (n, false),
            };
            match depth.strip_prefix("resnet").and_then(resnet_depth) {
                Some(d @ (18 | 34 | 50 | 101 | 152)) => {
                    let c = ResNetConfig::resnet(d)?;
                    resnet(if cifar_stem {
                        c.with_stem(Stem::Cifar)
                    } else {
                        c
                    })
                }
                Some(d) => resnet(ResNetConfig::cifar(d)?),
                None => Err(ModelError::UnknownModel {
                    name: name.to_string(),
                    known: known(),
                }),
            }
        }
    }
}
