//! bnlab-norm: one normalization layer for Burn in which every batch, statistics and affine
//! choice of the BatchNorm literature is an explicit setting.
//!
//! Each question has its folder or file:
//! - what the batch is (`batch/`): [`StatUnit`], [`BatchPolicy`] (ghost batches), [`DomainConfig`],
//!   [`StatsReducer`] and [`SyncReducer`] over a [`Collective`] (synced workers: SyncBN, over
//!   any transport of `bnlab-collective`, threads, MPI processes or accelerators, or one of
//!   your own);
//!   and [`check_batch`], the one rule of how a batch splits, which specs call too;
//! - where statistics come from (`stats/`): [`NormMode`], [`StatsSource`], [`RunningStats`],
//!   [`PopulationEstimator`]; tree-wide operations (`tree.rs`) set them on a whole model;
//! - the affine tail (`affine.rs`): [`Affine`];
//! - the settings by name (`settings.rs`): [`NormSettings`], as specs write them;
//! - where it runs (`device.rs`): [`DeviceName`], a device by name (`flex`, `vulkan[:N]`,
//!   `vulkan-cpu`, `cuda[:N]`);
//! - mixed precision (`precision.rs`): [`Precision`], half-precision activations around f32
//!   statistics and parameters;
//! - how it runs: [`Kernel`] (fused kernels on Flex, behind a Burn backend extension with a
//!   hand-written backward; Burn tensor ops everywhere else and as the reference).
//!
//! # Example
//!
//! ```
//! use bnlab_norm::{Affine, BatchPolicy, GhostSplit, Norm, NormConfig, NormError, NormMode, set_norm_mode};
//! use burn::module::Module;
//! use burn::nn::conv::{Conv2d, Conv2dConfig};
//! use burn::tensor::{Device, Tensor};
//!
//! #[derive(Module, Debug)]
//! struct Block { conv: Conv2d, norm: Norm }
//!
//! impl Block {
//!     fn new(device: &Device) -> Result<Self, NormError> {
//!         // Ghost BN of 32, strided split, γ starting at 0.1 (Davis & Frank)
//!         let norm = NormConfig::new(64)
//!             .with_batch(BatchPolicy::ghost(32, GhostSplit::Strided))
//!             .with_affine(Affine::standard(0.1));
//!         Ok(Self { conv: Conv2dConfig::new([3, 64], [3, 3]).init(device), norm: norm.init(device)? })
//!     }
//!     fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>, NormError> {
//!         // relu(norm(conv(x))); on Flex the ReLU runs inside the normalization's passes
//!         self.norm.forward_relu(self.conv.forward(x))
//!     }
//! }
//!
//! # fn main() -> Result<(), NormError> {
//! let device = Device::flex();
//! let block = Block::new(&device)?;
//! let y = block.forward(Tensor::zeros([64, 3, 8, 8], &device))?;
//! assert_eq!(y.dims(), [64, 64, 6, 6]);
//! // the mode is explicit and set on every Norm of a model at once
//! let block = set_norm_mode(block, NormMode::EVAL);
//! assert!(block.forward(Tensor::zeros([1, 3, 8, 8], &device)).is_ok());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod affine;
mod batch;
mod config;
mod device;
mod error;
mod fold;
mod fused;
mod layer;
mod precision;
mod roles;
mod settings;
mod state;
mod stats;
mod tensors;
mod tree;

pub use affine::*;
pub use batch::*;
pub use bnlab_collective::{Collective, CollectiveError};
pub use config::*;
pub use device::{DEVICE_NAMES, DeviceName};
pub use error::*;
pub use fused::is_cube;
pub use layer::*;
pub use precision::{Precision, full_precision, is_half};
pub use roles::*;
pub use settings::*;
pub use state::{NormState, Outliers};
pub use stats::*;
pub use tensors::host_reads;
pub use tree::*;
