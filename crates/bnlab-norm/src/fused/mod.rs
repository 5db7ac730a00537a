//! The fused path: statistics in one read pass, normalize + affine in one pass and the backward
//! in two passes, behind a Burn backend extension ([`FusedNorm`]) with a hand-written Autodiff
//! backward. The kernels are plain Rust on Flex (`kernels`) and CubeCL on GPUs (`cube`); the
//! statistics and per-plane coefficients are planned on the host ([`FusedStats`]) for both.
//!
//! The layer calls it for f32 inputs on Flex and CubeCL devices (with or without autodiff);
//! every other backend takes the composed path, which stays the reference.

mod autodiff;
#[cfg(any(feature = "vulkan", feature = "cuda"))]
mod cube;
#[cfg(feature = "vulkan")]
pub use cube::vulkan_gpu;
mod kernels;

use std::sync::Arc;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Device, Tensor};

pub(crate) use bnlab_kernels::{f32_values, flex_tensor, is_flex};

use kernels::{PlaneBackward, PlaneForward};

/// The statistics and set indices of one fused call, all on the host.
///
/// Statistics rows are whatever the mode uses: example blocks (batch statistics), population
/// sets (running statistics) or examples (example weighing).
#[derive(Debug, Clone)]
pub(crate) struct FusedStats {
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
    /// Added to the variance before the square root.
    pub epsilon: f64,
    /// Combines the backward's per-unit gradient sums with other workers' (SyncBN).
    pub sync: Option<GradSync>,
}

/// The reducer whose [`StatsReducer::reduce_grads`](crate::StatsReducer::reduce_grads) the
/// backward calls.
#[derive(Clone)]
pub(crate) struct GradSync(pub Arc<dyn crate::StatsReducer>);

impl std::fmt::Debug for GradSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GradSync")
    }
}

/// The gradients of one fused call, with ∂L/∂x as `T`.
pub(crate) struct FusedGrads<T> {
    /// ∂L/∂x, when asked for.
    dx: Option<T>,
    /// ∂L/∂scale and ∂L/∂shift per affine row and channel (zeros when not asked for).
    dscale: Vec<f64>,
    dshift: Vec<f64>,
}

impl FusedStats {
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
    fn forward_coefficients(&self, scale: &[f32], shift: &[f32]) -> Vec<PlaneForward> {
        let [n, c, _] = self.shape;
        let mut coef = Vec::with_capacity(n * c);
        for i in 0..n {
            for ch in 0..c {
                let (u, a) = self.indices(i, ch);
                coef.push(PlaneForward {
                    shift: self.mean[u] as f32,
                    scale: (self.rstd[u] * f64::from(scale[a])) as f32,
                    offset: shift[a],
                });
            }
        }
        coef
    }

    /// Mean and 1/√(var + ε) of a per-example unit from its Σx and Σx².
    fn unit_stats(&self, sum: f64, sum_sq: f64) -> (f64, f64) {
        let m = (self.cpg * self.shape[2]) as f64;
        let mean = sum / m;
        let var = (sum_sq / m - mean * mean).max(0.0);
        (mean, 1.0 / (var + self.epsilon).sqrt())
    }

    /// Per-example units normalized one at a time while in cache (statistics from the unit's
    /// own values): y and [Σx | Σx²] per example and channel group.
    fn unit_forward(&self, x: &[f32], scale: &[f32], shift: &[f32]) -> (Vec<f32>, Vec<f64>) {
        let [n, c, s] = self.shape;
        let k = self.groups();
        let (y, planes) = kernels::unit_forward(x, s, self.cpg, |u, sums| {
            let (i, g) = (u / k, u % k);
            let (mut s1, mut s2) = (0.0, 0.0);
            for &[a, b] in sums {
                s1 += a;
                s2 += b;
            }
            let (mean, rstd) = self.unit_stats(s1, s2);
            (g * self.cpg..(g + 1) * self.cpg)
                .map(|ch| {
                    let a = self.affine_row[i] * c + ch;
                    PlaneForward {
                        shift: mean as f32,
                        scale: (rstd * f64::from(scale[a])) as f32,
                        offset: shift[a],
                    }
                })
                .collect()
        });
        (y, group_sums(&planes, n, c, self.cpg))
    }

