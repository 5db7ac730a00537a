//! Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture"), in torchvision's
//! layout, for 299×299 inputs, with the optional auxiliary classifier on Mixed_6e. Summers &
//! Dinneen §3.3 use it on Caltech-256 as the network without residual paths to the output.

use bnlab_norm::Precision;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::fold::fold_fields;
use crate::frame::{Classifier, Takes, enter};
use crate::{ConvNorm, InputNorm, ModelError, ModelOptions};

mod blocks;

pub use blocks::*;

use blocks::{chain, max_pool_3s2, sq};

/// Configuration of [`InceptionV3`].
#[derive(Config, Debug)]
pub struct InceptionV3Config {
    /// Build the auxiliary classifier. Default: true (torchvision).
    #[config(default = true)]
    pub aux_logits: bool,
    /// Dropout before the classifier. Default: 0.5 (torchvision).
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Classes, input channels, normalization, input normalization, convolution kernels.
    /// Default: 1000 classes, 3 channels, BatchNorm.
    #[config(default = "ModelOptions::new(1000, 3)")]
    pub options: ModelOptions,
}

/// The smallest input Inception-v3 accepts (torchvision's check).
pub const INCEPTION_MIN_INPUT: usize = 75;
impl InceptionV3Config {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Result<InceptionV3, ModelError> {
        let (b, input_norm) = self.options.begin(Takes::default(), device)?;
        let stem = chain(
            &b,
            "stem",
            &[
                sq(self.options.in_channels, 32, 3).stride(2).pad(0),
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
            .then(|| InceptionAux::new(&b, 768, self.options.num_classes))
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
            head: self.options.head(2048, self.dropout, device),
            in_channels: self.options.in_channels,
            precision: self.options.precision,
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
    /// The activations' dtype (mixed precision).
    #[module(skip)]
    pub precision: Precision,
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
        let mut x = enter(
            &self.input_norm,
            self.in_channels,
            INCEPTION_MIN_INPUT,
            self.precision,
            x,
            d,
        )?;
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
            count(InceptionV3Config::new().with_options(ModelOptions::new(257, 3))),
            25_067_490
        );
    }

    #[test]
    fn output_shapes_at_299_with_aux() {
        let net = set_norm_mode(
            InceptionV3Config::new()
                .with_options(ModelOptions::new(257, 3))
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
            .with_options(ModelOptions::new(5, 3).with_norm(bn_last_batch()));
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
