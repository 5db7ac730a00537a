//! bnlab-data: readers of the real dataset formats (CIFAR binary, SVHN `.mat`, IDX, image
//! folders), dataset discovery and checksum-verified download, class-wise stratified splits,
//! deterministic augmentation, corruptions, batch construction policies (Wu & Johnson §5–6)
//! and a multithreaded loader that yields Burn tensors.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use bnlab_data::{Augment, Batching, Holdout, Loader, LoaderConfig, Source, stratified_split, synthetic};
//!
//! let set = synthetic(10, 20, [1, 28, 28], 0.3, 7).unwrap();
//! let (train, val) = stratified_split(&set.labels(), 10, Holdout::Fraction(0.1), 7).unwrap();
//! assert_eq!(val.len(), 20);
//! let loader = Loader::new(Arc::new(set), LoaderConfig::new(Batching::shuffle(32, true), Augment::Flip, 7)).unwrap();
//! let batches: Vec<_> = loader.epoch(&train, None, 0).unwrap().collect::<Result<_, _>>().unwrap();
//! assert_eq!(batches.len(), 180 / 32);
//! assert_eq!(batches[0].shape, [32, 1, 28, 28]);
//! ```

#![warn(missing_docs)]

mod atomic;
mod augment;
mod batching;
mod catalog;
mod corrupt;
mod digest;
mod domains;
mod error;
mod fetch;
mod formats;
mod image_set;
mod loader;
mod rng;
mod scaling;
mod split;
mod subset;
mod synthetic;

pub use atomic::{temp_path, write_atomic};
pub use augment::*;
pub use batching::*;
pub use catalog::*;
pub use corrupt::*;
pub use digest::FileDigest;
pub use domains::{Domains, Transform, Transformed};
pub use error::DataError;
pub use fetch::*;
pub use formats::*;
pub use image_set::*;
pub use loader::*;
pub use rng::*;
pub use scaling::*;
pub use split::*;
pub use subset::*;
pub use synthetic::*;
