//! Direct 3×3 stride-1 convolution with AVX2 and FMA (with AVX-512VL's 32 registers where the
//! CPU has them), for the shapes that dominate the ResNets.
//!
//! - The forward is a register-tiled direct convolution over zero-padded planes: a tile of 6
//!   output channels × 16 pixels (of one row, or 8 of each of two rows) or 12 × 8 stays in
//!   registers while the input channels and the nine taps go by.
//! - The input gradient is that same forward applied to dy, with the kernel flipped and its
//!   channels transposed.
//! - The weight gradient is a register-tiled correlation of x with dy: 4 output channels × the
//!   3 taps of one kernel row, summed in lanes over the block's pixels, then across lanes.
//!
//! Every loop has a fixed order and blocks are fixed by the shape, so the bits do not depend
//! on the thread count. [`applies`] says which convolutions this runs; im2col + GEMM
//! ([`super::gemm`]) covers the rest.

use std::ops::Range;

use super::flat::{self, Flat};
use super::geometry::Geometry;
use super::strided_grad;

/// f32 lanes of one AVX2 vector.
const LANES: usize = 8;

/// Taps of a 3×3 kernel.
pub(crate) const TAPS: usize = 9;

/// Output channels of one weight-gradient tile.
const DW_CHANNELS: usize = 4;

/// Most input × output channels the 8-lane tiles take: up to 64 × 64 they beat im2col + GEMM
/// by 1.2–3× (measured on ResNet-20's and ResNet-18's shapes); at 128 × 128 and above GEMM is
/// as fast, and faster where the image is narrower than one vector (4 × 4). The flat tiles
/// take any channels.
const MAX_CHANNEL_PAIRS: usize = 64 * 64;

/// Whether the 8-lane tiles can run `g`: a 3×3 kernel, stride 1, no dilation, one group,
/// padding of at most 2 on every side, at most [`MAX_CHANNEL_PAIRS`] (the CPU aside).
fn tiles_fit(g: &Geometry) -> bool {
    let ([h, w], [oh, ow], [top, left]) = (g.size, g.out, g.pad);
    // bottom = oh + 2 − h − top and right likewise, each in 0..=2
    let pads = |len: usize, out: usize, before: usize| {
        before <= 2 && out + 2 >= len + before && out <= len + before
    };
    g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && pads(h, oh, top)
        && pads(w, ow, left)
        && g.cin * g.cout <= MAX_CHANNEL_PAIRS
}

/// Whether `tiles` run `g` on the flat 16-lane tiles ([`flat`]).
fn runs_flat(g: &Geometry, tiles: Tiles) -> bool {
    tiles == Tiles::Avx512 && flat::fits(g)
}

/// Whether the direct kernels run `g`'s forward and weight gradient: the 8-lane tiles' shapes
/// on a CPU with AVX2 and FMA, and the flat tiles' (also wider channels and stride 2) on one
/// with AVX-512.
pub(crate) fn applies(g: &Geometry) -> bool {
    (tiles_fit(g) && has_avx2_fma()) || runs_flat(g, Tiles::best())
}

/// Whether the direct kernels run `g`'s input gradient: as [`applies`] at stride 1, and on
/// the flat tiles' stride-2 shapes where [`strided_grad`] can write the rows.
pub(crate) fn applies_input_grad(g: &Geometry) -> bool {
    applies(g)
        && (g.stride == [1, 1] || (runs_flat(g, Tiles::best()) && strided_grad::fits(g.out[1])))
}

/// Whether the CPU has AVX2 and FMA.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Zero-padded planes: `planes` planes of `rows` × `cols`, source pixel (r, c) at
/// (r + top, c + left).
#[derive(Debug, Clone, Copy)]
struct Padded {
    planes: usize,
    rows: usize,
    cols: usize,
}

impl Padded {
    /// Padded planes for a 3×3 stride-1 convolution whose output is `out`: two rows and two
    /// columns more than the output, columns rounded up to whole vectors.
    fn for_output(planes: usize, [oh, ow]: [usize; 2]) -> Self {
        Self {
            planes,
            rows: oh + 2,
            cols: ow.next_multiple_of(LANES) + 2,
        }
    }

    /// Elements of one plane.
    fn plane(&self) -> usize {
        self.rows * self.cols
    }

