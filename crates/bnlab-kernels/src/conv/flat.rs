//! Direct 3×3 "same" convolutions (stride 1, padding 1) on AVX-512F's 16-lane vectors, over
//! planes stored flat: rows back to back, a zero row above and below, each plane three times,
//! shifted by one column left, not at all, and right (zero where the shift leaves the row). A
//! vector then covers whole rows of narrow planes (two rows of 8 × 8, four of 4 × 4) as well
//! as parts of wide ones, and every tap is one plain load, 64-byte aligned where the rows
//! allow. (Masking the edge columns of one copy instead measured 1.4× slower: masked loads
//! across cache lines are slow.)
//!
//! Each output element is the same sum in the same order as in [`super::direct`]'s 8-lane
//! tiles (input channels, then the nine taps, one FMA each, padding read as +0), so the bits
//! are theirs; only the number of lanes per instruction changes.

use super::direct::{SharedOut, TAPS};
use super::geometry::Geometry;

/// f32 lanes of one AVX-512 vector.
const LANES: usize = 16;

/// Output channels of one tile: [`super::direct`]'s, so both read the same packed weights.
pub(super) const TILE_CHANNELS: usize = 6;

/// Whether the flat tiles run `g` (on a CPU with AVX-512F, which the caller checks): a "same"
/// 3×3 convolution whose planes are whole vectors, a row being a divisor or a multiple of one.
pub(super) fn fits(g: &Geometry) -> bool {
    let [h, w] = g.size;
    g.pad == [1, 1]
        && g.out == g.size
        && w > 0
        && (h * w).is_multiple_of(LANES)
        && (LANES.is_multiple_of(w) || w.is_multiple_of(LANES))
}

/// Flat planes of `size`: `planes` of them, each three shifted copies of (h + 2) rows (a zero
/// row, the rows, a zero row) rounded up to whole vectors, so that pixel (r, c + kj − 1) lies
/// at kj·copy + (r + 1)·w + c of its plane.
#[derive(Debug, Clone, Copy)]
pub(super) struct Flat {
    planes: usize,
    size: [usize; 2],
}

impl Flat {
    /// `planes` flat planes of `size`.
    pub(super) fn new(planes: usize, size: [usize; 2]) -> Self {
        Self { planes, size }
    }

    /// Elements of one shifted copy.
    fn copy(&self) -> usize {
        ((self.size[0] + 2) * self.size[1]).next_multiple_of(LANES)
    }

    /// Elements of one plane.
    fn stride(&self) -> usize {
        3 * self.copy()
    }

    /// Copies `src` ([planes][h][w]) into `dst` in this layout, from the first element of
    /// `dst` on a 64-byte boundary; returns that element's index.
    pub(super) fn fill(&self, src: &[f32], dst: &mut Vec<f32>) -> usize {
        let [h, w] = self.size;
        let tail = self.copy() - (h + 1) * w;
        dst.clear();
        dst.reserve(self.planes * self.stride() + LANES);
        let start = dst.as_ptr().align_offset(64).min(LANES);
        dst.resize(start, 0.0);
        let zeros = |dst: &mut Vec<f32>, n: usize| dst.resize(dst.len() + n, 0.0);
        for plane in src.chunks_exact(h * w).take(self.planes) {
            // shifted left by one column: (r, c) holds (r, c − 1)
            zeros(dst, w);
            for row in plane.chunks_exact(w) {
                dst.push(0.0);
                dst.extend_from_slice(&row[..w - 1]);
            }
            zeros(dst, tail);
            zeros(dst, w);
            dst.extend_from_slice(plane);
            zeros(dst, tail);
            // shifted right: (r, c) holds (r, c + 1)
            zeros(dst, w);
            for row in plane.chunks_exact(w) {
                dst.extend_from_slice(&row[1..]);
                dst.push(0.0);
            }
            zeros(dst, tail);
        }
        start
    }
}

/// Vectors of one tile: a plane's vectors run in order, four at a time where they can.
fn tile_vectors(plane_vectors: usize) -> usize {
    if plane_vectors.is_multiple_of(4) {
        4
    } else if plane_vectors.is_multiple_of(2) {
        2
    } else {
        1
    }
}

