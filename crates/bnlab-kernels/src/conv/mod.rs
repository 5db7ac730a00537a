//! Fast 2-D convolution on Flex, over the fixed image blocks of a [`geometry::Geometry`]
//! ([`passes`]), behind a Burn backend extension with a hand-written Autodiff backward
//! ([`extension`], [`autodiff`]):
//! - on AVX-512, Winograd F(2,3) for the 3×3 stride-1 convolutions of many channels, where it
//!   measured faster than the direct kernels ([`winograd`]);
//! - on AVX-512, 16-lane direct kernels for 3×3 convolutions with padding 1 at stride 1 and 2
//!   and any channel count ([`flat`]; the stride-2 input gradient in [`strided_grad`]);
//! - else direct AVX2 kernels for 3×3 stride-1 convolutions of up to 64 × 64 channels
//!   ([`direct`]);
//! - im2col + GEMM for everything else ([`gemm`]).
//!
//! The extension also runs ResNet's option-A shortcut in one pass each way ([`shortcut`]).

mod autodiff;
mod direct;
mod extension;
mod flat;
mod gemm;
mod geometry;
mod passes;
mod shortcut;
mod strided_grad;
#[cfg(target_arch = "x86_64")]
mod winograd;

pub(crate) use extension::FastConv;
pub use extension::{ConvKernel, conv2d};
pub use shortcut::zero_pad_shortcut;

#[cfg(test)]
mod tests;