    /// Copies `src` ([planes][h][w]) into `dst`, zero elsewhere.
    fn fill(&self, src: &[f32], [h, w]: [usize; 2], [top, left]: [usize; 2], dst: &mut Vec<f32>) {
        // one sequential pass: only the borders are written as zeros
        dst.clear();
        dst.reserve(self.planes * self.plane());
        let (rows, cols) = (h.min(self.rows - top), w.min(self.cols - left));
        let zeros = |dst: &mut Vec<f32>, n: usize| dst.resize(dst.len() + n, 0.0);
        for p in 0..self.planes {
            zeros(dst, top * self.cols);
            for r in 0..rows {
                zeros(dst, left);
                dst.extend_from_slice(&src[(p * h + r) * w..][..cols]);
                zeros(dst, self.cols - left - cols);
            }
            zeros(dst, (self.rows - top - rows) * self.cols);
        }
    }
}

/// The shape of a forward tile for an output of `[oh, ow]`: 12 accumulators, which with the
/// loads and the broadcast fit AVX2's 16 registers (3 × 4 and 4 × 3 measured slower).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TileShape {
    /// Output channels.
    channels: usize,
    /// Vectors per channel.
    vectors: usize,
    /// Whether the vectors lie in consecutive rows (else side by side in one row).
    down: bool,
}

impl TileShape {
    /// 6 channels × 2 vectors of one row where a row has an even number of vectors; 6 × the
    /// same vector of 2 rows where a row is one vector and the rows are even (8 × 8 and
    /// narrower: 2 inputs and 6 weights per 12 FMAs instead of 1 and 12); else 12 × 1.
    fn new([oh, ow]: [usize; 2]) -> Self {
        let per_row = ow.div_ceil(LANES);
        let (channels, vectors, down) = if per_row.is_multiple_of(2) {
            (6, 2, false)
        } else if per_row == 1 && oh.is_multiple_of(2) {
            (6, 2, true)
        } else {
            (12, 1, false)
        };
        Self {
            channels,
            vectors,
            down,
        }
    }

    /// (rows, columns) one tile covers.
    fn span(&self) -> [usize; 2] {
        if self.down {
            [self.vectors, LANES]
        } else {
            [1, self.vectors * LANES]
        }
    }
}

/// Weights packed for the forward tiles: in each of the consecutive channel `parts`, blocks of
/// `ob` output channels from the part's start (the last may be shorter), each
/// [cin][9][block], from `w(o, c, tap)`. These are the tiles [`conv`] runs over a part, and
/// the block of channel o0 starts at o0·cin·9.
fn pack(
    parts: &[Range<usize>],
    cin: usize,
    ob: usize,
    w: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let cout = parts.last().map_or(0, |p| p.end);
    let mut packed = vec![0.0; cout * cin * TAPS];
    for part in parts {
        for o0 in part.clone().step_by(ob) {
            let len = ob.min(part.end - o0);
            let block = &mut packed[o0 * cin * TAPS..][..len * cin * TAPS];
            // each channel's weights in their order, written `len` apart (a gather in the
            // other order cost 1–2 % of a batch-8 step)
            for (k, o) in (o0..o0 + len).enumerate() {
                for c in 0..cin {
                    for tap in 0..TAPS {
                        block[(c * TAPS + tap) * len + k] = w(o, c, tap);
                    }
                }
            }
        }
    }
    packed
}

/// Output channels per packed block for `tiles` running `g`'s output of `out`.
fn tile_channels(g: &Geometry, tiles: Tiles, out: [usize; 2]) -> usize {
    if runs_flat(g, tiles) {
        flat::TILE_CHANNELS
    } else {
        TileShape::new(out).channels
    }
}

/// A forward convolution's weights [cout][cin][3][3] packed for `tiles`, for the output
/// channel `parts` that [`forward`] will be called with.
pub(crate) fn pack_forward(
    g: &Geometry,
    w: &[f32],
    parts: &[Range<usize>],
    tiles: Tiles,
) -> Vec<f32> {
    let cin = g.cin;
    let ob = tile_channels(g, tiles, g.out);
    pack(parts, cin, ob, |o, c, tap| w[(o * cin + c) * TAPS + tap])
}

