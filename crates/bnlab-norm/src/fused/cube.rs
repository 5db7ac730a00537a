//! The fused path on CubeCL devices (Vulkan, and CUDA where it builds): the unit sums and the
//! backward's per-plane sums are one workgroup reduction each, normalize + affine and the input
//! gradient one elementwise pass each. The statistics and per-plane coefficients are computed
//! on the host from the sums, as on Flex.
//!
//! Sums are accumulated in f32 with Kahan compensation on values shifted by one value of their
//! unit (the forward) or centred on the plane mean (the backward), then combined by a tree in
//! workgroup memory; the host finishes them in f64.

use std::sync::Arc;

use burn::backend::Cube;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::kernels::{PlaneBackward, PlaneForward};
use super::{FusedGrads, FusedNorm, FusedNormBackward, FusedStats, host_values};

/// Units of work per workgroup.
const WORKGROUP: usize = 256;

/// Per-unit sums of `len` consecutive values: with `grad`, Σa and Σa·(b − centre[unit]) (a = dy,
/// b = x); without, Σd and Σd² for d = a − a[first of the unit]. Writes [3, units]:
/// shift (the first value, or 0 with `grad`), then the two sums. Each workgroup holds
/// `CUBE_DIM_Y` units of `CUBE_DIM_X` threads.
#[cube(launch)]
fn unit_sums_kernel(
    a: &[f32],
    b: &[f32],
    centre: &[f32],
    out: &mut [f32],
    len: usize,
    units: usize,
    #[comptime] grad: bool,
    #[comptime] threads: usize,
) {
    let lane = UNIT_POS_X as usize;
    let width = CUBE_DIM_X as usize;
    let unit = CUBE_POS * (CUBE_DIM_Y as usize) + (UNIT_POS_Y as usize);
    let valid = unit < units;
    let mut s1 = 0.0f32;
    let mut c1 = 0.0f32;
    let mut s2 = 0.0f32;
    let mut c2 = 0.0f32;
    let mut shift = 0.0f32;
    if valid {
        let base = unit * len;
        let mut mean = 0.0f32;
        if grad {
            mean = centre[unit];
        } else {
            shift = a[base];
        }
        let mut i = lane;
        while i < len {
            let mut u = a[base + i] - shift;
            let mut v = u * u;
            if grad {
                u = a[base + i];
                v = u * (b[base + i] - mean);
            }
            let y1 = u - c1;
            let t1 = s1 + y1;
            c1 = (t1 - s1) - y1;
            s1 = t1;
            let y2 = v - c2;
            let t2 = s2 + y2;
            c2 = (t2 - s2) - y2;
            s2 = t2;
            i += width;
        }
    }
    let mut tree = Shared::<[f32]>::new_slice(2 * threads);
    let slot = UNIT_POS as usize;
    tree[2 * slot] = s1;
    tree[2 * slot + 1] = s2;
    sync_cube();
    let mut half = width / 2;
    while half > 0 {
        if lane < half {
            tree[2 * slot] += tree[2 * (slot + half)];
            tree[2 * slot + 1] += tree[2 * (slot + half) + 1];
        }
        sync_cube();
        half /= 2;
    }
    if valid && lane == 0 {
        out[unit] = shift;
        out[units + unit] = tree[2 * slot];
        out[2 * units + unit] = tree[2 * slot + 1];
    }
}

/// y = (x − k₀)·k₁ + k₂ with the coefficients k of each plane of `len` values.
#[cube(launch)]
fn affine1_kernel(x: &[f32], coef: &[f32], y: &mut [f32], len: usize, total: usize) {
    let i = ABSOLUTE_POS;
    if i < total {
        let p = 3 * (i / len);
        y[i] = (x[i] - coef[p]) * coef[p + 1] + coef[p + 2];
    }
}

/// dx = dy·k₁ + (x − k₀)·k₂ + k₃ with the coefficients k of each plane of `len` values.
#[cube(launch)]
fn affine2_kernel(dy: &[f32], x: &[f32], coef: &[f32], dx: &mut [f32], len: usize, total: usize) {
    let i = ABSOLUTE_POS;
    if i < total {
        let p = 4 * (i / len);
        dx[i] = dy[i] * coef[p + 1] + (x[i] - coef[p]) * coef[p + 2] + coef[p + 3];
    }
}

/// An f32 tensor of `shape` holding `values` on `like`'s device.
fn upload(values: Vec<f32>, shape: Vec<usize>, like: &CubeTensor) -> CubeTensor {
    Cube::float_from_data(TensorData::new(values, shape), &like.device)
}

/// An uninitialized f32 tensor of `shape` on `like`'s device.
fn empty(shape: Vec<usize>, like: &CubeTensor) -> CubeTensor {
    Cube::float_empty(Shape::from(shape), &like.device, DType::F32.into())
}

/// f64 values as f32.
fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// [3, units] sums of `units` runs of `len` values (see [`unit_sums_kernel`]); `b` and
/// `centre` with `grad` only.
fn unit_sums(
    a: &CubeTensor,
    grad: Option<(&CubeTensor, &CubeTensor)>,
    len: usize,
    units: usize,
) -> CubeTensor {
    let out = empty(vec![3, units], a);
    if units == 0 {
        return out;
    }
    let threads = len.next_power_of_two().clamp(1, WORKGROUP);
    let per_cube = WORKGROUP / threads;
    let dim = CubeDim::new_2d(threads as u32, per_cube as u32);
    let count = cubecl::calculate_cube_count_elemwise(&a.client, units * threads, dim);
    let (b, centre) = match grad {
        Some((b, centre)) => (b.clone(), centre.clone()),
        None => (empty(vec![1], a), empty(vec![1], a)),
    };
    unit_sums_kernel::launch(
        &a.client,
        count,
        dim,
        a.clone().into_buffer_arg(),
        b.into_buffer_arg(),
        centre.into_buffer_arg(),
        out.clone().into_buffer_arg(),
        len,
        units,
        grad.is_some(),
        WORKGROUP,
    );
    out
}

