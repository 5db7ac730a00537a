//! Input tiles of small planes, 16 at a time across tile rows and images: where a plane row
//! holds fewer than 16 tiles, taking one tile row per vector would leave most lanes idle (a
//! quarter of them on 8 × 8 planes, an eighth on 4 × 4). A group of 16 consecutive tiles
//! instead reads up to four source vectors, and each of a tile's 16 input pixels is one
//! two-level permute of them.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::{LANES, Plan, first};

/// Where a group's source vectors come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sources {
    /// Whole planes of `images` consecutive images, each cut into `64 / images` floats (8 × 8
    /// planes: one image; 4 × 4: four).
    Planes { images: usize },
    /// Two tile rows of one plane of up to 16 columns (16 × 16 planes): for each of a tile's
    /// rows, the two plane rows it lies on.
    Rows,
}

/// How 16 consecutive tiles of a block read their input pixels: the sources, and for each of
/// a tile's 4 × 4 pixels (row `r`, column `s`) the source float of each lane.
pub(super) struct Groups {
    sources: Sources,
    /// Per (r, s): the index of the lane's float among the (up to) 64 source floats.
    index: [[__m512i; 4]; 4],
    /// Per (r, s): the lanes whose float lies in the third or fourth source vector.
    upper: [[u16; 4]; 4],
    /// Per (r, s): the lanes whose pixel lies inside the plane (the others read zero).
    inside: [[u16; 4]; 4],
    /// Per destination vector of the outputs: the index of each float among the 64 of the
    /// tiles' 2 × 2 output pixels (pixel (r, s) of every lane at (2r + s)·16 + lane).
    out_index: [__m512i; 4],
    /// Per destination vector: the lanes whose float lies in pixels (1, 0) or (1, 1).
    out_upper: [u16; 4],
}

impl Groups {
    /// The groups of `p`'s tiles, where its planes are small enough; else `None` (one tile row
    /// per vector).
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn of(p: &Plan) -> Option<Groups> {
        let [h, w] = p.size;
        let [th, tw] = p.tile_grid();
        let per_image = th * tw;
        let sources = if per_image > 0 && LANES.is_multiple_of(per_image) {
            let images = LANES / per_image;
            (images <= 4 && h * w * images <= 4 * LANES).then_some(Sources::Planes { images })
        } else if tw == 8 && th.is_multiple_of(2) && w <= LANES {
            Some(Sources::Rows)
        } else {
            None
        }?;
        // per lane: (image in the group, tile row, tile column)
        let lane = |l: usize| match sources {
            Sources::Planes { .. } => (l / per_image, (l % per_image) / tw, l % tw),
            Sources::Rows => (0, l / tw, l % tw),
        };
        let mut index = [[[0i32; LANES]; 4]; 4];
        let mut upper = [[0u16; 4]; 4];
        let mut inside = [[0u16; 4]; 4];
        for r in 0..4 {
            for s in 0..4 {
                for (l, slot) in index[r][s].iter_mut().enumerate() {
                    let (g, ty, tx) = lane(l);
                    let (y, x) = ((2 * ty + r).wrapping_sub(1), (2 * tx + s).wrapping_sub(1));
                    // (y and x wrap around to huge values above and left of the plane)
                    let at = match sources {
                        Sources::Planes { images } if y < h && x < w => {
                            Some(g * (4 * LANES / images) + y * w + x)
                        }
                        // the source vector of tile row ty (of the group's two), column x
                        Sources::Rows if x < w => Some(ty * LANES + x),
                        _ => None,
                    };
                    if let Some(at) = at {
                        *slot = at as i32;
                        upper[r][s] |= u16::from(at >= 2 * LANES) << l;
                        inside[r][s] |= 1 << l;
                    }
                }
            }
        }
        // the outputs: destination vector j holds 16 consecutive floats of the group's planes
        // (their (image, row, column)), or one plane row
        let mut out_index = [[0i32; LANES]; 4];
        let mut out_upper = [0u16; 4];
        for (j, index) in out_index.iter_mut().enumerate() {
            for (e, slot) in index.iter_mut().enumerate() {
                let (g, y, x) = match sources {
                    Sources::Planes { images } => {
                        let part = 4 / images;
                        let at = (j % part) * LANES + e;
                        (j / part, at / w, at % w)
                    }
                    Sources::Rows => (0, 2 * (j / 2) + j % 2, e),
                };
                let lane = g * per_image + (y / 2) * tw + x / 2;
                let at = (2 * (y % 2) + x % 2) * LANES + lane % LANES;
                *slot = at as i32;
                out_upper[j] |= u16::from(at >= 2 * LANES) << e;
            }
        }
        // SAFETY: reads 16 i32 from an array of 16
        let load = |i: &[i32; LANES]| unsafe { _mm512_loadu_si512(i.as_ptr().cast()) };
        Some(Groups {
            sources,
            index: index.map(|row| row.map(|i| load(&i))),
            upper,
            inside,
            out_index: out_index.map(|i| load(&i)),
            out_upper,
        })
    }

