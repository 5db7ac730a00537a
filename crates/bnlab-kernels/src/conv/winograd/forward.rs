//! The forward and the input gradient: per block of images, the input tiles transformed, 16
//! products of (tiles × input channels) by (input × output channels), the products
//! transformed back.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::super::direct::with_local;
use super::super::passes::split;
use super::filters::{forward_filters, input_grad_filters};
use super::groups::Groups;
use super::tiles::{transform_inputs, transform_outputs};
use super::{BUFFERS, Buffers, POINTS, Plan, point_len};

/// Tiles a block aims for: the products' rows.
const BLOCK_TILES: usize = 96;

/// Output channels of one panel of the products' register tile (8 divides the networks'
/// channel counts; a tile of 6 × 4 vectors padded 16 channels to 18 and measured slower).
pub(super) const PANEL: usize = 8;

/// Tile vectors of the products' register tile (16 tiles each).
const ROWS: usize = 3;

/// Tiles of the products' register tile: a block's tiles are padded to a multiple of it.
pub(super) const STRIP: usize = 16 * ROWS;

/// Point `k`'s product `m = v · u` over a block: `v` holds `cin` columns of `stride` tiles,
/// `u` the filter panels of every point ([`super::filters::transform_filters`]), `m` one column of `stride`
/// tiles per output channel of the padded panels.
fn product(k: usize, cin: usize, stride: usize, v: &[f32], u: &[f32], m: &mut [f32]) {
    let panel_len = POINTS * cin * PANEL;
    assert!(stride.is_multiple_of(STRIP) && v.len() >= cin * stride);
    assert!(u.len().is_multiple_of(panel_len) && m.len() >= u.len() / panel_len * PANEL * stride);
    for (panel, u) in u.chunks_exact(panel_len).enumerate() {
        let u = &u[k * cin * PANEL..][..cin * PANEL];
        for strip in (0..stride).step_by(STRIP) {
            let m = &mut m[panel * PANEL * stride + strip..];
            // SAFETY: (AVX-512F was checked by `plan_of`) the asserts above keep the kernel's
            // reads of `v` (cin columns of `stride` from `strip`, STRIP tiles each) and `u`
            // (cin × PANEL) and its writes to `m` (PANEL columns of `stride`) in bounds.
            unsafe { strip_product(cin, stride, v[strip..].as_ptr(), u.as_ptr(), m.as_mut_ptr()) }
        }
    }
}

/// The register tile of [`product`]: [`STRIP`] tiles × [`PANEL`] output channels, summed over
/// `cin` input channels in order.
///
/// # Safety
/// AVX-512F; `v` readable for `cin` columns of [`STRIP`] at stride `stride`, `u` for
/// `cin × PANEL`, `m` writable for `PANEL` columns of [`STRIP`] at stride `stride`.
#[target_feature(enable = "avx512f")]
unsafe fn strip_product(cin: usize, stride: usize, v: *const f32, u: *const f32, m: *mut f32) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); ROWS]; PANEL];
    for i in 0..cin {
        // SAFETY: in bounds by the caller's requirement
        unsafe {
            let col = v.add(i * stride);
            let a: [__m512; ROWS] = std::array::from_fn(|r| _mm512_loadu_ps(col.add(16 * r)));
            let b = u.add(i * PANEL);
            for (j, acc) in acc.iter_mut().enumerate() {
                let bj = _mm512_set1_ps(*b.add(j));
                for r in 0..ROWS {
                    acc[r] = _mm512_fmadd_ps(a[r], bj, acc[r]);
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        for (r, &acc) in acc.iter().enumerate() {
            // SAFETY: in bounds by the caller's requirement
            unsafe { _mm512_storeu_ps(m.add(j * stride + 16 * r), acc) }
        }
    }
}

/// `cin → cout` planes of `x` through the transformed filters `u`, every block in parallel.
fn run(p: &Plan, cin: usize, cout: usize, x: &[f32], u: &[f32]) -> Vec<f32> {
    let image_out = cout * p.pixels();
    // every element is written by one block's output transform (the tiles cover every
    // pixel), so the output is not zeroed first
    let mut y: Vec<f32> = Vec::with_capacity(p.n * image_out);
    let blocks = p.blocks_of(BLOCK_TILES, STRIP);
    let outs = split(
        &mut y.spare_capacity_mut()[..p.n * image_out],
        blocks.iter().map(|b| b.len() * image_out),
    );
    let panels = u.len() / POINTS / cin; // padded output channels
    // SAFETY: `plan_of` checked AVX-512F
    let groups = unsafe { Groups::of(p) };
    blocks.into_par_iter().zip(outs).for_each(|(images, out)| {
        with_local(&BUFFERS, |s| {
            let stride = (images.len() * p.tiles_per_image()).next_multiple_of(STRIP);
            s.v.resize(POINTS * point_len(stride, cin), 0.0);
            s.m.resize(POINTS * point_len(stride, panels), 0.0);
            // SAFETY: `plan_of` checked AVX-512F
            unsafe {
                block(
                    p,
                    groups.as_ref(),
                    [cin, cout, panels],
                    x,
                    u,
                    images,
                    stride,
                    s,
                    out,
                )
            };
        })
    });
    // SAFETY: the blocks wrote every element (above)
    unsafe { y.set_len(p.n * image_out) };
    y
}

/// One block of [`run`]: its tiles transformed, multiplied point by point, transformed back
/// into `out`; `panels` is `cout` padded to whole filter panels.
///
/// # Safety
/// AVX-512F (the transforms' loops are compiled for it).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    p: &Plan,
    groups: Option<&Groups>,
    [cin, cout, panels]: [usize; 3],
    x: &[f32],
    u: &[f32],
    images: Range<usize>,
    stride: usize,
    s: &mut Buffers,
    out: &mut [MaybeUninit<f32>],
) {
    // SAFETY: AVX-512F by the caller's requirement
    unsafe {
        transform_inputs(
            p,
            groups,
            cin,
            x,
            images,
            [stride, point_len(stride, cin)],
            0..4,
            &mut s.v,
        )
    };
    for k in 0..POINTS {
        product(
            k,
            cin,
            stride,
            &s.v[k * point_len(stride, cin)..][..stride * cin],
            u,
            &mut s.m[k * point_len(stride, panels)..][..stride * panels],
        );
    }
    // SAFETY: AVX-512F by the caller's requirement
    unsafe { transform_outputs(p, groups, cout, &s.m, stride, out) };
}

/// y = conv(x, w) for `w` laid out `[cout][cin][3][3]`.
pub(crate) fn forward(p: &Plan, x: &[f32], w: &[f32]) -> Vec<f32> {
    run(p, p.cin, p.cout, x, &forward_filters(p, w))
}

/// ∂L/∂x of [`forward`] from ∂L/∂y.
pub(crate) fn input_grad(p: &Plan, dy: &[f32], w: &[f32]) -> Vec<f32> {
    run(p, p.cout, p.cin, dy, &input_grad_filters(p, w))
}
