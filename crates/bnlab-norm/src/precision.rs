//! Mixed precision: the dtype a network's activations compute in, while its parameters and
//! every normalization statistic stay f32.

use burn::tensor::{DType, Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::NormError;

/// The dtype of a network's activations (`precision = "f32" | "f16" | "bf16"` in a spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// IEEE half precision activations (10-bit mantissa).
    F16,
    /// bfloat16 activations (7-bit mantissa, f32's range).
    BF16,
}

impl Precision {
    /// The activations' dtype.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::BF16 => FloatDType::BF16,
        }
    }

    /// The precision whose dtype `dtype` is (f32 for every other dtype).
    pub fn of(dtype: DType) -> Self {
        match dtype {
            DType::F16 => Precision::F16,
            DType::BF16 => Precision::BF16,
            _ => Precision::F32,
        }
    }

    /// Whether this is the default (f32).
    pub fn is_default(&self) -> bool {
        *self == Precision::F32
    }

    /// Whether `device` computes in this precision; an error naming both if not (lavapipe,
    /// for one, has no bf16), so a run stops before its first step instead of failing in
    /// the driver.
    pub fn check(self, device: &Device, name: impl std::fmt::Display) -> Result<(), NormError> {
        if device.supports_dtype(DType::from(self.dtype())) {
            Ok(())
        } else {
            Err(NormError::UnsupportedPrecision {
                precision: self,
                device: name.to_string(),
            })
        }
    }

    /// `x` in this precision's dtype (unchanged if it has it already).
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if x.dtype() == DType::from(self.dtype()) {
            x
        } else {
            x.cast(self.dtype())
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::NormError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::BF16),
            _ => Err(crate::NormError::UnknownPrecision(s.to_string())),
        }
    }
}

/// Whether `dtype` is a half-precision float (f16 or bf16).
pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// `x` in f32 if it is half precision, else unchanged: where mixed precision returns to f32
/// (normalization statistics, pooled features and logits).
pub fn full_precision<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if is_half(x.dtype()) {
        x.cast(FloatDType::F32)
    } else {
        x
    }
}
