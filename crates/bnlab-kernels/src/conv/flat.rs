//! Direct 3×3 convolutions with padding 1, stride 1 ("same") or 2, on AVX-512F's 16-lane
//! vectors, over planes stored flat: each input plane is copied once per horizontal tap (and
//! per row parity at stride 2), laid out as the output's rows back to back, so that every tap
//! of a vector of consecutive output pixels is one plain load, whatever rows it spans.
//!
//! - Stride 1: three copies, shifted by one column left, not at all and right, each with a
//!   zero row above and below.
//! - Stride 2: six copies, one per horizontal tap and row parity, each holding the columns
//!   and rows that tap reads (the output's width, one row more than its height); for outputs
//!   narrower than 8, one copy per tap, as large as the output.
//!
//! Masking the edge columns of one copy instead measured 1.4× slower (masked loads across
//! cache lines are slow). Each output element is the same sum in the same order as in
//! [`super::direct`]'s 8-lane tiles (input channels, then the nine taps, one FMA each,
//! padding read as +0), so at stride 1 the bits are theirs.

use super::direct::{SharedOut, TAPS};
use super::geometry::Geometry;

/// f32 lanes of one AVX-512 vector.
pub(super) const LANES: usize = 16;

/// Output channels of one tile: [`super::direct`]'s, so both read the same packed weights.
pub(super) const TILE_CHANNELS: usize = 6;

/// The most input channels the forward tiles sum before the next block (at least 8 are,
/// [`WEIGHT_BYTES`] sets the rest). Partial sums go to the output and come back as they
/// were, so the bits do not depend on the blocks.
const CHANNEL_BLOCK: usize = 64;

/// Bytes of packed weights (of every output channel of a task) a block of input channels
/// keeps: with them in L1, each tile position goes over all output channels while its input
/// lines are in L1 too.
const WEIGHT_BYTES: usize = 32 << 10;

/// Whether the flat tiles run `g` (on a CPU with AVX-512F and AVX-512VL, which the caller
/// checks): a 3×3 convolution with padding 1, stride 1 or 2 (then on even sizes), whose output
/// planes are whole vectors.
pub(super) fn fits(g: &Geometry) -> bool {
    let [h, w] = g.size;
    let s = g.stride[0];
    g.kernel == [3, 3]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.pad == [1, 1]
        && g.stride == [s, s]
        && (s == 1 || (s == 2 && h.is_multiple_of(2) && w.is_multiple_of(2)))
        && g.out == [h / s, w / s]
        && (g.out_pixels() > 0 && g.out_pixels().is_multiple_of(LANES))
}

/// How a flat plane's copies are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Stride 1: one copy per horizontal tap, shifted by a column, with a zero row above and
    /// below; the vertical taps are a row apart.
    Shifted,
    /// Stride 2: one copy per horizontal tap and row parity, each one row taller than the
    /// output.
    Parity,
    /// One copy per tap, as large as the output (the output rows of one tap in a row).
    PerTap,
}

/// Flat planes: `planes` input planes of `size`, read with `stride`, each as the copies the
/// taps read (see [`Layout`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Flat {
    planes: usize,
    size: [usize; 2],
    stride: usize,
}

impl Flat {
    /// `planes` flat planes of `size` read with `stride` (1 or 2).
    pub(super) fn new(planes: usize, size: [usize; 2], stride: usize) -> Self {
        Self {
            planes,
            size,
            stride,
        }
    }

    /// The output's height and width.
    fn out(&self) -> [usize; 2] {
        [self.size[0] / self.stride, self.size[1] / self.stride]
    }

    /// How the copies are laid out.
    fn layout(&self) -> Layout {
        match (self.stride, self.out()[1]) {
            (1, _) => Layout::Shifted,
            // 4 × 4 outputs: the parity copies' rows are a quarter vector apart, and those
            // split loads made them 1.7× slower
            (_, ow) if ow < 8 => Layout::PerTap,
            _ => Layout::Parity,
        }
    }

    /// Rows of one copy ([`Layout::Shifted`] and [`Layout::Parity`]).
    fn rows(&self) -> usize {
        let [oh, _] = self.out();
        if self.stride == 1 { oh + 2 } else { oh + 1 }
    }

