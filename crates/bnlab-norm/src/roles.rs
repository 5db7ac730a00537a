//! Parameter roles, so a trainer builds optimizer groups by role and never by name.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use crate::AffineParams;
use crate::state::STATE_CONTAINER;

/// What a parameter is, for optimizer groups (learning rate ÷ c, weight decay, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ParamRole {
    /// A convolution kernel.
    ConvWeight,
    /// A fully connected weight matrix.
    LinearWeight,
    /// A convolution or linear bias.
    Bias,
    /// γ of a normalization layer.
    NormGamma,
    /// β of a normalization layer.
    NormBeta,
    /// Extra normalization parameters (A2's γ0, RBN/IEBN gates).
    NormExtra,
    /// γ̂ of the BN input normalization.
    InputNormGamma,
}

/// The dotted path of the module a visitor or mapper is in (`stages.0.1.conv1.norm`): every
/// `enter_module` pushes its field name, every `exit_module` pops it. One rule for the
/// parameter paths that checkpoints, diagnostics and PyTorch key maps share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModulePath(Vec<String>);

impl ModulePath {
    /// Enters the field `name`.
    pub fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }

    /// Leaves the innermost field.
    pub fn exit(&mut self) {
        self.0.pop();
    }

    /// The path so far, joined with dots.
    pub fn joined(&self) -> String {
        self.0.join(".")
    }
}

/// The role of the field `field` of a module of type `container` ("Struct:Name"), if known.
fn role_of(container: &str, field: &str) -> Option<ParamRole> {
    if container == AffineParams::CONTAINER {
        return AffineParams::role(field);
    }
    let name = container.strip_prefix("Struct:")?;
    match (name, field) {
        (n, "weight") if n.starts_with("Conv") => Some(ParamRole::ConvWeight),
        ("Linear", "weight") => Some(ParamRole::LinearWeight),
        (_, "bias") => Some(ParamRole::Bias),
        _ => None,
    }
}

#[derive(Default)]
struct RoleVisitor {
    /// (field name, container type) of the modules entered.
    stack: Vec<(String, String)>,
    roles: HashMap<ParamId, ParamRole>,
}

impl ModuleVisitor for RoleVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some((field, container)) = self.stack.last() else {
            return;
        };
        if let Some(role) = role_of(container, field) {
            self.roles.insert(param.id, role);
        }
    }
}

/// The role of every trainable parameter of `module` that has one, by parameter id.
///
/// Covers [`Norm`](crate::Norm) and burn-nn's convolutions and `Linear`; parameters of other
/// modules are absent from the map. Running statistics are not parameters and never appear.
pub fn param_roles<M: Module>(module: &M) -> HashMap<ParamId, ParamRole> {
    let mut visitor = RoleVisitor::default();
    module.visit(&mut visitor);
    visitor.roles
}

/// Counts learnable values, skipping the buffers (running statistics) of every norm layer.
#[derive(Default)]
struct ParamCounter {
    stack: Vec<String>,
    count: usize,
}

impl ModuleVisitor for ParamCounter {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.stack.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.stack.last().map(String::as_str) != Some(STATE_CONTAINER) {
            self.count += param.lazy_shape().num_elements();
        }
    }
}

/// The number of learnable values in `module`: what PyTorch's
/// `sum(p.numel() for p in m.parameters())` counts. Burn's `num_params` also counts running
/// statistics, which are buffers, not parameters.
pub fn count_parameters<M: Module>(module: &M) -> usize {
    let mut counter = ParamCounter::default();
    module.visit(&mut counter);
    counter.count
}

#[cfg(test)]
mod tests {
    use super::ModulePath;

    #[test]
    fn a_path_follows_entries_and_exits() {
        let mut p = ModulePath::default();
        assert_eq!(p.joined(), "");
        p.enter("stages");
        p.enter("0");
        p.enter("norm");
        assert_eq!(p.joined(), "stages.0.norm");
        p.exit();
        p.enter("conv");
        assert_eq!(p.joined(), "stages.0.conv");
        for _ in 0..4 {
            p.exit(); // one exit too many leaves it empty
        }
        assert_eq!(p, ModulePath::default());
    }
}
