//! The convolution passes over the fixed blocks of images of a [`Geometry`]: Winograd where
//! [`winograd::chosen`], the direct kernels where [`direct::applies`] (the input gradient where
//! [`direct::applies_input_grad`]), im2col + GEMM ([`gemm`]) everywhere else. Blocks and segments depend only on the shape,
//! each block runs on one thread, and the per-segment weight gradients are summed in segment
//! order, so results do not depend on the number of threads.
//! Where the direct kernels run fewer blocks than there are threads (small batches), each
//! block's channels are cut into parts that run at once; every value is still computed by one
//! task in one order, so the bits do not change.

use std::ops::Range;

use rayon::prelude::*;

use super::direct::TAPS;
use super::geometry::Geometry;
#[cfg(target_arch = "x86_64")]
use super::winograd;
use super::{direct, gemm};

/// `buf` cut into consecutive slices of `lens`.
pub(super) fn split<T>(buf: &mut [T], lens: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut rest = buf;
    lens.map(|len| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        head
    })
    .collect()
}

/// Channels per part of a direct kernel's channel split.
const MIN_PART_CHANNELS: usize = 4;

/// How many channel parts `tasks` tasks (blocks or segments) need so that every thread of the
/// current pool has work, each part at least [`MIN_PART_CHANNELS`] of `channels` wide.
fn part_count(channels: usize, tasks: usize) -> usize {
    let wanted = rayon::current_num_threads().div_ceil(tasks.max(1));
    wanted.min(channels / MIN_PART_CHANNELS).max(1)
}

/// `channels` cut into `parts` even consecutive ranges.
fn even_parts(channels: usize, parts: usize) -> Vec<Range<usize>> {
    (0..parts)
        .map(|i| channels * i / parts..channels * (i + 1) / parts)
        .collect()
}

/// y = conv(x, w) without bias.
pub(crate) fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(plan) = winograd::chosen(g) {
        return winograd::forward(&plan, x, w);
    }
    forward_without_winograd(g, x, w)
}

/// [`forward`] on the direct kernels or im2col + GEMM (never Winograd).
pub(crate) fn forward_without_winograd(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let image = g.cout * g.out_pixels();
    let blocks = g.blocks();
    if direct::applies(g) {
        let mut y = Vec::new();
        let parts = even_parts(g.cout, part_count(g.cout, blocks.len()));
        let packed = direct::pack_forward(g, w, &parts, direct::Tiles::best());
        let in_image = g.cin * g.in_pixels();
        let tasks: Vec<_> = blocks
            .iter()
            .flat_map(|b| parts.iter().map(move |p| (b.clone(), p.clone())))
            .collect();
        let out = direct::SharedOut::spare(&mut y, g.output_len());
        tasks.into_par_iter().for_each(|(block, channels)| {
            let xb = &x[block.start * in_image..][..block.len() * in_image];
            let out = out.sub(block.start * image, block.len() * image);
            direct::Scratch::with(|scratch| {
                // SAFETY: the planes of the block's images and the part's channels are this
                // task's alone (blocks and parts are disjoint), and `y` is not touched until
                // every task has ended.
                unsafe { direct::forward(g, block.len(), xb, &packed, out, channels, scratch) }
            });
        });
        // SAFETY: the tasks wrote every element: each (image, channel) plane of the output is
        // one block's and one part's, and the tiles cover every pixel of a plane.
        unsafe { y.set_len(g.output_len()) };
        return y;
    }
    let mut y = vec![0.0f32; g.output_len()];
    let outs = split(&mut y, blocks.iter().map(|b| b.len() * image));
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
    #[cfg(target_arch = "x86_64")]
    if let Some(plan) = winograd::chosen(g) {
        let dx = want_x.then(|| winograd::input_grad(&plan, dy, w));
        let dw = want_w.then(|| winograd::weight_grad(&plan, x, dy));
        return (dx, dw);
    }
    backward_without_winograd(g, x, w, dy, want_x, want_w)
}

/// [`backward`] on the direct kernels or im2col + GEMM (never Winograd).
pub(crate) fn backward_without_winograd(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let segments = g.segments();
    if !direct::applies(g) {
        return gemm_backward(g, x, w, dy, [want_x, want_w], &segments);
    }
    if !want_x || direct::applies_input_grad(g) {
        return direct_backward(g, x, w, dy, want_x, want_w, &segments);
    }
    // (stride-2 outputs whose rows the direct input gradient cannot write) the weight
    // gradient on the direct kernels, the input gradient on GEMM
    let (_, dw) = direct_backward(g, x, w, dy, false, want_w, &segments);
    let (dx, _) = gemm_backward(g, x, w, dy, [true, false], &segments);
    (dx, dw)
}

