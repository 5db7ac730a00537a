//! `[model]`: the network by registry name and the normalization at its sites.

use std::collections::BTreeMap;

use bnlab_models::{ConvKernel, InputNormName, NormSpec};
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
    /// Channel width multiplier (ResNets, MobileNetV2, VGG): 0.5 halves every width.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub width: f64,
    /// The convolution kernels: `auto` (bnlab's on Flex) or `burn` (Burn's, the reference).
    #[serde(default, skip_serializing_if = "is_auto")]
    pub conv_kernel: ConvKernel,
    /// Per-site normalization: site path or prefix (`stages.2.*`) → the settings of
    /// `[model.norm]` that differ there (`unit = "group"`, …); the last matching wins, and a
    /// pattern that matches no site is refused with the list of sites.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, toml::Table>,
}

fn one() -> f64 {
    1.0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
fn is_auto(k: &ConvKernel) -> bool {
    *k == ConvKernel::Auto
}

impl ModelConfig {
    /// The normalization of every site for a data set of `domains` domains: `norm`, with each
    /// override's settings on top of it.
    pub fn norm_spec(&self, domains: usize) -> Result<NormSpec, String> {
        let mut spec = NormSpec::new(self.norm.norm_config_for(domains));
        for (pattern, table) in &self.overrides {
            let mut merged = toml::Table::try_from(&self.norm)
                .map_err(|e| format!("model.norm cannot be written: {e}"))?;
            merged.extend(table.clone());
            let settings: NormSettings = merged
                .try_into()
                .map_err(|e| format!("model.overrides.\"{pattern}\": {e}"))?;
            spec = spec.with_override(pattern.clone(), settings.norm_config_for(domains));
        }
        Ok(spec)
    }
}
