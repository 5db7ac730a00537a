//! The weight gradient: the sums over every tile of (input tiles transformed) ×
//! (output-gradient tiles transformed), then `Gᵀ·D·G`.
//!
//! Tasks split the sums two ways, both fixed by the shape, so every sum has one order
//! whatever the threads:
//! - where the 16 points' sums fit in L2, by segments of blocks: each task sums all 16
//!   points over its segment's blocks, and the segments' partial sums are added in order;
//! - else by rows of the transformed tiles (four points each): each task runs over every
//!   block, reading the inputs once per row, so that its sums stay in L2.

use std::ops::Range;

use rayon::prelude::*;

use super::super::direct::with_local;
use super::super::geometry::SEGMENTS;
use super::super::passes::sum_groups_in_order;
use super::filters::filter_grads;
use super::groups::Groups;
use super::tiles::{transform_grads, transform_inputs};
use super::{BUFFERS, LANES, POINTS, Plan, point_len};

/// The weight gradient's register tile: input channels (rows of the sums) × vectors of 16
/// output channels, 24 or 16 accumulators, as wide in output channels as the layer allows
/// (the transformed output gradients are padded to whole tiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GradTile {
    /// 6 × 64.
    Wide,
    /// 8 × 32.
    Half,
    /// 16 × 16.
    Narrow,
}

impl GradTile {
    /// The tile for `cout` output channels.
    fn of(cout: usize) -> GradTile {
        match cout {
            0..=16 => GradTile::Narrow,
            17..=32 => GradTile::Half,
            _ => GradTile::Wide,
        }
    }

    /// Input channels of the tile.
    fn rows(self) -> usize {
        match self {
            GradTile::Wide => 6,
            GradTile::Half => 8,
            GradTile::Narrow => 16,
        }
    }

    /// Output channels of the tile.
    fn columns(self) -> usize {
        match self {
            GradTile::Wide => 4 * LANES,
            GradTile::Half => 2 * LANES,
            GradTile::Narrow => LANES,
        }
    }
}

/// Tiles a block of the weight gradient aims for.
const GRAD_BLOCK_TILES: usize = 192;

/// Bytes of the 16 points' sums up to which the tasks split the blocks (not the points).
const SEGMENTED_BYTES: usize = 2 << 20;

/// Adds one point's `Σ_t v[ci][t] · m[t][co]` over `tiles` tiles into `du` (`rows` × `columns`,
/// row-major) in register tiles `tile`: `v` holds `rows` columns of `stride` tiles, `m`
/// `columns` channels a tile.
fn grad_product(
    tile: GradTile,
    [rows, columns]: [usize; 2],
    [tiles, stride]: [usize; 2],
    v: &[f32],
    m: &[f32],
    du: &mut [f32],
) {
    assert!(rows.is_multiple_of(tile.rows()) && columns.is_multiple_of(tile.columns()));
    assert!(v.len() >= (rows - 1) * stride + tiles && m.len() >= tiles * columns);
    assert!(du.len() >= rows * columns && tiles <= stride);
    for c0 in (0..columns).step_by(tile.columns()) {
        for r0 in (0..rows).step_by(tile.rows()) {
            let (v, m) = (v[r0 * stride..].as_ptr(), m[c0..].as_ptr());
            let du = du[r0 * columns + c0..].as_mut_ptr();
            let at = [stride, columns];
            // SAFETY: (AVX-512F was checked by `plan_of`) the asserts above keep the kernel's
            // reads of `v` (the tile's rows of `tiles` from row r0), of `m` (the tile's columns
            // from c0 of each of `tiles` tiles) and its updates of `du` in bounds.
            unsafe {
                match tile {
                    GradTile::Wide => grad_tile::<6, 4>(tiles, at, v, m, du),
                    GradTile::Half => grad_tile::<8, 2>(tiles, at, v, m, du),
                    GradTile::Narrow => grad_tile::<16, 1>(tiles, at, v, m, du),
                }
            }
        }
    }
}

