//! The Inception-v3 blocks (torchvision's InceptionA–E and the auxiliary classifier) and the
//! conv chains and pools they are made of.

use crate::init::{ConvShape, linear};
use crate::norms::Builder;
use crate::{ConvNorm, ModelError};
use burn::module::Module;
use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::Tensor;

/// A chain of conv–norm–ReLU layers, built from (path suffix, shape) pairs.
pub(super) fn chain(
    b: &Builder,
    path: &str,
    shapes: &[ConvShape],
) -> Result<Vec<ConvNorm>, ModelError> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| ConvNorm::new(b, &format!("{path}.{i}"), *s))
        .collect()
}

pub(super) fn run_chain(
    chain: &[ConvNorm],
    x: Tensor<4>,
    d: Option<&[usize]>,
) -> Result<Tensor<4>, ModelError> {
    chain.iter().try_fold(x, |x, c| c.forward_relu(x, d))
}

pub(super) fn sq(cin: usize, cout: usize, k: usize) -> ConvShape {
    ConvShape::square(cin, cout, k)
}

pub(super) fn max_pool_3s2(x: Tensor<4>) -> Tensor<4> {
    MaxPool2dConfig::new([3, 3])
        .with_strides([2, 2])
        .init()
        .forward(x)
}

pub(super) fn avg_pool_3s1(x: Tensor<4>) -> Tensor<4> {
    AvgPool2dConfig::new([3, 3])
        .with_strides([1, 1])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init()
        .forward(x)
}

/// Mixed_5b–5d: 1×1, 5×5, double 3×3 and pooled branches.
#[derive(Module, Debug)]
pub struct InceptionA {
    /// 1×1 → 64.
    pub branch1x1: ConvNorm,
    /// 1×1 → 48, 5×5 → 64.
    pub branch5x5: Vec<ConvNorm>,
    /// 1×1 → 64, 3×3 → 96, 3×3 → 96.
    pub branch3x3dbl: Vec<ConvNorm>,
    /// 3×3 average pool, 1×1 → pool features.
    pub branch_pool: ConvNorm,
}

impl InceptionA {
    pub(super) fn new(b: &Builder, p: &str, cin: usize, pool: usize) -> Result<Self, ModelError> {
        Ok(Self {
            branch1x1: ConvNorm::new(b, &format!("{p}.branch1x1"), sq(cin, 64, 1))?,
            branch5x5: chain(
                b,
                &format!("{p}.branch5x5"),
                &[sq(cin, 48, 1), sq(48, 64, 5)],
            )?,
            branch3x3dbl: chain(
                b,
                &format!("{p}.branch3x3dbl"),
                &[sq(cin, 64, 1), sq(64, 96, 3), sq(96, 96, 3)],
            )?,
            branch_pool: ConvNorm::new(b, &format!("{p}.branch_pool"), sq(cin, pool, 1))?,
        })
    }

    pub(super) fn forward(
        &self,
        x: Tensor<4>,
        d: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        Ok(Tensor::cat(
            vec![
                self.branch1x1.forward_relu(x.clone(), d)?,
                run_chain(&self.branch5x5, x.clone(), d)?,
                run_chain(&self.branch3x3dbl, x.clone(), d)?,
                self.branch_pool.forward_relu(avg_pool_3s1(x), d)?,
            ],
            1,
        ))
    }
}

/// Mixed_6a: grid reduction 35 → 17.
#[derive(Module, Debug)]
pub struct InceptionB {
    /// 3×3 stride 2 → 384.
    pub branch3x3: ConvNorm,
    /// 1×1 → 64, 3×3 → 96, 3×3 stride 2 → 96.
    pub branch3x3dbl: Vec<ConvNorm>,
}

impl InceptionB {
    pub(super) fn new(b: &Builder, p: &str, cin: usize) -> Result<Self, ModelError> {
        Ok(Self {
            branch3x3: ConvNorm::new(
                b,
                &format!("{p}.branch3x3"),
                sq(cin, 384, 3).stride(2).pad(0),
            )?,
            branch3x3dbl: chain(
                b,
                &format!("{p}.branch3x3dbl"),
                &[
                    sq(cin, 64, 1),
                    sq(64, 96, 3),
                    sq(96, 96, 3).stride(2).pad(0),
                ],
            )?,
        })
    }