    /// Values per example and channel group.
    fn unit_values(&self) -> f64 {
        (self.cpg * self.shape[2]) as f64
    }

    /// This plan with the statistics of per-example units from their shifted sums ([3, N, K],
    /// see [`FusedNorm::fused_norm_sums`]), computed as the forward computed them.
    fn with_unit_stats(mut self, raw: &[f64]) -> Self {
        let (sums, sum_sq) = decode_sums(raw, self.unit_values());
        let (mean, rstd) = sums
            .iter()
            .zip(&sum_sq)
            .map(|(&s1, &s2)| self.unit_stats(s1, s2))
            .unzip();
        (self.mean, self.rstd) = (mean, rstd);
        self
    }

    /// The mean of every plane, in plane order.
    fn plane_means(&self) -> Vec<f32> {
        let [n, c, _] = self.shape;
        (0..n)
            .flat_map(|i| (0..c).map(move |ch| (i, ch)))
            .map(|(i, ch)| self.mean[self.indices(i, ch).0] as f32)
            .collect()
    }

    /// Whether every example has statistics rows of its own (GroupNorm, LayerNorm,
    /// InstanceNorm, example weighing): each unit is then `cpg` consecutive planes, and the
    /// kernels can finish a unit while it is in cache.
    fn per_example_units(&self) -> bool {
        let mut seen = vec![false; self.count.len()];
        self.stat_row
            .iter()
            .all(|&r| r < seen.len() && !std::mem::replace(&mut seen[r], true))
    }

    /// dx coefficients of plane (i, ch) given its unit's Σ scale·dy and Σ scale·dy·x̂.
    fn grad_coefficient(
        &self,
        i: usize,
        ch: usize,
        scale: &[f32],
        unit_dy: f64,
        unit_dy_xhat: f64,
    ) -> PlaneBackward {
        let (u, a) = self.indices(i, ch);
        let r = self.rstd[u];
        let f = if self.alpha == 0.0 {
            0.0
        } else {
            self.alpha / self.count[self.stat_row[i]]
        };
        PlaneBackward {
            shift: self.mean[u] as f32,
            dy_scale: (r * f64::from(scale[a])) as f32,
            x_scale: (-r * r * f * unit_dy_xhat) as f32,
            offset: (-r * f * unit_dy) as f32,
        }
    }

    /// Σ scale·dy and Σ scale·dy·x̂ per statistics unit, and ∂L/∂scale, ∂L/∂shift, from the
    /// per-plane [Σdy, Σdy·(x − mean)] in plane order.
    fn reduce_planes(&self, planes: &[[f64; 2]], scale: &[f32]) -> [Vec<f64>; 4] {
        let c = self.shape[1];
        let mut unit_dy = vec![0.0f64; self.rstd.len()];
        let mut unit_dy_xhat = vec![0.0f64; self.rstd.len()];
        let mut dscale = vec![0.0f64; scale.len()];
        let mut dshift = vec![0.0f64; scale.len()];
        for (p, &sums) in planes.iter().enumerate() {
            let (u, a, sum_dy, sum_dy_xhat) = self.plane_terms(p / c, p % c, sums);
            dshift[a] += sum_dy;
            dscale[a] += sum_dy_xhat;
            let g = f64::from(scale[a]);
            unit_dy[u] += g * sum_dy;
            unit_dy_xhat[u] += g * sum_dy_xhat;
        }
        [unit_dy, unit_dy_xhat, dscale, dshift]
    }

    /// Statistics index, affine index, Σdy and Σdy·x̂ of plane (i, ch) from its
    /// [Σdy, Σdy·(x − mean)].
    fn plane_terms(
        &self,
        i: usize,
        ch: usize,
        [sum_dy, centred]: [f64; 2],
    ) -> (usize, usize, f64, f64) {
        let (u, a) = self.indices(i, ch);
        (u, a, sum_dy, centred * self.rstd[u])
    }

