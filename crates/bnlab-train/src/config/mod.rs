//! The typed configuration of one run: data, model and normalization, optimizer, schedule,
//! training and evaluation, one file per table of a spec. A spec file expands into one of
//! these per grid point.

mod check;
mod data;
mod eval;
mod model;
mod train;

pub use data::*;
pub use eval::*;
pub use model::*;
pub use train::*;

use bnlab_models::{ConvKernel, ModelOptions, NormSpec};
use serde::{Deserialize, Serialize};

use crate::{OptimizerConfig, Schedule};

/// Everything one run needs besides its seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The data.
    pub data: DataConfig,
    /// The network and its normalization.
    pub model: ModelConfig,
    /// The optimizer and its parameter groups.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Epochs, batch sizes, warm-up, FrozenBN.
    pub train: TrainConfig,
    /// The evaluation schemes of the best checkpoint.
    #[serde(default)]
    pub eval: EvalConfig,
}

fn default_schedule() -> Schedule {
    Schedule::Cosine
}

impl RunConfig {
    /// The network options for `classes` classes of `channels`-channel images.
    pub fn model_options(&self, classes: usize, channels: usize) -> ModelOptions {
        let input_norm = self.model.input_norm.map(|n| n.config(channels));
        ModelOptions {
            num_classes: classes,
            in_channels: channels,
            norm: NormSpec::new(self.model.norm.norm_config()),
            input_norm,
            zero_init_residual: self.model.zero_init_residual,
            conv_kernel: ConvKernel::Auto,
        }
    }

    /// The pixel scaling: as set, else raw under input normalization, else unit.
    pub fn scaling(&self) -> ScalingName {
        self.data
            .scaling
            .unwrap_or(if self.model.input_norm.is_some() {
                ScalingName::Raw
            } else {
                ScalingName::Unit
            })
    }
}
