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
mod extension;
mod kernels;
mod plan;

use std::sync::Arc;

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};

pub(crate) use bnlab_kernels::is_flex;

pub(crate) use extension::*;
pub(crate) use plan::*;

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

/// relu([`apply`] + residual) in one pass; `residual` as x ([N, C, S], f32, same device).
pub(crate) fn apply_add_relu(
    x: Tensor<3>,
    scale: Tensor<2>,
    shift: Tensor<2>,
    residual: Tensor<3>,
    plan: FusedStats,
) -> Tensor<3> {
    let out = <Dispatch as FusedNorm>::fused_norm_apply_add_relu(
        x.into_dispatch(),
        scale.into_dispatch(),
        shift.into_dispatch(),
        residual.into_dispatch(),
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