    /// The backward in two passes over the activations: per-plane Σdy and Σdy·x̂, then
    /// dx = rstd·(scale·dy − α/m·(Σ_unit scale·dy + x̂·Σ_unit scale·dy·x̂)). With per-example
    /// units both passes run unit by unit, so each unit is read from memory once.
    fn backward(
        &self,
        dy: &[f32],
        x: &[f32],
        scale: &[f32],
        want_dx: bool,
        want_affine: bool,
    ) -> FusedGrads<Vec<f32>> {
        let [_, _, s] = self.shape;
        let k = self.groups();
        let synced = self.syncs_grads(want_dx);
        let (dx, planes) = if want_dx && self.alpha != 0.0 && !synced && self.per_example_units() {
            let (dx, planes) =
                kernels::unit_backward(dy, x, &self.plane_means(), s, self.cpg, |u, sums| {
                    let (i, g) = (u / k, u % k);
                    let channels = g * self.cpg..(g + 1) * self.cpg;
                    // the unit's sums, accumulated in the order `reduce_planes` uses
                    let (mut unit_dy, mut unit_dy_xhat) = (0.0f64, 0.0f64);
                    for (ch, &sums) in channels.clone().zip(sums) {
                        let (_, a, sum_dy, sum_dy_xhat) = self.plane_terms(i, ch, sums);
                        let w = f64::from(scale[a]);
                        unit_dy += w * sum_dy;
                        unit_dy_xhat += w * sum_dy_xhat;
                    }
                    channels
                        .map(|ch| self.grad_coefficient(i, ch, scale, unit_dy, unit_dy_xhat))
                        .collect()
                });
            (Some(dx), planes)
        } else if self.needs_grad_sums(want_dx, want_affine) {
            (None, kernels::grad_moments(dy, x, &self.plane_means(), s))
        } else {
            (None, Vec::new())
        };
        let [unit_dy, unit_dy_xhat, dscale, dshift] = self.unit_grads(&planes, scale, synced);
        let dx = match dx {
            Some(dx) => Some(dx),
            None if want_dx => {
                let coef = self.grad_coefficients(scale, &unit_dy, &unit_dy_xhat);
                Some(kernels::affine2(dy, x, &coef, s))
            }
            None => None,
        };
        FusedGrads { dx, dscale, dshift }
    }

    /// Σ scale·dy and Σ scale·dy·x̂ per unit (combined with other workers' when `synced`), and
    /// ∂L/∂scale, ∂L/∂shift, from the per-plane [Σdy, Σdy·(x − mean)].
    fn unit_grads(&self, planes: &[[f64; 2]], scale: &[f32], synced: bool) -> [Vec<f64>; 4] {
        let [mut unit_dy, mut unit_dy_xhat, dscale, dshift] = self.reduce_planes(planes, scale);
        if let (true, Some(GradSync(reducer))) = (synced, &self.sync) {
            let mut both = std::mem::take(&mut unit_dy);
            both.append(&mut unit_dy_xhat);
            reducer.reduce_grads(&mut both);
            unit_dy_xhat = both.split_off(both.len() / 2);
            unit_dy = both;
        }
        [unit_dy, unit_dy_xhat, dscale, dshift]
    }

    /// The dx coefficients of every plane, in plane order, from the per-unit sums.
    fn grad_coefficients(
        &self,
        scale: &[f32],
        unit_dy: &[f64],
        unit_dy_xhat: &[f64],
    ) -> Vec<PlaneBackward> {
        let c = self.shape[1];
        (0..self.shape[0] * c)
            .map(|p| {
                let (i, ch) = (p / c, p % c);
                let (u, _) = self.indices(i, ch);
                self.grad_coefficient(i, ch, scale, unit_dy[u], unit_dy_xhat[u])
            })
            .collect()
    }

    /// Whether the backward needs the per-plane gradient sums.
    fn needs_grad_sums(&self, want_dx: bool, want_affine: bool) -> bool {
        want_affine || (want_dx && self.alpha != 0.0)
    }

    /// Whether the backward combines its unit sums with other workers'.
    fn syncs_grads(&self, want_dx: bool) -> bool {
        want_dx && self.alpha != 0.0 && self.sync.is_some()
    }
}

