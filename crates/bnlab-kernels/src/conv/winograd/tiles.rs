//! The tiles' transforms, 16 tiles at a time on AVX-512: `Bᵀ·d·B` of the input tiles,
//! `Aᵀ·m·A` back to output tiles, and `A·dy·Aᵀ` of the output gradient's tiles.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::forward::PANEL;
use super::groups::Groups;
use super::{LANES, POINTS, Plan, first, holds_points, point_len};

/// The four columns of 16 consecutive tiles from tile `q0` in one row of a plane padded by one
/// pixel: padded columns 2q, 2q + 1, 2q + 2 and 2q + 3 of tile q in lane q − q0, that is
/// plane columns 2q − 1 (shifted in from the left), 2q (the row's even columns), 2q + 1 (its
/// odd columns) and 2q + 2 (shifted in from the right), zero outside the row.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_columns(row: &[f32], q0: usize) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::*;
    let w = row.len();
    let c0 = 2 * q0;
    let left = w - c0.min(w);
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // SAFETY: the masked loads read columns c0.. of the row, `left` of them at most
    let (a, b) = unsafe {
        (
            _mm512_maskz_loadu_ps(first(left), row.as_ptr().add(c0.min(w))),
            _mm512_maskz_loadu_ps(
                first(left.saturating_sub(LANES)),
                row.as_ptr().add((c0 + LANES).min(w)),
            ),
        )
    };
    let even = _mm512_permutex2var_ps(a, evens, b);
    let odd = _mm512_permutex2var_ps(a, odds, b);
    let before = _mm512_set1_ps(if c0 > 0 { row[c0 - 1] } else { 0.0 });
    let after = _mm512_set1_ps(row.get(c0 + 2 * LANES).copied().unwrap_or(0.0));
    let (odd_i, even_i) = (_mm512_castps_si512(odd), _mm512_castps_si512(even));
    [
        _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(
            odd_i,
            _mm512_castps_si512(before),
        )),
        even,
        odd,
        _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(_mm512_castps_si512(after), even_i)),
    ]
}

/// Transforms the tiles of images `images` of `x` (`[n][channels][h][w]`) into `v`: the points
/// of the transformed rows `rows` (all four for the forward), point-major, `point` floats
/// apart, each `channels` columns of `stride` tiles (the block's tiles, then whatever was
/// there: the padding tiles' products are never read).
///
/// `Bᵀ·d·B` on 16 tiles of a tile row at once, the tiles' four columns taken from each plane
/// row by [`tile_columns`]; only the plane rows the wanted transformed rows read are loaded.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn transform_inputs(
    p: &Plan,
    groups: Option<&Groups>,
    channels: usize,
    x: &[f32],
    images: Range<usize>,
    [stride, point]: [usize; 2],
    rows: Range<usize>,
    v: &mut [f32],
) {
    use std::arch::x86_64::*;
    let [h, w] = p.size;
    let [th, tw] = p.tile_grid();
    let per_image = th * tw;
    assert!(holds_points(v.len(), &rows, point, stride * channels));
    assert!(x.len() >= images.end * channels * h * w);
    // the tile's rows (of 4) that Bᵀ's rows `rows` read: d0 − d2, d1 + d2, d2 − d1, d1 − d3
    let reads = [[0, 2], [1, 2], [1, 2], [1, 3]];
    let needed: [bool; 4] = std::array::from_fn(|r| rows.clone().any(|i| reads[i].contains(&r)));
    let zero = _mm512_setzero_ps();
    if let Some(groups) = groups {
        let tiles = images.len() * per_image;
        for c in 0..channels {
            for t0 in (0..tiles).step_by(LANES) {
                let block = [images.start, images.len()];
                // SAFETY: AVX-512F by the caller's requirement
                let d = unsafe { groups.pixels(p, x, block, channels, c, t0, needed) };
                let at = [c * stride + t0, point];
                // SAFETY: tiles t0.. of column c of each point: inside `v` (asserted above)
                unsafe { store_tiles(&d, rows.clone(), v, at, first(tiles - t0)) };
            }
        }
        return;
    }
    let end = images.end * channels * h * w;
    for (b, img) in images.enumerate() {
        for c in 0..channels {
            let start = (img * channels + c) * h * w;
            let plane = &x[start..][..h * w];
            let out = c * stride + b * per_image;
            // each tile row prefetches its two rows of the plane two planes on
            let ahead = start + 2 * h * w;
            for q0 in (0..tw).step_by(LANES) {
                let mask = first(tw - q0);
                // the last two rows of the previous tile row: the first two of this one
                let mut last: [Option<[__m512; 4]>; 2] = [None, None];
                for ty in 0..th {
                    // the tile's rows (plane rows 2ty − 1 .. 2ty + 3), each as its 4 columns
                    // (a loop, not a closure: a closure would not inline `tile_columns`)
                    let mut d = [[zero; 4]; 4];
                    for (r, d) in d.iter_mut().enumerate() {
                        let y = (2 * ty + r).wrapping_sub(1);
                        if needed[r] && y < h {
                            *d = match last.get(r).copied().flatten() {
                                Some(kept) => kept,
                                // SAFETY: AVX-512F by the caller's requirement
                                None => unsafe { tile_columns(&plane[y * w..][..w], q0) },
                            };
                        }
                    }
                    last = [needed[2].then_some(d[2]), needed[3].then_some(d[3])];
                    if q0 == 0 {
                        let rows = ahead + 2 * ty * w..(ahead + (2 * ty + 2) * w).min(end);
                        for line in rows.step_by(LANES) {
                            // SAFETY: a prefetch of an address inside `x` (below `end`)
                            unsafe { _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().add(line).cast()) };
                        }
                    }
                    let at = [out + ty * tw + q0, point];
                    // SAFETY: tiles t.. t + tw − q0 of column c of each point: inside `v`
                    unsafe { store_tiles(&d, rows.clone(), v, at, mask) };
                }
            }
        }
    }
}

