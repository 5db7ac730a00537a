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

use bnlab_models::ModelOptions;
use serde::{Deserialize, Serialize};

use crate::{OptimizerConfig, Schedule, TrainError};

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
    /// The network options for `classes` classes of `channels`-channel images; an error
    /// names a per-site override that is not a valid `[model.norm]` table.
    pub fn model_options(
        &self,
        classes: usize,
        channels: usize,
    ) -> Result<ModelOptions, TrainError> {
        let input_norm = self.model.input_norm.map(|n| n.config(channels));
        Ok(ModelOptions {
            num_classes: classes,
            in_channels: channels,
            norm: self
                .model
                .norm_spec(self.data.domains.len())
                .map_err(TrainError::Config)?,
            input_norm,
            zero_init_residual: self.model.zero_init_residual,
            width: self.model.width,
            conv_kernel: self.model.conv_kernel,
            precision: self.train.precision,
        })
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
