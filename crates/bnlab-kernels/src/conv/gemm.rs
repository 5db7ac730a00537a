//! im2col + GEMM (the `gemm` crate) for one block of images: the forward, the input gradient
//! and the weight gradient of every convolution the direct kernels do not take. Each GEMM runs
//! on one thread; [`super::passes`] runs the blocks in parallel.

use std::ops::Range;

use super::geometry::Geometry;

impl Geometry {
    /// Output columns `ox` whose input column `ox·stride + offset` lies inside a row of `len`
    /// pixels.
    fn valid(ox_len: usize, stride: usize, offset: isize, len: usize) -> Range<usize> {
        let s = stride as isize;
        let lo = if offset < 0 { (-offset + s - 1) / s } else { 0 };
        let last = len as isize - 1 - offset;
        let hi = if last < 0 { 0 } else { last / s + 1 };
        let (lo, hi) = (
            lo.min(ox_len as isize) as usize,
            hi.min(ox_len as isize) as usize,
        );
        lo..hi.max(lo)
    }

    /// Calls `f(row, channel, oy, iy, span)` for every im2col row of one group and every
    /// output row `oy`; `iy` is the input row it reads, or `None` where that is padding.
    fn for_each_span(&self, mut f: impl FnMut(usize, usize, usize, Option<usize>, Span)) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        let [ph, pw] = self.pad;
        let [h, w] = self.size;
        let [oh, ow] = self.out;
        for c in 0..self.cg() {
            for ki in 0..kh {
                for kj in 0..kw {
                    let row = (c * kh + ki) * kw + kj;
                    let x_off = (kj * dw) as isize - pw as isize;
                    let cols = Self::valid(ow, sw, x_off, w);
                    let ix0 = if cols.is_empty() {
                        0
                    } else {
                        (cols.start as isize * sw as isize + x_off) as usize
                    };
                    for oy in 0..oh {
                        let iy = (oy * sh + ki * dh) as isize - ph as isize;
                        let iy = (0..h as isize).contains(&iy).then_some(iy as usize);
                        f(
                            row,
                            c,
                            oy,
                            iy,
                            Span {
                                cols: cols.clone(),
                                ix0,
                                stride: sw,
                            },
                        );
                    }
                }
            }
        }
    }
}

/// The output columns of one im2col row segment that read the image, and where they read.
struct Span {
    /// Output columns inside the image.
    cols: Range<usize>,
    /// Input column of `cols.start`.
    ix0: usize,
    /// Input columns per output column.
    stride: usize,
}

/// Writes one image's group (`x` = its `cg` channels) into columns `at..at + P` of `col`,
/// a [rows, ld] matrix.
fn im2col(g: &Geometry, x: &[f32], col: &mut [f32], ld: usize, at: usize) {
    let (ow, hw, w) = (g.out[1], g.in_pixels(), g.size[1]);
    g.for_each_span(|row, c, oy, iy, span| {
        let dst = &mut col[row * ld + at + oy * ow..][..ow];
        let Some(iy) = iy else {
            dst.fill(0.0);
            return;
        };
        let src = &x[c * hw + iy * w..][..w];
        dst[..span.cols.start].fill(0.0);
        dst[span.cols.end..].fill(0.0);
        let out = &mut dst[span.cols.clone()];
        if span.stride == 1 {
            out.copy_from_slice(&src[span.ix0..span.ix0 + out.len()]);
        } else {
            for (k, v) in out.iter_mut().enumerate() {
                *v = src[span.ix0 + k * span.stride];
            }
        }
    });
}

/// The adjoint of [`im2col`]: adds columns `at..at + P` of `col` into one image's group.
fn col2im(g: &Geometry, col: &[f32], ld: usize, at: usize, x: &mut [f32]) {
    let (ow, hw, w) = (g.out[1], g.in_pixels(), g.size[1]);
    g.for_each_span(|row, c, oy, iy, span| {
        let Some(iy) = iy else { return };
        let src = &col[row * ld + at + oy * ow..][..ow][span.cols.clone()];
        let dst = &mut x[c * hw + iy * w..][..w];
        if span.stride == 1 {
            for (d, s) in dst[span.ix0..span.ix0 + src.len()].iter_mut().zip(src) {
                *d += s;
            }
        } else {
            for (k, s) in src.iter().enumerate() {
                dst[span.ix0 + k * span.stride] += s;
            }
        }
    });
}

