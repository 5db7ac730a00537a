//! `[data]`: where the images come from and how they are prepared.

use std::path::PathBuf;

use bnlab_data::{Augment, BatchOrder, Transform};
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
    /// Pixel scaling (`raw`, `unit`, `fixed`, `imagenet`); default `raw` with input
    /// normalization, else `unit`.
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
    /// How training batches are built: `shuffle`, `class-pattern` (the default with
    /// `[data.class_pattern]`), `class-distinct-ghosts` (the pattern interleaved so every
    /// ghost batch holds distinct classes: Fig. 8's remedy), `per-domain` (each batch from
    /// one domain) or `mixed-domain` (domains mixed at random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderName>,
    /// The data set as parts with a domain id each (Wu & Johnson §5.2): a part is the data
    /// set itself, another data set, or either transformed (an inversion, a colour change, a
    /// corruption at a severity); the id of a part is its position. Default: one domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainPart>,
    /// The domains whose images train (and validate) the model, by name; default all.
    /// Evaluation reads every domain, pooled and one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_domains: Option<Vec<String>>,
}

/// Batch orders by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderName {
    /// Uniform random shuffling.
    Shuffle,
    /// `[data.class_pattern]`: k classes × m examples, grouped by class.
    ClassPattern,
    /// The class pattern interleaved so every ghost batch holds distinct classes.
    ClassDistinctGhosts,
    /// Each batch from one domain.
    PerDomain,
    /// Domains mixed at random.
    MixedDomain,
}

/// One domain of the data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainPart {
    /// Its name, in result keys (`population/NAME`) and `train_domains`.
    pub name: String,
    /// Another catalogue data set of the same shape and classes; default `[data].dataset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Where that data set is read from (as `[data].root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// `invert` (255 − x) or `rotate-channels` (a colour change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
    /// A corruption of every image at a severity (after the transform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corruption: Option<Corrupted>,
}

/// A corruption family at a severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corrupted {
    /// The family.
    pub corruption: bnlab_data::CorruptionKind,
    /// Severity 1–5.
    pub severity: u8,
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
    /// torchvision's ImageNet mean and standard deviation per channel (models imported
    /// from PyTorch expect it).
    Imagenet,
}

impl DataConfig {
    /// The order of training batches: as set, else the class pattern when one is given.
    pub fn order(&self) -> OrderName {
        self.order.unwrap_or(if self.class_pattern.is_some() {
            OrderName::ClassPattern
        } else {
            OrderName::Shuffle
        })
    }

    /// The batch order of `order` for a model with ghost batches of `ghost_size`, or why it
    /// cannot be built.
    pub fn batch_order(
        &self,
        order: OrderName,
        ghost_size: Option<usize>,
    ) -> Result<BatchOrder, String> {
        let pattern = || {
            self.class_pattern
                .ok_or_else(|| format!("order {order:?} needs [data.class_pattern]"))
        };
        Ok(match order {
            OrderName::Shuffle => BatchOrder::Shuffle,
            OrderName::ClassPattern => {
                let p = pattern()?;
                BatchOrder::ClassPattern {
                    classes_per_batch: p.classes_per_batch,
                    per_class: p.per_class,
                }
            }
            OrderName::ClassDistinctGhosts => {
                let p = pattern()?;
                BatchOrder::ClassDistinctGhosts {
                    classes_per_batch: p.classes_per_batch,
                    per_class: p.per_class,
                    ghost_size: ghost_size
                        .ok_or("class-distinct ghosts need model.norm.ghost_size")?,
                }
            }
            OrderName::PerDomain => BatchOrder::PerDomain,
            OrderName::MixedDomain => BatchOrder::MixedDomains,
        })
    }

    /// The domain names, in id order (one unnamed domain without `domains`).
    pub fn domain_names(&self) -> Vec<String> {
        self.domains.iter().map(|d| d.name.clone()).collect()
    }

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