    pub(super) fn forward(
        &self,
        x: Tensor<4>,
        d: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        Ok(Tensor::cat(
            vec![
                self.branch3x3.forward_relu(x.clone(), d)?,
                run_chain(&self.branch3x3dbl, x.clone(), d)?,
                max_pool_3s2(x),
            ],
            1,
        ))
    }
}

/// Mixed_6b–6e: factorized 7×7 branches.
#[derive(Module, Debug)]
pub struct InceptionC {
    /// 1×1 → 192.
    pub branch1x1: ConvNorm,
    /// 1×1 → c7, 1×7 → c7, 7×1 → 192.
    pub branch7x7: Vec<ConvNorm>,
    /// 1×1 → c7, 7×1, 1×7, 7×1 → c7, 1×7 → 192.
    pub branch7x7dbl: Vec<ConvNorm>,
    /// 3×3 average pool, 1×1 → 192.
    pub branch_pool: ConvNorm,
}

impl InceptionC {
    pub(super) fn new(b: &Builder, p: &str, cin: usize, c7: usize) -> Result<Self, ModelError> {
        let r = ConvShape::rect;
        Ok(Self {
            branch1x1: ConvNorm::new(b, &format!("{p}.branch1x1"), sq(cin, 192, 1))?,
            branch7x7: chain(
                b,
                &format!("{p}.branch7x7"),
                &[sq(cin, c7, 1), r(c7, c7, 1, 7), r(c7, 192, 7, 1)],
            )?,
            branch7x7dbl: chain(
                b,
                &format!("{p}.branch7x7dbl"),
                &[
                    sq(cin, c7, 1),
                    r(c7, c7, 7, 1),
                    r(c7, c7, 1, 7),
                    r(c7, c7, 7, 1),
                    r(c7, 192, 1, 7),
                ],
            )?,
            branch_pool: ConvNorm::new(b, &format!("{p}.branch_pool"), sq(cin, 192, 1))?,
        })
    }

    pub(super) fn forward(
        &self,
        x: Tensor<4>,
        d: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        Ok(Tensor::cat(
            vec![
                self.branch1x1.forward_relu(x.clone(), d)?,
                run_chain(&self.branch7x7, x.clone(), d)?,
                run_chain(&self.branch7x7dbl, x.clone(), d)?,
                self.branch_pool.forward_relu(avg_pool_3s1(x), d)?,
            ],
            1,
        ))
    }
}

/// Mixed_7a: grid reduction 17 → 8.
#[derive(Module, Debug)]
pub struct InceptionD {
    /// 1×1 → 192, 3×3 stride 2 → 320.
    pub branch3x3: Vec<ConvNorm>,
    /// 1×1 → 192, 1×7, 7×1, 3×3 stride 2 → 192.
    pub branch7x7x3: Vec<ConvNorm>,
}

impl InceptionD {
    pub(super) fn new(b: &Builder, p: &str, cin: usize) -> Result<Self, ModelError> {
        let r = ConvShape::rect;
        Ok(Self {
            branch3x3: chain(
                b,
                &format!("{p}.branch3x3"),
                &[sq(cin, 192, 1), sq(192, 320, 3).stride(2).pad(0)],
            )?,
            branch7x7x3: chain(
                b,
                &format!("{p}.branch7x7x3"),
                &[
                    sq(cin, 192, 1),
                    r(192, 192, 1, 7),
                    r(192, 192, 7, 1),
                    sq(192, 192, 3).stride(2).pad(0),
                ],
            )?,
        })
    }

    pub(super) fn forward(
        &self,
        x: Tensor<4>,
        d: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        Ok(Tensor::cat(
            vec![
                run_chain(&self.branch3x3, x.clone(), d)?,
                run_chain(&self.branch7x7x3, x.clone(), d)?,
                max_pool_3s2(x),
            ],
            1,
        ))
    }
}