/// `Bᵀ·(d0, d1, d2, d3)`: one side of the input transform, by rows and then by columns.
#[target_feature(enable = "avx512f")]
#[inline]
fn bt_side([d0, d1, d2, d3]: [std::arch::x86_64::__m512; 4]) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::*;
    [
        _mm512_sub_ps(d0, d2),
        _mm512_add_ps(d1, d2),
        _mm512_sub_ps(d2, d1),
        _mm512_sub_ps(d1, d3),
    ]
}

/// `Aᵀ·(m0, m1, m2, m3)`: one side of the output transform, by rows and then by columns.
#[target_feature(enable = "avx512f")]
#[inline]
fn at_side([m0, m1, m2, m3]: [std::arch::x86_64::__m512; 4]) -> [std::arch::x86_64::__m512; 2] {
    use std::arch::x86_64::*;
    [
        _mm512_add_ps(_mm512_add_ps(m0, m1), m2),
        _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3),
    ]
}

/// `Bᵀ·d·B` of 16 tiles' pixels `d[r][s]` (a tile a lane), its rows `rows` written to `v`:
/// point 4i + j of them from element `t + (4(i − rows.start) + j)·point`, the lanes of `mask`.
///
/// # Safety
/// AVX-512F; those elements inside `v`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_tiles(
    d: &[[std::arch::x86_64::__m512; 4]; 4],
    rows: Range<usize>,
    v: &mut [f32],
    [t, point]: [usize; 2],
    mask: u16,
) {
    use std::arch::x86_64::*;
    for i in rows.clone() {
        // row i of Bᵀ·d, then ·B
        let mut row = [_mm512_setzero_ps(); 4];
        for (k, row) in row.iter_mut().enumerate() {
            *row = bt_side([d[0][k], d[1][k], d[2][k], d[3][k]])[i];
        }
        for (j, val) in bt_side(row).into_iter().enumerate() {
            let at = t + (4 * (i - rows.start) + j) * point;
            assert!(at + mask.count_ones() as usize <= v.len());
            // SAFETY: the masked lanes lie inside `v` (the caller's requirement)
            unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), mask, val) };
        }
    }
}

