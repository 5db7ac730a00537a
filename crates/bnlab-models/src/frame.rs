//! The frame every network shares around its body: the common options ([`ModelOptions`]),
//! the input check and input normalization in front, and the classifier head behind.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use bnlab_norm::{Precision, full_precision};

use crate::init::linear;
use crate::norms::Builder;
use crate::{ConvKernel, InputNorm, InputNormConfig, ModelError, NormSpec};

/// What every network takes besides its architecture: classes, input channels, the
/// normalization at every site, input normalization and the convolution kernels.
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
    /// Start each residual block's last γ at 0 (ResNets only; other networks refuse it).
    #[serde(default)]
    pub zero_init_residual: bool,
    /// Channel width multiplier (the ResNets, MobileNetV2 and VGG; other networks refuse
    /// anything but 1).
    #[serde(default = "one")]
    pub width: f64,
    /// The convolution kernels.
    #[serde(default)]
    pub conv_kernel: ConvKernel,
    /// The activations' dtype (mixed precision: parameters and statistics stay f32).
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    pub precision: Precision,
}

fn one() -> f64 {
    1.0
}

impl Default for ModelOptions {
    /// 10 classes, 3 input channels, BatchNorm everywhere.
    fn default() -> Self {
        Self::new(10, 3)
    }
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
            width: 1.0,
            conv_kernel: ConvKernel::Auto,
            precision: Precision::F32,
        }
    }

    /// `width` scaled by the width multiplier, at least 1.
    pub(crate) fn scaled(&self, width: usize) -> usize {
        ((width as f64 * self.width).round() as usize).max(1)
    }

    /// These options with normalization `norm`.
    pub fn with_norm(self, norm: NormSpec) -> Self {
        Self { norm, ..self }
    }

    /// These options with input normalization `input_norm`.
    pub fn with_input_norm(self, input_norm: Option<InputNormConfig>) -> Self {
        Self { input_norm, ..self }
    }

    /// The front of a network: checks the options against what the network `takes`, and
    /// returns the builder of its normalization layers with the input normalization built.
    pub(crate) fn begin<'a>(
        &'a self,
        takes: Takes,
        device: &'a Device,
    ) -> Result<(Builder<'a>, Option<InputNorm>), ModelError> {
        let w = self.width;
        if !(w.is_finite() && w > 0.0) {
            return Err(ModelError::InvalidConfig(format!(
                "the width multiplier must be finite and > 0, got {w}"
            )));
        }
        if w != 1.0 && !takes.width {
            return Err(ModelError::InvalidConfig(format!(
                "this network takes no width multiplier (width = {w}): the ResNets, MobileNetV2 and VGG do"
            )));
        }
        if self.num_classes == 0 || self.in_channels == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "num_classes ({}) and in_channels ({}) must be at least 1",
                self.num_classes, self.in_channels
            )));
        }
        if self.zero_init_residual && !takes.residual {
            return Err(ModelError::InvalidConfig(
                "zero_init_residual applies to networks with residual blocks (the ResNets)".into(),
            ));
        }
        let b = Builder::new(&self.norm, self.conv_kernel, device);
        let input_norm = self
            .input_norm
            .as_ref()
            .map(|c| c.init(&b, self.in_channels))
            .transpose()?;
        Ok((b, input_norm))
    }

    /// A classifier head from `features` pooled channels to this network's classes.
    pub(crate) fn head(&self, features: usize, dropout: f64, device: &Device) -> Classifier {
        Classifier {
            dropout: DropoutConfig::new(dropout).init(),
            fc: linear(features, self.num_classes, device),
        }
    }
}

/// The options a network can take beyond the common ones.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Takes {
    /// Residual blocks, for `zero_init_residual`.
    pub(crate) residual: bool,
    /// A width multiplier.
    pub(crate) width: bool,
}

impl Takes {
    /// A width multiplier, and no residual blocks (MobileNetV2, VGG).
    pub(crate) const WIDTH: Takes = Takes {
        residual: false,
        width: true,
    };
}

/// The front of a network's forward pass: checks the input (`in_channels` channels, sides of
/// at least `min_size`), applies the input normalization, if any (in f32, on the pixels),
/// and casts the result to the network's `precision`.
pub(crate) fn enter(
    input_norm: &Option<InputNorm>,
    in_channels: usize,
    min_size: usize,
    precision: Precision,
    x: Tensor<4>,
    domains: Option<&[usize]>,
) -> Result<Tensor<4>, ModelError> {
    check_input(&x, in_channels, min_size)?;
    let x = match input_norm {
        Some(n) => n.forward(x, domains)?,
        None => x,
    };
    Ok(precision.apply(x))
}

/// Global average pooling, dropout, then a fully connected layer.
///
/// Dropout is Burn's: active only on an autodiff device in training (`Module::train`); it
/// follows the last normalization layer, so it never touches batch statistics.
#[derive(Module, Debug)]
pub struct Classifier {
    /// Dropout before the fully connected layer (probability 0 disables it).
    pub dropout: Dropout,
    /// The fully connected layer (role `LinearWeight` / `Bias`).
    pub fc: Linear,
}

impl Classifier {
    /// Logits of pooled features.
    ///
    /// # Shapes
    /// - input `[N, C, H, W]`, output `[N, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        // pooled features and logits in f32, whatever the activations' precision
        let x = full_precision(x);
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        self.fc.forward(self.dropout.forward(pooled))
    }
}

/// Checks an input batch: 4-D `[N, channels, H, W]` with N ≥ 1 and H, W ≥ `min_size`.
fn check_input(x: &Tensor<4>, channels: usize, min_size: usize) -> Result<(), ModelError> {
    let dims = x.dims();
    let bad = |why: String| {
        Err(ModelError::Shape {
            shape: dims.to_vec(),
            why,
        })
    };
    if dims[0] == 0 {
        return bad("the batch is empty".into());
    }
    if dims[1] != channels {
        return bad(format!("the network expects {channels} input channels"));
    }
    if dims[2] < min_size || dims[3] < min_size {
        return bad(format!(
            "the network needs inputs of at least {min_size}×{min_size}"
        ));
    }
    Ok(())
}
