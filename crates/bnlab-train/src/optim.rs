//! Optimizer parameter groups by role (Davis & Frank §3.2, §4.2; Summers & Dinneen §3.3):
//! γ at learning rate α/c, weight decay on conv and linear weights (optionally on γ/β, with γ
//! decayed toward 0 or 1), the input-norm γ in its own group; SGD without dampening, or Adam.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bnlab_norm::{ParamRole, param_roles};
use burn::module::{Module, ParamGroup, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamConfig, GradientsParams, LearningRate, ModuleOptimizer, Optimizer, SgdConfig,
};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::schedule::{GroupLr, LrCurve};

/// The optimizer family.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with momentum and dampening 0 (PyTorch's `torch.optim.SGD`).
    Sgd,
    /// Adam (Peerthum & Stamp use 1e-3).
    Adam,
}

/// Whether and how γ and β are weight-decayed (Summers & Dinneen §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormDecay {
    /// No decay on γ or β (Davis & Frank's setting).
    Off,
    /// γ and β decayed toward 0.
    TowardZero,
    /// γ decayed toward 1, β toward 0.
    TowardOne,
}

/// The optimizer of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// SGD or Adam.
    #[serde(default = "default_kind")]
    pub kind: OptimizerKind,
    /// The base learning rate α.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// SGD Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// Adam β₁.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Adam β₂.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Adam ε.
    #[serde(default = "default_adam_eps")]
    pub adam_epsilon: f64,
    /// L2 penalty on conv and linear weights (and on γ/β when `norm_decay` is on).
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Weight decay on γ and β.
    #[serde(default = "default_norm_decay")]
    pub norm_decay: NormDecay,
    /// λ of the decay on γ and β when `norm_decay` is on (Summers & Dinneen §3.3); by
    /// default `weight_decay`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_weight_decay: Option<f64>,
    /// c: γ learns at α/c (Davis & Frank use 100; 1 is plain SGD).
    #[serde(default = "one")]
    pub gamma_lr_divisor: f64,
    /// The input-normalization γ̂ learns at α/this; defaults to `gamma_lr_divisor`.
    #[serde(default)]
    pub input_norm_lr_divisor: Option<f64>,
}

fn default_kind() -> OptimizerKind {
    OptimizerKind::Sgd
}
fn default_lr() -> f64 {
    0.1
}
fn default_momentum() -> f64 {
    0.9
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_adam_eps() -> f64 {
    1e-8
}
fn default_wd() -> f64 {
    1e-4
}
fn default_norm_decay() -> NormDecay {
    NormDecay::Off
}
fn one() -> f64 {
    1.0
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            lr: default_lr(),
            momentum: default_momentum(),
            nesterov: false,
            beta1: default_beta1(),
            beta2: default_beta2(),
            adam_epsilon: default_adam_eps(),
            weight_decay: default_wd(),
            norm_decay: default_norm_decay(),
            norm_weight_decay: None,
            gamma_lr_divisor: 1.0,
            input_norm_lr_divisor: None,
        }
    }
}

impl OptimizerConfig {
    /// Checks every value; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("lr", self.lr),
            ("gamma_lr_divisor", self.gamma_lr_divisor),
            ("adam_epsilon", self.adam_epsilon),
            (
                "input_norm_lr_divisor",
                self.input_norm_lr_divisor.unwrap_or(1.0),
            ),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("optimizer.{name} must be finite and > 0, got {v}"));
            }
        }
        for (name, v) in [
            ("momentum", self.momentum),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("optimizer.{name} must be in [0, 1), got {v}"));
            }
        }
        for (name, v) in [
            ("weight_decay", Some(self.weight_decay)),
            ("norm_weight_decay", self.norm_weight_decay),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("optimizer.{name} must be finite and ≥ 0, got {v}"));
            }
        }
        if self.norm_weight_decay.is_some() && self.norm_decay == NormDecay::Off {
            return Err(
                "optimizer.norm_weight_decay needs norm_decay = \"toward-zero\" or \"toward-one\""
                    .into(),
            );
        }
        Ok(())
    }
}

/// L2 weight decay toward `target` in front of any optimizer: g ← g + λ·(w − target).
#[derive(Clone)]
pub struct Decayed<O> {
    inner: O,
    penalty: f64,
    target: f64,
}

impl<O: Optimizer> Optimizer for Decayed<O> {
    type State<const D: usize> = O::State<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let grad = if self.penalty == 0.0 {
            grad
        } else {
            grad + (tensor.clone() - self.target).mul_scalar(self.penalty)
        };
        self.inner.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        O::to_device(state, device)
    }
}

/// The parameter ids of each role in a module.
fn ids_by_role<M: Module>(module: &M) -> HashMap<ParamRole, Vec<ParamId>> {
    let mut by_role: HashMap<ParamRole, Vec<ParamId>> = HashMap::new();
    let mut roles: Vec<_> = param_roles(module).into_iter().collect();
    roles.sort_by_key(|(id, _)| id.val());
    for (id, role) in roles {
        by_role.entry(role).or_default().push(id);
    }
    by_role
}

