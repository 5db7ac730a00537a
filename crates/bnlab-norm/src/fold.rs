//! Folding an inference-mode layer into the convolution before it, for deployment.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::{Affine, Norm, NormError, NormMode, StatUnit, StatsSource};

impl Norm {
    /// The per-channel (scale, shift) with y = scale·x + shift in `Eval(Population)` or `Frozen`
    /// mode, each of shape `[C]`; an error where the layer is not a per-channel affine map.
    pub fn inference_affine(&self) -> Result<(Tensor<1>, Tensor<1>), NormError> {
        let no = |why: &str| Err(NormError::NotFoldable(why.into()));
        match self.state.mode {
            NormMode::Eval(StatsSource::Population) | NormMode::Frozen => {}
            m => {
                return no(&format!(
                    "mode {m:?} uses batch statistics; use Eval(Population) or Frozen"
                ));
            }
        }
        if !matches!(self.config.unit, StatUnit::Batch | StatUnit::None) {
            return no("only per-channel (Batch) statistics are constant per channel");
        }
        if self.config.population_sets() > 1 || self.config.affine_sets() > 1 {
            return no("per-domain statistics or affine parameters depend on the example's domain");
        }
        let c = self.config.num_features;
        let (scale, shift) = match self.config.affine.scale_shift(&self.affine) {
            Some((scale, shift)) => (scale.reshape([c]), shift.reshape([c])),
            None if self.config.affine == Affine::Off => {
                let device = self.state.running_mean().device();
                (Tensor::ones([c], &device), Tensor::zeros([c], &device))
            }
            None => return no("RBN/IEBN scale depends on each example's pooled features"),
        };
        if self.config.unit == StatUnit::None {
            return Ok((scale, shift));
        }
        let mean = self.state.running_mean().reshape([c]);
        let rstd = self
            .state
            .running_var()
            .reshape([c])
            .add_scalar(self.config.epsilon)
            .sqrt()
            .recip();
        let scale = scale * rstd;
        Ok((scale.clone(), shift - mean * scale))
    }

    /// Folds this layer into `conv`, the convolution that feeds it: the returned convolution
    /// computes conv followed by this layer, for deployment.
    ///
    /// The layer must be in `Eval(Population)` or `Frozen` mode with per-channel statistics.
    ///
    /// Folding is exact for inference but **not equivalent for fine-tuning** (Wu & Johnson
    /// A.8): merging the frozen scale into the weights reparameterizes them, which changes the
    /// effective step size of gradient descent on those weights. Fine-tune before folding.
    pub fn fold_into_conv(&self, conv: &Conv2d) -> Result<Conv2d, NormError> {
        let [out, cin, kh, kw] = conv.weight.dims();
        if out != self.config.num_features {
            return Err(NormError::ChannelMismatch {
                shape: vec![out, cin, kh, kw],
                expected: self.config.num_features,
                got: out,
            });
        }
        let (scale, shift) = self.inference_affine()?;
        let device = conv.weight.device();
        let (scale, shift) = (scale.to_device(&device), shift.to_device(&device));
        let weight = conv.weight.val().detach() * scale.clone().reshape([out, 1, 1, 1]);
        let bias = match &conv.bias {
            Some(b) => b.val().detach() * scale + shift,
            None => shift,
        };
        let mut folded = conv.clone();
        folded.weight = Param::from_tensor(weight);
        folded.bias = Some(Param::from_tensor(bias));
        Ok(folded)
    }
}
