//! [`NormSpec`]: one [`NormConfig`] per network, overridable per normalization site.

use crate::ConvKernel;
use std::cell::RefCell;

use bnlab_norm::{Norm, NormConfig};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::error::at_site;

/// The normalization of a network: `default` at every site, except where an override matches.
///
/// A site is named by its field path in the network (`stem.norm`, `stages.2.0.conv1.norm`, …),
/// the same path [`bnlab_norm::norm_sites`] reports. An override pattern is an exact path, or a
/// prefix ending in `*` (`stages.3.*`); the last matching override wins. Building a network with
/// an override that matches no site is an error, so a typo never goes unnoticed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NormSpec {
    /// The layer at every site; its `num_features` is replaced by the site's channel count.
    pub default: NormConfig,
    /// (pattern, layer) pairs, applied in order.
    #[serde(default)]
    pub overrides: Vec<(String, NormConfig)>,
}

impl Default for NormSpec {
    fn default() -> Self {
        Self::new(NormConfig::new(1))
    }
}

impl NormSpec {
    /// `default` at every site (its channel count is ignored).
    pub fn new(default: NormConfig) -> Self {
        Self {
            default,
            overrides: Vec::new(),
        }
    }

    /// This spec with `config` at the sites matching `pattern`.
    pub fn with_override(mut self, pattern: impl Into<String>, config: NormConfig) -> Self {
        self.overrides.push((pattern.into(), config));
        self
    }

    /// The configuration at `site`, for `channels` channels, and whether an override set it.
    pub fn at(&self, site: &str, channels: usize) -> (NormConfig, bool) {
        match self.overrides.iter().rev().find(|(p, _)| matches(p, site)) {
            Some((_, c)) => (c.for_channels(channels), true),
            None => (self.default.for_channels(channels), false),
        }
    }
}

/// Whether override `pattern` covers `site`.
fn matches(pattern: &str, site: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => site.starts_with(prefix),
        None => pattern == site,
    }
}

/// Builds normalization layers of one network and records every site it made.
pub(crate) struct Builder<'a> {
    pub(crate) spec: &'a NormSpec,
    pub(crate) device: &'a Device,
    pub(crate) conv_kernel: ConvKernel,
    sites: RefCell<Vec<String>>,
}

impl<'a> Builder<'a> {
    /// A builder for `spec` on `device`, whose convolutions run `conv_kernel`.
    pub(crate) fn new(spec: &'a NormSpec, conv_kernel: ConvKernel, device: &'a Device) -> Self {
        Self {
            spec,
            device,
            conv_kernel,
            sites: RefCell::new(Vec::new()),
        }
    }

    /// The layer at `site`, with `channels` channels; `adjust` may change the network's
    /// default there (zero-init γ, input normalization) but never an explicit override.
    pub(crate) fn norm_with(
        &self,
        site: &str,
        channels: usize,
        adjust: impl FnOnce(NormConfig) -> NormConfig,
    ) -> Result<Norm, ModelError> {
        self.sites.borrow_mut().push(site.to_string());
        let (config, overridden) = self.spec.at(site, channels);
        let config = if overridden { config } else { adjust(config) };
        config.init(self.device).map_err(at_site(site))
    }

    /// The layer at `site`, with `channels` channels.
    pub(crate) fn norm(&self, site: &str, channels: usize) -> Result<Norm, ModelError> {
        self.norm_with(site, channels, |c| c)
    }

    /// Checks that every override matched a site; returns the sites made, in order.
    pub(crate) fn finish(self) -> Result<Vec<String>, ModelError> {
        let sites = self.sites.into_inner();
        for (pattern, _) in &self.spec.overrides {
            if !sites.iter().any(|s| matches(pattern, s)) {
                return Err(ModelError::InvalidConfig(format!(
                    "norm override `{pattern}` matches no normalization site of this network; its sites are {}",
                    sites.join(", ")
                )));
            }
        }
        Ok(sites)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bnlab_norm::StatUnit;

    #[test]
    fn exact_and_prefix_patterns_last_wins() {
        let gn = NormConfig::new(1).with_unit(StatUnit::Group { groups: 2 });
        let ln = NormConfig::new(1).with_unit(StatUnit::Layer);
        let spec = NormSpec::default()
            .with_override("stages.1.*", gn)
            .with_override("stages.1.0.conv1.norm", ln);
        assert_eq!(spec.at("stem.norm", 8).0.unit, StatUnit::Batch);
        assert_eq!(
            spec.at("stages.1.2.conv2.norm", 8).0.unit,
            StatUnit::Group { groups: 2 }
        );
        assert_eq!(spec.at("stages.1.0.conv1.norm", 8).0.unit, StatUnit::Layer);
        assert_eq!(spec.at("stages.1.0.conv1.norm", 8).0.num_features, 8);
        assert!(!spec.at("stages.10.0.conv1.norm", 8).1 || matches("stages.1.*", "stages.10.0"));
        assert!(!matches("stages.1", "stages.1.0.conv1.norm"));
    }
}