/// out[t][o][y][x] = Σ_c Σ_tap w · src[t][c][y + ki − 1][x + kj − 1] for the images of `src`
/// (`flat` planes of `cin` channels each, from element `start`) and the output channels
/// `channels` of `cout`; `packed` as [`super::direct`] packs weights for tiles of
/// [`TILE_CHANNELS`].
///
/// # Safety
/// The CPU has AVX-512F and AVX-512VL; no other task may write those channels' planes of `out` meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
pub(super) unsafe fn conv(
    src: &[f32],
    flat: Flat,
    [cin, cout]: [usize; 2],
    packed: &[f32],
    out: SharedOut,
    channels: std::ops::Range<usize>,
) {
    let [h, w] = flat.size;
    let (pixels, stride) = (h * w, flat.stride());
    let images = flat.planes / cin.max(1);
    let cb = tile_vectors(pixels / LANES);
    assert!(src.len() >= flat.planes * stride && packed.len() >= cout * cin * TAPS);
    assert!(out.len() >= images * cout * pixels && channels.end <= cout);
    for o0 in channels.clone().step_by(TILE_CHANNELS) {
        let len = TILE_CHANNELS.min(channels.end - o0);
        let wp = &packed[o0 * cin * TAPS..];
        for t in 0..images {
            for q in (0..pixels).step_by(cb * LANES) {
                // the tile's first load (channel 0, tap (0, 0)) lies at q of the image's
                // first plane
                let x = &src[t * cin * stride + q..];
                let at = (t * cout + o0) * pixels + q;
                let args = (
                    x.as_ptr(),
                    [stride, flat.copy(), w, cin, pixels],
                    wp.as_ptr(),
                    out,
                    at,
                );
                // SAFETY: a tile's loads end at q + (cb − 1)·16 + 2·copy + 2w + 16 ≤
                // 2·copy + (h + 2)·w ≤ stride past its plane's start, inside `src` (asserted);
                // it reads cin·9·len packed weights from o0·cin·9; it writes len planes of
                // `channels` (the caller's requirement) inside `out` (asserted). A short last
                // block of channels (a count not a multiple of six) runs its vectors one at a
                // time: fewer tile shapes to compile.
                unsafe {
                    match (len, cb) {
                        (6, 4) => run_tile::<6, 4>(args, cb),
                        (6, 2) => run_tile::<6, 2>(args, cb),
                        (6, _) => run_tile::<6, 1>(args, cb),
                        (5, _) => run_tile::<5, 1>(args, cb),
                        (4, _) => run_tile::<4, 1>(args, cb),
                        (3, _) => run_tile::<3, 1>(args, cb),
                        (2, _) => run_tile::<2, 1>(args, cb),
                        _ => run_tile::<1, 1>(args, cb),
                    }
                }
            }
        }
    }
}

/// The arguments of one tile: the first load, [plane stride, copy length, row width, cin,
/// plane pixels], its packed weights, the output and the first output element.
type TileArgs = (*const f32, [usize; 5], *const f32, SharedOut, usize);

/// `OB` channels × `vectors` consecutive vectors, `CB` at a time, written to the output.
///
/// # Safety
/// As for [`conv`]'s tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn run_tile<const OB: usize, const CB: usize>(args: TileArgs, vectors: usize) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps};
    let (x, [stride, copy, w, cin, pixels], wp, out, at) = args;
    for v0 in (0..vectors).step_by(CB) {
        let mut acc = [[_mm512_setzero_ps(); CB]; OB];
        for c in 0..cin {
            // SAFETY (whole loop): the caller keeps every load inside `src` and the weights.
            unsafe {
                let (xc, wc) = (x.add(c * stride + v0 * LANES), wp.add(c * TAPS * OB));
                for ki in 0..3 {
                    for kj in 0..3 {
                        let mut xs = [_mm512_setzero_ps(); CB];
                        for (j, v) in xs.iter_mut().enumerate() {
                            *v = _mm512_loadu_ps(xc.add(kj * copy + ki * w + j * LANES));
                        }
                        let wk = wc.add((ki * 3 + kj) * OB);
                        for (o, acc) in acc.iter_mut().enumerate() {
                            let b = _mm512_set1_ps(*wk.add(o));
                            for (a, xv) in acc.iter_mut().zip(&xs) {
                                *a = _mm512_fmadd_ps(b, *xv, *a);
                            }
                        }
                    }
                }
            }
        }
        for (o, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate() {
                // SAFETY: channel o0 + o is this task's, inside `out` (the caller's
                // requirement); this function's features include AVX-512F.
                unsafe { out.write_vector16(at + o * pixels + (v0 + j) * LANES, *a) };
            }
        }
    }
}

/// Output channels of one weight-gradient tile: 3 × 9 taps = 27 accumulators, with the 3 dy
/// vectors and an x vector 31 of AVX-512's 32 registers.
const DW_CHANNELS: usize = 3;

/// Pixels the weight gradient sums in lanes before adding across them: whole images, enough
/// that the 27 lane sums of a tile cost little against its FMAs.
const DW_GROUP_PIXELS: usize = 1024;

