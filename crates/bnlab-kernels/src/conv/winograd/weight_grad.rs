//! The weight gradient: per transformed row of the tiles, the sums over every tile of
//! (input tiles transformed) × (output-gradient tiles transformed), then `Gᵀ·D·G`.

use rayon::prelude::*;

use super::super::direct::with_local;
use super::filters::filter_grads;
use super::tiles::{transform_grads, transform_inputs};
use super::{LANES, Plan, point_len};

/// Input channels of the weight gradient's register tile (rows of the transformed gradient).
const GRAD_ROWS: usize = 6;

/// Output-channel vectors of the weight gradient's register tile.
const GRAD_VECTORS: usize = 4;

/// Output channels of the weight gradient's register tile: its transformed output gradients
/// are padded to a multiple of it.
const GRAD_COLUMNS: usize = LANES * GRAD_VECTORS;

/// Tiles a block of the weight gradient aims for.
const GRAD_BLOCK_TILES: usize = 192;

/// Per-thread buffers of one block of the weight gradient.
#[derive(Default)]
struct GradScratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    /// This thread's weight-gradient buffers, kept from call to call.
    static GRAD_SCRATCH: std::cell::RefCell<GradScratch> =
        std::cell::RefCell::new(GradScratch::default());
}

/// Adds one point's `Σ_t v[ci][t] · m[t][co]` over `tiles` tiles into `du` (`rows` × `columns`,
/// row-major): `v` holds `rows` columns of `stride` tiles, `m` `columns` channels a tile.
fn grad_product(
    [rows, columns]: [usize; 2],
    [tiles, stride]: [usize; 2],
    v: &[f32],
    m: &[f32],
    du: &mut [f32],
) {
    assert!(rows.is_multiple_of(GRAD_ROWS) && columns.is_multiple_of(GRAD_COLUMNS));
    assert!(v.len() >= (rows - 1) * stride + tiles && m.len() >= tiles * columns);
    assert!(du.len() >= rows * columns && tiles <= stride);
    for c0 in (0..columns).step_by(GRAD_COLUMNS) {
        for r0 in (0..rows).step_by(GRAD_ROWS) {
            // SAFETY: (AVX-512F was checked by `plan_of`) the asserts above keep the kernel's
            // reads of `v` (GRAD_ROWS rows of `tiles` from row r0), of `m` (GRAD_COLUMNS from
            // c0 of each of `tiles` tiles) and its updates of `du` in bounds.
            unsafe {
                grad_tile(
                    tiles,
                    [stride, columns],
                    v[r0 * stride..].as_ptr(),
                    m[c0..].as_ptr(),
                    du[r0 * columns + c0..].as_mut_ptr(),
                )
            }
        }
    }
}

/// The register tile of [`grad_product`]: [`GRAD_ROWS`] × [`GRAD_COLUMNS`] of `du`, summed
/// over the tiles in order.
///
/// # Safety
/// AVX-512F; `v` readable for [`GRAD_ROWS`] rows of `tiles` at stride `stride`, `m` for
/// `tiles` rows of [`GRAD_COLUMNS`] at stride `columns`, `du` updatable for [`GRAD_ROWS`] rows
/// of [`GRAD_COLUMNS`] at stride `columns`.
#[target_feature(enable = "avx512f")]
unsafe fn grad_tile(
    tiles: usize,
    [stride, columns]: [usize; 2],
    v: *const f32,
    m: *const f32,
    du: *mut f32,
) {
    use std::arch::x86_64::*;
    // SAFETY (every block below): in bounds by the caller's requirement
    let mut acc: [[__m512; GRAD_VECTORS]; GRAD_ROWS] = std::array::from_fn(|r| {
        std::array::from_fn(|c| unsafe { _mm512_loadu_ps(du.add(r * columns + LANES * c)) })
    });
    for t in 0..tiles {
        let b: [__m512; GRAD_VECTORS] =
            std::array::from_fn(|c| unsafe { _mm512_loadu_ps(m.add(t * columns + LANES * c)) });
        for (r, acc) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(unsafe { *v.add(r * stride + t) });
            for c in 0..GRAD_VECTORS {
                acc[c] = _mm512_fmadd_ps(a, b[c], acc[c]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (c, &acc) in acc.iter().enumerate() {
            unsafe { _mm512_storeu_ps(du.add(r * columns + LANES * c), acc) };
        }
    }
}

/// ∂L/∂w of [`super::forward()`], laid out `[cout][cin][3][3]`: `Gᵀ·(Σ_tiles (Bᵀ·x·B) ⊙ (A·dy·Aᵀ))·G`.
/// One task per transformed row (four points) over every block in order, so each sum runs in
/// one fixed order whatever the threads.
pub(crate) fn weight_grad(p: &Plan, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (rows, columns) = (
        p.cin.next_multiple_of(GRAD_ROWS),
        p.cout.next_multiple_of(GRAD_COLUMNS),
    );
    let part = 4 * rows * columns;
    let mut du = vec![0.0f32; 4 * part];
    let blocks = p.blocks_of(GRAD_BLOCK_TILES, LANES);
    du.par_chunks_mut(part).enumerate().for_each(|(i, du)| {
        with_local(&GRAD_SCRATCH, |s| {
            for images in &blocks {
                let tiles = images.len() * p.tiles_per_image();
                let stride = tiles.next_multiple_of(LANES);
                let (vp, mp) = (point_len(stride, rows), point_len(tiles, columns));
                s.v.resize(4 * vp, 0.0);
                s.m.resize(4 * mp, 0.0);
                // SAFETY: `plan_of` checked AVX-512F
                unsafe {
                    transform_inputs(
                        p,
                        p.cin,
                        x,
                        images.clone(),
                        [stride, vp],
                        i..i + 1,
                        &mut s.v,
                    );
                    transform_grads(p, p.cout, dy, images.clone(), i, [columns, mp], &mut s.m);
                }
                for j in 0..4 {
                    grad_product(
                        [rows, columns],
                        [tiles, stride],
                        &s.v[j * vp..][..vp],
                        &s.m[j * mp..][..mp],
                        &mut du[j * rows * columns..][..rows * columns],
                    );
                }
            }
        })
    });
    filter_grads(p, &du, [rows, columns])
}
