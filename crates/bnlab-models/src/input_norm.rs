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

/// Input normalization by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputNormName {
    /// A scale-only BN layer, γ̂ = 0.58·γ.
    Bn,
    /// (x − 128)/128.
    Fixed,
    /// The training split's per-channel μ and σ.
    Offline,
}

impl InputNormName {
    /// The layer this name stands for on `channels` input channels; `offline` starts at
    /// μ = 0, σ = 1 until the trainer fills in the training split's statistics.
    pub fn config(self, channels: usize) -> InputNormConfig {
        match self {
            InputNormName::Bn => InputNormConfig::Bn,
            InputNormName::Fixed => InputNormConfig::Fixed,
            InputNormName::Offline => InputNormConfig::Offline {
                mean: vec![0.0; channels],
                std: vec![1.0; channels],
            },
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::device;
    use crate::{ModelOptions, Network, build};
    use bnlab_norm::{NormConfig, ParamRole, param_roles};

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    fn net(input_norm: InputNormConfig, channels: usize) -> Result<Network, ModelError> {
        let mut options = ModelOptions::new(10, channels);
        options.input_norm = Some(input_norm);
        options.norm = crate::NormSpec::new(NormConfig::new(1).with_affine(Affine::standard(0.5)));
        build("resnet20", &options, &device())
    }

    fn input_norm(n: &Network) -> &InputNorm {
        match n {
            Network::ResNet(r) => r.input_norm.as_ref().unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn fixed_maps_8_bit_values_to_about_unit_range() {
        let n = net(InputNormConfig::Fixed, 1).unwrap();
        let raw = [0.0f32, 64.0, 128.0, 255.0];
        let x = Tensor::<4>::from_data(TensorData::new(raw.to_vec(), [1, 1, 2, 2]), &device());
        let y = values(input_norm(&n).forward(x, None).unwrap());
        for (r, y) in raw.iter().zip(y) {
            assert!((y - (r - 128.0) / 128.0).abs() < 1e-6);
        }
    }

    #[test]
    fn offline_uses_each_channels_mean_and_std() {
        let (mean, std) = (vec![10.0, -2.0], vec![2.0, 0.5]);
        let n = net(
            InputNormConfig::Offline {
                mean: mean.clone(),
                std: std.clone(),
            },
            2,
        )
        .unwrap();
        let raw: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(raw.clone(), [1, 2, 2, 2]), &device());
        let y = values(input_norm(&n).forward(x, None).unwrap());
        for (i, (r, y)) in raw.iter().zip(y).enumerate() {
            let c = i / 4;
            let want = (*r as f64 - mean[c]) / std[c];
            assert!((y as f64 - want).abs() < 1e-5, "{i}: {y} vs {want}");
        }
        assert!(
            net(
                InputNormConfig::Offline {
                    mean: vec![0.0],
                    std: vec![1.0]
                },
                2
            )
            .is_err()
        );
        assert!(
            net(
                InputNormConfig::Offline {
                    mean: vec![0.0],
                    std: vec![0.0]
                },
                1
            )
            .is_err()
        );
    }

    #[test]
    fn bn_input_norm_is_scale_only_at_0_58_gamma() {
        let n = net(InputNormConfig::Bn, 3).unwrap();
        let layer = input_norm(&n).norm.as_ref().unwrap();
        assert!(layer.affine.gamma.is_none() && layer.affine.beta.is_none());
        let g: Vec<f32> = layer
            .affine
            .input_gamma
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(
            g.iter().all(|&v| (v as f64 - 0.58 * 0.5).abs() < 1e-7),
            "{g:?}"
        );
        let roles = param_roles(&n);
        let id = layer.affine.input_gamma.as_ref().unwrap().id;
        assert_eq!(roles.get(&id), Some(&ParamRole::InputNormGamma));
        // in training each channel comes out with mean 0 and std γ̂
        let x = crate::testing::input([16, 3, 8, 8], 3) * 50.0 + 90.0;
        let y = values(input_norm(&n).forward(x, None).unwrap());
        let c0: Vec<f64> = (0..16)
            .flat_map(|i| y[i * 192..i * 192 + 64].iter().map(|&v| v as f64))
            .collect();
        let mean = c0.iter().sum::<f64>() / c0.len() as f64;
        let std = (c0.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c0.len() as f64).sqrt();
        assert!(
            mean.abs() < 1e-4 && (std - 0.29).abs() < 1e-3,
            "mean {mean} std {std}"
        );
    }
}