/// The elementwise launch geometry for `total` values.
fn elementwise(like: &CubeTensor, total: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(WORKGROUP as u32);
    (
        cubecl::calculate_cube_count_elemwise(&like.client, total, dim),
        dim,
    )
}

/// y = (x − mean)·rstd·scale + shift plane by plane with `coef`.
fn affine1(x: &CubeTensor, coef: &[PlaneForward], shape: [usize; 3]) -> CubeTensor {
    let total = shape.iter().product();
    let y = empty(shape.to_vec(), x);
    if total == 0 {
        return y;
    }
    let flat = coef
        .iter()
        .flat_map(|k| [k.shift, k.scale, k.offset])
        .collect();
    let coef = upload(flat, vec![coef.len(), 3], x);
    let (count, dim) = elementwise(x, total);
    affine1_kernel::launch(
        &x.client,
        count,
        dim,
        x.clone().into_buffer_arg(),
        coef.into_buffer_arg(),
        y.clone().into_buffer_arg(),
        shape[2],
        total,
    );
    y
}

impl FusedNorm for Cube {
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self> {
        let x = into_contiguous(x);
        let [n, c, s] = dims3(&x);
        let k = c / cpg.max(1);
        let out = unit_sums(&x, None, cpg * s, n * k);
        Cube::float_reshape(out, Shape::from(vec![3, n, k]))
    }

    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self> {
        no_relu(&plan);
        let x = into_contiguous(x);
        let v = host_values::<Cube>(vec![scale, shift]);
        let coef = plan.forward_coefficients(&narrow(&v[0]), &narrow(&v[1]));
        affine1(&x, &coef, plan.shape)
    }

    fn fused_norm_apply_add_relu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self> {
        // composed: the layer takes this path on Flex only
        let y = Self::fused_norm_apply(x, scale, shift, plan);
        Self::relu(Self::float_add(y, residual))
    }

    fn fused_norm_units(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        no_relu(&plan);
        let x = into_contiguous(x);
        let sums = Self::fused_norm_sums(x.clone(), plan.cpg);
        let v = host_values::<Cube>(vec![sums.clone(), scale, shift]);
        let plan = (*plan).clone().with_unit_stats(&v[0]);
        let coef = plan.forward_coefficients(&narrow(&v[1]), &narrow(&v[2]));
        (affine1(&x, &coef, plan.shape), sums)
    }
}

impl FusedNormBackward for Cube {
    fn fused_norm_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        _shift: FloatTensor<Self>,
        plan: &FusedStats,
        want_dx: bool,
        want_affine: bool,
    ) -> FusedGrads<FloatTensor<Self>> {
        no_relu(plan);
        let (dy, x) = (into_contiguous(dy), into_contiguous(x));
        let [n, c, s] = plan.shape;
        let mut read = vec![scale];
        if n * c * s > 0 && plan.needs_grad_sums(want_dx, want_affine) {
            let means = upload(plan.plane_means(), vec![n * c], &x);
            read.push(unit_sums(&dy, Some((&x, &means)), s, n * c));
        }
        let v = host_values::<Cube>(read);
        let scale = narrow(&v[0]);
        let planes: Vec<[f64; 2]> = match v.get(1) {
            Some(sums) => {
                let (sum_dy, centred) = sums[n * c..].split_at(n * c);
                sum_dy.iter().zip(centred).map(|(&a, &b)| [a, b]).collect()
            }
            None => Vec::new(),
        };
        let [unit_dy, unit_dy_xhat, dscale, dshift] =
            plan.unit_grads(&planes, &scale, plan.syncs_grads(want_dx));
        let dx = want_dx.then(|| {
            let total = n * c * s;
            let dx = empty(vec![n, c, s], &x);
            if total == 0 {
                return dx;
            }
            let coef: Vec<f32> = plan
                .grad_coefficients(&scale, &unit_dy, &unit_dy_xhat)
                .iter()
                .flat_map(|k: &PlaneBackward| [k.shift, k.dy_scale, k.x_scale, k.offset])
                .collect();
            let coef = upload(coef, vec![n * c, 4], &x);
            let (count, dim) = elementwise(&x, total);
            affine2_kernel::launch(
                &x.client,
                count,
                dim,
                dy.into_buffer_arg(),
                x.clone().into_buffer_arg(),
                coef.into_buffer_arg(),
                dx.clone().into_buffer_arg(),
                s,
                total,
            );
            dx
        });
        FusedGrads { dx, dscale, dshift }
    }
}

/// The fused ReLU is Flex-only: the layer applies Burn's `relu` after these kernels instead
/// (`Norm::forward_relu_domains`), so a plan asking for it here is a bug of the layer.
fn no_relu(plan: &FusedStats) {
    assert!(
        !plan.relu,
        "bnlab-norm: the fused ReLU has no CubeCL kernels (the layer must not plan it here)"
    );
}

fn dims3(t: &CubeTensor) -> [usize; 3] {
    let shape = burn::backend::TensorMetadata::shape(t);
    [shape[0], shape[1], shape[2]]
}