/// A row-major or transposed view of a matrix for [`matmul`]: (data, column stride, row
/// stride).
type View<'a> = (&'a [f32], isize, isize);

/// dst[m, n] (row stride `ld`) = (dst if `accumulate`) + lhs[m, k] · rhs[k, n], on this thread.
#[allow(clippy::too_many_arguments)]
fn matmul(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
    lhs: View<'_>,
    rhs: View<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * ld..r * ld + n].fill(0.0);
            }
        }
        return;
    }
    let extent = |(_, cs, rs): View<'_>, rows: usize, cols: usize| {
        (rows as isize - 1) * rs + (cols as isize - 1) * cs + 1
    };
    assert!(dst.len() as isize >= ((m - 1) * ld + n) as isize);
    assert!(lhs.0.len() as isize >= extent(lhs, m, k));
    assert!(rhs.0.len() as isize >= extent(rhs, k, n));
    if thin(m, k, lhs, rhs, dst, n, ld, accumulate) {
        return;
    }
    // SAFETY: the asserts above keep every element gemm touches inside the three slices, and
    // `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.1,
            lhs.2,
            rhs.0.as_ptr(),
            rhs.1,
            rhs.2,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The products of depthwise convolutions (one output channel per group, one input channel
/// per group) as plain loops, where GEMM's packing would cost more than the arithmetic:
/// a one-row product over row-major `rhs` (the forward), one-row products over transposed
/// `rhs` (the weight gradient) and a reduction of length 1 (the input gradient). Returns
/// whether it handled the product.
#[allow(clippy::too_many_arguments)]
fn thin(
    m: usize,
    k: usize,
    (a, a_cs, a_rs): View<'_>,
    (b, b_cs, b_rs): View<'_>,
    dst: &mut [f32],
    n: usize,
    ld: usize,
    accumulate: bool,
) -> bool {
    // element (i, j) of a view lies at i·rs + j·cs; the strides used below are non-negative
    let at =
        |i: usize, j: usize, rs: isize, cs: isize| (i as isize * rs + j as isize * cs) as usize;
    if m == 1 && k <= 64 && b_cs == 1 {
        // dst[j] (+)= Σ_r a[r]·b[r, j]
        let out = &mut dst[..n];
        if !accumulate {
            out.fill(0.0);
        }
        for r in 0..k {
            let (w, row) = (a[at(0, r, a_rs, a_cs)], &b[at(r, 0, b_rs, 1)..][..n]);
            for (o, v) in out.iter_mut().zip(row) {
                *o += w * v;
            }
        }
        return true;
    }
    if m == 1 && b_rs == 1 && a_cs == 1 && n <= 64 {
        // dst[j] (+)= Σ_p a[p]·b[j, p]: dot products with the rows of bᵀ
        let lhs = &a[..k];
        for j in 0..n {
            let row = &b[at(0, j, 1, b_cs)..][..k];
            let dot: f32 = lhs.iter().zip(row).map(|(x, y)| x * y).sum();
            dst[j] = if accumulate { dst[j] + dot } else { dot };
        }
        return true;
    }
    if k == 1 && b_cs == 1 && m <= 64 {
        // dst[i, j] (+)= a[i]·b[j]
        let row = &b[..n];
        for i in 0..m {
            let w = a[at(i, 0, a_rs, a_cs)];
            let out = &mut dst[i * ld..][..n];
            for (o, v) in out.iter_mut().zip(row) {
                *o = if accumulate { *o + w * v } else { w * v };
            }
        }
        return true;
    }
    false
}

/// The im2col matrix [rows, images·P] of group `grp` for the images in `block`, in `buf`;
/// a pointwise convolution of one image reads `x` in place.
fn columns<'a>(
    g: &Geometry,
    x: &'a [f32],
    block: &Range<usize>,
    grp: usize,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    let (p, chw, ghw) = (
        g.out_pixels(),
        g.cin * g.in_pixels(),
        g.cg() * g.in_pixels(),
    );
    let ld = block.len() * p;
    if g.pointwise() && block.len() == 1 {
        return &x[block.start * chw + grp * ghw..][..ghw];
    }
    buf.resize(g.rows() * ld, 0.0);
    for (t, i) in block.clone().enumerate() {
        im2col(g, &x[i * chw + grp * ghw..][..ghw], buf, ld, t * p);
    }
    buf
}