    /// Elements of one copy.
    fn copy(&self) -> usize {
        let [oh, ow] = self.out();
        match self.layout() {
            Layout::PerTap => oh * ow,
            _ => (self.rows() * ow).next_multiple_of(LANES),
        }
    }

    /// Elements of one plane: its copies.
    fn plane(&self) -> usize {
        let copies = match self.layout() {
            Layout::Shifted => 3,
            Layout::Parity => 6,
            Layout::PerTap => TAPS,
        };
        copies * self.copy()
    }

    /// Where the taps of output pixel 0 lie in a plane: tap (ki, kj) at kj·step + rows[ki]
    /// (output pixel q at q more).
    fn taps(&self) -> (usize, [usize; 3]) {
        let (copy, ow) = (self.copy(), self.out()[1]);
        match self.layout() {
            Layout::Shifted => (copy, [0, ow, 2 * ow]),
            // ki = 0 and 2 read the odd input rows (copy of parity 0), one output row apart;
            // ki = 1 the even ones (parity 1)
            Layout::Parity => (2 * copy, [0, copy, ow]),
            Layout::PerTap => (copy, [0, 3 * copy, 6 * copy]),
        }
    }

    /// Copies `src` ([planes][h][w]) into `dst` in this layout, from the first element of
    /// `dst` on a 64-byte boundary; returns that element's index.
    pub(super) fn fill(&self, src: &[f32], dst: &mut Vec<f32>) -> usize {
        let [h, w] = self.size;
        self.fill_planes(src.chunks_exact(h * w).take(self.planes), dst)
    }

    /// [`Flat::fill`] from the `planes` (each [h][w]) in their order.
    fn fill_planes<'a>(
        &self,
        planes: impl Iterator<Item = &'a [f32]>,
        dst: &mut Vec<f32>,
    ) -> usize {
        let [h, w] = self.size;
        let (copy, len) = (self.copy(), self.planes * self.plane());
        // every element of the layout is written below
        let start = aligned_scratch(dst, len);
        let out = &mut dst[start..start + len];
        #[cfg(target_arch = "x86_64")]
        if self.layout() == Layout::Shifted
            && w < LANES
            && LANES.is_multiple_of(w)
            && (h * w).is_multiple_of(LANES)
            && copy - (h + 1) * w <= LANES
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            // SAFETY: the CPU has AVX-512F (checked), and the shape is the one
            // `fill_short_rows` needs (checked above).
            let filled = unsafe { fill_short_rows(planes, out, [h, w], copy) };
            assert_eq!(filled, self.planes, "fewer planes than the layout holds");
            return start;
        }
        let mut filled = 0;
        for (src, out) in planes.zip(out.chunks_exact_mut(self.plane())) {
            assert_eq!(src.len(), h * w, "a plane of another size");
            filled += 1;
            for (i, copy) in out.chunks_exact_mut(copy).enumerate() {
                match self.layout() {
                    Layout::Shifted => self.fill_shifted(src, copy, i),
                    Layout::Parity => self.fill_parity(src, copy, [i / 2, i % 2]),
                    Layout::PerTap => self.fill_tap(src, copy, [i / 3, i % 3]),
                }
            }
        }
        assert_eq!(filled, self.planes, "fewer planes than the layout holds");
        start
    }

    /// [`Layout::Shifted`]'s copy for tap column `kj`: (r, c) holds (r − 1, c + kj − 1).
    fn fill_shifted(&self, src: &[f32], copy: &mut [f32], kj: usize) {
        let ([oh, ow], w) = (self.out(), self.size[1]);
        copy[..ow].fill(0.0);
        shifted_rows(src, &mut copy[ow..(oh + 1) * ow], w, kj);
        copy[(oh + 1) * ow..].fill(0.0);
    }

    /// [`Layout::Parity`]'s copy for tap column `kj` and row `parity`: (r, c) holds
    /// (2r + parity − 1, 2c + kj − 1).
    fn fill_parity(&self, src: &[f32], copy: &mut [f32], [kj, parity]: [usize; 2]) {
        let ([h, w], ow, rows) = (self.size, self.out()[1], self.rows());
        for (r, d) in copy[..rows * ow].chunks_exact_mut(ow).enumerate() {
            let Some(y) = (2 * r + parity).checked_sub(1).filter(|&y| y < h) else {
                d.fill(0.0);
                continue;
            };
            let row = &src[y * w..][..w];
            if kj == 0 {
                d[0] = 0.0;
                for (v, p) in d[1..].iter_mut().zip(row[1..].chunks_exact(2)) {
                    *v = p[0];
                }
            } else {
                for (v, p) in d.iter_mut().zip(row.chunks_exact(2)) {
                    *v = p[kj - 1];
                }
            }
        }
        copy[rows * ow..].fill(0.0);
    }

    /// [`Layout::PerTap`]'s copy for tap (ki, kj): (y, x) holds (s·y + ki − 1, s·x + kj − 1).
    fn fill_tap(&self, src: &[f32], copy: &mut [f32], [ki, kj]: [usize; 2]) {
        let ([h, w], ow, s) = (self.size, self.out()[1], self.stride);
        for (y, d) in copy.chunks_exact_mut(ow).enumerate() {
            let Some(row) = (s * y + ki).checked_sub(1).filter(|&r| r < h) else {
                d.fill(0.0);
                continue;
            };
            let row = &src[row * w..][..w];
            for (x, v) in d.iter_mut().enumerate() {
                let at = (s * x + kj).checked_sub(1).filter(|&at| at < w);
                *v = at.map_or(0.0, |at| row[at]);
            }
        }
    }
}