/// The shifted sums of [`FusedNorm::fused_norm_sums`] ([3, N, K] row-major, shift 0) from
/// per-plane [Σx, Σx²].
fn group_sums(planes: &[[f64; 2]], n: usize, c: usize, cpg: usize) -> Vec<f64> {
    let k = c / cpg.max(1);
    let mut out = vec![0.0f64; 3 * n * k];
    for (p, [sum, sum_sq]) in planes.iter().copied().enumerate() {
        let (i, ch) = (p / c, p % c);
        out[(n + i) * k + ch / cpg] += sum;
        out[(2 * n + i) * k + ch / cpg] += sum_sq;
    }
    out
}

/// Σx and Σx² per unit from the shifted sums [shift | Σ(x − shift) | Σ(x − shift)²] of units
/// of `m` values: Σx = Σd + m·shift, Σx² = Σd² + 2·shift·Σd + m·shift².
fn decode_sums(raw: &[f64], m: f64) -> (Vec<f64>, Vec<f64>) {
    let units = raw.len() / 3;
    let (shift, rest) = raw.split_at(units);
    let (d1, d2) = rest.split_at(units);
    let sums = (0..units).map(|u| d1[u] + m * shift[u]).collect();
    let sum_sq = (0..units)
        .map(|u| d2[u] + 2.0 * shift[u] * d1[u] + m * shift[u] * shift[u])
        .collect();
    (sums, sum_sq)
}

/// Fused normalization kernels, implemented for Flex, CubeCL devices (features `vulkan` and
/// `cuda`) and Autodiff over either.
#[backend_extension(Flex, Cube: cfg(any(feature = "vulkan", feature = "cuda")), Autodiff)]
pub(crate) trait FusedNorm: Backend {
    /// The sums of each example and channel group (unit) of x [N, C, S], shifted by a value of
    /// the unit so that they keep their precision in f32: a [3, N, K] tensor holding a shift,
    /// Σ(x − shift) and Σ(x − shift)² per unit (Flex: shift 0, sums in f64).
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self>;

