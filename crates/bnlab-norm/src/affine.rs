//! The affine tail applied to x̂ (Davis & Frank §3, §4.5; Peerthum & Stamp), all of it in one
//! place: [`Affine`] (which tail, and its initial values), [`AffineParams`] (its parameters and
//! their optimizer roles), its folded form y = x̂·scale + shift where it has one (used by the
//! fused path and by folding into a convolution), and its general forward (the reference).
//! A new tail is a variant here and a name in `settings.rs`.

use burn::module::{Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::ParamRole;
use crate::tensors::rows_for;

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

/// The parameters of an affine tail, each [A, C] (A affine sets: 1, or one per domain). Which
/// ones exist depends on the tail (`Affine::init_params`).
#[derive(Module, Debug)]
pub struct AffineParams {
    /// γ (role `NormGamma`).
    pub gamma: Option<Param<Tensor<2>>>,
    /// β (role `NormBeta`).
    pub beta: Option<Param<Tensor<2>>>,
    /// γ0 of the A2 tail (role `NormExtra`).
    pub gamma0: Option<Param<Tensor<2>>>,
    /// w_v of RBN/IEBN (role `NormExtra`).
    pub gate_weight: Option<Param<Tensor<2>>>,
    /// w_b of RBN/IEBN and their minus variants (role `NormExtra`).
    pub gate_bias: Option<Param<Tensor<2>>>,
    /// γ̂ of the scale-only input normalization (role `InputNormGamma`).
    pub input_gamma: Option<Param<Tensor<2>>>,
}

impl AffineParams {
    /// The container type [`AffineParams`] reports to module visitors.
    pub(crate) const CONTAINER: &'static str = "Struct:AffineParams";

    /// The optimizer role of the parameter in field `field`.
    pub(crate) fn role(field: &str) -> Option<ParamRole> {
        match field {
            "gamma" => Some(ParamRole::NormGamma),
            "beta" => Some(ParamRole::NormBeta),
            "gamma0" | "gate_weight" | "gate_bias" => Some(ParamRole::NormExtra),
            "input_gamma" => Some(ParamRole::InputNormGamma),
            _ => None,
        }
    }

    /// The field names, for reading records written before the parameters had their own
    /// module (they sat directly in `Norm`).
    pub const FIELDS: [&'static str; 6] = [
        "gamma",
        "beta",
        "gamma0",
        "gate_weight",
        "gate_bias",
        "input_gamma",
    ];
}

/// The path of the [`Norm`](crate::Norm) that owns the affine parameter at `param_path`
/// (`stem.norm.affine.gamma` → `stem.norm`).
pub fn norm_of_param(param_path: &str) -> &str {
    let parent = param_path.rsplit_once('.').map_or("", |(p, _)| p);
    parent.strip_suffix(".affine").unwrap_or(parent)
}

impl Affine {
    /// This tail's parameters at their initial values, [`sets`, `channels`] each.
    pub(crate) fn init_params(
        &self,
        sets: usize,
        channels: usize,
        device: &Device,
    ) -> AffineParams {
        let param = |v: f64| {
            Some(Param::from_tensor(Tensor::<2>::full(
                [sets, channels],
                v,
                device,
            )))
        };
        let mut p = AffineParams {
            gamma: None,
            beta: None,
            gamma0: None,
            gate_weight: None,
            gate_bias: None,
            input_gamma: None,
        };
        match *self {
            Affine::Standard {
                gamma_init,
                beta_init,
            } => (p.gamma, p.beta) = (param(gamma_init), param(beta_init)),
            Affine::Off => {}
            Affine::A1 { gamma_init } => (p.gamma, p.beta) = (param(gamma_init), param(0.0)),
            Affine::A2 { gamma_init } => {
                (p.gamma, p.beta, p.gamma0) = (param(gamma_init), param(0.0), param(1.0))
            }
            Affine::Rbn { gamma_init } | Affine::Iebn { gamma_init } => {
                let wb = if matches!(self, Affine::Rbn { .. }) {
                    1.0
                } else {
                    -1.0
                };
                (p.gamma, p.beta) = (param(gamma_init), param(0.0));
                (p.gate_weight, p.gate_bias) = (param(0.0), param(wb));
            }
            Affine::RbnMinus { gamma_init } | Affine::IebnMinus { gamma_init } => {
                let wb = if matches!(self, Affine::RbnMinus { .. }) {
                    1.0
                } else {
                    -1.0
                };
                (p.gamma, p.beta, p.gate_bias) = (param(gamma_init), param(0.0), param(wb));
            }
            Affine::ScaleOnly { gamma_init } => p.input_gamma = param(gamma_init),
        }
        p
    }

    /// The tail as y = x̂·scale + shift, with scale and shift [A, C] (f32) computed from the
    /// parameters, when it has that form: every tail but `Off` (which has no parameters) and
    /// RBN/IEBN (which depend on x̂ itself).
    pub(crate) fn scale_shift(&self, p: &AffineParams) -> Option<(Tensor<2>, Tensor<2>)> {
        let val = |p: &Option<Param<Tensor<2>>>| p.as_ref().map(|p| p.val().cast(DType::F32));
        let (gamma, beta) = (val(&p.gamma), val(&p.beta));
        match self {
            Affine::Standard { .. } => Some((gamma?, beta?)),
            Affine::A1 { .. } => {
                let (g, b) = (gamma?, beta?);
                Some((g.clone(), b * g))
            }
            Affine::A2 { .. } => {
                let (g, b, g0) = (gamma?, beta?, val(&p.gamma0)?);
                Some((g0 * g.clone(), b * g))
            }
            Affine::RbnMinus { .. } | Affine::IebnMinus { .. } => {
                Some((gamma? * sigmoid(val(&p.gate_bias)?), beta?))
            }
            Affine::ScaleOnly { .. } => {
                let g = val(&p.input_gamma)?;
                Some((g.clone(), g.zeros_like()))
            }
            Affine::Off | Affine::Rbn { .. } | Affine::Iebn { .. } => None,
        }
    }

    /// Applies the tail to x̂ ([N, C, S]); `x3` is the layer's input (IEBN pools it) and
    /// `rows[i]` the affine set of example i.
    pub(crate) fn apply(
        &self,
        p: &AffineParams,
        x3: &Tensor<3>,
        xhat: Tensor<3>,
        rows: &[usize],
    ) -> Tensor<3> {
        let get = |p: &Option<Param<Tensor<2>>>| {
            p.as_ref().map(|p| {
                let t = rows_for(p.val(), rows);
                let [r, c] = t.dims();
                t.reshape([r, c, 1])
            })
        };
        let (gamma, beta) = (get(&p.gamma), get(&p.beta));
        match self {
            Affine::Off => xhat,
            Affine::ScaleOnly { .. } => match get(&p.input_gamma) {
                Some(g) => xhat * g,
                None => xhat,
            },
            Affine::Standard { .. } => match (gamma, beta) {
                (Some(g), Some(b)) => xhat * g + b,
                _ => xhat,
            },
            Affine::A1 { .. } => match (gamma, beta) {
                (Some(g), Some(b)) => (xhat + b) * g,
                _ => xhat,
            },
            Affine::A2 { .. } => match (gamma, beta, get(&p.gamma0)) {
                (Some(g), Some(b), Some(g0)) => (xhat * g0 + b) * g,
                _ => xhat,
            },
            Affine::Rbn { .. } | Affine::Iebn { .. } => {
                let pooled = match self {
                    Affine::Rbn { .. } => xhat.clone().mean_dim(2),
                    _ => x3.clone().mean_dim(2),
                };
                match (gamma, beta, get(&p.gate_weight), get(&p.gate_bias)) {
                    (Some(g), Some(b), Some(wv), Some(wb)) => {
                        xhat * g * sigmoid(pooled * wv + wb) + b
                    }
                    _ => xhat,
                }
            }
            Affine::RbnMinus { .. } | Affine::IebnMinus { .. } => {
                match (gamma, beta, get(&p.gate_bias)) {
                    (Some(g), Some(b), Some(wb)) => xhat * g * sigmoid(wb) + b,
                    _ => xhat,
                }
            }
        }
    }
}
