//! Direct 3×3 stride-1 convolution with AVX2 and FMA, for the shapes that dominate the
//! ResNets.
//!
//! - The forward is a register-tiled direct convolution over zero-padded planes: a tile of up
//!   to 12 output channels × 8 to 32 pixels of one output row stays in registers while the
//!   input channels and the nine taps go by.
//! - The input gradient is that same forward applied to dy, with the kernel flipped and its
//!   channels transposed.
//! - The weight gradient is a register-tiled correlation of x with dy: 4 output channels × the
//!   3 taps of one kernel row, summed in lanes over the block's pixels, then across lanes.
//!
//! Every loop has a fixed order and blocks are fixed by the shape, so the bits do not depend
//! on the thread count. [`applies`] says which convolutions this runs; im2col + GEMM
//! ([`super::kernels`]) covers the rest.

use super::kernels::Geometry;

/// f32 lanes of one AVX2 vector.
const LANES: usize = 8;

/// Taps of a 3×3 kernel.
const TAPS: usize = 9;

/// Output channels of one weight-gradient tile.
const DW_CHANNELS: usize = 4;

/// Most input × output channels the direct kernels take: up to 64 × 64 they beat im2col +
/// GEMM by 1.2–3× (measured on ResNet-20's and ResNet-18's shapes); at 128 × 128 and above
/// GEMM is as fast, and faster where the image is narrower than one vector (4 × 4).
const MAX_CHANNEL_PAIRS: usize = 64 * 64;

/// Whether the direct kernels run `g`: a 3×3 kernel, stride 1, no dilation, one group,
/// padding of at most 2 on every side, at most [`MAX_CHANNEL_PAIRS`], on a CPU with AVX2 and
/// FMA.
pub(crate) fn applies(g: &Geometry) -> bool {
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
        && has_avx2_fma()
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

/// Output channels and vectors of one row of a forward tile for an output `ow` pixels wide:
/// 6 × 2 vectors where the row has an even number of vectors, else 12 × 1 (12 accumulators
/// either way, which with the loads and the broadcast fit AVX2's 16 registers; 3 × 4 and
/// 4 × 3 measured slower).
fn tile_shape(ow: usize) -> (usize, usize) {
    if ow.div_ceil(LANES).is_multiple_of(2) {
        (6, 2)
    } else {
        (12, 1)
    }
}

/// Weights packed for the forward tiles: blocks of `ob` output channels (the last may be
/// shorter), each [cin][9][block], from `w(o, c, tap)`.
fn pack(cout: usize, cin: usize, ob: usize, w: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let mut packed = Vec::with_capacity(cout * cin * TAPS);
    for o0 in (0..cout).step_by(ob) {
        let len = ob.min(cout - o0);
        for c in 0..cin {
            for tap in 0..TAPS {
                packed.extend((o0..o0 + len).map(|o| w(o, c, tap)));
            }
        }
    }
    packed
}

/// A forward convolution's weights [cout][cin][3][3] packed for an output `ow` wide.
pub(crate) fn pack_forward(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let cin = g.cin;
    pack(g.cout, cin, tile_shape(g.out[1]).0, |o, c, tap| {
        w[(o * cin + c) * TAPS + tap]
    })
}

/// The input gradient's weights: channels transposed and taps flipped, packed for an output
/// as wide as the input.
pub(crate) fn pack_input_grad(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let cin = g.cin;
    pack(cin, g.cout, tile_shape(g.size[1]).0, |c, o, tap| {
        w[(o * cin + c) * TAPS + TAPS - 1 - tap]
    })
}

/// Scratch buffers of one thread.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    dy: Vec<f32>,
}

/// y = conv(x, w) of `images` images ([images][cin][h][w]) into `out`
/// ([images][cout][oh][ow]); `packed` from [`pack_forward`].
pub(crate) fn forward(
    g: &Geometry,
    images: usize,
    x: &[f32],
    packed: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    let src = Padded::for_output(images * g.cin, g.out);
    src.fill(x, g.size, g.pad, &mut scratch.x);
    conv(&scratch.x, src, g.cin, packed, g.cout, g.out, out);
}

