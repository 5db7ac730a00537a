//! The [`FastConv`] backend extension (Flex and `Autodiff<Flex>`), [`ConvKernel`] and
//! [`conv2d`], which runs a `burn::nn::conv::Conv2d` through bnlab's kernels for f32 inputs
//! on Flex devices (with or without autodiff); every other backend, and [`ConvKernel::Burn`],
//! takes Burn's own convolution, which stays the reference.

use crate::{f32_values, flex_tensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use super::geometry::Geometry;
use super::passes;
use super::shortcut::ZeroPad;

/// Which convolution kernels a network runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvKernel {
    /// bnlab's im2col + GEMM kernels where the backend is Flex and the input f32; Burn's
    /// convolution elsewhere.
    #[default]
    #[serde(alias = "Auto")]
    Auto,
    /// Burn's own convolution everywhere (the reference).
    #[serde(alias = "Burn")]
    Burn,
}

/// Fast convolution kernels, implemented for Flex and `Autodiff<Flex>`.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FastConv: Backend {
    /// ResNet's option-A shortcut of x (a strided 1×1 identity convolution with zero channels
    /// added, [`ZeroPad`]); differentiable in x.
    fn fast_zero_pad_shortcut(x: FloatTensor<Self>, shape: ZeroPad) -> FloatTensor<Self>;

    /// conv(x, weight) without bias for x [N, C_in, H, W] and weight [C_out, C_in/groups, kh,
    /// kw] of `geometry`; differentiable in x and weight.
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self>;
}

impl FastConv for Flex {
    fn fast_zero_pad_shortcut(x: FloatTensor<Self>, shape: ZeroPad) -> FloatTensor<Self> {
        flex_tensor(shape.forward(&f32_values(&x)), shape.output_shape())
    }

    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self> {
        let y = passes::forward(&geometry, &f32_values(&x), &f32_values(&weight));
        flex_tensor(y, geometry.output_shape())
    }
}

/// Whether `x` is f32 on a Flex device, with or without autodiff.
pub(crate) fn on_flex_f32(x: &Tensor<4>) -> bool {
    crate::is_flex(&x.device()) && x.dtype() == DType::F32
}

/// `conv.forward(x)`, through bnlab's kernels where `kernel` and the backend allow.
///
/// # Shapes
/// - input `[N, C_in, H, W]`, output `[N, C_out, H', W']`.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>, kernel: ConvKernel) -> Tensor<4> {
    let fast = (kernel == ConvKernel::Auto && on_flex_f32(&x))
        .then(|| Geometry::of_conv(conv, x.dims()))
        .flatten();
    let Some(geometry) = fast else {
        return burn_conv2d(conv, x);
    };
    let out = <Dispatch as FastConv>::fast_conv2d(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        geometry,
    );
    let y = Tensor::<4>::from_dispatch(out);
    match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, geometry.cout, 1, 1]),
        None => y,
    }
}

/// Burn's convolution, with `conv`'s weights in `x`'s dtype: in mixed precision (f16 or bf16
/// activations) the f32 parameters are cast for the product, and their gradients flow back
/// through the cast in f32.
fn burn_conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let dtype = x.dtype();
    let weight = conv.weight.val();
    if weight.dtype() == dtype {
        return conv.forward(x);
    }
    let float = FloatDType::from(dtype);
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        // (no network of bnlab pads "same"; it computes in f32)
        PaddingConfig2d::Same => return conv.forward(x.cast(FloatDType::F32)).cast(float),
    };
    let options = ConvOptions::new_with_padding(
        conv.stride,
        [(top, bottom), (left, right)],
        conv.dilation,
        conv.groups,
    );
    burn::tensor::module::conv2d(
        x,
        weight.cast(float),
        conv.bias.as_ref().map(|b| b.val().cast(float)),
        options,
    )
}