/// [`backward`] on im2col + GEMM: one task per segment, each with its slice of dx and its own
/// weight gradient, summed in segment order.
fn gemm_backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [want_x, want_w]: [bool; 2],
    segments: &[Vec<Range<usize>>],
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let in_image = g.cin * g.in_pixels();
    let mut dx = want_x.then(|| vec![0.0f32; g.input_len()]);
    // each segment's slice of dx (empty when dx is not wanted)
    let parts = split(
        dx.as_deref_mut().unwrap_or(&mut []),
        segments.iter().map(|seg| {
            let images = seg.iter().map(ExactSizeIterator::len).sum::<usize>();
            if want_x { images * in_image } else { 0 }
        }),
    );
    let partials: Vec<Vec<f32>> = segments
        .par_iter()
        .zip(parts)
        .map(|(seg, dx_seg)| {
            let mut dw = vec![0.0f32; if want_w { g.weight_len() } else { 0 }];
            let mut scratch = gemm::BackwardScratch::default();
            let first = seg.first().map_or(0, |b| b.start);
            for block in seg {
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
                    &mut scratch,
                );
            }
            dw
        })
        .collect();
    let dw = want_w.then(|| sum_in_order(partials.iter().map(|p| &p[..]), g.weight_len()));
    (dx, dw)
}

/// The partial results of tasks listed segment by segment, `groups` tasks a segment, each
/// group one piece of the result: each group's partials summed over the segments in order
/// ([`sum_in_order`]), then the groups' sums one after the other. `len(g)` is group g's length.
pub(super) fn sum_groups_in_order(
    partials: &[Vec<f32>],
    groups: usize,
    len: impl Fn(usize) -> usize,
) -> Vec<f32> {
    let mut sum = Vec::with_capacity((0..groups).map(&len).sum());
    for g in 0..groups {
        let per_segment = partials.iter().skip(g).step_by(groups).map(|p| &p[..]);
        sum.extend(sum_in_order(per_segment, len(g)));
    }
    sum
}

/// The element-wise sum of `parts` in their order (the first taken as it is), or zeros.
fn sum_in_order<'a>(mut parts: impl Iterator<Item = &'a [f32]>, len: usize) -> Vec<f32> {
    let mut sum = parts.next().map_or_else(|| vec![0.0; len], <[f32]>::to_vec);
    for part in parts {
        for (s, v) in sum.iter_mut().zip(part) {
            *s += v;
        }
    }
    sum
}

/// [`backward`] on the direct kernels: one task per segment and channel part, each with the
/// weight gradient of its output channels and the input gradient of its input channels.
fn direct_backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_x: bool,
    want_w: bool,
    segments: &[Vec<Range<usize>>],
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (in_image, out_image) = (g.cin * g.in_pixels(), g.cout * g.out_pixels());
    let mut dx = Vec::new();
    let count = part_count(g.cin.min(g.cout), segments.len());
    let (outs, ins) = (even_parts(g.cout, count), even_parts(g.cin, count));
    let packed = want_x.then(|| direct::pack_input_grad(g, w, &ins, direct::Tiles::best()));
    let dx_out = want_x.then(|| direct::SharedOut::spare(&mut dx, g.input_len()));
    let tasks: Vec<(&Vec<Range<usize>>, usize)> = segments
        .iter()
        .flat_map(|seg| (0..count).map(move |i| (seg, i)))
        .collect();
    let row = g.cin * TAPS;
    // per (segment, part): the weight gradient of the part's output channels
    let partials: Vec<Vec<f32>> = tasks
        .into_par_iter()
        .map(|(seg, i)| {
            direct::Scratch::with(|scratch| {
                let mut dw = vec![0.0f32; if want_w { outs[i].len() * row } else { 0 }];
                // the weight gradient sums over the segment's images in one call
                let images = seg.first().map_or(0, |b| b.start)..seg.last().map_or(0, |b| b.end);
                if want_w {
                    let n = images.len();
                    let xs = &x[images.start * in_image..][..n * in_image];
                    let dys = &dy[images.start * out_image..][..n * out_image];
                    direct::weight_grad(g, n, xs, dys, &mut dw, outs[i].clone(), scratch);
                }
                for block in seg {
                    let n = block.len();
                    let dyb = &dy[block.start * out_image..][..n * out_image];
                    if let (Some(packed), Some(dx)) = (&packed, dx_out) {
                        let dx = dx.sub(block.start * in_image, n * in_image);
                        // SAFETY: the planes of the block's images and the part's input channels
                        // are this task's alone, and `dx` is not touched until every task has ended.
                        unsafe {
                            direct::input_grad(g, n, dyb, packed, dx, ins[i].clone(), scratch)
                        };
                    }
                }
                dw
            })
        })
        .collect();
    // each part's rows, summed over the segments in order
    let dw = want_w.then(|| sum_groups_in_order(&partials, count, |i| outs[i].len() * row));
    let dx = want_x.then(|| {
        // SAFETY: the tasks wrote every element: each (image, channel) plane of dx is one
        // segment's and one part's, and the tiles cover every pixel of a plane.
        unsafe { dx.set_len(g.input_len()) };
        dx
    });
    (dx, dw)
}