/// Makes `dst` hold `len` elements from a 64-byte boundary and returns where they start. The
/// caller writes every one of them, so a buffer of an earlier call is reused as it is: only
/// growing it zeroes anything.
pub(super) fn aligned_scratch(dst: &mut Vec<f32>, len: usize) -> usize {
    dst.reserve((len + LANES).saturating_sub(dst.len()));
    let start = dst.as_ptr().align_offset(64).min(LANES);
    if dst.len() < start + len {
        dst.resize(start + len, 0.0);
    }
    start
}

/// Writes the rows of `src` (each `w` wide) to `dst` shifted by `kj` − 1 columns: (r, c)
/// holds (r, c + kj − 1), zero where that leaves the row.
fn shifted_rows(src: &[f32], dst: &mut [f32], w: usize, kj: usize) {
    assert_eq!(src.len(), dst.len(), "shifted rows of another size");
    if kj == 1 {
        dst.copy_from_slice(src);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if w.is_multiple_of(LANES) && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked); the lengths are equal (asserted), whole
        // rows of whole vectors.
        unsafe { shifted_rows_avx512(src, dst, w, kj) };
        return;
    }
    for (row, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
        if kj == 0 {
            d[0] = 0.0;
            d[1..].copy_from_slice(&row[..w - 1]);
        } else {
            d[..w - 1].copy_from_slice(&row[1..]);
            d[w - 1] = 0.0;
        }
    }
}

/// [`shifted_rows`] for `kj` 0 or 2 on rows of whole 16-lane vectors, a vector at a time (a
/// copy call per row made the fill a quarter of a 16-channel forward).
///
/// # Safety
/// The CPU has AVX-512F; `src` and `dst` are equally long, whole rows of whole vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn shifted_rows_avx512(src: &[f32], dst: &mut [f32], w: usize, kj: usize) {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_storeu_ps};
    let vectors = w / LANES;
    for (row, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
        let (s, d) = (row.as_ptr(), d.as_mut_ptr());
        for j in 0..vectors {
            // SAFETY: every lane read lies in the row (the masks drop the lane before its
            // start and the one past its end, which are never accessed); every store too.
            unsafe {
                let at = j * LANES;
                let v = match (kj, j) {
                    (0, 0) => _mm512_maskz_loadu_ps(0xfffe, s.wrapping_sub(1)),
                    (0, _) => _mm512_loadu_ps(s.add(at - 1)),
                    (_, j) if j + 1 == vectors => _mm512_maskz_loadu_ps(0x7fff, s.add(at + 1)),
                    _ => _mm512_loadu_ps(s.add(at + 1)),
                };
                _mm512_storeu_ps(d.add(at), v);
            }
        }
    }
}

