//! The fused path on Flex: statistics in one read pass, normalize + affine in one pass and the
//! backward in two passes, behind a Burn backend extension ([`FusedNorm`]) with a hand-written
//! Autodiff backward.
//!
//! The layer calls it for f32 inputs on Flex devices (with or without autodiff); every other
//! backend takes the composed path, which stays the reference.

mod autodiff;
mod kernels;

use std::borrow::Cow;
use std::sync::Arc;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};

use kernels::{Affine1, Affine2};

/// The statistics and set indices of one fused call, all on the host.
///
/// Statistics rows are whatever the mode uses: example blocks (batch statistics), population
/// sets (running statistics) or examples (example weighing).
#[derive(Debug, Clone)]
pub(crate) struct FusedPlan {
    /// Input shape [N, C, S].
    pub shape: [usize; 3],
    /// Channels per channel group.
    pub cpg: usize,
    /// Statistics row of each example.
    pub stat_row: Vec<usize>,
    /// Affine row (of `scale` and `shift`) of each example.
    pub affine_row: Vec<usize>,
    /// Mean per statistics row and channel group, [R, K].
    pub mean: Vec<f64>,
    /// 1/√(var + ε) per statistics row and channel group, [R, K].
    pub rstd: Vec<f64>,
    /// Values per statistics row.
    pub count: Vec<f64>,
    /// How much the statistics depend on x: 1 for batch statistics, 0 for constants, α for
    /// example weighing (mean = α·batch + (1 − α)·population).
    pub alpha: f64,
}

/// The gradients of one fused call.
struct FusedGrads {
    /// ∂L/∂x, when asked for.
    dx: Option<Vec<f32>>,
    /// ∂L/∂scale and ∂L/∂shift per affine row and channel, when asked for.
    dscale: Vec<f64>,
    dshift: Vec<f64>,
}

impl FusedPlan {
    fn groups(&self) -> usize {
        self.shape[1] / self.cpg
    }

    /// Statistics index (row·K + group) and affine index (row·C + channel) of plane (i, ch).
    fn indices(&self, i: usize, ch: usize) -> (usize, usize) {
        let c = self.shape[1];
        (
            self.stat_row[i] * self.groups() + ch / self.cpg,
            self.affine_row[i] * c + ch,
        )
    }

    /// Per-plane coefficients of y = (x − mean)·rstd·scale + shift.
    fn forward_coefficients(&self, scale: &[f32], shift: &[f32]) -> Vec<Affine1> {
        let [n, c, _] = self.shape;
        let mut coef = Vec::with_capacity(n * c);
        for i in 0..n {
            for ch in 0..c {
                let (u, a) = self.indices(i, ch);
                coef.push(Affine1 {
                    shift: self.mean[u] as f32,
                    scale: (self.rstd[u] * f64::from(scale[a])) as f32,
                    offset: shift[a],
                });
            }
        }
        coef
    }

    /// The mean of every plane, in plane order.
    fn plane_means(&self) -> Vec<f32> {
        let [n, c, _] = self.shape;
        (0..n)
            .flat_map(|i| (0..c).map(move |ch| (i, ch)))
            .map(|(i, ch)| self.mean[self.indices(i, ch).0] as f32)
            .collect()
    }

