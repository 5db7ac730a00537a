//! [`Affine`]: the tail applied to x̂ (Davis & Frank §3, §4.5; Peerthum & Stamp).

use serde::{Deserialize, Serialize};

/// The scale σ_act of a unit Gaussian after a ReLU (Davis & Frank §3.4): input-normalization
/// layers start at γ̂ = 0.58·γ because no activation follows them.
pub const RELU_SIGMA_ACT: f64 = 0.58;

/// The affine tail applied to x̂ (Davis & Frank §3, §4.5; Peerthum & Stamp).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Affine {
    /// y = γ·x̂ + β.
    Standard {
        /// Initial γ; Davis & Frank recommend a value in (0, 1].
        gamma_init: f64,
        /// Initial β.
        beta_init: f64,
    },
    /// y = x̂ (BatchNorm-minus).
    Off,
    /// A1 (Davis & Frank eq. 26): y = γ·(x̂ + β).
    A1 {
        /// Initial γ.
        gamma_init: f64,
    },
    /// A2 (eq. 27): y = γ·(γ0·x̂ + β), γ0 starts at 1.
    A2 {
        /// Initial γ.
        gamma_init: f64,
    },
    /// RBN (eq. 28–29): y = γ·S·x̂ + β, S = sigmoid(w_v·GAP(x̂) + w_b), (w_v, w_b) = (0, 1).
    Rbn {
        /// Initial γ.
        gamma_init: f64,
    },
    /// IEBN: as RBN with GAP over the raw input and (w_v, w_b) = (0, −1).
    Iebn {
        /// Initial γ.
        gamma_init: f64,
    },
    /// RBN⁻: S = sigmoid(w_b), w_b = 1.
    RbnMinus {
        /// Initial γ.
        gamma_init: f64,
    },
    /// IEBN⁻: S = sigmoid(w_b), w_b = −1.
    IebnMinus {
        /// Initial γ.
        gamma_init: f64,
    },
    /// y = γ̂·x̂ with β fixed at 0: BN input normalization (Davis & Frank §3.4).
    ScaleOnly {
        /// Initial γ̂ (use [`Affine::input_norm`] for 0.58·γ).
        gamma_init: f64,
    },
}

impl Default for Affine {
    fn default() -> Self {
        Affine::Standard {
            gamma_init: 1.0,
            beta_init: 0.0,
        }
    }
}

impl Affine {
    /// The standard tail with γ starting at `gamma_init` and β at 0.
    pub fn standard(gamma_init: f64) -> Self {
        Affine::Standard {
            gamma_init,
            beta_init: 0.0,
        }
    }

    /// The BN input-normalization tail for a ReLU network: γ̂ = 0.58·γ, β fixed at 0.
    pub fn input_norm(gamma: f64) -> Self {
        Affine::ScaleOnly {
            gamma_init: RELU_SIGMA_ACT * gamma,
        }
    }

    /// This tail with its initial γ set to `gamma` (unchanged for `Off`, which has none).
    pub fn with_gamma_init(self, gamma: f64) -> Self {
        match self {
            Affine::Off => Affine::Off,
            Affine::Standard { beta_init, .. } => Affine::Standard {
                gamma_init: gamma,
                beta_init,
            },
            Affine::A1 { .. } => Affine::A1 { gamma_init: gamma },
            Affine::A2 { .. } => Affine::A2 { gamma_init: gamma },
            Affine::Rbn { .. } => Affine::Rbn { gamma_init: gamma },
            Affine::Iebn { .. } => Affine::Iebn { gamma_init: gamma },
            Affine::RbnMinus { .. } => Affine::RbnMinus { gamma_init: gamma },
            Affine::IebnMinus { .. } => Affine::IebnMinus { gamma_init: gamma },
            Affine::ScaleOnly { .. } => Affine::ScaleOnly { gamma_init: gamma },
        }
    }

    /// The initial γ, where the tail has one.
    pub fn gamma_init(&self) -> Option<f64> {
        match *self {
            Affine::Off => None,
            Affine::Standard { gamma_init, .. }
            | Affine::A1 { gamma_init }
            | Affine::A2 { gamma_init }
            | Affine::Rbn { gamma_init }
            | Affine::Iebn { gamma_init }
            | Affine::RbnMinus { gamma_init }
            | Affine::IebnMinus { gamma_init }
            | Affine::ScaleOnly { gamma_init } => Some(gamma_init),
        }
    }
}
