//! Errors of building and running a network.

use bnlab_norm::NormError;
use thiserror::Error;

/// Why a network could not be built or run.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A normalization layer failed to build or to run.
    #[error("normalization layer `{site}`")]
    Norm {
        /// The layer's path in the network, e.g. `stages.1.0.conv1.norm`.
        site: String,
        /// What the layer reported.
        #[source]
        source: NormError,
    },
    /// No network of that name is registered.
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Every registered name, comma-separated.
        known: String,
    },
    /// A weights file could not be read or written.
    #[error("weights file {}", path.display())]
    Weights {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A setting is out of range.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// The input does not fit the network.
    #[error("input of shape {shape:?}: {why}")]
    Shape {
        /// The input's shape.
        shape: Vec<usize>,
        /// What is wrong with it.
        why: String,
    },
}

/// Attaches the path of the layer to a normalization error.
pub(crate) fn at_site(site: &str) -> impl FnOnce(NormError) -> ModelError + '_ {
    move |source| ModelError::Norm {
        site: site.to_string(),
        source,
    }
}
