//! bnlab-models: the networks of the BatchNorm papers for Burn, with a [`bnlab_norm::Norm`] at
//! every normalization site, set by one [`NormSpec`] per network and overridable per site.
//!
//! - ResNet-18/34/50/101/152, ResNeXt-50 32×4d and He et al.'s CIFAR ResNets ([`ResNetConfig`]);
//! - MobileNetV2 ([`MobileNetV2Config`]), RepVGG-A0 ([`RepVggConfig`]), Inception-v3
//!   ([`InceptionV3Config`]) and a plain VGG-style CNN ([`VggConfig`]);
//! - input normalization ([`InputNormConfig`]), Davis & Frank §4.1 initialization ([`init`]),
//!   parameter roles ([`bnlab_norm::param_roles`]), [`FoldNorms`] and a registry by name
//!   ([`build`]).
//!
//! # Example
//!
//! ```
//! use bnlab_models::{ModelOptions, NormSpec, build};
//! use bnlab_norm::{NormConfig, StatUnit};
//! use burn::tensor::{Device, Tensor};
//!
//! let device = Device::flex();
//! // CIFAR ResNet-20 for 1-channel data, GroupNorm(8) everywhere but the stem
//! let norm = NormSpec::new(NormConfig::new(1).with_unit(StatUnit::Group { groups: 8 }))
//!     .with_override("stem.norm", NormConfig::new(1));
//! let net = build("resnet20", &ModelOptions::new(10, 1).with_norm(norm), &device).unwrap();
//! let logits = net.forward(Tensor::zeros([2, 1, 28, 28], &device), None).unwrap();
//! assert_eq!(logits.dims(), [2, 10]);
//! ```

#![warn(missing_docs)]

mod conv_norm;
mod error;
mod fold;
mod frame;
mod inception;
pub mod init;
mod input_norm;
mod mobilenetv2;
mod norms;
mod registry;
mod repvgg;
mod resnet;
pub mod torch;
mod vgg;

#[cfg(test)]
mod testing;

pub use bnlab_kernels::{ConvKernel, conv2d, zero_pad_shortcut};
pub use conv_norm::*;
pub use error::ModelError;
pub use fold::FoldNorms;
pub use frame::{Classifier, ModelOptions};
pub use inception::*;
pub use input_norm::*;
pub use mobilenetv2::*;
pub use norms::NormSpec;
pub use registry::*;
pub use repvgg::*;
pub use resnet::*;
pub use vgg::*;
