//! Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture"), in torchvision's
//! layout, for 299×299 inputs, with the optional auxiliary classifier on Mixed_6e. Summers &
//! Dinneen §3.3 use it on Caltech-256 as the network without residual paths to the output.

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::ConvKernel;
use crate::fold::fold_fields;
use crate::head::{Classifier, check_input, check_io};
use crate::init::{ConvShape, linear};
use crate::norms::Builder;
use crate::{ConvNorm, InputNorm, InputNormConfig, ModelError, NormSpec};

/// Configuration of [`InceptionV3`].
#[derive(Config, Debug)]
pub struct InceptionV3Config {
    /// Number of classes. Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Input channels. Default: 3.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Build the auxiliary classifier. Default: true (torchvision).
    #[config(default = true)]
    pub aux_logits: bool,
    /// Dropout before the classifier. Default: 0.5 (torchvision).
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Input normalization before the first convolution. Default: none.
    #[config(default = "None")]
    pub input_norm: Option<InputNormConfig>,
    /// The normalization at every site. Default: BatchNorm.
    #[config(default = "NormSpec::default()")]
    pub norm: NormSpec,
    /// The convolution kernels. Default: bnlab's where the backend has them.
    #[config(default = "ConvKernel::Auto")]
    pub conv_kernel: ConvKernel,
}

/// The smallest input Inception-v3 accepts (torchvision's check).
pub const INCEPTION_MIN_INPUT: usize = 75;

/// A chain of conv–norm–ReLU layers, built from (path suffix, shape) pairs.
fn chain(b: &Builder, path: &str, shapes: &[ConvShape]) -> Result<Vec<ConvNorm>, ModelError> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| ConvNorm::new(b, &format!("{path}.{i}"), *s))
        .collect()
}

fn run_chain(
    chain: &[ConvNorm],
    x: Tensor<4>,
    d: Option<&[usize]>,
) -> Result<Tensor<4>, ModelError> {
    chain.iter().try_fold(x, |x, c| c.forward_relu(x, d))
}

fn sq(cin: usize, cout: usize, k: usize) -> ConvShape {
    ConvShape::square(cin, cout, k)
}

fn max_pool_3s2(x: Tensor<4>) -> Tensor<4> {
    MaxPool2dConfig::new([3, 3])
        .with_strides([2, 2])
        .init()
        .forward(x)
}