/// The register tile of [`grad_product`]: `ROWS` × `VECTORS`·16 of `du`, summed over the tiles
/// in order.
///
/// # Safety
/// AVX-512F; `v` readable for `ROWS` rows of `tiles` at stride `stride`, `m` for `tiles` rows
/// of `VECTORS`·16 at stride `columns`, `du` updatable for `ROWS` rows of `VECTORS`·16 at
/// stride `columns`.
#[target_feature(enable = "avx512f")]
unsafe fn grad_tile<const ROWS: usize, const VECTORS: usize>(
    tiles: usize,
    [stride, columns]: [usize; 2],
    v: *const f32,
    m: *const f32,
    du: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); VECTORS]; ROWS];
    for (r, acc) in acc.iter_mut().enumerate() {
        for (c, acc) in acc.iter_mut().enumerate() {
            // SAFETY: in bounds by the caller's requirement
            *acc = unsafe { _mm512_loadu_ps(du.add(r * columns + LANES * c)) };
        }
    }
    for t in 0..tiles {
        let mut b = [_mm512_setzero_ps(); VECTORS];
        for (c, b) in b.iter_mut().enumerate() {
            // SAFETY: in bounds by the caller's requirement
            *b = unsafe { _mm512_loadu_ps(m.add(t * columns + LANES * c)) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: in bounds by the caller's requirement
            let a = _mm512_set1_ps(unsafe { *v.add(r * stride + t) });
            for c in 0..VECTORS {
                acc[c] = _mm512_fmadd_ps(a, b[c], acc[c]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (c, &acc) in acc.iter().enumerate() {
            // SAFETY: in bounds by the caller's requirement
            unsafe { _mm512_storeu_ps(du.add(r * columns + LANES * c), acc) };
        }
    }
}

/// ∂L/∂w of [`super::forward()`], laid out `[cout][cin][3][3]`:
/// `Gᵀ·(Σ_tiles (Bᵀ·x·B) ⊙ (A·dy·Aᵀ))·G`.
pub(crate) fn weight_grad(p: &Plan, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let tile = GradTile::of(p.cout);
    let (rows, columns) = (
        p.cin.next_multiple_of(tile.rows()),
        p.cout.next_multiple_of(tile.columns()),
    );
    let blocks = p.blocks_of(GRAD_BLOCK_TILES, LANES);
    let sums = rows * columns;
    // (transformed rows per task, segments of blocks)
    let (per_task, segments) = if 4 * POINTS * sums <= SEGMENTED_BYTES {
        (4, SEGMENTS.min(blocks.len()).max(1))
    } else {
        (1, 1)
    };
    let row_groups = 4 / per_task;
    // SAFETY: `plan_of` checked AVX-512F
    let tile_groups = unsafe { Groups::of(p) };
    let per_segment = blocks.len().div_ceil(segments).max(1);
    let tasks: Vec<(&[Range<usize>], usize)> = blocks
        .chunks(per_segment)
        .flat_map(|segment| (0..row_groups).map(move |g| (segment, g)))
        .collect();
    // per task (segment-major): the sums of its rows' points
    let partials: Vec<Vec<f32>> = tasks
        .into_par_iter()
        .map(|(segment, g)| {
            let mut du = vec![0.0f32; 4 * per_task * sums];
            let rows_of_task = g * per_task..(g + 1) * per_task;
            with_local(&BUFFERS, |buf| {
                for images in segment {
                    let tiles = images.len() * p.tiles_per_image();
                    let stride = tiles.next_multiple_of(LANES);
                    let (vp, mp) = (point_len(stride, rows), point_len(tiles, columns));
                    buf.v.resize(4 * per_task * vp, 0.0);
                    buf.m.resize(4 * per_task * mp, 0.0);
                    let (x_at, dy_at) = ([stride, vp], [columns, mp]);
                    let r = rows_of_task.clone();
                    // SAFETY: `plan_of` checked AVX-512F
                    unsafe {
                        let (groups, b) = (tile_groups.as_ref(), images.clone());
                        transform_inputs(p, groups, p.cin, x, b, x_at, r.clone(), &mut buf.v);
                        transform_grads(p, p.cout, dy, images.clone(), dy_at, r, &mut buf.m);
                    }
                    for (k, du) in du.chunks_exact_mut(sums).enumerate() {
                        grad_product(
                            tile,
                            [rows, columns],
                            [tiles, stride],
                            &buf.v[k * vp..][..vp],
                            &buf.m[k * mp..][..mp],
                            du,
                        );
                    }
                }
            });
            du
        })
        .collect();
    // each group's sums over the segments in order, the groups in row order
    let du = sum_groups_in_order(&partials, row_groups, |_| 4 * per_task * sums);
    filter_grads(p, &du, [rows, columns])
}