/// The input gradient's weights: channels transposed and taps flipped, packed for `tiles`
/// and an output as large as the input, for the input channel `parts` that [`input_grad`]
/// will be called with.
pub(crate) fn pack_input_grad(
    g: &Geometry,
    w: &[f32],
    parts: &[Range<usize>],
    tiles: Tiles,
) -> Vec<f32> {
    let cin = g.cin;
    if runs_flat(g, tiles) && g.stride != [1, 1] {
        // the stride-2 tiles take every tap where it lands: not flipped
        let ob = strided_grad::TILE_CHANNELS;
        return pack(parts, g.cout, ob, |c, o, tap| w[(o * cin + c) * TAPS + tap]);
    }
    let ob = tile_channels(g, tiles, g.size);
    pack(parts, g.cout, ob, |c, o, tap| {
        w[(o * cin + c) * TAPS + TAPS - 1 - tap]
    })
}

/// Which compiled tiles run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tiles {
    /// AVX2 + FMA.
    Avx2,
    /// AVX2 + FMA with AVX-512VL's 32 registers.
    Avx512,
}

impl Tiles {
    /// AVX-512VL's where the CPU has it, else AVX2's.
    pub(crate) fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Self::Avx512;
        }
        Self::Avx2
    }
}

/// Scratch buffers of one thread, and the tiles it runs.
#[derive(Debug)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    dy: Vec<f32>,
    tiles: Tiles,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            x: Vec::new(),
            dy: Vec::new(),
            tiles: Tiles::best(),
        }
    }
}

thread_local! {
    /// This thread's scratch buffers, kept from call to call: a fresh one per task zeroed its
    /// buffers as they grew, every time (1.8 % of a ResNet-20 step in `memset`).
    static THREAD_SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

impl Scratch {
    /// Runs `f` with this thread's scratch buffers.
    pub(crate) fn with<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
        with_local(&THREAD_SCRATCH, f)
    }
}

/// Runs `f` with this thread's value of `key` (a fresh default one where it is in use further
/// up this thread's stack, as when rayon runs another task inside a wait).
pub(crate) fn with_local<S: Default + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<S>>,
    f: impl FnOnce(&mut S) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut S::default()),
    })
}

/// An output that several tasks write at once, each only the planes of its own channels; it
/// may start uninitialized ([`SharedOut::spare`]): it is only ever written through pointers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the tasks sharing one `SharedOut` write disjoint elements (the planes of their own
// channel ranges), and its buffer is not touched otherwise until all of them have ended.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// `out`, to be written by tasks with disjoint channel ranges while the borrow lasts.
    #[cfg(test)]
    fn new(out: &mut [f32]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// The first `len` slots of `out`'s spare capacity (reserved here), uninitialized: the
    /// caller sets `out`'s length once every slot has been written.
    pub(crate) fn spare(out: &mut Vec<f32>, len: usize) -> Self {
        out.clear();
        out.reserve(len);
        // debug builds (the tests) start from NaN, so an element no task writes fails every
        // comparison with a reference instead of passing on memory that happened to be zero
        #[cfg(debug_assertions)]
        out.spare_capacity_mut()[..len].fill(std::mem::MaybeUninit::new(f32::NAN));
        Self {
            ptr: out.spare_capacity_mut().as_mut_ptr().cast(),
            len,
        }
    }

    /// The `len` elements from `at`, still shared.
    pub(crate) fn sub(&self, at: usize, len: usize) -> Self {
        assert!(at + len <= self.len, "an output part past the end");
        Self {
            // (in bounds, above: the pointer stays inside the buffer)
            ptr: self.ptr.wrapping_add(at),
            len,
        }
    }

    /// Writes one vector at element `at`.
    ///
    /// # Safety
    /// No other task may use those elements meanwhile; the CPU has AVX.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    unsafe fn write_vector(&self, at: usize, v: std::arch::x86_64::__m256) {
        assert!(at + LANES <= self.len, "an output write past the end");
        // SAFETY: in bounds (above); exclusive by the caller's requirement; unaligned store.
        unsafe { std::arch::x86_64::_mm256_storeu_ps(self.ptr.add(at), v) }
    }

    /// Elements of this output.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Writes one 16-lane vector at element `at`.
    ///
    /// # Safety
    /// No other task may use those elements meanwhile; the CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn write_vector16(&self, at: usize, v: std::arch::x86_64::__m512) {
        assert!(at + 16 <= self.len, "an output write past the end");
        // SAFETY: in bounds (above); exclusive by the caller's requirement; unaligned store.
        unsafe { std::arch::x86_64::_mm512_storeu_ps(self.ptr.add(at), v) }
    }

    /// Reads back the 16-lane vector at element `at`.
    ///
    /// # Safety
    /// This task wrote those elements, and no other task uses them meanwhile; the CPU has
    /// AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn read_vector16(&self, at: usize) -> std::arch::x86_64::__m512 {
        assert!(at + 16 <= self.len, "an output read past the end");
        // SAFETY: in bounds (above), written (the caller's requirement); unaligned load.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(self.ptr.add(at)) }
    }

    /// Writes `values` from element `at`.
    ///
    /// # Safety
    /// No other task may use those elements meanwhile.
    pub(super) unsafe fn write(&self, at: usize, values: &[f32]) {
        assert!(
            at + values.len() <= self.len,
            "an output write past the end"
        );
        // SAFETY: in bounds (above); exclusive by the caller's requirement; `values` is a
        // buffer of the caller's, not this output.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(at), values.len()) }
    }
}