fn avg_pool_3s1(x: Tensor<4>) -> Tensor<4> {
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
    fn new(b: &Builder, p: &str, cin: usize, pool: usize) -> Result<Self, ModelError> {
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

    fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<4>, ModelError> {
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
    fn new(b: &Builder, p: &str, cin: usize) -> Result<Self, ModelError> {
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

    fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<4>, ModelError> {
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
    fn new(b: &Builder, p: &str, cin: usize, c7: usize) -> Result<Self, ModelError> {
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

    fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<4>, ModelError> {
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
    fn new(b: &Builder, p: &str, cin: usize) -> Result<Self, ModelError> {
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

    fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<4>, ModelError> {
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
    fn new(b: &Builder, p: &str, cin: usize) -> Result<Self, ModelError> {
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

    fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<4>, ModelError> {
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
    fn new(b: &Builder, cin: usize, classes: usize) -> Result<Self, ModelError> {
        Ok(Self {
            conv0: ConvNorm::new(b, "aux.conv0", sq(cin, 128, 1))?,
            conv1: ConvNorm::new(b, "aux.conv1", sq(128, 768, 5).pad(0))?,
            fc: linear(768, classes, b.device),
        })
    }

    fn forward(&self, x: Tensor<4>, d: Option<&[usize]>) -> Result<Tensor<2>, ModelError> {
        let x = AvgPool2dConfig::new([5, 5])
            .with_strides([3, 3])
            .init()
            .forward(x);
        let x = self.conv1.forward_relu(self.conv0.forward_relu(x, d)?, d)?;
        let [n, c, _, _] = x.dims();
        Ok(self.fc.forward(x.mean_dim(3).mean_dim(2).reshape([n, c])))
    }
}

impl InceptionV3Config {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Result<InceptionV3, ModelError> {
        check_io(self.num_classes, self.in_channels)?;
        let b = Builder::new(&self.norm, self.conv_kernel, device);
        let input_norm = self
            .input_norm
            .as_ref()
            .map(|c| c.init(&b, self.in_channels))
            .transpose()?;
        let stem = chain(
            &b,
            "stem",
            &[
                sq(self.in_channels, 32, 3).stride(2).pad(0),
                sq(32, 32, 3).pad(0),
                sq(32, 64, 3),
                sq(64, 80, 1),
                sq(80, 192, 3).pad(0),
            ],
        )?;
        let mixed_5 = vec![
            InceptionA::new(&b, "mixed_5.0", 192, 32)?,
            InceptionA::new(&b, "mixed_5.1", 256, 64)?,
            InceptionA::new(&b, "mixed_5.2", 288, 64)?,
        ];
        let mixed_6a = InceptionB::new(&b, "mixed_6a", 288)?;
        let mixed_6 = vec![
            InceptionC::new(&b, "mixed_6.0", 768, 128)?,
            InceptionC::new(&b, "mixed_6.1", 768, 160)?,
            InceptionC::new(&b, "mixed_6.2", 768, 160)?,
            InceptionC::new(&b, "mixed_6.3", 768, 192)?,
        ];
        let aux = self
            .aux_logits
            .then(|| InceptionAux::new(&b, 768, self.num_classes))
            .transpose()?;
        let mixed_7a = InceptionD::new(&b, "mixed_7a", 768)?;
        let mixed_7 = vec![
            InceptionE::new(&b, "mixed_7.0", 1280)?,
            InceptionE::new(&b, "mixed_7.1", 2048)?,
        ];
        b.finish()?;
        Ok(InceptionV3 {
            input_norm,
            stem,
            mixed_5,
            mixed_6a,
            mixed_6,
            aux,
            mixed_7a,
            mixed_7,
            head: Classifier::new(2048, self.num_classes, self.dropout, device),
            in_channels: self.in_channels,
        })
    }
}

/// Inception-v3 with a [`bnlab_norm::Norm`] at every normalization site.
#[derive(Module, Debug)]
pub struct InceptionV3 {
    /// Optional input normalization.
    pub input_norm: Option<InputNorm>,
    /// Conv2d_1a … Conv2d_4a, with max-pools after the 3rd and 5th.
    pub stem: Vec<ConvNorm>,
    /// Mixed_5b–5d.
    pub mixed_5: Vec<InceptionA>,
    /// Mixed_6a.
    pub mixed_6a: InceptionB,
    /// Mixed_6b–6e.
    pub mixed_6: Vec<InceptionC>,
    /// The auxiliary classifier.
    pub aux: Option<InceptionAux>,
    /// Mixed_7a.
    pub mixed_7a: InceptionD,
    /// Mixed_7b–7c.
    pub mixed_7: Vec<InceptionE>,
    /// Pooling, dropout and the classifier.
    pub head: Classifier,
    /// Expected input channels.
    pub in_channels: usize,
}

impl InceptionV3 {
    /// Logits; `domains` are the examples' domain ids for domain-aware normalization.
    ///
    /// # Shapes
    /// - input `[N, in_channels, H, W]` with H, W ≥ 75 (299 by design), output `[N, classes]`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<2>, ModelError> {
        self.run(x, domains, false).map(|(logits, _)| logits)
    }

    /// Logits and, where the network has one, the auxiliary classifier's logits.
    pub fn forward_with_aux(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<(Tensor<2>, Option<Tensor<2>>), ModelError> {
        self.run(x, domains, true)
    }

    fn run(
        &self,
        x: Tensor<4>,
        d: Option<&[usize]>,
        with_aux: bool,
    ) -> Result<(Tensor<2>, Option<Tensor<2>>), ModelError> {
        check_input(&x, self.in_channels, INCEPTION_MIN_INPUT)?;
        let mut x = match &self.input_norm {
            Some(n) => n.forward(x, d)?,
            None => x,
        };
        for (i, conv) in self.stem.iter().enumerate() {
            x = conv.forward_relu(x, d)?;
            if i == 2 || i == 4 {
                x = max_pool_3s2(x);
            }
        }
        for block in &self.mixed_5 {
            x = block.forward(x, d)?;
        }
        x = self.mixed_6a.forward(x, d)?;
        for block in &self.mixed_6 {
            x = block.forward(x, d)?;
        }
        let aux = match (&self.aux, with_aux) {
            (Some(aux), true) => Some(aux.forward(x.clone(), d)?),
            _ => None,
        };
        x = self.mixed_7a.forward(x, d)?;
        for block in &self.mixed_7 {
            x = block.forward(x, d)?;
        }
        Ok((self.head.forward(x), aux))
    }
}

fold_fields!(InceptionA {
    branch1x1,
    branch5x5,
    branch3x3dbl,
    branch_pool
});
fold_fields!(InceptionB {
    branch3x3,
    branch3x3dbl
});
fold_fields!(InceptionC {
    branch1x1,
    branch7x7,
    branch7x7dbl,
    branch_pool
});
fold_fields!(InceptionD {
    branch3x3,
    branch7x7x3
});
fold_fields!(InceptionE {
    branch1x1,
    branch3x3_1,
    branch3x3_2a,
    branch3x3_2b,
    branch3x3dbl,
    branch3x3dbl_3a,
    branch3x3dbl_3b,
    branch_pool
});
fold_fields!(InceptionAux { conv0, conv1 });
fold_fields!(InceptionV3 {
    stem,
    mixed_5,
    mixed_6a,
    mixed_6,
    aux,
    mixed_7a,
    mixed_7
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FoldNorms;
    use crate::testing::{bn_last_batch, device, input, max_diff, with_inference_stats};
    use bnlab_norm::{NormMode, count_parameters, set_norm_mode};

    /// torchvision 0.29.2 `inception_v3(init_weights=False, aux_logits=…, num_classes=…)`.
    #[test]
    fn parameter_counts_equal_torchvision() {
        let count = |c: InceptionV3Config| count_parameters(&c.init(&device()).unwrap());
        assert_eq!(count(InceptionV3Config::new()), 27_161_264);
        assert_eq!(
            count(InceptionV3Config::new().with_aux_logits(false)),
            23_834_568
        );
        assert_eq!(
            count(InceptionV3Config::new().with_num_classes(257)),
            25_067_490
        );
    }

    #[test]
    fn output_shapes_at_299_with_aux() {
        let net = set_norm_mode(
            InceptionV3Config::new()
                .with_num_classes(257)
                .init(&device())
                .unwrap(),
            NormMode::EVAL,
        );
        let (logits, aux) = net
            .forward_with_aux(input([1, 3, 299, 299], 1), None)
            .unwrap();
        assert_eq!(logits.dims(), [1, 257]);
        assert_eq!(aux.expect("aux head").dims(), [1, 257]);
        let small = net.forward(input([1, 3, 74, 74], 1), None);
        assert!(matches!(small, Err(ModelError::Shape { .. })));
    }

    #[test]
    fn fold_norms_keeps_outputs_at_the_smallest_input() {
        let config = InceptionV3Config::new()
            .with_num_classes(5)
            .with_norm(bn_last_batch());
        let net = with_inference_stats(
            config.init(&device()).unwrap(),
            |m, x| m.forward(x, None),
            [4, 3, 75, 75],
        );
        let x = input([2, 3, 75, 75], 6);
        let before = net.forward(x.clone(), None).unwrap();
        let after = net.fold_norms().unwrap().forward(x, None).unwrap();
        let (diff, scale) = max_diff(before, after);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "diff {diff} at scale {scale}"
        );
    }
}
