//! bnlab-kernels: bnlab's CPU kernels for Burn's pure-Rust backend, Flex, and the Flex tensor
//! helpers they and the fused normalization of bnlab-norm share.
//!
//! - [`conv2d`]: fast 2-D convolution behind a Burn backend extension, with a hand-written
//!   Autodiff backward ([`ConvKernel`] chooses it or Burn's own convolution);
//! - [`is_flex`], [`f32_values`], [`flex_tensor`]: where the kernels run, and moving values in
//!   and out of Flex tensors; [`filled`]: an output written chunk by chunk in parallel.

#![warn(missing_docs)]

mod conv;
mod filled;
mod flex;

pub use conv::{ConvKernel, conv2d, zero_pad_shortcut};
pub use filled::filled;
pub use flex::{f32_values, flex_tensor, is_flex};
