//! [`Geometry`]: the shape of one 2-D convolution over an NCHW batch, and the fixed blocks of
//! images that every kernel runs over. Blocks depend only on the shape, never on the thread
//! count, so results do not either.

/// Output columns (images × output pixels) one GEMM aims for: small spatial sizes take
/// several images per block so the GEMM's inner dimension stays long.
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;

const BLOCK_COLUMNS: usize = 256;

/// Most segments the weight gradient is split into (one partial gradient each).
pub(super) const SEGMENTS: usize = 8;

/// Output pixels a segment holds at least (where the batch has them): the direct weight
/// gradient sums a segment's pixels in vector lanes before adding across them, and 16 images
/// of 4 × 4 (one of 8 segments at batch 128) made that last step a third of its time.
const SEGMENT_PIXELS: usize = 1024;

/// The shape of one 2-D convolution over an NCHW batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height and width.
    pub size: [usize; 2],
    /// Output channels.
    pub cout: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Padding before (top, left).
    pub pad: [usize; 2],
    /// Output height and width.
    pub out: [usize; 2],
    /// Dilation (height, width).
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
}

impl Geometry {
    /// Input channels per group.
    pub(crate) fn cg(&self) -> usize {
        self.cin / self.groups
    }

    /// Output channels per group.
    pub(crate) fn og(&self) -> usize {
        self.cout / self.groups
    }

    /// Rows of one group's im2col matrix (the GEMM's reduction length).
    pub(crate) fn rows(&self) -> usize {
        self.cg() * self.kernel[0] * self.kernel[1]
    }

    /// Input pixels per channel.
    pub(crate) fn in_pixels(&self) -> usize {
        self.size[0] * self.size[1]
    }

    /// Output pixels per channel.
    pub(crate) fn out_pixels(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Weight elements: [cout, cg, kh, kw].
    pub fn weight_len(&self) -> usize {
        self.cout * self.rows()
    }

    /// Input elements.
    pub fn input_len(&self) -> usize {
        self.n * self.cin * self.in_pixels()
    }

    /// Output elements.
    pub fn output_len(&self) -> usize {
        self.n * self.cout * self.out_pixels()
    }

    /// A 1×1, stride-1, unpadded convolution reads its input as the im2col matrix.
    pub(crate) fn pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.out == self.size
    }

    /// Images per block.
    fn block(&self) -> usize {
        BLOCK_COLUMNS
            .div_ceil(self.out_pixels().max(1))
            .clamp(1, self.n.max(1))
    }

    /// Image ranges of the blocks.
    pub(crate) fn blocks(&self) -> Vec<std::ops::Range<usize>> {
        let b = self.block();
        (0..self.n.div_ceil(b))
            .map(|i| i * b..((i + 1) * b).min(self.n))
            .collect()
    }

    /// Blocks grouped into at most [`SEGMENTS`] consecutive segments, each of at least
    /// [`SEGMENT_PIXELS`] output pixels where the batch has them.
    pub(crate) fn segments(&self) -> Vec<Vec<std::ops::Range<usize>>> {
        let blocks = self.blocks();
        let most = (self.n * self.out_pixels() / SEGMENT_PIXELS).clamp(1, SEGMENTS);
        let per = blocks.len().div_ceil(most).max(1);
        blocks.chunks(per).map(<[_]>::to_vec).collect()
    }

    /// Output shape [N, C_out, H', W'].
    pub(crate) fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.cout, self.out[0], self.out[1]]
    }

    /// The geometry of `conv` applied to an input of shape `dims`, when the fast kernels can run
    /// it: channels and groups consistent, explicit or no padding, a non-empty output.
    pub(crate) fn of_conv(conv: &Conv2d, dims: [usize; 4]) -> Option<Geometry> {
        let [n, cin, h, w] = dims;
        let [cout, cg, kh, kw] = conv.weight.dims();
        let groups = conv.groups;
        // "same" padding takes Burn's path
        let (top, left, bottom, right) = match conv.padding {
            PaddingConfig2d::Valid => (0, 0, 0, 0),
            PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
            PaddingConfig2d::Same => return None,
        };
        let out = |len: usize, pad: usize, k: usize, s: usize, d: usize| {
            let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
            (len + pad).checked_sub(span).map(|v| v / s + 1)
        };
        let [sh, sw] = conv.stride;
        let [dh, dw] = conv.dilation;
        let consistent = groups > 0
            && sh > 0
            && sw > 0
            && cin == cg * groups
            && cout.is_multiple_of(groups)
            && [kh, kw] == conv.kernel_size;
        if !consistent {
            return None;
        }
        let geometry = Self {
            n,
            cin,
            size: [h, w],
            cout,
            kernel: [kh, kw],
            stride: [sh, sw],
            pad: [top, left],
            out: [
                out(h, top + bottom, kh, sh, dh)?,
                out(w, left + right, kw, sw, dw)?,
            ],
            dilation: [dh, dw],
            groups,
        };
        (geometry.output_len() > 0 && geometry.weight_len() > 0).then_some(geometry)
    }
}
