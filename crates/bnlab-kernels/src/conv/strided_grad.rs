//! The input gradient of a 3×3 stride-2 convolution with padding 1 on even sizes (the
//! [`super::flat`] shapes), on AVX-512F's 16-lane vectors.
//!
//! dx pixel (2a + pi, 2b + pj) receives the taps whose row and column land on it: a row
//! parity pi = 0 only from ki = 1 (dy row a), pi = 1 from ki = 0 (dy row a + 1) and ki = 2
//! (row a), and the same for columns. So the four parity classes of dx are small convolutions
//! of dy with 1, 2, 2 and 4 taps, read from four copies of each dy plane shifted by (0 or 1
//! rows, 0 or 1 columns). A tile sums all four classes of 16 consecutive dy positions and
//! interleaves the column parities on the way out.

use super::direct::{SharedOut, TAPS};
use super::flat::{LANES, aligned_scratch};

/// dx channels of one tile: 3 channels × 4 parity classes × 2 vectors = 24 accumulators
/// (one vector where a plane holds an odd number).
pub(super) const TILE_CHANNELS: usize = 3;

/// For tap index k (ki or kj): (parity of the dx row or column it lands on, shift of dy).
const LANDS: [(usize, usize); 3] = [(1, 1), (0, 0), (1, 0)];

/// Whether the tiles can write the dx rows of a dy plane `ow` wide: each half of an
/// interleaved vector (8 dy positions) lies in one dy row.
pub(super) fn fits(ow: usize) -> bool {
    ow.is_multiple_of(8) || 8 % ow == 0
}

/// Four copies of each of `planes` dy planes ([oh][ow]), shifted by (dr, dc) ∈ {0, 1}²:
/// copy 2·dr + dc holds dy[a + dr][b + dc] at (a, b), zero past the plane. From the first
/// element of `dst` on a 64-byte boundary; returns that element's index.
pub(super) fn fill(dy: &[f32], planes: usize, [oh, ow]: [usize; 2], dst: &mut Vec<f32>) -> usize {
    let pixels = oh * ow;
    let len = planes * 4 * pixels;
    // every element is written below
    let start = aligned_scratch(dst, len);
    let out = &mut dst[start..start + len];
    for (src, out) in dy
        .chunks_exact(pixels)
        .zip(out.chunks_exact_mut(4 * pixels))
    {
        for (s, copy) in out.chunks_exact_mut(pixels).enumerate() {
            let (dr, dc) = (s / 2, s % 2);
            for (a, d) in copy.chunks_exact_mut(ow).enumerate() {
                if a + dr >= oh {
                    d.fill(0.0);
                    continue;
                }
                let row = &src[(a + dr) * ow..][..ow];
                d[..ow - dc].copy_from_slice(&row[dc..]);
                d[ow - dc..].fill(0.0);
            }
        }
    }
    start
}

/// dx[t][c] for the channels `channels` of `cin`, from `src` (the [`fill`] copies of the
/// images' `cout` dy planes of `[oh, ow]`); `packed` as [`super::direct`] packs the input
/// gradient's weights for tiles of [`TILE_CHANNELS`], taps not flipped.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512VL; no other task may write those channels' planes of
/// `dx` meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
pub(super) unsafe fn input_grad(
    src: &[f32],
    [images, cout, cin]: [usize; 3],
    [oh, ow]: [usize; 2],
    packed: &[f32],
    dx: SharedOut,
    channels: std::ops::Range<usize>,
) {
    let pixels = oh * ow;
    let plane = 4 * pixels;
    assert!(src.len() >= images * cout * plane && packed.len() >= cin * cout * TAPS);
    assert!(dx.len() >= images * cin * 4 * pixels && channels.end <= cin);
    assert!(pixels.is_multiple_of(LANES) && fits(ow));
    let cb = if pixels.is_multiple_of(2 * LANES) {
        2
    } else {
        1
    };
    for c0 in channels.clone().step_by(TILE_CHANNELS) {
        let len = TILE_CHANNELS.min(channels.end - c0);
        let wp = &packed[c0 * cout * TAPS..][..len * cout * TAPS];
        for t in 0..images {
            let x = &src[t * cout * plane..][..cout * plane];
            for q in (0..pixels).step_by(cb * LANES) {
                let at = [t * cin + c0, q];
                let args = (x, [cout, oh, ow], wp, dx, at);
                // SAFETY: the tile reads the image's copies at q + 16·cb ≤ pixels of each,
                // the block's packed weights, and writes the dx planes of channels c0..c0 +
                // len (the caller's requirement), inside dx (asserted).
                unsafe {
                    match (len, cb) {
                        (3, 2) => tile::<3, 2>(args),
                        (2, 2) => tile::<2, 2>(args),
                        (1, 2) => tile::<1, 2>(args),
                        (3, _) => tile::<3, 1>(args),
                        (2, _) => tile::<2, 1>(args),
                        _ => tile::<1, 1>(args),
                    }
                }
            }
        }
    }
}