    /// The backward in two passes over the activations: per-plane Σdy and Σdy·x̂, then
    /// dx = rstd·(scale·dy − α/m·(Σ_unit scale·dy + x̂·Σ_unit scale·dy·x̂)).
    fn backward(
        &self,
        dy: &[f32],
        x: &[f32],
        scale: &[f32],
        want_dx: bool,
        want_affine: bool,
    ) -> FusedGrads {
        let [n, c, s] = self.shape;
        let (rows, k) = (self.rstd.len() / self.groups().max(1), self.groups());
        let affine_len = scale.len();
        let mut grads = FusedGrads {
            dx: None,
            dscale: vec![0.0; affine_len],
            dshift: vec![0.0; affine_len],
        };
        let needs_sums = want_affine || (want_dx && self.alpha != 0.0);
        let planes = if needs_sums {
            kernels::grad_moments(dy, x, &self.plane_means(), s)
        } else {
            Vec::new()
        };
        let mut unit_dy = vec![0.0f64; rows * k];
        let mut unit_dy_xhat = vec![0.0f64; rows * k];
        for (p, [sum_dy, sum_dy_centred]) in planes.iter().copied().enumerate() {
            let (i, ch) = (p / c, p % c);
            let (u, a) = self.indices(i, ch);
            let sum_dy_xhat = sum_dy_centred * self.rstd[u];
            grads.dshift[a] += sum_dy;
            grads.dscale[a] += sum_dy_xhat;
            let g = f64::from(scale[a]);
            unit_dy[u] += g * sum_dy;
            unit_dy_xhat[u] += g * sum_dy_xhat;
        }
        if want_dx {
            let mut coef = Vec::with_capacity(n * c);
            for i in 0..n {
                for ch in 0..c {
                    let (u, a) = self.indices(i, ch);
                    let r = self.rstd[u];
                    let f = if self.alpha == 0.0 {
                        0.0
                    } else {
                        self.alpha / self.count[self.stat_row[i]]
                    };
                    coef.push(Affine2 {
                        shift: self.mean[u] as f32,
                        dy_scale: (r * f64::from(scale[a])) as f32,
                        x_scale: (-r * r * f * unit_dy_xhat[u]) as f32,
                        offset: (-r * f * unit_dy[u]) as f32,
                    });
                }
            }
            grads.dx = Some(kernels::affine2(dy, x, &coef, s));
        }
        grads
    }
}

/// Fused normalization kernels, implemented for Flex and `Autodiff<Flex>`.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FusedNorm: Backend {
    /// Σx and Σx² per example and channel group of x [N, C, S]: a [2, N, K] f64 tensor.
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self>;

    /// y = (x − mean)·rstd·scale + shift for x [N, C, S], with `scale` and `shift` [A, C] and
    /// the statistics of `plan`; differentiable in x, scale and shift.
    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedPlan>,
    ) -> FloatTensor<Self>;
}

/// The f32 values of a Flex tensor in row-major order, borrowed when already contiguous.
fn f32_values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => Cow::Borrowed(v),
        None => Cow::Owned(
            t.clone()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default(),
        ),
    }
}

fn flex_tensor<E: burn::tensor::Element>(values: Vec<E>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn dims3(t: &FlexTensor) -> [usize; 3] {
    let shape = t.shape();
    [shape[0], shape[1], shape[2]]
}

impl FusedNorm for Flex {
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self> {
        let [n, c, s] = dims3(&x);
        let k = c / cpg.max(1);
        let planes = kernels::moments(&f32_values(&x), s);
        let mut out = vec![0.0f64; 2 * n * k];
        for (p, [sum, sum_sq]) in planes.into_iter().enumerate() {
            let (i, ch) = (p / c, p % c);
            out[i * k + ch / cpg] += sum;
            out[(n + i) * k + ch / cpg] += sum_sq;
        }
        flex_tensor(out, vec![2, n, k])
    }

    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedPlan>,
    ) -> FloatTensor<Self> {
        let coef = plan.forward_coefficients(&f32_values(&scale), &f32_values(&shift));
        let y = kernels::affine1(&f32_values(&x), &coef, plan.shape[2]);
        flex_tensor(y, plan.shape.to_vec())
    }
}

/// Whether the fused path can run on `x`: f32 on a Flex device, with or without autodiff.
pub(crate) fn supported(x: &Tensor<3>) -> bool {
    let device = x.device();
    let on_flex = match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    };
    on_flex && x.dtype() == DType::F32
}

/// Σx and Σx² per example and channel group ([N·K] each, f64); x must be [`supported`].
pub(crate) fn example_sums(x: &Tensor<3>, cpg: usize) -> (Vec<f64>, Vec<f64>) {
    let out = <Dispatch as FusedNorm>::fused_norm_sums(x.clone().into_dispatch(), cpg);
    let mut sums = crate::state::to_f64(Tensor::<3>::from_dispatch(out));
    let sum_sq = sums.split_off(sums.len() / 2);
    (sums, sum_sq)
}

/// y = (x − mean)·rstd·scale + shift with `plan`'s statistics; x must be [`supported`] and
/// `scale`, `shift` [A, C] f32 on the same device.
pub(crate) fn apply(
    x: Tensor<3>,
    scale: Tensor<2>,
    shift: Tensor<2>,
    plan: FusedPlan,
) -> Tensor<3> {
    let out = <Dispatch as FusedNorm>::fused_norm_apply(
        x.into_dispatch(),
        scale.into_dispatch(),
        shift.into_dispatch(),
        Arc::new(plan),
    );
    Tensor::from_dispatch(out)
}