/// Adds ∂L/∂w for the output channels `channels` to `dw` (their rows of [cout][cin][3][3],
/// from the first): Σ over the images and pixels of dy[o] · x[c] shifted by the tap, with `x`
/// ([images][cin][h][w]) copied to flat planes in `scratch` a group of images at a time.
///
/// The lanes of a tile (3 output channels, one input channel) sum groups of whole images of
/// [`DW_GROUP_PIXELS`]; the groups' lane sums are added to `dw` in order. A group's flat
/// planes stay in L2 while every tile of the channels reads them.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn weight_grad(
    x: &[f32],
    dy: &[f32],
    [images, cin, cout]: [usize; 3],
    size: [usize; 2],
    channels: std::ops::Range<usize>,
    dw: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let [h, w] = size;
    let pixels = h * w;
    let group = DW_GROUP_PIXELS.div_ceil(pixels).clamp(1, images.max(1));
    assert!(x.len() >= images * cin * pixels && dy.len() >= images * cout * pixels);
    assert!(channels.end <= cout && dw.len() >= channels.len() * cin * TAPS);
    for t0 in (0..images).step_by(group) {
        let n = group.min(images - t0);
        let flat = Flat::new(n * cin, size);
        let start = flat.fill(&x[t0 * cin * pixels..][..n * cin * pixels], scratch);
        let (xs, dys) = (&scratch[start..], &dy[t0 * cout * pixels..]);
        let sizes = [flat.stride(), flat.copy(), w, cin, cout, pixels];
        for o0 in channels.clone().step_by(DW_CHANNELS) {
            let len = DW_CHANNELS.min(channels.end - o0);
            for c in 0..cin {
                let args = (xs, sizes, dys, [o0, c], n);
                // SAFETY: the asserts above keep every dy load inside dy, and the fill every
                // x load inside the group's flat planes (a plane's last load ends inside its
                // stride, as in `conv`).
                let sums = unsafe {
                    match len {
                        3 => dw_tile::<3>(args),
                        2 => dw_tile::<2>(args),
                        _ => dw_tile::<1>(args),
                    }
                };
                for (o, s) in sums.iter().take(len).enumerate() {
                    let at = ((o0 - channels.start + o) * cin + c) * TAPS;
                    for (d, v) in dw[at..at + TAPS].iter_mut().zip(s) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// The arguments of [`dw_tile`]: flat x, [stride, copy, w, cin, cout, pixels], dy, [first
/// output channel, input channel], images.
type DwArgs<'a> = (&'a [f32], [usize; 6], &'a [f32], [usize; 2], usize);

/// Σ dy[o0 + o] · x[c] shifted by each tap over the first `images` images: `[o][tap]` for the
/// first `OB` of [`DW_CHANNELS`] channels.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512VL; the caller keeps every load inside `x` and `dy`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn dw_tile<const OB: usize>(
    (x, [stride, copy, w, cin, cout, pixels], dy, [o0, c], images): DwArgs<'_>,
) -> [[f32; TAPS]; DW_CHANNELS] {
    use std::arch::x86_64::_mm512_setzero_ps;
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps};
    // one array per output channel and one loop over the images' vectors (an image's, then
    // the next image's). AVX-512VL matters here: without it the 128-bit lane sums below are
    // VEX-encoded, which reach only the 16 low registers, so LLVM kept the accumulators there
    // and spilled the rest (1.7× slower)
    let zero = _mm512_setzero_ps();
    let (mut a0, mut a1, mut a2) = ([zero; TAPS], [zero; TAPS], [zero; TAPS]);
    let (mut xp, mut dp) = (x.as_ptr(), dy.as_ptr());
    // SAFETY (until the loop's end): the caller's requirement.
    unsafe {
        xp = xp.add(c * stride);
        dp = dp.add(o0 * pixels);
    }
    let mut q = 0;
    for _ in 0..images * pixels / LANES {
        // SAFETY: as above.
        unsafe {
            let d0 = _mm512_loadu_ps(dp.add(q));
            let d1 = if OB > 1 {
                _mm512_loadu_ps(dp.add(pixels + q))
            } else {
                zero
            };
            let d2 = if OB > 2 {
                _mm512_loadu_ps(dp.add(2 * pixels + q))
            } else {
                zero
            };
            for ki in 0..3 {
                for kj in 0..3 {
                    let xv = _mm512_loadu_ps(xp.add(kj * copy + ki * w + q));
                    let tap = ki * 3 + kj;
                    a0[tap] = _mm512_fmadd_ps(d0, xv, a0[tap]);
                    if OB > 1 {
                        a1[tap] = _mm512_fmadd_ps(d1, xv, a1[tap]);
                    }
                    if OB > 2 {
                        a2[tap] = _mm512_fmadd_ps(d2, xv, a2[tap]);
                    }
                }
            }
        }
        q += LANES;
        if q == pixels {
            q = 0;
            // (the pointers pass the end only after the last vector, never to be read)
            xp = xp.wrapping_add(cin * stride);
            dp = dp.wrapping_add(cout * pixels);
        }
    }
    let mut sums = [[0.0f32; TAPS]; DW_CHANNELS];
    for (s, acc) in sums.iter_mut().zip([a0, a1, a2]).take(OB) {
        for (s, a) in s.iter_mut().zip(acc) {
            *s = lane_sum(a);
        }
    }
    sums
}

/// Sum of the 16 lanes of `v` in a fixed order: lane i + lane i + 8, then the same over the
/// 8, 4 and 2 lanes left.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn lane_sum(v: std::arch::x86_64::__m512) -> f32 {
    use std::arch::x86_64::{
        _mm_add_ps, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps, _mm256_add_ps, _mm256_castpd_ps,
        _mm256_castps256_ps128, _mm256_extractf128_ps, _mm512_castpd512_pd256, _mm512_castps_pd,
        _mm512_extractf64x4_pd,
    };
    let pd = _mm512_castps_pd(v);
    let (lo, hi) = (_mm512_castpd512_pd256(pd), _mm512_extractf64x4_pd::<1>(pd));
    let s = _mm256_add_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi));
    let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ps(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}