/// The arguments of a tile: the image's dy copies, [cout, oh, ow], the packed weights of its
/// channels, dx, [first dx plane (image · cin + channel), first dy position].
type TileArgs<'a> = (&'a [f32], [usize; 3], &'a [f32], SharedOut, [usize; 2]);

/// One tile: `OB` dx channels × `CB` vectors of dy positions, summed over the `cout` dy
/// channels, then written to dx interleaved.
///
/// # Safety
/// As for [`input_grad`]'s tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn tile<const OB: usize, const CB: usize>(
    (x, [cout, oh, ow], w, dx, [first, q]): TileArgs<'_>,
) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_load_ps, _mm512_set1_ps, _mm512_setzero_ps};
    let pixels = oh * ow;
    // acc[c][class][vector], class = 2·pi + pj
    let mut acc = [[[_mm512_setzero_ps(); CB]; 4]; OB];
    for o in 0..cout {
        // SAFETY (the loads): the caller keeps them inside x and w; the copies start on
        // 64-byte boundaries (`fill`) and q is a multiple of 16.
        unsafe {
            let copies = x.as_ptr().add(o * 4 * pixels + q);
            let mut s = [[_mm512_setzero_ps(); CB]; 4];
            for (k, s) in s.iter_mut().enumerate() {
                for (j, v) in s.iter_mut().enumerate() {
                    *v = _mm512_load_ps(copies.add(k * pixels + j * LANES));
                }
            }
            let wo = w.as_ptr().add(o * TAPS * OB);
            for (ki, (pi, dr)) in LANDS.iter().enumerate() {
                for (kj, (pj, dc)) in LANDS.iter().enumerate() {
                    let (class, shift) = (2 * pi + pj, 2 * dr + dc);
                    for (c, acc) in acc.iter_mut().enumerate() {
                        let b = _mm512_set1_ps(*wo.add((ki * 3 + kj) * OB + c));
                        for (a, v) in acc[class].iter_mut().zip(&s[shift]) {
                            *a = _mm512_fmadd_ps(b, *v, *a);
                        }
                    }
                }
            }
        }
    }
    let w2 = 2 * ow;
    for (c, acc) in acc.iter().enumerate() {
        let plane = (first + c) * 4 * pixels;
        for pi in 0..2 {
            for (j, (even, odd)) in acc[2 * pi].iter().zip(&acc[2 * pi + 1]).enumerate() {
                let mut pairs = [0.0f32; 2 * LANES];
                interleave(*even, *odd, &mut pairs);
                // dy position p lands on dx (2a + pi, 2b) and (2a + pi, 2b + 1)
                let p0 = q + j * LANES;
                for (h, half) in pairs.chunks_exact(LANES).enumerate() {
                    for (piece, values) in half.chunks_exact(w2.min(LANES)).enumerate() {
                        let p = p0 + h * LANES / 2 + piece * values.len() / 2;
                        let (a, b) = (p / ow, p % ow);
                        let at = plane + (2 * a + pi) * w2 + 2 * b;
                        // SAFETY: channel first + c is this task's (the caller's
                        // requirement); inside dx (asserted by the caller).
                        unsafe { dx.write(at, values) };
                    }
                }
            }
        }
    }
}

/// `even` and `odd` interleaved lane by lane into `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn interleave(
    even: std::arch::x86_64::__m512,
    odd: std::arch::x86_64::__m512,
    out: &mut [f32; 2 * LANES],
) {
    use std::arch::x86_64::{_mm512_permutex2var_ps, _mm512_set_epi32, _mm512_storeu_ps};
    let lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    let hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    // SAFETY: `out` holds two vectors.
    unsafe {
        _mm512_storeu_ps(out.as_mut_ptr(), _mm512_permutex2var_ps(even, lo, odd));
        _mm512_storeu_ps(
            out.as_mut_ptr().add(LANES),
            _mm512_permutex2var_ps(even, hi, odd),
        );
    }
}