/// The output channels `channels` of y = conv(x, w) of `images` images ([images][cin][h][w])
/// into `out` ([images][cout][oh][ow]); `packed` from [`pack_forward`] with `channels` one of
/// its parts.
///
/// # Safety
/// No other task may write those channels' planes of `out` meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn forward(
    g: &Geometry,
    images: usize,
    x: &[f32],
    packed: &[f32],
    out: SharedOut,
    channels: Range<usize>,
    scratch: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    if runs_flat(g, scratch.tiles) {
        let src = Flat::new(images * g.cin, g.size, g.stride[0]);
        let start = src.fill(x, &mut scratch.x);
        let x = &scratch.x[start..];
        // SAFETY: `Tiles::best` chose these tiles on a CPU with AVX-512F and AVX-512VL; the
        // caller's requirement makes the writes exclusive.
        unsafe { flat::conv(x, src, [g.cin, g.cout], packed, out, channels) };
        return;
    }
    let src = Padded::for_output(images * g.cin, g.out);
    src.fill(x, g.size, g.pad, &mut scratch.x);
    let dims = Dims {
        cin: g.cin,
        cout: g.cout,
        out: g.out,
    };
    // SAFETY: the caller's requirement.
    unsafe { conv(&scratch.x, src, dims, packed, out, channels, scratch.tiles) };
}

/// The input channels `channels` of ∂L/∂x of `images` images from their dy
/// ([images][cout][oh][ow]) into `dx` ([images][cin][h][w]); `packed` from
/// [`pack_input_grad`] with `channels` one of its parts.
///
/// # Safety
/// No other task may write those channels' planes of `dx` meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn input_grad(
    g: &Geometry,
    images: usize,
    dy: &[f32],
    packed: &[f32],
    dx: SharedOut,
    channels: Range<usize>,
    scratch: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    if runs_flat(g, scratch.tiles) && g.stride != [1, 1] {
        let start = strided_grad::fill(dy, images * g.cout, g.out, &mut scratch.dy);
        let dy = &scratch.dy[start..];
        let dims = [images, g.cout, g.cin];
        // SAFETY: as in `forward`.
        unsafe { strided_grad::input_grad(dy, dims, g.out, packed, dx, channels) };
        return;
    }
    // at stride 1 `flat::fits` means a "same" convolution: dy is as large as x and padded
    // by 1 too
    #[cfg(target_arch = "x86_64")]
    if runs_flat(g, scratch.tiles) {
        let src = Flat::new(images * g.cout, g.out, 1);
        let start = src.fill(dy, &mut scratch.dy);
        let dy = &scratch.dy[start..];
        // SAFETY: as in `forward`.
        unsafe { flat::conv(dy, src, [g.cout, g.cin], packed, dx, channels) };
        return;
    }
    let src = Padded::for_output(images * g.cout, g.size);
    let pad = [2 - g.pad[0], 2 - g.pad[1]];
    src.fill(dy, g.out, pad, &mut scratch.dy);
    let dims = Dims {
        cin: g.cout,
        cout: g.cin,
        out: g.size,
    };
    // SAFETY: the caller's requirement.
    unsafe { conv(&scratch.dy, src, dims, packed, dx, channels, scratch.tiles) };
}