    /// y = (x − mean)·rstd·scale + shift for x [N, C, S], with `scale` and `shift` [A, C] and
    /// the statistics of `plan`; differentiable in x, scale and shift.
    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
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
    /// y = (x − mean)·rstd·scale + shift with `plan`'s statistics, given ∂L/∂y.
    fn fused_norm_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
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
        plan: &FusedStats,
        want_dx: bool,
        want_affine: bool,
    ) -> FusedGrads<FloatTensor<Self>> {
        let out = plan.backward(
            &f32_values(&dy),
            &f32_values(&x),
            &f32_values(&scale),
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
fn host_values<B: Backend>(tensors: Vec<FloatTensor<B>>) -> Vec<Vec<f64>> {
    use burn::backend::ops::TransactionPrimitive;
    let tr = TransactionPrimitive::<B>::new(tensors, Vec::new(), Vec::new(), Vec::new());
    // a failed read means a lost device, which no caller can recover from here
    let data = burn::tensor::read_sync(B::tr_execute(tr)).unwrap_or_else(|e| {
        panic!("bnlab-norm: reading statistics back from the device failed: {e}")
    });
    data.read_floats
        .into_iter()
        .map(|d| d.convert::<f64>().try_into_vec::<f64>().unwrap_or_default())
        .collect()
}

fn dims3(t: &FlexTensor) -> [usize; 3] {
    let shape = t.shape();
    [shape[0], shape[1], shape[2]]
}

impl FusedNorm for Flex {
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self> {
        let [n, c, s] = dims3(&x);
        let planes = kernels::moments(&f32_values(&x), s);
        flex_tensor(group_sums(&planes, n, c, cpg), vec![3, n, c / cpg.max(1)])
    }

    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self> {
        let coef = plan.forward_coefficients(&f32_values(&scale), &f32_values(&shift));
        let y = kernels::affine1(&f32_values(&x), &coef, plan.shape[2]);
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

/// Whether `device` is a CubeCL device (Vulkan, CUDA), with or without autodiff, in a build
/// with bnlab's GPU kernels (features `vulkan`, `cuda`).
pub fn is_cube(device: &Device) -> bool {
    #[cfg(any(feature = "vulkan", feature = "cuda"))]
    {
        match device.as_dispatch() {
            burn::backend::DispatchDevice::Cube(_) => true,
            burn::backend::DispatchDevice::Autodiff(inner) => {
                matches!(**inner, burn::backend::DispatchDevice::Cube(_))
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
    #[cfg(not(any(feature = "vulkan", feature = "cuda")))]
    {
        let _ = device;
        false
    }
}

/// Whether the fused path can run on `x`: f32 on a Flex or CubeCL device, with or without
/// autodiff.
pub(crate) fn supported(x: &Tensor<3>) -> bool {
    let device = x.device();
    (is_flex(&device) || is_cube(&device)) && x.dtype() == DType::F32
}

/// Σx and Σx² per example and channel group ([N·K] each, f64); x must be [`supported`].
pub(crate) fn example_sums(
    x: &Tensor<3>,
    cpg: usize,
) -> Result<(Vec<f64>, Vec<f64>), crate::NormError> {
    let out = <Dispatch as FusedNorm>::fused_norm_sums(x.clone().into_dispatch(), cpg);
    let raw = crate::tensors::to_f64(Tensor::<3>::from_dispatch(out), "the unit sums")?;
    Ok(decode_sums(&raw, (cpg * x.dims()[2]) as f64))
}

/// y = (x − mean)·rstd·scale + shift with `plan`'s statistics; x must be [`supported`] and
/// `scale`, `shift` [A, C] f32 on the same device.
pub(crate) fn apply(
    x: Tensor<3>,
    scale: Tensor<2>,
    shift: Tensor<2>,
    plan: FusedStats,
) -> Tensor<3> {
    let out = <Dispatch as FusedNorm>::fused_norm_apply(
        x.into_dispatch(),
        scale.into_dispatch(),
        shift.into_dispatch(),
        Arc::new(plan),
    );
    Tensor::from_dispatch(out)
}

/// Per-example units normalized one at a time with their own statistics (see
/// [`FusedNorm::fused_norm_units`]): y, then Σx and Σx² per example and channel group.
pub(crate) fn normalize_units(
    x: Tensor<3>,
    scale: Tensor<2>,
    shift: Tensor<2>,
    plan: FusedStats,
) -> Result<(Tensor<3>, Vec<f64>, Vec<f64>), crate::NormError> {
    let m = plan.unit_values();
    let (y, sums) = <Dispatch as FusedNorm>::fused_norm_units(
        x.into_dispatch(),
        scale.into_dispatch(),
        shift.into_dispatch(),
        Arc::new(plan),
    );
    let raw = crate::tensors::to_f64(Tensor::<3>::from_dispatch(sums), "the unit sums")?;
    let (sums, sum_sq) = decode_sums(&raw, m);
    Ok((Tensor::from_dispatch(y), sums, sum_sq))
}

#[cfg(test)]
mod tests {
    use super::decode_sums;
    use proptest::prelude::*;

    proptest! {
        /// Σx and Σx² recovered from sums shifted by each unit's first value (what the GPU
        /// kernels return) match the direct sums.
        #[test]
        fn shifted_sums_decode_to_the_direct_sums(
            units in proptest::collection::vec(
                (-1e3f64..1e3, proptest::collection::vec(-10.0f64..10.0, 4)),
                1..6,
            )
        ) {
            let m = 4.0;
            let values: Vec<Vec<f64>> =
                units.iter().map(|(mean, d)| d.iter().map(|v| mean + v).collect()).collect();
            let shift: Vec<f64> = values.iter().map(|u| u[0]).collect();
            let d1: Vec<f64> =
                values.iter().zip(&shift).map(|(u, s)| u.iter().map(|x| x - s).sum()).collect();
            let d2: Vec<f64> = values
                .iter()
                .zip(&shift)
                .map(|(u, s)| u.iter().map(|x| (x - s) * (x - s)).sum())
                .collect();
            let raw: Vec<f64> = shift.iter().chain(&d1).chain(&d2).copied().collect();
            let (sums, sum_sq) = decode_sums(&raw, m);
            for (u, vals) in values.iter().enumerate() {
                let s1: f64 = vals.iter().sum();
                let s2: f64 = vals.iter().map(|x| x * x).sum();
                prop_assert!((sums[u] - s1).abs() <= 1e-9 * (1.0 + s1.abs()));
                prop_assert!((sum_sq[u] - s2).abs() <= 1e-9 * (1.0 + s2.abs()));
            }
        }
    }
}