    /// The 4 × 4 input pixels of the group of 16 tiles from tile `t0` of a block (of images
    /// `first_image..` in `x`), channel `c` of `channels`, as `d[r][s]` with one tile a lane;
    /// only the rows `needed` are read (the others are zero).
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn pixels(
        &self,
        p: &Plan,
        x: &[f32],
        [first_image, images]: [usize; 2],
        channels: usize,
        c: usize,
        t0: usize,
        needed: [bool; 4],
    ) -> [[__m512; 4]; 4] {
        let [h, w] = p.size;
        let [th, tw] = p.tile_grid();
        let zero = _mm512_setzero_ps();
        let planes = Planes {
            x,
            plane: h * w,
            first: first_image * channels + c,
            stride: channels,
            images,
        };
        // (loops, not closures: closures would not inline the AVX-512 loads)
        let mut d = [[zero; 4]; 4];
        match self.sources {
            Sources::Planes { images: per_group } => {
                let part = 4 / per_group;
                let b0 = t0 / (th * tw);
                let mut src = [zero; 4];
                for (j, src) in src.iter_mut().enumerate() {
                    // SAFETY: AVX-512F by the caller's requirement
                    *src = unsafe { planes.load(b0 + j / part, (j % part) * LANES, LANES) };
                }
                for r in (0..4).filter(|&r| needed[r]) {
                    for (s, d) in d[r].iter_mut().enumerate() {
                        let lo = _mm512_permutex2var_ps(src[0], self.index[r][s], src[1]);
                        let hi = _mm512_permutex2var_ps(src[2], self.index[r][s], src[3]);
                        let both = _mm512_mask_blend_ps(self.upper[r][s], lo, hi);
                        *d = _mm512_maskz_mov_ps(self.inside[r][s], both);
                    }
                }
            }
            Sources::Rows => {
                // tile rows ty0 and ty0 + 1 of image b
                let row0 = t0 / tw;
                let (b, ty0) = (row0 / th, row0 % th);
                for r in (0..4).filter(|&r| needed[r]) {
                    let mut rows = [zero; 2];
                    for (j, row) in rows.iter_mut().enumerate() {
                        let y = (2 * (ty0 + j) + r).wrapping_sub(1);
                        if y < h {
                            // SAFETY: AVX-512F by the caller's requirement
                            *row = unsafe { planes.load(b, y * w, w) };
                        }
                    }
                    for (s, d) in d[r].iter_mut().enumerate() {
                        let both = _mm512_permutex2var_ps(rows[0], self.index[r][s], rows[1]);
                        *d = _mm512_maskz_mov_ps(self.inside[r][s], both);
                    }
                }
            }
        }
        d
    }
}

impl Groups {
    /// Writes the 2 × 2 output pixels `out[r][s]` of the group of 16 tiles from tile `t0` of a
    /// block into `y` (the block's `images` × `channels` planes), channel `c`.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn write(
        &self,
        p: &Plan,
        out: [[__m512; 2]; 2],
        y: &mut [MaybeUninit<f32>],
        [images, channels, c]: [usize; 3],
        t0: usize,
    ) {
        let [h, w] = p.size;
        let plane = h * w;
        let [th, tw] = p.tile_grid();
        let [[a, b], [cc, d]] = out;
        for j in 0..4 {
            let lo = _mm512_permutex2var_ps(a, self.out_index[j], b);
            let hi = _mm512_permutex2var_ps(cc, self.out_index[j], d);
            let v = _mm512_mask_blend_ps(self.out_upper[j], lo, hi);
            // (image of the block, first float in its plane, floats)
            let (image, at, n) = match self.sources {
                Sources::Planes { images: per_group } => {
                    let part = 4 / per_group;
                    let at = (j % part) * LANES;
                    (
                        t0 / (th * tw) + j / part,
                        at,
                        plane.saturating_sub(at).min(LANES),
                    )
                }
                Sources::Rows => {
                    let row0 = t0 / tw;
                    let row = 2 * (row0 % th + j / 2) + j % 2;
                    (row0 / th, row * w, if row < h { w } else { 0 })
                }
            };
            if image < images && n > 0 {
                let base = (image * channels + c) * plane + at;
                let dst = &mut y[base..base + n];
                // SAFETY: the mask writes the `n` floats of `dst`
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().cast(), first(n), v) };
            }
        }
    }
}

/// One channel's planes of a block's images in `x`.
struct Planes<'a> {
    x: &'a [f32],
    /// Floats of a plane.
    plane: usize,
    /// Plane index (image × channels + channel) of the block's first image.
    first: usize,
    /// Planes from one image's to the next's (the channel count).
    stride: usize,
    /// Images of the block.
    images: usize,
}

impl Planes<'_> {
    /// Floats `at..at + len` (at most 16) of image `b`'s plane, zero past the plane or the block.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load(&self, b: usize, at: usize, len: usize) -> __m512 {
        if b >= self.images || at >= self.plane {
            return _mm512_setzero_ps();
        }
        let base = (self.first + b * self.stride) * self.plane + at;
        let n = len.min(self.plane - at).min(LANES);
        let row = &self.x[base..base + n];
        // the same floats two channels on, for the groups that come two planes later
        if let Some(ahead) = self.x.get(base + 2 * self.plane) {
            _mm_prefetch::<_MM_HINT_T0>((ahead as *const f32).cast());
        }
        // SAFETY: the mask reads the `n` floats of `row`
        unsafe { _mm512_maskz_loadu_ps(first(n), row.as_ptr()) }
    }
}