/// Writes the output tiles of `m` (point-major, each point `channels` columns of `stride`
/// tiles) into `y`, the block's images (`[images][channels][h][w]`): `Aᵀ·m·A` on 16 tiles of a
/// tile row at once, the two output columns of each tile interleaved into the rows.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_outputs(
    p: &Plan,
    groups: Option<&Groups>,
    channels: usize,
    m: &[f32],
    stride: usize,
    y: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    let [h, w] = p.size;
    let [th, tw] = p.tile_grid();
    let per_image = th * tw;
    let point = point_len(stride, channels.next_multiple_of(PANEL));
    assert!(stride.is_multiple_of(LANES));
    assert!(m.len() >= (POINTS - 1) * point + stride * channels);
    let images = y.len() / (channels * h * w);
    assert!(images * per_image <= stride);
    if let Some(groups) = groups {
        for c in 0..channels {
            for t0 in (0..images * per_image).step_by(LANES) {
                // SAFETY: tiles t0..t0 + 16 ≤ stride of column c of each point: inside `m`
                let out = unsafe { output_tiles(m, [c * stride + t0, point], u16::MAX) };
                // SAFETY: AVX-512F by the caller's requirement
                unsafe { groups.write(p, out, y, [images, channels, c], t0) };
            }
        }
        return;
    }
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (b, image) in y.chunks_exact_mut(channels * h * w).enumerate() {
        for (c, plane) in image.chunks_exact_mut(h * w).enumerate() {
            for ty in 0..th {
                for q0 in (0..tw).step_by(LANES) {
                    let t = c * stride + b * per_image + ty * tw + q0;
                    // SAFETY: tiles t.. t + tw − q0 of column c of each point: inside `m`
                    let out = unsafe { output_tiles(m, [t, point], first(tw - q0)) };
                    for (r, [a, bb]) in out.into_iter().enumerate() {
                        let yy = 2 * ty + r;
                        if yy >= h {
                            break;
                        }
                        let x0 = 2 * q0;
                        let left = w - x0;
                        let row = plane[yy * w..][..w].as_mut_ptr().cast::<f32>();
                        // SAFETY: columns x0.. of row yy, `left` of them at most
                        unsafe {
                            _mm512_mask_storeu_ps(
                                row.add(x0),
                                first(left),
                                _mm512_permutex2var_ps(a, lo, bb),
                            );
                            if left > LANES {
                                _mm512_mask_storeu_ps(
                                    row.add(x0 + LANES),
                                    first(left - LANES),
                                    _mm512_permutex2var_ps(a, hi, bb),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `Aᵀ·m·A` of 16 tiles (a tile a lane, those of `mask`) from element `t` of each of the 16
/// points `point` floats apart: the 2 × 2 output pixels `[r][s]`.
///
/// # Safety
/// AVX-512F; the masked lanes inside `m`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn output_tiles(
    m: &[f32],
    [t, point]: [usize; 2],
    mask: u16,
) -> [[std::arch::x86_64::__m512; 2]; 2] {
    use std::arch::x86_64::*;
    assert!(t + (POINTS - 1) * point + mask.count_ones() as usize <= m.len());
    let mut mk = [_mm512_setzero_ps(); POINTS];
    for (k, mk) in mk.iter_mut().enumerate() {
        // SAFETY: the masked lanes lie inside `m` (asserted above)
        *mk = unsafe { _mm512_maskz_loadu_ps(mask, m.as_ptr().add(k * point + t)) };
    }
    let mut out = [[_mm512_setzero_ps(); 2]; 2];
    for (r, out) in out.iter_mut().enumerate() {
        // row r of Aᵀ·m, its four points, then ·A
        let mut s = [_mm512_setzero_ps(); 4];
        for (j, s) in s.iter_mut().enumerate() {
            *s = at_side([mk[j], mk[4 + j], mk[8 + j], mk[12 + j]])[r];
        }
        *out = at_side(s);
    }
    out
}

/// Writes `A·dy·Aᵀ` for the tiles of images `images` of `dy` (`[n][channels][h][w]`) into `m`:
/// the points of the transformed rows `rows`, `point` floats apart, each tile by tile,
/// `columns` output channels a tile (16 at a time, gathered across the channels' planes).
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_grads(
    p: &Plan,
    channels: usize,
    dy: &[f32],
    images: Range<usize>,
    [columns, point]: [usize; 2],
    rows: Range<usize>,
    m: &mut [f32],
) {
    use std::arch::x86_64::*;
    let [h, w] = p.size;
    let [th, tw] = p.tile_grid();
    let plane = h * w;
    let tiles = images.len() * th * tw;
    assert!(columns.is_multiple_of(LANES) && columns >= channels);
    assert!(holds_points(m.len(), &rows, point, tiles * columns));
    assert!(dy.len() >= images.end * channels * plane && LANES * plane < i32::MAX as usize);
    let offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(plane as i32),
    );
    let zero = _mm512_setzero_ps();
    // A's rows applied to a pair (a, b): a, a + b, a − b, −b
    let a_rows = |a: __m512, b: __m512| {
        [
            a,
            _mm512_add_ps(a, b),
            _mm512_sub_ps(a, b),
            _mm512_sub_ps(zero, b),
        ]
    };
    let mut t = 0;
    for img in images {
        for ty in 0..th {
            for tx in 0..tw {
                for c0 in (0..columns).step_by(LANES) {
                    let lanes = first(channels.saturating_sub(c0));
                    let base = (img * channels + c0.min(channels)) * plane;
                    // the tile's pixel (r, s) of 16 channels, zero outside the plane
                    let at = |r: usize, s: usize| {
                        let (y, x) = (2 * ty + r, 2 * tx + s);
                        if y < h && x < w && lanes != 0 {
                            // SAFETY: the lanes gathered are channels c0.. < `channels` of
                            // image `img`, pixel (y, x): inside `dy` (asserted above)
                            unsafe {
                                _mm512_mask_i32gather_ps::<4>(
                                    zero,
                                    lanes,
                                    offsets,
                                    dy.as_ptr().add(base + y * w + x),
                                )
                            }
                        } else {
                            zero
                        }
                    };
                    // A·dy: four rows of two; then each row ·Aᵀ
                    let left = a_rows(at(0, 0), at(1, 0));
                    let right = a_rows(at(0, 1), at(1, 1));
                    for i in rows.clone() {
                        for (j, val) in a_rows(left[i], right[i]).into_iter().enumerate() {
                            // SAFETY: point 4i + j of the wanted rows, tile t, channels
                            // c0..c0 + 16 ≤ columns: inside `m` (asserted above)
                            unsafe {
                                _mm512_storeu_ps(
                                    m.as_mut_ptr()
                                        .add((4 * (i - rows.start) + j) * point + t * columns + c0),
                                    val,
                                )
                            };
                        }
                    }
                }
                t += 1;
            }
        }
    }
}