/// ∂L/∂x of `images` images from their dy ([images][cout][oh][ow]) into `dx`
/// ([images][cin][h][w]); `packed` from [`pack_input_grad`].
pub(crate) fn input_grad(
    g: &Geometry,
    images: usize,
    dy: &[f32],
    packed: &[f32],
    dx: &mut [f32],
    scratch: &mut Scratch,
) {
    let src = Padded::for_output(images * g.cout, g.size);
    let pad = [2 - g.pad[0], 2 - g.pad[1]];
    src.fill(dy, g.out, pad, &mut scratch.dy);
    conv(&scratch.dy, src, g.cout, packed, g.cin, g.size, dx);
}

/// Adds ∂L/∂w of `images` images (x [images][cin][h][w], dy [images][cout][oh][ow]) to `dw`
/// ([cout][cin][3][3]).
pub(crate) fn weight_grad(
    g: &Geometry,
    images: usize,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    scratch: &mut Scratch,
) {
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
    assert!(dw.len() >= g.cout * g.cin * TAPS);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` checked the CPU has AVX2 and FMA before any caller got here.
    unsafe {
        avx2::weight_grad(&scratch.x, xs, &scratch.dy, dys, images, g.cin, g.cout, dw);
    }
}

/// out[t][o][oy][ox] = Σ_c Σ_tap w · src[t][c][oy + ki][ox + kj] for the images of `src`.
fn conv(
    src: &[f32],
    padded: Padded,
    cin: usize,
    packed: &[f32],
    cout: usize,
    out_size: [usize; 2],
    out: &mut [f32],
) {
    let images = padded.planes / cin.max(1);
    assert!(src.len() >= padded.planes * padded.plane());
    assert!(packed.len() >= cout * cin * TAPS);
    assert!(out.len() >= images * cout * out_size[0] * out_size[1]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` checked the CPU has AVX2 and FMA before any caller got here, and
    // the asserts above bound every access (see `avx2::conv`).
    unsafe {
        avx2::conv(src, padded, cin, packed, cout, out_size, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2 + FMA tiles.

    use std::arch::x86_64::{
        __m256, _mm_add_ps, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps, _mm256_broadcast_ss,
        _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use super::{DW_CHANNELS, LANES, Padded, TAPS, tile_shape};

    /// Accumulators of one forward tile: `OB` output channels × `CB` vectors of one row.
    type Acc<const OB: usize, const CB: usize> = [[__m256; CB]; OB];

    /// One forward tile: Σ over `cin` channels and the nine taps of w · x, where `x` points
    /// at the tile's first input pixel (channel 0, top-left tap) and `w` at its packed
    /// weights [cin][9][OB].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const OB: usize, const CB: usize>(
        x: *const f32,
        plane: usize,
        cols: usize,
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
                            *v = _mm256_loadu_ps(row.add(j * LANES + kj));
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

    /// Runs one forward tile and writes its valid part: `len` channels from `o0`, `valid`
    /// pixels from column `ox` of row `oy` of image `t`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_tile<const OB: usize, const CB: usize>(
        src: &[f32],
        padded: Padded,
        cin: usize,
        w: &[f32],
        out: &mut [f32],
        [t, oy, ox, o0, cout]: [usize; 5],
        [oh, ow]: [usize; 2],
    ) {
        let plane = padded.plane();
        let x = &src[t * cin * plane + oy * padded.cols + ox..];
        let w = &w[o0 * cin * TAPS..];
        // SAFETY: the tile reads rows oy..oy + 3 < rows and columns ox..ox + 8·CB + 2 ≤ cols
        // of each of the image's cin planes, and cin·9·OB packed weights from o0·cin·9.
        // (`tile_shape` makes CB divide the row's vectors.)
        let acc = unsafe { tile::<OB, CB>(x.as_ptr(), plane, padded.cols, cin, w.as_ptr()) };
        let valid = (ow - ox).min(CB * LANES);
        let mut row = [0.0f32; 2 * LANES];
        for (o, acc) in acc.iter().enumerate() {
            let at = ((t * cout + o0 + o) * oh + oy) * ow + ox;
            let dst = &mut out[at..at + valid];
            // whole vectors go straight to the output, a row's short end through `row`
            let whole = valid == CB * LANES;
            let to = if whole {
                dst.as_mut_ptr()
            } else {
                row.as_mut_ptr()
            };
            for (j, a) in acc.iter().enumerate() {
                // SAFETY: `dst` (when whole) and `row` hold CB ≤ 2 vectors.
                unsafe { _mm256_storeu_ps(to.add(j * LANES), *a) };
            }
            if !whole {
                dst.copy_from_slice(&row[..valid]);
            }
        }
    }

    /// Calls `run_tile::<OB, CB>` for a runtime (OB, CB) from [`tile_shape`] or a shorter
    /// last block of channels.
    macro_rules! dispatch {
        ($ob:expr, $cb:expr, $args:tt; $(($o:literal, $c:literal)),*) => {
            match ($ob, $cb) {
                $(($o, $c) => run_tile::<$o, $c> $args,)*
                _ => unreachable!("tile shapes come from tile_shape"),
            }
        };
    }

    /// See [`super::conv`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv(
        src: &[f32],
        padded: Padded,
        cin: usize,
        packed: &[f32],
        cout: usize,
        [oh, ow]: [usize; 2],
        out: &mut [f32],
    ) {
        let images = padded.planes / cin.max(1);
        let (ob, cb) = tile_shape(ow);
        // one block of channels at a time, so that its weights stay in cache
        for o0 in (0..cout).step_by(ob) {
            let len = ob.min(cout - o0);
            for t in 0..images {
                for oy in 0..oh {
                    for ox in (0..ow).step_by(cb * LANES) {
                        let args = [t, oy, ox, o0, cout];
                        // SAFETY: (len, cb) is one of the listed shapes, and the CPU has
                        // AVX2 and FMA (this function's own requirement).
                        unsafe {
                            dispatch!(len, cb, (src, padded, cin, packed, out, args, [oh, ow]);
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
    #[target_feature(enable = "avx2,fma")]
    fn lane_sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ps(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Lanes of Σ dy[o0 + o] · x[ki + oy][kj + ox] for the `OB` output channels from `o0`,
    /// one input channel `c` and one kernel row `ki`, over every image, row and vector.
    #[target_feature(enable = "avx2,fma")]
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

    /// See [`super::weight_grad`]: `x` padded as `xs`, `dy` as `dys`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn weight_grad(
        x: &[f32],
        xs: Padded,
        dy: &[f32],
        dys: Padded,
        images: usize,
        cin: usize,
        cout: usize,
        dw: &mut [f32],
    ) {
        assert!(x.len() >= xs.planes * xs.plane() && xs.planes >= images * cin);
        assert!(dy.len() >= dys.planes * dys.plane() && dys.planes >= images * cout);
        assert!(xs.rows >= dys.rows + 2 && xs.cols >= dys.cols + 2);
        let dims = [images, cin, cout];
        for o0 in (0..cout).step_by(DW_CHANNELS) {
            let len = DW_CHANNELS.min(cout - o0);
            for c in 0..cin {
                for ki in 0..3 {
                    let at = [o0, c, ki];
                    let mut sums = [[0.0f32; 3]; DW_CHANNELS];
                    // SAFETY: the asserts above keep every tile inside x and dy.
                    unsafe {
                        macro_rules! sum {
                            ($n:literal) => {{
                                let acc = dw_tile::<$n>(x, xs, dy, dys, dims, at);
                                for (s, a) in sums.iter_mut().zip(acc) {
                                    *s = [lane_sum(a[0]), lane_sum(a[1]), lane_sum(a[2])];
                                }
                            }};
                        }
                        match len {
                            1 => sum!(1),
                            2 => sum!(2),
                            3 => sum!(3),
                            _ => sum!(4),
                        }
                    }
                    for (o, s) in sums.iter().take(len).enumerate() {
                        let at = ((o0 + o) * cin + c) * TAPS + ki * 3;
                        for (d, v) in dw[at..at + 3].iter_mut().zip(s) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}