/// [`Layout::Shifted`]'s three copies of every plane in `planes` (each [h][w]) into `out` (a
/// plane every 3 · `copy` values), for rows shorter than a vector that a vector holds whole
/// (w = 1, 2, 4 or 8). Each vector of whole rows moves its lanes by one, zeroing the lanes whose
/// column leaves its row, and the zero rows are masked stores, in one loop over all planes: per
/// row and per plane copy calls made these fills 3–7× slower per value than those of 32 × 32
/// planes. Returns how many planes it filled.
///
/// # Safety
/// The CPU has AVX-512F; `w` divides 16, h·w is a multiple of 16, and a copy's rows after the
/// plane's (copy − (h + 1)·w values) are at most 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fill_short_rows<'a>(
    planes: impl Iterator<Item = &'a [f32]>,
    out: &mut [f32],
    [h, w]: [usize; 2],
    copy: usize,
) -> usize {
    use std::arch::x86_64::{
        _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_permutexvar_ps, _mm512_setr_epi32,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };
    let data = h * w;
    // lane i takes lane i − 1 (kj = 0) or i + 1 (kj = 2) of the same rows, zero where that
    // column leaves its row
    let left = _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14);
    let right = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15);
    let lanes = |edge: usize| {
        !(0..LANES)
            .filter(|i| i % w == edge)
            .fold(0u16, |m, i| m | 1 << i)
    };
    let (keep_left, keep_right) = (lanes(0), lanes(w - 1));
    let top = ((1u32 << w) - 1) as u16;
    let bottom_len = copy - data - w;
    let bottom = ((1u32 << bottom_len) - 1) as u16;
    let zero = _mm512_setzero_ps();
    let mut filled = 0;
    for (src, out) in planes.zip(out.chunks_exact_mut(3 * copy)) {
        assert_eq!(src.len(), data, "a plane of another size");
        filled += 1;
        for (kj, c) in out.chunks_exact_mut(copy).enumerate() {
            let (s, d) = (src.as_ptr(), c.as_mut_ptr());
            // SAFETY: the zero row is c[..w], the plane's rows c[w..w + data] (whole vectors
            // read from src[..data]), the rest c[w + data..copy] (bottom_len ≤ 16 values).
            unsafe {
                _mm512_mask_storeu_ps(d, top, zero);
                for at in (0..data).step_by(LANES) {
                    let v = _mm512_loadu_ps(s.add(at));
                    let v = match kj {
                        0 => _mm512_maskz_permutexvar_ps(keep_left, left, v),
                        1 => v,
                        _ => _mm512_maskz_permutexvar_ps(keep_right, right, v),
                    };
                    _mm512_storeu_ps(d.add(w + at), v);
                }
                _mm512_mask_storeu_ps(d.add(w + data), bottom, zero);
            }
        }
    }
    filled
}

/// Vectors of one tile: four where the vectors come in fours, else two or one.
fn tile_vectors(vectors: usize) -> usize {
    if vectors.is_multiple_of(4) {
        4
    } else if vectors.is_multiple_of(2) {
        2
    } else {
        1
    }
}