/// Mixed_7b–7c: expanded filter banks with split 1×3 / 3×1 outputs.
#[derive(Module, Debug)]
pub struct InceptionE {
    /// 1×1 → 320.
    pub branch1x1: ConvNorm,
    /// 1×1 → 384.
    pub branch3x3_1: ConvNorm,
    /// 1×3 → 384 on `branch3x3_1`.
    pub branch3x3_2a: ConvNorm,
    /// 3×1 → 384 on `branch3x3_1`.
    pub branch3x3_2b: ConvNorm,
    /// 1×1 → 448, 3×3 → 384.
    pub branch3x3dbl: Vec<ConvNorm>,
    /// 1×3 → 384 on `branch3x3dbl`.
    pub branch3x3dbl_3a: ConvNorm,
    /// 3×1 → 384 on `branch3x3dbl`.
    pub branch3x3dbl_3b: ConvNorm,
    /// 3×3 average pool, 1×1 → 192.
    pub branch_pool: ConvNorm,
}

impl InceptionE {
    pub(super) fn new(b: &Builder, p: &str, cin: usize) -> Result<Self, ModelError> {
        let r = ConvShape::rect;
        let at = |s: &str| format!("{p}.{s}");
        Ok(Self {
            branch1x1: ConvNorm::new(b, &at("branch1x1"), sq(cin, 320, 1))?,
            branch3x3_1: ConvNorm::new(b, &at("branch3x3_1"), sq(cin, 384, 1))?,
            branch3x3_2a: ConvNorm::new(b, &at("branch3x3_2a"), r(384, 384, 1, 3))?,
            branch3x3_2b: ConvNorm::new(b, &at("branch3x3_2b"), r(384, 384, 3, 1))?,
            branch3x3dbl: chain(b, &at("branch3x3dbl"), &[sq(cin, 448, 1), sq(448, 384, 3)])?,
            branch3x3dbl_3a: ConvNorm::new(b, &at("branch3x3dbl_3a"), r(384, 384, 1, 3))?,
            branch3x3dbl_3b: ConvNorm::new(b, &at("branch3x3dbl_3b"), r(384, 384, 3, 1))?,
            branch_pool: ConvNorm::new(b, &at("branch_pool"), sq(cin, 192, 1))?,
        })
    }

    pub(super) fn forward(
        &self,
        x: Tensor<4>,
        d: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        let b3 = self.branch3x3_1.forward_relu(x.clone(), d)?;
        let b3 = Tensor::cat(
            vec![
                self.branch3x3_2a.forward_relu(b3.clone(), d)?,
                self.branch3x3_2b.forward_relu(b3, d)?,
            ],
            1,
        );
        let dbl = run_chain(&self.branch3x3dbl, x.clone(), d)?;
        let dbl = Tensor::cat(
            vec![
                self.branch3x3dbl_3a.forward_relu(dbl.clone(), d)?,
                self.branch3x3dbl_3b.forward_relu(dbl, d)?,
            ],
            1,
        );
        Ok(Tensor::cat(
            vec![
                self.branch1x1.forward_relu(x.clone(), d)?,
                b3,
                dbl,
                self.branch_pool.forward_relu(avg_pool_3s1(x), d)?,
            ],
            1,
        ))
    }
}

/// The auxiliary classifier on Mixed_6e (17×17×768).
#[derive(Module, Debug)]
pub struct InceptionAux {
    /// 5×5 stride-3 average pool, then 1×1 → 128.
    pub conv0: ConvNorm,
    /// 5×5 → 768.
    pub conv1: ConvNorm,
    /// 768 → classes.
    pub fc: Linear,
}

impl InceptionAux {
    pub(super) fn new(b: &Builder, cin: usize, classes: usize) -> Result<Self, ModelError> {
        Ok(Self {
            conv0: ConvNorm::new(b, "aux.conv0", sq(cin, 128, 1))?,
            conv1: ConvNorm::new(b, "aux.conv1", sq(128, 768, 5).pad(0))?,
            fc: linear(768, classes, b.device),
        })
    }

    pub(super) fn forward(
        &self,
        x: Tensor<4>,
        d: Option<&[usize]>,
    ) -> Result<Tensor<2>, ModelError> {
        let x = AvgPool2dConfig::new([5, 5])
            .with_strides([3, 3])
            .init()
            .forward(x);
        let x = self.conv1.forward_relu(self.conv0.forward_relu(x, d)?, d)?;
        let x = bnlab_norm::full_precision(x);
        let [n, c, _, _] = x.dims();
        Ok(self.fc.forward(x.mean_dim(3).mean_dim(2).reshape([n, c])))
    }
}
