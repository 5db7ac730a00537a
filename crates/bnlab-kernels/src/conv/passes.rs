//! The convolution passes over the fixed blocks of images of a [`Geometry`]: the direct
//! kernels where [`direct::applies`], im2col + GEMM ([`gemm`]) everywhere else. Blocks and
//! segments depend only on the shape, each block runs on one thread, and the per-segment weight
//! gradients are summed in segment order, so results do not depend on the number of threads.

use rayon::prelude::*;

use super::geometry::Geometry;
use super::{direct, gemm};

/// `buf` cut into consecutive slices of `lens`.
fn split(buf: &mut [f32], lens: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut rest = buf;
    lens.map(|len| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        head
    })
    .collect()
}

/// y = conv(x, w) without bias.
pub(crate) fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let image = g.cout * g.out_pixels();
    let mut y = vec![0.0f32; g.output_len()];
    let blocks = g.blocks();
    let outs = split(&mut y, blocks.iter().map(|b| b.len() * image));
    if direct::applies(g) {
        let packed = direct::pack_forward(g, w);
        let in_image = g.cin * g.in_pixels();
        blocks.par_iter().zip(outs).for_each_init(
            direct::Scratch::default,
            |scratch, (block, out)| {
                let xb = &x[block.start * in_image..][..block.len() * in_image];
                direct::forward(g, block.len(), xb, &packed, out, scratch);
            },
        );
        return y;
    }
    blocks
        .par_iter()
        .zip(outs)
        .for_each_init(gemm::ForwardScratch::default, |scratch, (block, out)| {
            gemm::forward_block(g, x, w, block, out, scratch)
        });
    y
}

/// The gradients of [`forward`]: (∂L/∂x if `want_x`, ∂L/∂w if `want_w`).
pub(crate) fn backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let p = g.out_pixels();
    let (in_image, out_image) = (g.cin * g.in_pixels(), g.cout * p);
    let mut dx = want_x.then(|| vec![0.0f32; g.input_len()]);
    let segments = g.segments();
    // each segment's slice of dx (empty when dx is not wanted)
    let parts = split(
        dx.as_deref_mut().unwrap_or(&mut []),
        segments.iter().map(|seg| {
            let images = seg.iter().map(ExactSizeIterator::len).sum::<usize>();
            if want_x { images * in_image } else { 0 }
        }),
    );
    let direct = direct::applies(g);
    let packed = (direct && want_x).then(|| direct::pack_input_grad(g, w));
    let partials: Vec<Vec<f32>> = segments
        .par_iter()
        .zip(parts)
        .map(|(seg, dx_seg)| {
            let mut dw = vec![0.0f32; if want_w { g.weight_len() } else { 0 }];
            let mut scratch = direct::Scratch::default();
            let mut gemm_scratch = gemm::BackwardScratch::default();
            let first = seg.first().map_or(0, |b| b.start);
            for block in seg {
                if !direct {
                    gemm::backward_block(
                        g,
                        x,
                        w,
                        dy,
                        block,
                        first,
                        want_x,
                        &mut dw,
                        dx_seg,
                        &mut gemm_scratch,
                    );
                    continue;
                }
                let n = block.len();
                let xb = &x[block.start * in_image..][..n * in_image];
                let dyb = &dy[block.start * out_image..][..n * out_image];
                if want_w {
                    direct::weight_grad(g, n, xb, dyb, &mut dw, &mut scratch);
                }
                if let Some(packed) = &packed {
                    let dxb = &mut dx_seg[(block.start - first) * in_image..][..n * in_image];
                    direct::input_grad(g, n, dyb, packed, dxb, &mut scratch);
                }
            }
            dw
        })
        .collect();
    let dw = want_w.then(|| {
        let mut parts = partials.into_iter();
        let mut sum = parts.next().unwrap_or_else(|| vec![0.0; g.weight_len()]);
        for part in parts {
            for (s, v) in sum.iter_mut().zip(part) {
                *s += v;
            }
        }
        sum
    });
    (dx, dw)
}