/// out[t][o][oy][ox] = Σ_c Σ_tap w · x[t][c][s·oy + ki − 1][s·ox + kj − 1] for the images of
/// `src` (`flat` planes of `cin` channels each) and the output channels `channels` of `cout`;
/// `packed` as [`super::direct`] packs weights for tiles of [`TILE_CHANNELS`]. A tile's
/// vectors are consecutive vectors of the images' output planes, across images where a plane
/// has fewer vectors than a tile (4 × 4).
///
/// # Safety
/// The CPU has AVX-512F and AVX-512VL; no other task may write those channels' planes of
/// `out` meanwhile.
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
    let [oh, ow] = flat.out();
    let (pixels, plane) = (oh * ow, flat.plane());
    let images = flat.planes / cin.max(1);
    let per_image = pixels / LANES;
    let vectors = images * per_image;
    let cb = tile_vectors(vectors);
    assert!(src.len() >= flat.planes * plane && packed.len() >= cout * cin * TAPS);
    assert!(out.len() >= images * cout * pixels && channels.end <= cout);
    let (step, rows) = flat.taps();
    let block = (WEIGHT_BYTES / (4 * TAPS * channels.len().max(1))).clamp(8, CHANNEL_BLOCK);
    for c0 in (0..cin).step_by(block) {
        for v0 in (0..vectors).step_by(cb) {
            for o0 in channels.clone().step_by(TILE_CHANNELS) {
                let len = TILE_CHANNELS.min(channels.end - o0);
                let wp = &packed[(o0 * cin + c0 * len) * TAPS..];
                // each vector's first load (channel c0, tap (0, 0)) and first output element
                let (mut xs, mut outs) = ([0; 4], [0; 4]);
                for j in 0..cb {
                    let (t, q) = ((v0 + j) / per_image, (v0 + j) % per_image * LANES);
                    xs[j] = (t * cin + c0) * plane + q;
                    outs[j] = (t * cout + o0) * pixels + q;
                }
                let args = TileArgs {
                    x: src.as_ptr(),
                    xs,
                    sizes: [plane, step, block.min(cin - c0), pixels],
                    rows,
                    w: wp.as_ptr(),
                    out,
                    outs,
                    resume: c0 > 0,
                };
                // SAFETY: a vector's loads end at q + 2·step + rows[2] + 16 ≤ plane past its
                // plane's start (see `Flat::taps`), inside `src` (asserted); a tile reads the
                // block's packed weights, from (o0·cin + c0·len)·9; it writes (and after the
                // first block reads back) len planes of `channels` (the caller's requirement)
                // inside `out` (asserted). A short last block of channels (a count not a
                // multiple of six) has tiles of its own where a tile holds four vectors (as
                // one vector at a time, the last 2 of 32 channels cost 10 % of the forward);
                // elsewhere it runs its vectors one at a time: fewer tile shapes to compile.
                unsafe {
                    match (len, cb) {
                        (6, 4) => run_tile::<6, 4>(args, cb),
                        (5, 4) => run_tile::<5, 4>(args, cb),
                        (4, 4) => run_tile::<4, 4>(args, cb),
                        (3, 4) => run_tile::<3, 4>(args, cb),
                        (2, 4) => run_tile::<2, 4>(args, cb),
                        (1, 4) => run_tile::<1, 4>(args, cb),
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

/// The arguments of one tile.
#[derive(Debug, Clone, Copy)]
struct TileArgs {
    /// The flat planes.
    x: *const f32,
    /// Each vector's first load from `x`.
    xs: [usize; 4],
    /// [plane, tap step, input channels of the block, output pixels].
    sizes: [usize; 4],
    /// The row offsets of the taps ([`Flat::taps`]).
    rows: [usize; 3],
    /// The tile's packed weights.
    w: *const f32,
    /// The output.
    out: SharedOut,
    /// Each vector's first output element (of the tile's first channel).
    outs: [usize; 4],
    /// Whether the sums resume from the output (a later block of input channels).
    resume: bool,
}

/// `OB` channels × the first `vectors` vectors of `args`, `CB` at a time, written to the
/// output.
///
/// # Safety
/// As for [`conv`]'s tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn run_tile<const OB: usize, const CB: usize>(args: TileArgs, vectors: usize) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps};
    let [plane, step, cin, pixels] = args.sizes;
    for v0 in (0..vectors).step_by(CB) {
        let mut acc = [[_mm512_setzero_ps(); CB]; OB];
        if args.resume {
            for (o, acc) in acc.iter_mut().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    // SAFETY: this task wrote these elements for the earlier blocks (the
                    // caller's requirement); this function's features include AVX-512F.
                    *a = unsafe { args.out.read_vector16(args.outs[v0 + j] + o * pixels) };
                }
            }
        }
        // SAFETY (whole loop): the caller keeps every load inside `x` and the weights.
        unsafe {
            let mut x = [args.x; CB];
            for (j, x) in x.iter_mut().enumerate() {
                *x = x.add(args.xs[v0 + j]);
            }
            for c in 0..cin {
                let wc = args.w.add(c * TAPS * OB);
                for ki in 0..3 {
                    for kj in 0..3 {
                        let mut xv = [_mm512_setzero_ps(); CB];
                        for (v, x) in xv.iter_mut().zip(&x) {
                            *v = _mm512_loadu_ps(x.add(c * plane + kj * step + args.rows[ki]));
                        }
                        let wk = wc.add((ki * 3 + kj) * OB);
                        for (o, acc) in acc.iter_mut().enumerate() {
                            let b = _mm512_set1_ps(*wk.add(o));
                            for (a, xv) in acc.iter_mut().zip(&xv) {
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
                unsafe { args.out.write_vector16(args.outs[v0 + j] + o * pixels, *a) };
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

/// Bytes of flat input planes the weight gradient's tiles go over before the next input
/// channels: they stay in L2 while every tile of the output channels reads them.
const DW_BLOCK_BYTES: usize = 512 << 10;

/// Adds ∂L/∂w for the output channels `channels` to `dw` (their rows of [cout][cin][3][3],
/// from the first): Σ over the images and output pixels of dy[o] · the input x[c] a tap
/// reads, with `x` ([images][cin][h][w]) read with `stride`.
///
/// A group of images of [`DW_GROUP_PIXELS`] at a time, `x` is copied to flat planes in
/// `scratch`, channel by channel (a channel's planes of the group's images in a row), and dy
/// is read where it is (copying it too measured 1.3–1.4× slower). The lanes of a tile (3
/// output channels, one input channel) sum a group; the groups' lane sums are added to `dw`
/// in order. Within a group, the input channels go in blocks of [`DW_BLOCK_BYTES`].
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
    (size, stride): ([usize; 2], usize),
    channels: std::ops::Range<usize>,
    dw: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let in_pixels = size[0] * size[1];
    let [oh, ow] = Flat::new(0, size, stride).out();
    let pixels = oh * ow;
    let group = DW_GROUP_PIXELS.div_ceil(pixels).clamp(1, images.max(1));
    assert!(x.len() >= images * cin * in_pixels && dy.len() >= images * cout * pixels);
    assert!(channels.end <= cout && dw.len() >= channels.len() * cin * TAPS);
    for t0 in (0..images).step_by(group) {
        let n = group.min(images - t0);
        let flat = Flat::new(n * cin, size, stride);
        let plane = |t: usize, c: usize| &x[((t0 + t) * cin + c) * in_pixels..][..in_pixels];
        let by_channel = (0..cin).flat_map(|c| (0..n).map(move |t| plane(t, c)));
        let start = flat.fill_planes(by_channel, scratch);
        let xs = &scratch[start..];
        let (step, rows) = flat.taps();
        let kind = row_kind(rows, pixels);
        let block = (DW_BLOCK_BYTES / (4 * n * flat.plane())).max(1);
        for c0 in (0..cin).step_by(block) {
            for o0 in channels.clone().step_by(DW_CHANNELS) {
                let len = DW_CHANNELS.min(channels.end - o0);
                for c in c0..(c0 + block).min(cin) {
                    let x = &xs[c * n * flat.plane()..][..n * flat.plane()];
                    let dy = &dy[(t0 * cout + o0) * pixels..][..((n - 1) * cout + len) * pixels];
                    let args = (x, dy, [flat.plane(), step, pixels, n, cout * pixels], rows);
                    // SAFETY: the slices above hold the channel's planes and the tile's dy;
                    // a plane's last load ends inside it (as in `conv`).
                    let sums = unsafe {
                        match (len, kind) {
                            (3, HALF_ROWS) => dw_tile::<3, HALF_ROWS>(args),
                            (3, QUARTER_ROWS) => dw_tile::<3, QUARTER_ROWS>(args),
                            (3, PARITY_HALF_ROWS) => dw_tile::<3, PARITY_HALF_ROWS>(args),
                            (3, _) => dw_tile::<3, ANY_ROWS>(args),
                            (2, _) => dw_tile::<2, ANY_ROWS>(args),
                            _ => dw_tile::<1, ANY_ROWS>(args),
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
}

/// The 16 values `N` lanes into `lo` (`lo`'s last 16 − N lanes, then `hi`'s first N).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn shifted<const N: i32>(
    hi: std::arch::x86_64::__m512,
    lo: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::{_mm512_alignr_epi32, _mm512_castps_si512, _mm512_castsi512_ps};
    _mm512_castsi512_ps(_mm512_alignr_epi32::<N>(
        _mm512_castps_si512(hi),
        _mm512_castps_si512(lo),
    ))
}

/// [`dw_tile`]'s rows at any offsets: one load per tap.
const ANY_ROWS: u8 = 0;
/// [`dw_tile`]'s rows 8 values apart (8 × 8 stride-1 planes).
const HALF_ROWS: u8 = 1;
/// [`dw_tile`]'s rows 4 values apart (4 × 4 stride-1 planes).
const QUARTER_ROWS: u8 = 2;
/// [`dw_tile`]'s stride-2 rows onto 8 columns: the first and last 8 values apart, the middle
/// one in another copy at least 16 values past the output's (so the vector after the last
/// pixel's is inside the copy).
const PARITY_HALF_ROWS: u8 = 3;

/// Which of [`dw_tile`]'s row layouts the taps' row offsets `rows` are, for outputs of
/// `pixels` pixels.
fn row_kind(rows: [usize; 3], pixels: usize) -> u8 {
    match rows {
        [0, 8, 16] => HALF_ROWS,
        [0, 4, 8] => QUARTER_ROWS,
        [0, copy, 8] if copy.is_multiple_of(LANES) && copy >= pixels + LANES => PARITY_HALF_ROWS,
        _ => ANY_ROWS,
    }
}

/// The arguments of [`dw_tile`]: one input channel's flat planes of the group's images, dy
/// from the tile's first channel of the first image, [plane, tap step, output pixels, images,
/// dy's image stride], the taps' row offsets.
type DwArgs<'a> = (&'a [f32], &'a [f32], [usize; 5], [usize; 3]);

/// Σ dy[o0 + o] · x[c] shifted by each tap over the first `images` images: `[o][tap]` for the
/// first `OB` of [`DW_CHANNELS`] channels.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512VL; the caller keeps every load inside `x` and `dy`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn dw_tile<const OB: usize, const ROWS: u8>(
    (x, dy, [plane, step, pixels, images, dimage], rows): DwArgs<'_>,
) -> [[f32; TAPS]; DW_CHANNELS] {
    use std::arch::x86_64::_mm512_setzero_ps;
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps};
    assert!(x.len() >= images * plane);
    assert!(dy.len() >= images.saturating_sub(1) * dimage + OB * pixels);
    // one array per output channel and one loop over the images' vectors (an image's, then
    // the next image's). AVX-512VL matters here: without it the 128-bit lane sums below are
    // VEX-encoded, which reach only the 16 low registers, so LLVM kept the accumulators there
    // and spilled the rest (1.7× slower)
    let zero = _mm512_setzero_ps();
    let (mut a0, mut a1, mut a2) = ([zero; TAPS], [zero; TAPS], [zero; TAPS]);
    let (mut xp, mut dp) = (x.as_ptr(), dy.as_ptr());
    let mut q = 0;
    for _ in 0..images * pixels / LANES {
        // SAFETY: dy holds the OB rows of every image, `dimage` apart (asserted), and dp
        // stays at the image's; every x load of an image's vector ends inside its plane (see
        // `conv`), and xp stays at the image's plane.
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
            let mut fma = |tap: usize, xv| {
                a0[tap] = _mm512_fmadd_ps(d0, xv, a0[tap]);
                if OB > 1 {
                    a1[tap] = _mm512_fmadd_ps(d1, xv, a1[tap]);
                }
                if OB > 2 {
                    a2[tap] = _mm512_fmadd_ps(d2, xv, a2[tap]);
                }
            };
            if ROWS != ANY_ROWS {
                // rows a half or a quarter vector apart: the row that would load across
                // cache lines is put together from the first row's vector and the next one
                // (valignd). 8 × 8: the middle row; 4 × 4: the middle row (the last stays a
                // split load: building it too needs a 33rd register); stride 2 onto rows of 8:
                // the last row (the middle one is another copy)
                for kj in 0..3 {
                    let at = xp.add(kj * step + q);
                    let lo = _mm512_loadu_ps(at);
                    fma(kj, lo);
                    let hi = _mm512_loadu_ps(at.add(LANES));
                    match ROWS {
                        HALF_ROWS => {
                            fma(6 + kj, hi);
                            fma(3 + kj, shifted::<8>(hi, lo));
                        }
                        QUARTER_ROWS => {
                            fma(3 + kj, shifted::<4>(hi, lo));
                            fma(6 + kj, _mm512_loadu_ps(at.add(rows[2])));
                        }
                        _ => {
                            fma(6 + kj, shifted::<8>(hi, lo));
                            fma(3 + kj, _mm512_loadu_ps(at.add(rows[1])));
                        }
                    }
                }
            } else {
                for (ki, row) in rows.iter().enumerate() {
                    for kj in 0..3 {
                        let xv = _mm512_loadu_ps(xp.add(kj * step + row + q));
                        fma(ki * 3 + kj, xv);
                    }
                }
            }
        }
        q += LANES;
        if q == pixels {
            q = 0;
            // (past the last plane only after the last vector, never to be read)
            xp = xp.wrapping_add(plane);
            dp = dp.wrapping_add(dimage);
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