/// Offsets of the `channels` × `images` rows of P pixels in a block's [channels, images·P]
/// matrix and in its images' NCHW data (`image` values apart): (block offset, image offset).
fn block_rows(
    images: usize,
    channels: usize,
    p: usize,
    image: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let ld = images * p;
    (0..images).flat_map(move |t| (0..channels).map(move |o| (o * ld + t * p, t * image + o * p)))
}

/// Reusable buffers of one thread's forward blocks: the im2col matrix and a [og, images·P]
/// product.
pub(crate) type ForwardScratch = (Vec<f32>, Vec<f32>);

/// Reusable buffers of one thread's backward blocks: the im2col matrix, dy as [cout, images·P]
/// and the column gradient.
#[derive(Default)]
pub(crate) struct BackwardScratch {
    buf: Vec<f32>,
    dyb: Vec<f32>,
    dcol: Vec<f32>,
}

/// y of the images in `block` (their slice `out` of the output) without bias.
pub(crate) fn forward_block(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    block: &Range<usize>,
    out: &mut [f32],
    (buf, tmp): &mut ForwardScratch,
) {
    let (p, og, rows) = (g.out_pixels(), g.og(), g.rows());
    let image = g.cout * p;
    let ld = block.len() * p;
    for grp in 0..g.groups {
        let col = columns(g, x, block, grp, buf);
        let wg = &w[grp * og * rows..][..og * rows];
        // one image writes its output in place; several go through [og, images·P]
        let single = block.len() == 1;
        let dst: &mut [f32] = if single {
            &mut out[grp * og * p..][..og * p]
        } else {
            tmp.resize(og * ld, 0.0);
            tmp
        };
        let (lhs, rhs) = ((wg, 1, rows as isize), (col, 1, ld as isize));
        matmul([og, ld, rows], dst, ld, false, lhs, rhs);
        if !single {
            for (at_block, at_image) in block_rows(block.len(), og, p, image) {
                out[at_image + grp * og * p..][..p].copy_from_slice(&tmp[at_block..][..p]);
            }
        }
    }
}

/// Adds the weight gradient of the images in `block` to `dw` (when `dw` is non-empty), and
/// writes their input gradient into `dx_seg`, the slice of dx of the segment that starts at
/// image `first` (when `want_x`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_block(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    block: &Range<usize>,
    first: usize,
    want_x: bool,
    dw: &mut [f32],
    dx_seg: &mut [f32],
    scratch: &mut BackwardScratch,
) {
    let want_w = !dw.is_empty();
    let (p, og, rows, cg) = (g.out_pixels(), g.og(), g.rows(), g.cg());
    let (in_image, out_image) = (g.cin * g.in_pixels(), g.cout * p);
    let BackwardScratch { buf, dyb, dcol } = scratch;
    let ld = block.len() * p;
    // dy of the block as [cout, images·P]
    let dyv: &[f32] = if block.len() == 1 {
        &dy[block.start * out_image..][..out_image]
    } else {
        dyb.resize(g.cout * ld, 0.0);
        let dy_block = &dy[block.start * out_image..];
        for (at_block, at_image) in block_rows(block.len(), g.cout, p, out_image) {
            dyb[at_block..][..p].copy_from_slice(&dy_block[at_image..][..p]);
        }
        dyb
    };
    for grp in 0..g.groups {
        let dyg = &dyv[grp * og * ld..][..og * ld];
        if want_w {
            let col = columns(g, x, block, grp, buf);
            let dst = &mut dw[grp * og * rows..][..og * rows];
            matmul(
                [og, rows, ld],
                dst,
                rows,
                true,
                (dyg, 1, ld as isize),
                (col, ld as isize, 1),
            );
        }
        if !want_x {
            continue;
        }
        let wg = &w[grp * og * rows..][..og * rows];
        let wt = (wg, rows as isize, 1);
        let ghw = cg * g.in_pixels();
        if g.pointwise() && block.len() == 1 {
            let at = (block.start - first) * in_image + grp * ghw;
            let dst = &mut dx_seg[at..][..ghw];
            matmul([rows, p, og], dst, p, false, wt, (dyg, 1, ld as isize));
            continue;
        }
        dcol.resize(rows * ld, 0.0);
        matmul([rows, ld, og], dcol, ld, false, wt, (dyg, 1, ld as isize));
        for (t, i) in block.clone().enumerate() {
            let at = (i - first) * in_image + grp * ghw;
            col2im(g, dcol, ld, t * p, &mut dx_seg[at..][..ghw]);
        }
    }
}
