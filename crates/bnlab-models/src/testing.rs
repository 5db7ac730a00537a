//! Helpers shared by the tests of this crate.

use bnlab_norm::{NormConfig, NormMode, RunningStats, set_norm_mode};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Tensor};

use crate::{ModelError, NormSpec};

/// The test device.
pub(crate) fn device() -> Device {
    Device::flex()
}

/// Uniform(−1, 1) input of `shape`, seeded.
pub(crate) fn input(shape: [usize; 4], seed: u64) -> Tensor<4> {
    let device = device();
    device.seed(seed);
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &device)
}

/// BatchNorm whose running statistics become the last batch's (momentum 1).
pub(crate) fn bn_last_batch() -> NormSpec {
    NormSpec::new(NormConfig::new(1).with_running(RunningStats::Ema { momentum: 1.0 }))
}

/// Replaces every [1, C] parameter (γ, β and the other norm parameters) by U(0.5, 1.5).
struct RandomizeNormParams;

impl ModuleMapper for RandomizeNormParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let t = param.val();
        if D == 2 && t.dims()[0] == 1 {
            let r = Tensor::random(t.shape(), Distribution::Uniform(0.5, 1.5), &t.device());
            param.map(|_| r)
        } else {
            param
        }
    }
}

/// Gives every norm layer non-trivial γ/β and running statistics (one training batch with
/// momentum 1), then sets `Eval(Population)` everywhere.
pub(crate) fn with_inference_stats<M: Module>(
    model: M,
    forward: impl Fn(&M, Tensor<4>) -> Result<Tensor<2>, ModelError>,
    shape: [usize; 4],
) -> M {
    let model = model.map(&mut RandomizeNormParams);
    let model = set_norm_mode(model, NormMode::Train);
    forward(&model, input(shape, 7)).expect("training forward");
    set_norm_mode(model, NormMode::EVAL)
}

/// Largest |a − b| and largest |a|.
pub(crate) fn max_diff(a: Tensor<2>, b: Tensor<2>) -> (f32, f32) {
    let scale = a.clone().abs().max().into_scalar::<f32>();
    let diff = (a - b).abs().max().into_scalar::<f32>();
    (diff, scale)
}
