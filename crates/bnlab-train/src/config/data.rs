//! `[data]`: where the images come from and how they are prepared.

use std::path::PathBuf;

use bnlab_data::Augment;
use serde::{Deserialize, Serialize};

/// Where the images come from and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A catalogue name (`cifar10`, `fashion-mnist-subset`, …), `synthetic`, or
    /// `image-folder` (`root/train/<class>/*.jpg|png` and `root/test/<class>/…`: CUB-200,
    /// Stanford Cars, Caltech-256, ImageNet).
    pub dataset: String,
    /// A directory to read the dataset from, instead of the search order (required for
    /// `image-folder`).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Side of the square every image-folder image is resized to before augmentation
    /// (Davis & Frank §4.2: 256, then a crop of 224).
    #[serde(
        default = "default_image_size",
        skip_serializing_if = "is_default_image_size"
    )]
    pub image_size: usize,
    /// A seeded class-balanced subset of this many training images per class (validation
    /// images included), drawn with `split_seed`; default: every training image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_per_class: Option<usize>,
    /// The share of each training class held out for validation (Davis & Frank: 0.1).
    #[serde(default = "default_validation")]
    pub validation: f64,
    /// Seed of the validation split (the same split for every run of a sweep).
    #[serde(default)]
    pub split_seed: u64,
    /// Training augmentation.
    #[serde(default = "default_augment")]
    pub augment: AugmentName,
    /// Padding of `pad-crop-flip`.
    #[serde(default = "default_pad")]
    pub pad: usize,
    /// Crop side of `crop-flip` (evaluation then uses a centre crop).
    #[serde(default)]
    pub crop: Option<usize>,
    /// Pixel scaling; default `raw` with input normalization, else `unit`.
    #[serde(default)]
    pub scaling: Option<ScalingName>,
    /// Loader threads.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// The synthetic data set, for `dataset = "synthetic"`.
    #[serde(default)]
    pub synthetic: Option<SyntheticConfig>,
    /// Training batches built with an artificial class pattern (Wu & Johnson §6.1, Fig. 8):
    /// every forward batch holds `classes_per_batch` classes × `per_class` examples, grouped
    /// by class, so each worker's shard of it holds few classes. Default: uniform shuffling.
    #[serde(default)]
    pub class_pattern: Option<ClassPattern>,
}

/// `[data.class_pattern]`: k classes × m examples per training batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPattern {
    /// k.
    pub classes_per_batch: usize,
    /// m.
    pub per_class: usize,
}

fn default_image_size() -> usize {
    256
}
fn is_default_image_size(s: &usize) -> bool {
    *s == default_image_size()
}
fn default_validation() -> f64 {
    0.1
}
fn default_augment() -> AugmentName {
    AugmentName::None
}
fn default_pad() -> usize {
    4
}
fn default_threads() -> usize {
    2
}

/// Training augmentations by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentName {
    /// None.
    None,
    /// Random horizontal flips (Davis & Frank's CIFAR recipe).
    Flip,
    /// Pad, random crop, flip (the usual CIFAR recipe).
    PadCropFlip,
    /// Random crop of `crop`, flip (resize 256 → crop 224).
    CropFlip,
}

/// Pixel scalings by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScalingName {
    /// 0–255 as they are.
    Raw,
    /// x / 255.
    Unit,
    /// (x − 128) / 128.
    Fixed,
}

impl DataConfig {
    /// The training augmentation.
    pub fn train_augment(&self) -> Augment {
        match (self.augment, self.crop) {
            (AugmentName::None, _) => Augment::None,
            (AugmentName::Flip, _) => Augment::Flip,
            (AugmentName::PadCropFlip, _) => Augment::PadCropFlip { pad: self.pad },
            (AugmentName::CropFlip, crop) => Augment::CropFlip {
                crop: crop.unwrap_or(224),
            },
        }
    }

    /// The evaluation transform: a centre crop after `crop-flip` training, else none.
    pub fn eval_augment(&self) -> Augment {
        match self.augment {
            AugmentName::CropFlip => Augment::CenterCrop {
                crop: self.crop.unwrap_or(224),
            },
            _ => Augment::None,
        }
    }
}

/// A synthetic class-conditional data set ([`bnlab_data::synthetic`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Classes.
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// Training images per class.
    #[serde(default = "default_per_class")]
    pub train_per_class: usize,
    /// Test images per class.
    #[serde(default = "default_test_per_class")]
    pub test_per_class: usize,
    /// (channels, height, width).
    #[serde(default = "default_shape")]
    pub shape: [usize; 3],
    /// 0 (trivial) to 1 (pure noise).
    #[serde(default = "default_difficulty")]
    pub difficulty: f64,
}

fn default_classes() -> usize {
    4
}
fn default_per_class() -> usize {
    64
}
fn default_test_per_class() -> usize {
    16
}
fn default_shape() -> [usize; 3] {
    [1, 8, 8]
}
fn default_difficulty() -> f64 {
    0.5
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            classes: default_classes(),
            train_per_class: default_per_class(),
            test_per_class: default_test_per_class(),
            shape: default_shape(),
            difficulty: default_difficulty(),
        }
    }
}
