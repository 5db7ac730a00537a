//! [`StatUnit`]: over which values one mean and variance are computed.

use serde::{Deserialize, Serialize};

/// Over which values one mean and variance are computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum StatUnit {
    /// Per channel over (N, H, W) of the normalization batch (BatchNorm).
    Batch,
    /// Per example over `C / groups` channels and (H, W) (GroupNorm).
    Group {
        /// Number of channel groups; must divide the channel count.
        groups: usize,
    },
    /// Per example over all channels: GroupNorm with one group.
    Layer,
    /// Per example and channel: GroupNorm with one channel per group.
    Instance,
    /// Summers & Dinneen §3.4: over a group of channels and a group of examples.
    BatchGroup {
        /// Number of channel groups; must divide the channel count.
        channel_groups: usize,
        /// Number of example groups the batch is split into.
        example_groups: usize,
    },
    /// No normalization: x̂ = x (with an affine tail this is Peerthum & Stamp's AffineLayer).
    None,
}

impl StatUnit {
    /// Whether every unit lies within one example (GroupNorm, LayerNorm, InstanceNorm).
    pub fn is_per_example(&self) -> bool {
        matches!(self, Self::Group { .. } | Self::Layer | Self::Instance)
    }
}
