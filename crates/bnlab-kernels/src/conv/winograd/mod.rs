//! Winograd F(2×2, 3×3) for 3×3 convolutions at stride 1 with padding 1 (Lavin & Gray, 2016):
//! each 2 × 2 output tile is read as a 4 × 4 input tile, both are taken to a 16-point
//! transformed space where the convolution is 16 independent matrix products over the
//! channels, with 2.25× fewer multiplies than the direct 3 × 3 sum. The forward and the input
//! gradient (a forward with the flipped, transposed filter) share one pass.
//!
//! Tiles are taken in fixed blocks of whole images ([`Plan`]), each block on one thread with
//! single-threaded products, so results depend only on the shape.

mod filters;
mod forward;
mod groups;
mod tiles;
mod weight_grad;

use std::ops::Range;

use super::geometry::Geometry;

pub(crate) use forward::{forward, input_grad};
pub(crate) use weight_grad::weight_grad;

/// Points of a transformed tile.
pub(super) const POINTS: usize = 16;

/// Floats added after each point's matrix in a block's buffers: a point's matrix is often a
/// multiple of 4 KiB, and the transforms' 16 streams (one per point) would then all fall on
/// the same L1 sets.
const SKEW: usize = 64;

/// Floats from one point's matrix to the next in a block's buffers: `columns` of `stride`
/// tiles, then [`SKEW`].
pub(super) fn point_len(stride: usize, columns: usize) -> usize {
    stride * columns + SKEW
}

/// Whether `len` floats hold the points of the transformed rows `rows` (of 4), `point` floats
/// apart, each `width` floats long: what a transform writing them into a buffer asserts.
pub(super) fn holds_points(
    len: usize,
    rows: &std::ops::Range<usize>,
    point: usize,
    width: usize,
) -> bool {
    rows.end <= 4 && point >= width && len >= (4 * rows.len()).saturating_sub(1) * point + width
}

/// One block's transformed tiles: inputs and products (the forward), or inputs and output
/// gradients (the weight gradient).
#[derive(Default)]
pub(super) struct Buffers {
    /// Transformed input tiles.
    pub v: Vec<f32>,
    /// Products, or transformed output-gradient tiles.
    pub m: Vec<f32>,
}

thread_local! {
    /// This thread's block buffers, kept from call to call (they are megabytes).
    pub(super) static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

/// Lanes of an AVX-512 vector of f32.
pub(super) const LANES: usize = 16;

/// The mask of the first `n` lanes (all of them from 16 on).
#[inline(always)]
pub(super) fn first(n: usize) -> u16 {
    if n >= LANES {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}

/// A 3×3 stride-1 padding-1 convolution of `cin` planes of `size` into `cout` planes of the
/// same size, cut into blocks of images.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Images.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Plane height and width (input and output).
    pub size: [usize; 2],
}

impl Plan {
    /// Tile rows and columns of a plane.
    pub(super) fn tile_grid(&self) -> [usize; 2] {
        [self.size[0].div_ceil(2), self.size[1].div_ceil(2)]
    }

    /// Tiles of one image plane.
    pub(super) fn tiles_per_image(&self) -> usize {
        let [th, tw] = self.tile_grid();
        th * tw
    }

    /// Image ranges of blocks of whole images, at least `target` tiles each where the batch
    /// has them: the count (up to twice that) whose tiles pad the least to a multiple of
    /// `strip`.
    pub(super) fn blocks_of(&self, target: usize, strip: usize) -> Vec<Range<usize>> {
        let tiles = self.tiles_per_image().max(1);
        let least = target.div_ceil(tiles).clamp(1, self.n.max(1));
        let padding = |per: usize| (per * tiles).next_multiple_of(strip) - per * tiles;
        // the fraction of padding, compared as padding(a) / a < padding(b) / b
        let per = (least..=(2 * least).min(self.n.max(1)))
            .min_by(|&a, &b| (padding(a) * b).cmp(&(padding(b) * a)))
            .unwrap_or(least);
        (0..self.n.div_ceil(per))
            .map(|i| i * per..((i + 1) * per).min(self.n))
            .collect()
    }

    /// Pixels of one plane.
    pub(super) fn pixels(&self) -> usize {
        self.size[0] * self.size[1]
    }
}

/// Multiply-adds of the direct convolution (n · pixels · cin · cout, without the 9 taps) from
/// which Winograd runs: below it the transforms' fixed costs and the few blocks (one thread
/// each) lost to the direct kernels.
const LEAST_WORK: usize = 1 << 24;

/// Tiles of the batch from which Winograd runs: each transformed filter (16 floats per channel
/// pair, made on every call) serves that many tiles, and fewer left 512 → 512 at batch 8 (32
/// tiles of 4 × 4 planes) at 0.4× the direct kernels' speed.
const LEAST_TILES: usize = 512;

/// The plan of `g` where Winograd runs it: where it can ([`plan_of`]) and where it measured
/// at least as fast as the direct kernels in all three passes at batches 2, 8 and 128
/// (BENCHMARKS.md, "Winograd F(2,3)"): planes of 4 × 4 and more, at least 16 channels each
/// side, [`LEAST_WORK`] and [`LEAST_TILES`]. Chosen by the shape alone, so the bits of a
/// result do not depend on timings.
pub(crate) fn chosen(g: &Geometry) -> Option<Plan> {
    let [h, w] = g.size;
    let work = [g.n, h, w, g.cin, g.cout]
        .iter()
        .fold(1usize, |a, &b| a.saturating_mul(b));
    let fits = h >= 4 && w >= 4 && g.cin.min(g.cout) >= 16 && work >= LEAST_WORK;
    plan_of(g).filter(|p| fits && p.n * p.tiles_per_image() >= LEAST_TILES)
}

/// The plan of `g` when Winograd can run it: 3×3, stride 1, padding 1, no dilation, one group,
/// on a CPU with AVX-512F, planes whose 16 channels' offsets fit the gathers' i32 indices.
pub(crate) fn plan_of(g: &Geometry) -> Option<Plan> {
    (g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.pad == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.out == g.size
        && g.size[0].saturating_mul(g.size[1]) < i32::MAX as usize / LANES
        && std::arch::is_x86_feature_detected!("avx512f"))
    .then_some(Plan {
        n: g.n,
        cin: g.cin,
        cout: g.cout,
        size: g.size,
    })
}
