//! Typed errors of the normalization layer.

use bnlab_collective::CollectiveError;
use thiserror::Error;

/// The backend's message for a failed read of a tensor or a missing device (its own error
/// types are neither `Clone` nor `PartialEq`, which [`NormError`] is).
#[derive(Debug, Error, Clone, PartialEq)]
#[error("{0}")]
pub struct ReadError(pub String);

/// Everything that can go wrong when building or running a [`Norm`](crate::Norm).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum NormError {
    /// The configuration cannot describe a layer.
    #[error("invalid normalization config: {0}")]
    InvalidConfig(String),
    /// The input has a rank the layer does not accept.
    #[error("input of shape {shape:?} has rank {rank}; expected [N, C] or [N, C, ...]")]
    Rank {
        /// The input shape.
        shape: Vec<usize>,
        /// Its rank.
        rank: usize,
    },
    /// A residual whose shape is not the input's.
    #[error("residual of shape {residual:?} added to an input of shape {shape:?}")]
    ResidualShape {
        /// The input's shape.
        shape: Vec<usize>,
        /// The residual's shape.
        residual: Vec<usize>,
    },
    /// The input's channel axis does not match the layer.
    #[error("input of shape {shape:?} has {got} channels; the layer was built for {expected}")]
    ChannelMismatch {
        /// The input shape.
        shape: Vec<usize>,
        /// Channels the layer expects.
        expected: usize,
        /// Channels found on axis 1.
        got: usize,
    },
    /// A statistic unit holds fewer than two values, so its variance is undefined.
    #[error(
        "input of shape {shape:?}: statistic unit {unit} holds {values} value(s); batch statistics need at least 2"
    )]
    TooFewValues {
        /// The input shape.
        shape: Vec<usize>,
        /// Which unit, in words.
        unit: String,
        /// How many values it holds.
        values: usize,
    },
    /// The batch cannot be split into normalization batches as configured.
    #[error("batch of {batch} examples: {reason}")]
    BatchSplit {
        /// The batch size.
        batch: usize,
        /// Why it cannot be split.
        reason: String,
    },
    /// Domain ids are missing, of the wrong length, or out of range.
    #[error("domain ids: {0}")]
    Domain(String),
    /// A batch statistic is NaN or infinite (only checked with `check_finite`).
    #[error("non-finite batch statistic in {what} of input with shape {shape:?}")]
    NonFinite {
        /// The input shape.
        shape: Vec<usize>,
        /// Which statistic.
        what: String,
    },
    /// `finalize` was asked for but no batch was collected.
    #[error("no batch was collected: run forward passes in Collect mode before finalize")]
    NothingCollected,
    /// The layer cannot be folded into a convolution.
    #[error("cannot fold into the convolution: {0}")]
    NotFoldable(String),
    /// A stats reducer cannot serve this call (a poisoned lock, a layer it cannot combine).
    #[error("stats reducer failed: {0}")]
    Reducer(String),
    /// A tensor could not be read back from its device (a lost device, a failed transfer).
    #[error("reading {what} back from the device failed")]
    DeviceRead {
        /// Which values.
        what: String,
        /// The backend's own error.
        #[source]
        source: ReadError,
    },
    /// The device cannot compute in the precision asked for.
    #[error("{device} has no {precision:?} arithmetic: use another `precision` or device")]
    UnsupportedPrecision {
        /// The precision asked for.
        precision: crate::Precision,
        /// The device.
        device: String,
    },
    /// The device asked for is not on this machine.
    #[error("no {what} on this machine")]
    NoDevice {
        /// The device asked for.
        what: String,
        /// The backend's own error.
        #[source]
        source: ReadError,
    },
    /// A device name that is none of [`crate::DEVICE_NAMES`].
    #[error("unknown device `{0}`: expected {names}", names = crate::DEVICE_NAMES)]
    UnknownDevice(String),
    /// A precision that is none of f32, f16 and bf16.
    #[error("unknown precision `{0}`: expected f32, f16 or bf16")]
    UnknownPrecision(String),
    /// A device this build was compiled without.
    #[error(
        "this bnlab was built without {device}: build with `cargo build --release -p bnlab --features {feature}`"
    )]
    NotBuilt {
        /// The device asked for.
        device: String,
        /// The Cargo feature that brings it.
        feature: &'static str,
    },
    /// The workers' collective under a stats reducer failed (for example a lost worker).
    #[error("the workers' collective failed")]
    Collective(#[source] CollectiveError),
}
