//! Fast 2-D convolution on Flex, behind a Burn backend extension ([`FastConv`]) with a
//! hand-written Autodiff backward: direct AVX2 kernels for 3×3 stride-1 convolutions of up to
//! 64 × 64 channels (`direct`), im2col + GEMM for the forward, the input gradient and the
//! weight gradient of everything else (`kernels`).
//!
//! [`conv2d`] runs a `burn::nn::conv::Conv2d` through it for f32 inputs on Flex devices (with
//! or without autodiff); every other backend, and [`ConvKernel::Burn`], takes Burn's own
//! convolution, which stays the reference.

mod autodiff;
mod direct;
mod kernels;

use bnlab_norm::{f32_values, flex_tensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

pub(crate) use kernels::Geometry;

/// Which convolution kernels a network runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvKernel {
    /// bnlab's im2col + GEMM kernels where the backend is Flex and the input f32; Burn's
    /// convolution elsewhere.
    #[default]
    Auto,
    /// Burn's own convolution everywhere (the reference).
    Burn,
}

/// Fast convolution kernels, implemented for Flex and `Autodiff<Flex>`.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FastConv: Backend {
    /// conv(x, weight) without bias for x [N, C_in, H, W] and weight [C_out, C_in/groups, kh,
    /// kw] of `geometry`; differentiable in x and weight.
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self>;
}

impl Geometry {
    /// Output shape [N, C_out, H', W'].
    fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.cout, self.out[0], self.out[1]]
    }
}

impl FastConv for Flex {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self> {
        let y = kernels::forward(&geometry, &f32_values(&x), &f32_values(&weight));
        flex_tensor(y, geometry.output_shape())
    }
}

/// Whether `x` is f32 on a Flex device, with or without autodiff.
fn on_flex_f32(x: &Tensor<4>) -> bool {
    bnlab_norm::is_flex(&x.device()) && x.dtype() == DType::F32
}

/// The geometry of `conv` applied to an input of shape `dims`, when the fast kernels can run
/// it: channels and groups consistent, explicit or no padding, a non-empty output.
fn geometry(conv: &Conv2d, dims: [usize; 4]) -> Option<Geometry> {
    let [n, cin, h, w] = dims;
    let [cout, cg, kh, kw] = conv.weight.dims();
    let groups = conv.groups;
    // "same" padding takes Burn's path
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Same => return None,
    };
    let out = |len: usize, pad: usize, k: usize, s: usize, d: usize| {
        let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
        (len + pad).checked_sub(span).map(|v| v / s + 1)
    };
    let [sh, sw] = conv.stride;
    let [dh, dw] = conv.dilation;
    let consistent = groups > 0
        && sh > 0
        && sw > 0
        && cin == cg * groups
        && cout.is_multiple_of(groups)
        && [kh, kw] == conv.kernel_size;
    if !consistent {
        return None;
    }
    let geometry = Geometry {
        n,
        cin,
        size: [h, w],
        cout,
        kernel: [kh, kw],
        stride: [sh, sw],
        pad: [top, left],
        out: [
            out(h, top + bottom, kh, sh, dh)?,
            out(w, left + right, kw, sw, dw)?,
        ],
        dilation: [dh, dw],
        groups,
    };
    (geometry.output_len() > 0 && geometry.weight_len() > 0).then_some(geometry)
}

/// `conv.forward(x)`, through bnlab's kernels where `kernel` and the backend allow.
///
/// # Shapes
/// - input `[N, C_in, H, W]`, output `[N, C_out, H', W']`.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>, kernel: ConvKernel) -> Tensor<4> {
    let fast = (kernel == ConvKernel::Auto && on_flex_f32(&x))
        .then(|| geometry(conv, x.dims()))
        .flatten();
    let Some(geometry) = fast else {
        return conv.forward(x);
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

#[cfg(test)]
mod tests;
