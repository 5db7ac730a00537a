//! [`ConvNorm`]: a bias-free convolution followed by a normalization site.

use bnlab_norm::Norm;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::error::at_site;
use crate::init::ConvShape;
use crate::norms::Builder;
use crate::{ConvKernel, FoldNorms, ModelError, conv2d};

/// A convolution and the normalization layer after it (none once folded).
#[derive(Module, Debug)]
pub struct ConvNorm {
    /// The convolution (bias-free until folded).
    pub conv: Conv2d,
    /// The normalization layer; `None` after [`FoldNorms::fold_norms`].
    pub norm: Option<Norm>,
    /// The convolution kernels.
    #[module(skip)]
    pub kernel: ConvKernel,
    /// The layer's path, for error messages.
    #[module(skip)]
    pub site: String,
}

impl ConvNorm {
    /// Builds the convolution `shape` and the site `{path}.norm`.
    pub(crate) fn new(b: &Builder, path: &str, shape: ConvShape) -> Result<Self, ModelError> {
        Self::with_norm(b, path, shape, |c| c)
    }

    /// As [`ConvNorm::new`], with `adjust` applied to the network's default at this site.
    pub(crate) fn with_norm(
        b: &Builder,
        path: &str,
        shape: ConvShape,
        adjust: impl FnOnce(bnlab_norm::NormConfig) -> bnlab_norm::NormConfig,
    ) -> Result<Self, ModelError> {
        let site = format!("{path}.norm");
        Ok(Self {
            conv: shape.init(b.device),
            norm: Some(b.norm_with(&site, shape.cout, adjust)?),
            kernel: b.conv_kernel,
            site,
        })
    }

    /// Convolution then normalization; `domains` are the examples' domain ids, if any.
    ///
    /// # Shapes
    /// - input `[N, C_in, H, W]`, output `[N, C_out, H', W']`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        let y = conv2d(&self.conv, x, self.kernel);
        match &self.norm {
            Some(norm) => norm
                .forward_domains(y, domains)
                .map_err(at_site(&self.site)),
            None => Ok(y),
        }
    }

    /// [`ConvNorm::forward`] followed by a ReLU (fused into the normalization where it can be:
    /// [`Norm::forward_relu_domains`]).
    pub fn forward_relu(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        let y = conv2d(&self.conv, x, self.kernel);
        match &self.norm {
            Some(norm) => norm
                .forward_relu_domains(y, domains)
                .map_err(at_site(&self.site)),
            None => Ok(burn::tensor::activation::relu(y)),
        }
    }

    /// The end of a residual block: relu([`ConvNorm::forward`] + `residual`), fused into the
    /// normalization where it can be ([`Norm::forward_add_relu_domains`]).
    pub fn forward_add_relu(
        &self,
        x: Tensor<4>,
        residual: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        let y = conv2d(&self.conv, x, self.kernel);
        match &self.norm {
            Some(norm) => norm
                .forward_add_relu_domains(y, residual, domains)
                .map_err(at_site(&self.site)),
            None => Ok(burn::tensor::activation::relu(y + residual)),
        }
    }
}

impl FoldNorms for ConvNorm {
    fn fold_norms(self) -> Result<Self, ModelError> {
        match &self.norm {
            None => Ok(self),
            Some(norm) => Ok(Self {
                conv: norm
                    .fold_into_conv(&self.conv)
                    .map_err(at_site(&self.site))?,
                norm: None,
                kernel: self.kernel,
                site: self.site,
            }),
        }
    }
}
