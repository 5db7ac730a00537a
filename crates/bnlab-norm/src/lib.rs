//! bnlab-norm: one normalization layer for Burn in which every batch, statistics and affine
//! choice of the BatchNorm literature is an explicit setting.
//!
//! - what the batch is: [`StatUnit`], [`BatchPolicy`] (ghost batches), [`DomainConfig`],
//!   [`StatsReducer`] and [`SyncReducer`] over a [`Collective`] (synced workers: SyncBN, on
//!   threads, MPI processes (`MpiGroup`, feature `mpi`), [`DeviceGroup`] accelerators or a
//!   transport of your own);
//! - where statistics come from: [`NormMode`], [`StatsSource`], [`RunningStats`],
//!   [`PopulationEstimator`];
//! - the affine tail: [`Affine`];
//! - how it runs: [`Kernel`] (fused kernels on Flex, behind a Burn backend extension with a
//!   hand-written backward; Burn tensor ops everywhere else and as the reference).
//!
//! # Example
//!
//! ```
//! use bnlab_norm::{Affine, BatchPolicy, GhostSplit, Norm, NormConfig, NormError, NormMode, set_norm_mode};
//! use burn::module::Module;
//! use burn::nn::conv::{Conv2d, Conv2dConfig};
//! use burn::tensor::{Device, Tensor, activation::relu};
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
//!         Ok(relu(self.norm.forward(self.conv.forward(x))?))
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

mod collective;
mod config;
mod device_group;
mod error;
mod fold;
mod fused;
mod mode;
#[cfg(feature = "mpi")]
mod mpi_group;
mod norm;
mod plan;
mod reducer;
mod roles;
mod state;
mod sync;

pub use collective::*;
pub use config::*;
pub use device_group::{DeviceGroup, gather_by_sum};
pub use error::*;
#[cfg(feature = "vulkan")]
pub use fused::vulkan_gpu;
pub use fused::{f32_values, flex_tensor, is_cube, is_flex};

pub use mode::*;
#[cfg(feature = "mpi")]
pub use mpi_group::MpiGroup;
pub use norm::*;
pub use reducer::*;
pub use roles::*;
pub use state::{NormSite, NormState, Outliers};
pub use sync::*;
