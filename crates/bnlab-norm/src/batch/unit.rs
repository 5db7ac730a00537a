//! [`StatUnit`]: over which values one mean and variance are computed.

use serde::{Deserialize, Serialize};

use crate::NormError;

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

    /// Channels per channel group and the number of channel groups K for `c` channels.
    pub(crate) fn channel_grouping(&self, c: usize) -> (usize, usize) {
        match *self {
            Self::Batch | Self::Instance | Self::None => (1, c),
            Self::Group { groups } => (c / groups, groups),
            Self::Layer => (c, 1),
            Self::BatchGroup { channel_groups, .. } => (c / channel_groups, channel_groups),
        }
    }

    /// Checks this unit's own settings for a layer of `c` channels; the error names the
    /// offending setting.
    pub(crate) fn validate(&self, c: usize) -> Result<(), NormError> {
        let bad = |msg: String| Err(NormError::InvalidConfig(msg));
        let check_groups = |name: &str, g: usize| {
            if g == 0 || !c.is_multiple_of(g) {
                bad(format!(
                    "{name} = {g} must be ≥ 1 and divide num_features = {c}"
                ))
            } else {
                Ok(())
            }
        };
        match *self {
            Self::Group { groups } => check_groups("groups", groups),
            Self::BatchGroup {
                channel_groups,
                example_groups,
            } => {
                check_groups("channel_groups", channel_groups)?;
                if example_groups == 0 {
                    return bad("example_groups must be at least 1".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
