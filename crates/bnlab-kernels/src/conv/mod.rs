//! Fast 2-D convolution on Flex: direct AVX2 kernels for 3×3 stride-1 convolutions of up to
//! 64 × 64 channels ([`direct`]), on AVX-512's 16 lanes where the planes allow ([`flat`]),
//! im2col + GEMM for everything else ([`gemm`]), all over the
//! fixed image blocks of a [`geometry::Geometry`] ([`passes`]), behind a Burn backend extension
//! with a hand-written Autodiff backward ([`extension`], [`autodiff`]).

mod autodiff;
mod direct;
mod extension;
mod flat;
mod gemm;
mod geometry;
mod passes;

pub(crate) use extension::FastConv;
pub use extension::{ConvKernel, conv2d};

#[cfg(test)]
mod tests;