/// Adds ∂L/∂w of `images` images (x [images][cin][h][w], dy [images][cout][oh][ow]) for the
/// output channels `channels` to `dw` (their rows of [cout][cin][3][3], from the first).
pub(crate) fn weight_grad(
    g: &Geometry,
    images: usize,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    channels: Range<usize>,
    scratch: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    if runs_flat(g, scratch.tiles) {
        let dims = [images, g.cin, g.cout];
        let size = (g.size, g.stride[0]);
        // SAFETY: `Tiles::best` chose these tiles on a CPU with AVX-512F and AVX-512VL.
        unsafe { flat::weight_grad(x, dy, dims, size, channels, dw, &mut scratch.x) };
        return;
    }
    let xs = Padded::for_output(images * g.cin, g.out);
    xs.fill(x, g.size, g.pad, &mut scratch.x);
    // dy with whole vectors per row, zero past the row's end
    let [oh, ow] = g.out;
    let dys = Padded {
        planes: images * g.cout,
        rows: oh,
        cols: ow.next_multiple_of(LANES),
    };
    dys.fill(dy, g.out, [0, 0], &mut scratch.dy);
    assert!(channels.end <= g.cout && dw.len() >= channels.len() * g.cin * TAPS);
    let (x, dy) = (&scratch.x, &scratch.dy);
    let dims = [images, g.cin, g.cout];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` checked the CPU has AVX2 and FMA before any caller got here, and
    // `Tiles::best` that it has AVX-512VL before choosing those tiles.
    unsafe {
        match scratch.tiles {
            Tiles::Avx2 => avx2::weight_grad(x, xs, dy, dys, dims, channels, dw),
            Tiles::Avx512 => avx512::weight_grad(x, xs, dy, dys, dims, channels, dw),
        }
    }
}

/// Channels and output size of one [`conv`].
#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Channels summed over (of `src`).
    cin: usize,
    /// Channels of the output.
    cout: usize,
    /// Output height and width.
    out: [usize; 2],
}

/// out[t][o][oy][ox] = Σ_c Σ_tap w · src[t][c][oy + ki][ox + kj] for the images of `src` and
/// the output channels `channels`.
///
/// # Safety
/// No other task may write those channels' planes of `out` meanwhile.
unsafe fn conv(
    src: &[f32],
    padded: Padded,
    dims: Dims,
    packed: &[f32],
    out: SharedOut,
    channels: Range<usize>,
    tiles: Tiles,
) {
    let Dims {
        cin,
        cout,
        out: [oh, ow],
    } = dims;
    let images = padded.planes / cin.max(1);
    assert!(src.len() >= padded.planes * padded.plane());
    assert!(packed.len() >= cout * cin * TAPS);
    assert!(out.len >= images * cout * oh * ow && channels.end <= cout);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` checked the CPU has AVX2 and FMA before any caller got here, and
    // `Tiles::best` that it has AVX-512VL before choosing those tiles; the asserts above
    // bound every access (see `avx2::conv`); the caller's requirement makes the writes
    // exclusive.
    unsafe {
        match tiles {
            Tiles::Avx2 => avx2::conv(src, padded, dims, packed, out, channels),
            Tiles::Avx512 => avx512::conv(src, padded, dims, packed, out, channels),
        }
    }
}

/// Calls `run_tile::<OB, CB>` for a runtime (OB, CB) from [`TileShape`] or a shorter
/// last block of channels.
macro_rules! dispatch {
    ($ob:expr, $cb:expr, $args:tt; $(($o:literal, $c:literal)),*) => {
        match ($ob, $cb) {
            $(($o, $c) => run_tile::<$o, $c> $args,)*
            _ => unreachable!("tile shapes come from TileShape"),
        }
    };
}

