//! Input normalization prepended to a network (Davis & Frank §3.4, Table 5).

use bnlab_norm::{Affine, Norm, StatUnit};
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::error::at_site;
use crate::norms::Builder;

/// How the raw input is normalized before the first convolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InputNormConfig {
    /// A BatchNorm layer on the input with a scale-only tail, γ̂ = 0.58·γ (γ: the network's
    /// initial γ), β fixed at 0: no ReLU follows it, so its output should be as spread as a
    /// ReLU's (Davis & Frank §3.4). Its site is `input_norm.norm`; an override there wins.
    Bn,
    /// (x − 128)/128, for 8-bit pixel values.
    Fixed,
    /// (x − μ_c)/σ_c with the training set's per-channel mean and standard deviation.
    Offline {
        /// μ per input channel.
        mean: Vec<f64>,
        /// σ per input channel (each > 0).
        std: Vec<f64>,
    },
}

/// The input normalization layer: a BN layer, or a fixed per-channel affine map.
#[derive(Module, Debug)]
pub struct InputNorm {
    /// The BN layer (role `InputNormGamma`) for [`InputNormConfig::Bn`].
    pub norm: Option<Norm>,
    /// Subtracted per channel, for the fixed maps.
    #[module(skip)]
    pub shift: Vec<f64>,
    /// Multiplied per channel after the shift, for the fixed maps.
    #[module(skip)]
    pub scale: Vec<f64>,
}

impl InputNormConfig {
    /// Builds the layer for `channels` input channels.
    pub(crate) fn init(&self, b: &Builder, channels: usize) -> Result<InputNorm, ModelError> {
        let fixed = |shift: Vec<f64>, scale: Vec<f64>| InputNorm {
            norm: None,
            shift,
            scale,
        };
        match self {
            InputNormConfig::Bn => {
                let norm = b.norm_with("input_norm.norm", channels, |c| {
                    let gamma = c.affine.gamma_init().unwrap_or(1.0);
                    c.with_unit(StatUnit::Batch)
                        .with_affine(Affine::input_norm(gamma))
                })?;
                Ok(InputNorm {
                    norm: Some(norm),
                    shift: Vec::new(),
                    scale: Vec::new(),
                })
            }
            InputNormConfig::Fixed => Ok(fixed(vec![128.0; channels], vec![1.0 / 128.0; channels])),
            InputNormConfig::Offline { mean, std } => {
                if mean.len() != channels || std.len() != channels {
                    return Err(ModelError::InvalidConfig(format!(
                        "offline input normalization has {} means and {} stds for {channels} channels",
                        mean.len(),
                        std.len()
                    )));
                }
                if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return Err(ModelError::InvalidConfig(format!(
                        "offline input normalization std must be finite and > 0, got {s}"
                    )));
                }
                if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
                    return Err(ModelError::InvalidConfig(format!(
                        "offline input normalization mean must be finite, got {m}"
                    )));
                }
                Ok(fixed(mean.clone(), std.iter().map(|s| 1.0 / s).collect()))
            }
        }
    }
}

impl InputNorm {
    /// Normalizes the input.
    ///
    /// # Shapes
    /// - input and output `[N, C, H, W]`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<4>, ModelError> {
        if let Some(norm) = &self.norm {
            return norm
                .forward_domains(x, domains)
                .map_err(at_site("input_norm.norm"));
        }
        let c = self.shift.len();
        let device = x.device();
        let column = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|&a| a as f32).collect();
            Tensor::<4>::from_data(TensorData::new(v, [1, c, 1, 1]), &device)
        };
        Ok((x - column(&self.shift)) * column(&self.scale))
    }
}
