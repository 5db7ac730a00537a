//! The tiles' transforms, 16 tiles at a time on AVX-512: `Bᵀ·d·B` of the input tiles,
//! `Aᵀ·m·A` back to output tiles, and `A·dy·Aᵀ` of the output gradient's tiles.

use std::ops::Range;

use super::forward::PANEL;
use super::{LANES, POINTS, Plan, first, point_len};

/// Transforms the tiles of images `images` of `x` (`[n][channels][h][w]`) into `v`: the points
/// of the transformed rows `rows` (all four for the forward), point-major, `point` floats
/// apart, each `channels` columns of `stride` tiles (the block's tiles, then whatever was
/// there: the padding tiles' products are never read).
///
/// `Bᵀ·d·B` on 16 tiles of a tile row at once. The plane is first copied, with a border of
/// zeros, as its even and odd columns (of the padded plane), so that the four columns a tile
/// reads are four vectors of consecutive tiles.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn transform_inputs(
    p: &Plan,
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
    assert!(rows.end <= 4 && point >= stride * channels);
    assert!(v.len() >= (4 * rows.len()).saturating_sub(1) * point + stride * channels);
    assert!(x.len() >= images.end * channels * h * w);
    // padded rows: one above, 2·th + 1 below at most; padded columns 2·tw + 2 (one left),
    // as even and odd ones, each with a vector of slack for the loads past the row
    let (ph, pitch) = (2 * th + 2, tw + 1);
    let mut even = vec![0.0f32; ph * pitch + LANES];
    let mut odd = vec![0.0f32; ph * pitch + LANES];
    // plane columns 2q (padded 2q + 1, odd) and 2q + 1 (padded 2q + 2, even) of 32 columns
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (b, img) in images.enumerate() {
        for c in 0..channels {
            let plane = &x[(img * channels + c) * h * w..][..h * w];
            for (y, row) in plane.chunks_exact(w).enumerate() {
                for c0 in (0..w).step_by(2 * LANES) {
                    let left = w - c0;
                    // SAFETY: the masked loads read columns c0.. of the row, the stores write
                    // ⌈left/2⌉ ≤ pitch − c0/2 odd and ⌊left/2⌋ ≤ pitch − 1 − c0/2 even entries
                    // of padded row y + 1
                    unsafe {
                        let a = _mm512_maskz_loadu_ps(first(left), row.as_ptr().add(c0));
                        let bb = _mm512_maskz_loadu_ps(
                            first(left.saturating_sub(LANES)),
                            row.as_ptr().add((c0 + LANES).min(w)),
                        );
                        let at = (y + 1) * pitch + c0 / 2;
                        let e = _mm512_permutex2var_ps(a, evens, bb);
                        let o = _mm512_permutex2var_ps(a, odds, bb);
                        _mm512_mask_storeu_ps(odd.as_mut_ptr().add(at), first(left.div_ceil(2)), e);
                        _mm512_mask_storeu_ps(even.as_mut_ptr().add(at + 1), first(left / 2), o);
                    }
                }
            }
            let out = c * stride + b * per_image;
            for ty in 0..th {
                for q0 in (0..tw).step_by(LANES) {
                    let mask = first(tw - q0);
                    // the tile's four columns (padded 2q, 2q + 1, 2q + 2, 2q + 3), each as the
                    // four rows' Bᵀ·d
                    let cols: [[__m512; 4]; 4] = std::array::from_fn(|kind| {
                        let (src, shift) = match kind {
                            0 => (&even, 0),
                            1 => (&odd, 0),
                            2 => (&even, 1),
                            _ => (&odd, 1),
                        };
                        // SAFETY: rows 2ty..2ty + 4 < ph, and a vector from column
                        // q0 + shift ≤ pitch stays inside the slack
                        let d: [__m512; 4] = std::array::from_fn(|r| unsafe {
                            _mm512_loadu_ps(src.as_ptr().add((2 * ty + r) * pitch + q0 + shift))
                        });
                        [
                            _mm512_sub_ps(d[0], d[2]),
                            _mm512_add_ps(d[1], d[2]),
                            _mm512_sub_ps(d[2], d[1]),
                            _mm512_sub_ps(d[1], d[3]),
                        ]
                    });
                    let t = out + ty * tw + q0;
                    for i in rows.clone() {
                        let [d0, d1, d2, d3] = [cols[0][i], cols[1][i], cols[2][i], cols[3][i]];
                        let vals = [
                            _mm512_sub_ps(d0, d2),
                            _mm512_add_ps(d1, d2),
                            _mm512_sub_ps(d2, d1),
                            _mm512_sub_ps(d1, d3),
                        ];
                        for (j, val) in vals.into_iter().enumerate() {
                            // SAFETY: tiles t.. t + tw − q0 of column c of point 4i + j: inside
                            // `v` (asserted above)
                            unsafe {
                                _mm512_mask_storeu_ps(
                                    v.as_mut_ptr().add((4 * (i - rows.start) + j) * point + t),
                                    mask,
                                    val,
                                )
                            };
                        }
                    }
                }
            }
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
    channels: usize,
    m: &[f32],
    stride: usize,
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    let [h, w] = p.size;
    let [th, tw] = p.tile_grid();
    let per_image = th * tw;
    let point = point_len(stride, channels.next_multiple_of(PANEL));
    assert!(m.len() >= (POINTS - 1) * point + stride * channels);
    let images = y.len() / (channels * h * w);
    assert!(images * per_image <= stride);
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (b, image) in y.chunks_exact_mut(channels * h * w).enumerate() {
        for (c, plane) in image.chunks_exact_mut(h * w).enumerate() {
            for ty in 0..th {
                for q0 in (0..tw).step_by(LANES) {
                    let t = c * stride + b * per_image + ty * tw + q0;
                    let mask = first(tw - q0);
                    // SAFETY: tiles t.. t + tw − q0 of column c of each point: inside `m`
                    let mk: [__m512; POINTS] = std::array::from_fn(|k| unsafe {
                        _mm512_maskz_loadu_ps(mask, m.as_ptr().add(k * point + t))
                    });
                    for r in 0..2 {
                        let yy = 2 * ty + r;
                        if yy >= h {
                            break;
                        }
                        // row r of Aᵀ·m, its four points
                        let s: [__m512; 4] = std::array::from_fn(|j| {
                            if r == 0 {
                                _mm512_add_ps(_mm512_add_ps(mk[j], mk[4 + j]), mk[8 + j])
                            } else {
                                _mm512_sub_ps(_mm512_sub_ps(mk[4 + j], mk[8 + j]), mk[12 + j])
                            }
                        });
                        let a = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]);
                        let bb = _mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]);
                        let x0 = 2 * q0;
                        let left = w - x0;
                        let row = plane[yy * w..][..w].as_mut_ptr();
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

/// Writes the transformed row `i` of `A·dy·Aᵀ` for the tiles of images `images` of `dy`
/// (`[n][channels][h][w]`) into `m`: its four points `point` floats apart, each tile by tile,
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
    i: usize,
    [columns, point]: [usize; 2],
    m: &mut [f32],
) {
    use std::arch::x86_64::*;
    let [h, w] = p.size;
    let [th, tw] = p.tile_grid();
    let plane = h * w;
    let tiles = images.len() * th * tw;
    assert!(i < 4 && columns.is_multiple_of(LANES) && columns >= channels);
    assert!(point >= tiles * columns && m.len() >= 3 * point + tiles * columns);
    assert!(dy.len() >= images.end * channels * plane && LANES * plane < i32::MAX as usize);
    let offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(plane as i32),
    );
    // which of the tile's two rows row i of A takes, and with which signs
    let (first_row, second_row) = match i {
        0 => (1.0, 0.0),
        1 => (1.0, 1.0),
        2 => (1.0, -1.0),
        _ => (0.0, -1.0),
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
                                    _mm512_setzero_ps(),
                                    lanes,
                                    offsets,
                                    dy.as_ptr().add(base + y * w + x),
                                )
                            }
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    let row = |s: usize| {
                        let a = if first_row != 0.0 {
                            at(0, s)
                        } else {
                            _mm512_setzero_ps()
                        };
                        let b = if second_row != 0.0 {
                            at(1, s)
                        } else {
                            _mm512_setzero_ps()
                        };
                        _mm512_add_ps(
                            _mm512_mul_ps(_mm512_set1_ps(first_row), a),
                            _mm512_mul_ps(_mm512_set1_ps(second_row), b),
                        )
                    };
                    let (e, f) = (row(0), row(1));
                    let vals = [
                        e,
                        _mm512_add_ps(e, f),
                        _mm512_sub_ps(e, f),
                        _mm512_sub_ps(_mm512_setzero_ps(), f),
                    ];
                    for (j, val) in vals.into_iter().enumerate() {
                        // SAFETY: point j, tile t, channels c0..c0 + 16 ≤ columns: inside `m`
                        unsafe {
                            _mm512_storeu_ps(m.as_mut_ptr().add(j * point + t * columns + c0), val)
                        };
                    }
                }
                t += 1;
            }
        }
    }
}