/// The tiles, compiled for one set of CPU features.
macro_rules! tiles {
    ($name:ident, $features:literal, $doc:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[doc = $doc]
        mod $name {

    use std::arch::x86_64::{
        __m256, _mm_add_ps, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps, _mm256_broadcast_ss,
        _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use std::ops::Range;

    use super::{DW_CHANNELS, Dims, LANES, Padded, SharedOut, TAPS, TileShape};

    /// Accumulators of one forward tile: `OB` output channels × `CB` vectors.
    type Acc<const OB: usize, const CB: usize> = [[__m256; CB]; OB];

    /// One forward tile: Σ over `cin` channels and the nine taps of w · x, where `x` points
    /// at the tile's first input pixel (channel 0, top-left tap), its CB vectors `step`
    /// apart, and `w` at its packed weights [cin][9][OB].
    #[target_feature(enable = $features)]
    unsafe fn tile<const OB: usize, const CB: usize>(
        x: *const f32,
        plane: usize,
        cols: usize,
        step: usize,
        cin: usize,
        w: *const f32,
    ) -> Acc<OB, CB> {
        let mut acc = [[_mm256_setzero_ps(); CB]; OB];
        for c in 0..cin {
            // SAFETY (whole loop): the caller keeps the tile inside the padded planes and
            // the packed weights.
            unsafe {
                let (xc, wc) = (x.add(c * plane), w.add(c * TAPS * OB));
                for ki in 0..3 {
                    let row = xc.add(ki * cols);
                    for kj in 0..3 {
                        let mut xs = [_mm256_setzero_ps(); CB];
                        for (j, v) in xs.iter_mut().enumerate() {
                            *v = _mm256_loadu_ps(row.add(j * step + kj));
                        }
                        let wk = wc.add((ki * 3 + kj) * OB);
                        for (o, acc) in acc.iter_mut().enumerate() {
                            let b = _mm256_broadcast_ss(&*wk.add(o));
                            for (a, xv) in acc.iter_mut().zip(&xs) {
                                *a = _mm256_fmadd_ps(b, *xv, *a);
                            }
                        }
                    }
                }
            }
        }
        acc
    }

    /// Runs one forward tile of `shape` at row `oy`, column `ox` of image `t`, channels from
    /// `o0`, and writes the part inside the output.
    #[target_feature(enable = $features)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_tile<const OB: usize, const CB: usize>(
        src: &[f32],
        padded: Padded,
        cin: usize,
        w: &[f32],
        out: SharedOut,
        shape: TileShape,
        [t, oy, ox, o0, cout]: [usize; 5],
        [oh, ow]: [usize; 2],
    ) {
        let plane = padded.plane();
        let x = &src[t * cin * plane + oy * padded.cols + ox..];
        let w = &w[o0 * cin * TAPS..];
        let step = if shape.down { padded.cols } else { LANES };
        // SAFETY: `TileShape` and the caller's loops keep the tile's rows (oy + span + 2 ≤
        // oh + 1 < rows) and columns (ox + span + 2 ≤ cols) inside each of the image's cin
        // planes; the tile reads cin·9·OB packed weights from o0·cin·9.
        let acc = unsafe { tile::<OB, CB>(x.as_ptr(), plane, padded.cols, step, cin, w.as_ptr()) };
        let mut row = [0.0f32; LANES];
        for (o, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate() {
                let (y, x) = if shape.down {
                    (oy + j, ox)
                } else {
                    (oy, ox + j * LANES)
                };
                let at = ((t * cout + o0 + o) * oh + y) * ow + x;
                let valid = (ow - x).min(LANES);
                // whole vectors go straight to the output, a row's short end through `row`
                // SAFETY: channel o0 + o is this task's (the caller's requirement); `row`
                // holds one vector; this module's features include AVX.
                unsafe {
                    if valid == LANES {
                        out.write_vector(at, *a);
                    } else {
                        _mm256_storeu_ps(row.as_mut_ptr(), *a);
                        out.write(at, &row[..valid]);
                    }
                }
            }
        }
    }

    /// See [`super::conv`].
    #[target_feature(enable = $features)]
    pub(super) unsafe fn conv(
        src: &[f32],
        padded: Padded,
        Dims { cin, cout, out: [oh, ow] }: Dims,
        packed: &[f32],
        out: SharedOut,
        channels: Range<usize>,
    ) {
        let images = padded.planes / cin.max(1);
        let shape = TileShape::new([oh, ow]);
        let (ob, cb, [rows, cols]) = (shape.channels, shape.vectors, shape.span());
        // one block of channels at a time, so that its weights stay in cache
        for o0 in channels.clone().step_by(ob) {
            let len = ob.min(channels.end - o0);
            for t in 0..images {
                for oy in (0..oh).step_by(rows) {
                    for ox in (0..ow).step_by(cols) {
                        let args = [t, oy, ox, o0, cout];
                        // SAFETY: (len, cb) is one of the listed shapes, and the CPU has
                        // this module's features (this function's own requirement).
                        unsafe {
                            dispatch!(len, cb, (src, padded, cin, packed, out, shape, args, [oh, ow]);
                                (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1),
                                (9, 1), (10, 1), (11, 1), (12, 1), (1, 2), (2, 2), (3, 2),
                                (4, 2), (5, 2), (6, 2))
                        }
                    }
                }
            }
        }
    }

    /// Sum of the 8 lanes of `v`, in a fixed order.
    #[target_feature(enable = $features)]
    fn lane_sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ps(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Lanes of Σ dy[o0 + o] · x[ki + oy][kj + ox] for the `OB` output channels from `o0`,
    /// one input channel `c` and one kernel row `ki`, over every image, row and vector.
    #[target_feature(enable = $features)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dw_tile<const OB: usize>(
        x: &[f32],
        xs: Padded,
        dy: &[f32],
        dys: Padded,
        [images, cin, cout]: [usize; 3],
        [o0, c, ki]: [usize; 3],
    ) -> [[__m256; 3]; OB] {
        let mut acc = [[_mm256_setzero_ps(); 3]; OB];
        let (xp, dp) = (x.as_ptr(), dy.as_ptr());
        for t in 0..images {
            for oy in 0..dys.rows {
                // SAFETY: rows oy + ki < oh + 2 = xs.rows and columns up to
                // dys.cols + 2 = xs.cols of plane (t, c); dy rows of planes (t, o0 + o).
                unsafe {
                    let xrow = xp.add(((t * cin + c) * xs.rows + oy + ki) * xs.cols);
                    let mut drows = [dp; OB];
                    for (o, d) in drows.iter_mut().enumerate() {
                        *d = dp.add(((t * cout + o0 + o) * dys.rows + oy) * dys.cols);
                    }
                    for v in (0..dys.cols).step_by(LANES) {
                        let xv = [
                            _mm256_loadu_ps(xrow.add(v)),
                            _mm256_loadu_ps(xrow.add(v + 1)),
                            _mm256_loadu_ps(xrow.add(v + 2)),
                        ];
                        for (acc, d) in acc.iter_mut().zip(drows) {
                            let d = _mm256_loadu_ps(d.add(v));
                            for (a, xv) in acc.iter_mut().zip(xv) {
                                *a = _mm256_fmadd_ps(d, xv, *a);
                            }
                        }
                    }
                }
            }
        }
        acc
    }

    /// The arguments of [`dw_tile`].
    type DwArgs<'a> = (&'a [f32], Padded, &'a [f32], Padded, [usize; 3], [usize; 3]);

    /// [`dw_tile`]'s lanes summed: `[o][kj]` for the first `OB` of [`DW_CHANNELS`] channels.
    #[target_feature(enable = $features)]
    unsafe fn dw_sums<const OB: usize>(
        (x, xs, dy, dys, dims, at): DwArgs<'_>,
    ) -> [[f32; 3]; DW_CHANNELS] {
        // SAFETY: the caller's requirement.
        let acc = unsafe { dw_tile::<OB>(x, xs, dy, dys, dims, at) };
        let mut sums = [[0.0f32; 3]; DW_CHANNELS];
        for (s, a) in sums.iter_mut().zip(acc) {
            *s = [lane_sum(a[0]), lane_sum(a[1]), lane_sum(a[2])];
        }
        sums
    }

    /// See [`super::weight_grad`]: `x` padded as `xs`, `dy` as `dys`.
    #[target_feature(enable = $features)]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn weight_grad(
        x: &[f32],
        xs: Padded,
        dy: &[f32],
        dys: Padded,
        dims: [usize; 3],
        channels: Range<usize>,
        dw: &mut [f32],
    ) {
        let [images, cin, cout] = dims;
        assert!(x.len() >= xs.planes * xs.plane() && xs.planes >= images * cin);
        assert!(dy.len() >= dys.planes * dys.plane() && dys.planes >= images * cout);
        assert!(xs.rows >= dys.rows + 2 && xs.cols >= dys.cols + 2);
        for o0 in channels.clone().step_by(DW_CHANNELS) {
            let len = DW_CHANNELS.min(channels.end - o0);
            for c in 0..cin {
                for ki in 0..3 {
                    let at = [o0, c, ki];
                    let args = (x, xs, dy, dys, dims, at);
                    // SAFETY: the asserts above keep every tile inside x and dy.
                    let sums = unsafe {
                        match len {
                            1 => dw_sums::<1>(args),
                            2 => dw_sums::<2>(args),
                            3 => dw_sums::<3>(args),
                            _ => dw_sums::<4>(args),
                        }
                    };
                    for (o, s) in sums.iter().take(len).enumerate() {
                        let at = ((o0 - channels.start + o) * cin + c) * TAPS + ki * 3;
                        for (d, v) in dw[at..at + 3].iter_mut().zip(s) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
        }
    };
}

tiles!(
    avx2,
    "avx2,fma",
    "The tiles on AVX2 + FMA (16 vector registers: the 12 accumulators spill)."
);
tiles!(
    avx512,
    "avx2,fma,avx512f,avx512vl",
    "The same 256-bit tiles with AVX-512VL's 32 registers: no spills, 1.3–1.8× faster."
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The three passes of `g` on `tiles`: (y, dx, dw).
    fn passes(g: &Geometry, tiles: Tiles) -> [Vec<f32>; 3] {
        let value = |i: usize, m: usize| ((i * 7919) % m) as f32 / m as f32 - 0.5;
        let x: Vec<f32> = (0..g.input_len()).map(|i| value(i, 101)).collect();
        let w: Vec<f32> = (0..g.weight_len()).map(|i| value(i, 17)).collect();
        let dy: Vec<f32> = (0..g.output_len()).map(|i| value(i, 23)).collect();
        let mut scratch = Scratch {
            tiles,
            ..Scratch::default()
        };
        let mut y = vec![0.0; g.output_len()];
        let mut dx = vec![0.0; g.input_len()];
        // SAFETY: one task writes every channel.
        unsafe {
            let (y, dx) = (SharedOut::new(&mut y), SharedOut::new(&mut dx));
            let (all_out, all_in) = (0..g.cout, 0..g.cin);
            let (outs, ins) = (
                std::slice::from_ref(&all_out),
                std::slice::from_ref(&all_in),
            );
            forward(
                g,
                g.n,
                &x,
                &pack_forward(g, &w, outs, tiles),
                y,
                0..g.cout,
                &mut scratch,
            );
            input_grad(
                g,
                g.n,
                &dy,
                &pack_input_grad(g, &w, ins, tiles),
                dx,
                0..g.cin,
                &mut scratch,
            );
        }
        let mut dw = vec![0.0; g.weight_len()];
        weight_grad(g, g.n, &x, &dy, &mut dw, 0..g.cout, &mut scratch);
        [y, dx, dw]
    }

    #[test]
    fn the_avx2_tiles_give_the_bits_of_the_avx512_tiles() {
        // the reference tests run whichever tiles the CPU prefers; the other set must agree,
        // bit for bit but for the flat tiles' weight gradient
        if !(has_avx2_fma() && Tiles::best() == Tiles::Avx512) {
            eprintln!("skipped: the CPU lacks AVX-512VL, so only the AVX2 tiles can run");
            return;
        }
        // one-vector rows (two-row tiles, odd and even heights), two- and three-vector rows,
        // channel counts leaving short tiles; the flat 16-lane tiles where the AVX-512 set
        // has them (8 × 8, 9 × 16, 16 × 16, 4 × 4, 2 × 32, 1 × 16: full tiles of 4, 2 and 1
        // vectors, and short blocks of 1 to 5 channels)
        for (n, cin, [h, w], cout) in [
            (2, 5, [8, 8], 13),
            (1, 3, [7, 5], 7),
            (2, 9, [9, 16], 17),
            (1, 4, [3, 21], 6),
            (2, 7, [16, 16], 8),
            (3, 6, [4, 4], 11),
            (1, 3, [2, 32], 6),
            (2, 2, [16, 1], 7),
            (2, 15, [8, 8], 16),
        ] {
            let g = Geometry {
                n,
                cin,
                size: [h, w],
                cout,
                kernel: [3, 3],
                stride: [1, 1],
                pad: [1, 1],
                out: [h, w],
                dilation: [1, 1],
                groups: 1,
            };
            assert!(applies(&g));
            let ([y2, dx2, dw2], [y5, dx5, dw5]) =
                (passes(&g, Tiles::Avx2), passes(&g, Tiles::Avx512));
            assert_eq!((y2, dx2), (y5, dx5), "{g:?}");
            if flat::fits(&g) {
                // the flat weight gradient sums in 16 lanes, not 8: other roundings
                for (a, b) in dw2.iter().zip(&dw5) {
                    let err = (a - b).abs();
                    assert!(err.is_finite() && err <= 1e-4, "{g:?}: dw {a} against {b}");
                }
            } else {
                assert_eq!(dw2, dw5, "{g:?}");
            }
        }
    }
}