/// A module optimizer and its per-group learning-rate schedulers, built from roles.
#[derive(Clone)]
pub struct GroupedOptimizer {
    optimizer: ModuleOptimizer,
    scheduler: ModuleLrScheduler,
    last_lr: f64,
}

impl GroupedOptimizer {
    /// Groups for `module`'s parameters under `config` on `curve`, at update `t`.
    ///
    /// Parameters without a role (none in bnlab's networks) learn at α with no decay.
    pub fn new<M: Module>(
        module: &M,
        config: &OptimizerConfig,
        curve: Arc<LrCurve>,
        t: usize,
    ) -> Result<Self, TrainError> {
        config.validate().map_err(TrainError::Config)?;
        let by_role = ids_by_role(module);
        let group = |roles: &[ParamRole]| {
            ParamGroup::from_ids(
                roles
                    .iter()
                    .flat_map(|r| by_role.get(r).cloned().unwrap_or_default())
                    .collect(),
            )
        };
        let wd = config.weight_decay;
        let norm_wd = config.norm_weight_decay.unwrap_or(wd);
        let (norm_wd, gamma_target) = match config.norm_decay {
            NormDecay::Off => (0.0, 0.0),
            NormDecay::TowardZero => (norm_wd, 0.0),
            NormDecay::TowardOne => (norm_wd, 1.0),
        };
        let groups = [
            (
                vec![ParamRole::ConvWeight, ParamRole::LinearWeight],
                wd,
                0.0,
            ),
            (vec![ParamRole::NormGamma], norm_wd, gamma_target),
            (vec![ParamRole::NormBeta], norm_wd, 0.0),
        ];
        let mut optimizer = decayed(config, 0.0, 0.0);
        for (roles, penalty, target) in groups {
            optimizer = match config.kind {
                OptimizerKind::Sgd => {
                    optimizer.with_group(group(&roles), sgd(config, penalty, target), None)
                }
                OptimizerKind::Adam => {
                    optimizer.with_group(group(&roles), adam(config, penalty, target), None)
                }
            };
        }
        let gamma_lr = config.lr / config.gamma_lr_divisor;
        let input_lr = config.lr
            / config
                .input_norm_lr_divisor
                .unwrap_or(config.gamma_lr_divisor);
        let scheduler = ModuleLrScheduler::new(GroupLr::new(config.lr, curve.clone(), t))
            .with_group(
                group(&[ParamRole::NormGamma]),
                GroupLr::new(gamma_lr, curve.clone(), t),
            )
            .with_group(
                group(&[ParamRole::InputNormGamma]),
                GroupLr::new(input_lr, curve, t),
            );
        Ok(Self {
            optimizer,
            scheduler,
            last_lr: 0.0,
        })
    }

    /// One update of `module` with `grads`; advances the schedule.
    pub fn step<M: Module>(&mut self, module: M, grads: GradientsParams) -> M {
        let lr = self.scheduler.step();
        self.last_lr = lr.base();
        self.optimizer.step(lr, module, grads)
    }

    /// The base learning rate α(t) of the last update.
    pub fn last_lr(&self) -> f64 {
        self.last_lr
    }

    /// Writes the optimizer state (momentum buffers, Adam moments) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        self.optimizer.save(path).map_err(|e| TrainError::Corrupt {
            path: path.into(),
            why: format!("writing optimizer state: {e}"),
        })
    }

    /// Reads the optimizer state written by [`GroupedOptimizer::save`].
    pub fn load(self, path: &Path) -> Result<Self, TrainError> {
        let optimizer = self.optimizer.load(path).map_err(|e| TrainError::Corrupt {
            path: path.into(),
            why: format!("reading optimizer state: {e}"),
        })?;
        Ok(Self { optimizer, ..self })
    }
}

/// The fallback group (no decay) as a module optimizer.
fn decayed(config: &OptimizerConfig, penalty: f64, target: f64) -> ModuleOptimizer {
    match config.kind {
        OptimizerKind::Sgd => sgd(config, penalty, target).into(),
        OptimizerKind::Adam => adam(config, penalty, target).into(),
    }
}

fn sgd(config: &OptimizerConfig, penalty: f64, target: f64) -> Decayed<burn::optim::Sgd> {
    let momentum = (config.momentum > 0.0).then_some(MomentumConfig {
        momentum: config.momentum,
        dampening: 0.0,
        nesterov: config.nesterov,
    });
    Decayed {
        inner: SgdConfig::new().with_momentum(momentum).build(),
        penalty,
        target,
    }
}

fn adam(config: &OptimizerConfig, penalty: f64, target: f64) -> Decayed<burn::optim::Adam> {
    Decayed {
        inner: AdamConfig::new()
            .with_beta_1(config.beta1 as f32)
            .with_beta_2(config.beta2 as f32)
            .with_epsilon(config.adam_epsilon as f32)
            .build(),
        penalty,
        target,
    }
}
