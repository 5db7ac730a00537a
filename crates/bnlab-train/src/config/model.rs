//! `[model]`: the network by registry name and the normalization at its sites.

use bnlab_models::InputNormName;
use bnlab_norm::NormSettings;
use serde::{Deserialize, Serialize};

/// The network by registry name and the normalization at its sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A registry name (`resnet20`, `resnet18-cifar`, …; `bnlab models` lists them).
    pub name: String,
    /// The normalization layer at every site.
    #[serde(default)]
    pub norm: NormSettings,
    /// Input normalization (Davis & Frank §3.4).
    #[serde(default)]
    pub input_norm: Option<InputNormName>,
    /// Start each residual block's last γ at 0.
    #[serde(default)]
    pub zero_init_residual: bool,
}
