//! [`FusedNorm`]: the Burn backend extension behind the fused path, and its Flex implementation.

use std::sync::Arc;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata, backend_extension};

use bnlab_kernels::{f32_values, flex_tensor};

use super::kernels;
use super::plan::{FusedGrads, FusedStats, shifted_sums};

/// Fused normalization kernels, implemented for Flex, CubeCL devices (features `vulkan` and
/// `cuda`) and Autodiff over either.
#[backend_extension(Flex, Cube: cfg(any(feature = "vulkan", feature = "cuda")), Autodiff)]
pub(crate) trait FusedNorm: Backend {
    /// The sums of each example and channel group (unit) of x [N, C, S], shifted by a value of
    /// the unit so that they keep their precision in f32: a [3, N, K] tensor holding a shift,
    /// Σ(x − shift) and Σ(x − shift)² per unit (Flex: shift 0, sums in f64).
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self>;

    /// y = (x − mean)·rstd·scale + shift for x [N, C, S], with `scale` and `shift` [A, C] and
    /// the statistics of `plan`, through a ReLU when `plan.relu` (Flex only); differentiable in
    /// x, scale and shift.
    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self>;

    /// relu([`Self::fused_norm_apply`] + residual) in one pass (on Flex; composed elsewhere):
    /// the end of a residual block. `plan.relu` must be unset; differentiable in x, scale,
    /// shift and residual.
    fn fused_norm_apply_add_relu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self>;

    /// Per-example units (the plan's statistics rows are the examples) normalized with their
    /// own statistics: y, and the unit sums as [`Self::fused_norm_sums`] gives them;
    /// differentiable in x, scale and shift.
    fn fused_norm_units(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The backward of the fused normalization on one backend: what the Autodiff implementation
/// calls for the gradients of `fused_norm_apply` and `fused_norm_units`.
pub(crate) trait FusedNormBackward: FusedNorm {
    /// ∂L/∂x (when `want_dx`), ∂L/∂scale and ∂L/∂shift (zeros unless `want_affine`) of
    /// y = (x − mean)·rstd·scale + shift (through a ReLU when `plan.relu`) with `plan`'s
    /// statistics, given ∂L/∂y.
    fn fused_norm_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: &FusedStats,
        want_dx: bool,
        want_affine: bool,
    ) -> FusedGrads<FloatTensor<Self>>;
}

impl FusedNormBackward for Flex {
    fn fused_norm_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: &FusedStats,
        want_dx: bool,
        want_affine: bool,
    ) -> FusedGrads<FloatTensor<Self>> {
        let out = plan.backward(
            &f32_values(&dy),
            &f32_values(&x),
            &f32_values(&scale),
            &f32_values(&shift),
            want_dx,
            want_affine,
        );
        FusedGrads {
            dx: out.dx.map(|dx| flex_tensor(dx, plan.shape.to_vec())),
            dscale: out.dscale,
            dshift: out.dshift,
        }
    }
}

/// The values of small tensors on the host, as f64, read in one transaction (on a GPU, one wait
/// for the device instead of one per tensor).
pub(crate) fn host_values<B: Backend>(tensors: Vec<FloatTensor<B>>) -> Vec<Vec<f64>> {
    use burn::backend::ops::TransactionPrimitive;
    crate::tensors::count_host_read();
    let tr = TransactionPrimitive::<B>::new(tensors, Vec::new(), Vec::new(), Vec::new());
    // a failed read means a lost device, which no caller can recover from here
    let data = burn::tensor::read_sync(B::tr_execute(tr)).unwrap_or_else(|e| {
        panic!("bnlab-norm: reading statistics back from the device failed: {e}")
    });
    data.read_floats
        .into_iter()
        .map(|d| {
            d.convert::<f64>()
                .try_into_vec::<f64>()
                .unwrap_or_else(|e| {
                    panic!("bnlab-norm: statistics read back from the device are not floats: {e:?}")
                })
        })
        .collect()
}

pub(crate) fn dims3(t: &FlexTensor) -> [usize; 3] {
    let shape = t.shape();
    [shape[0], shape[1], shape[2]]
}

impl FusedNorm for Flex {
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self> {
        let [n, c, s] = dims3(&x);
        // each example's channel groups are consecutive runs of cpg·s values
        let units = kernels::moments(&f32_values(&x), cpg.max(1) * s);
        flex_tensor(shifted_sums(&units), vec![3, n, c / cpg.max(1)])
    }

    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self> {
        let coef = plan.forward_coefficients(&f32_values(&scale), &f32_values(&shift));
        let y = kernels::affine1(&f32_values(&x), &coef, plan.shape[2], plan.relu);
        flex_tensor(y, plan.shape.to_vec())
    }

    fn fused_norm_apply_add_relu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self> {
        assert!(!plan.relu, "bnlab-norm: a ReLU planned before the residual");
        let coef = plan.forward_coefficients(&f32_values(&scale), &f32_values(&shift));
        let (x, r) = (f32_values(&x), f32_values(&residual));
        let y = kernels::affine_add_relu(&x, &r, &coef, plan.shape[2]);
        flex_tensor(y, plan.shape.to_vec())
    }

    fn fused_norm_units(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, sums) =
            plan.unit_forward(&f32_values(&x), &f32_values(&scale), &f32_values(&shift));
        let [n, c, _] = plan.shape;
        (
            flex_tensor(y, plan.shape.to_vec()),
            flex_tensor(sums, vec![3, n, c / plan.cpg.max(1)]),
        )
    }
}
