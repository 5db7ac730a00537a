//! Augmentation of 8-bit CHW images, deterministic in (seed, epoch, index).

use serde::{Deserialize, Serialize};

use crate::Rng;

/// The augmentation applied to a training image (evaluation uses [`Augment::None`] or
/// [`Augment::CenterCrop`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Augment {
    /// The image as read.
    None,
    /// Random horizontal flip (p = 1/2).
    Flip,
    /// Zero-pad by `pad`, random crop back to the original size, then a random flip
    /// (the CIFAR recipe with pad 4).
    PadCropFlip {
        /// Padding on every side.
        pad: usize,
    },
    /// Random `crop`×`crop` window of the (already resized) image, then a random flip
    /// (resize 256 → random crop 224, Davis & Frank §4.2).
    CropFlip {
        /// Side of the crop.
        crop: usize,
    },
    /// The central `crop`×`crop` window, for evaluating [`Augment::CropFlip`] models.
    CenterCrop {
        /// Side of the crop.
        crop: usize,
    },
}

impl Augment {
    /// The output shape for an input of `shape` (channels, height, width).
    pub fn output_shape(&self, shape: [usize; 3]) -> [usize; 3] {
        match *self {
            Augment::CropFlip { crop } | Augment::CenterCrop { crop } => [shape[0], crop, crop],
            _ => shape,
        }
    }

    /// Writes the augmented `src` (shape `shape`) into `out`, which must hold
    /// [`Augment::output_shape`] values.
    pub fn apply(
        &self,
        src: &[u8],
        shape: [usize; 3],
        seed: u64,
        epoch: u64,
        index: u64,
        out: &mut [u8],
    ) {
        let [c, h, w] = shape;
        let [_, oh, ow] = self.output_shape(shape);
        let mut rng = Rng::new(seed, 0xa06, epoch, index);
        // (row offset, column offset) of the window in padded coordinates, pad, flip
        let (dy, dx, pad, flip) = match *self {
            Augment::None => (0, 0, 0, false),
            Augment::Flip => (0, 0, 0, rng.below(2) == 1),
            Augment::PadCropFlip { pad } => {
                let dy = rng.below(2 * pad + 1);
                let dx = rng.below(2 * pad + 1);
                (dy, dx, pad, rng.below(2) == 1)
            }
            Augment::CropFlip { crop } => {
                let dy = rng.below(h.saturating_sub(crop) + 1);
                let dx = rng.below(w.saturating_sub(crop) + 1);
                (dy, dx, 0, rng.below(2) == 1)
            }
            Augment::CenterCrop { crop } => (
                h.saturating_sub(crop) / 2,
                w.saturating_sub(crop) / 2,
                0,
                false,
            ),
        };
        for ch in 0..c {
            let plane = &src[ch * h * w..(ch + 1) * h * w];
            let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
            for y in 0..oh {
                let sy = (y + dy) as isize - pad as isize;
                let row = &mut dst[y * ow..(y + 1) * ow];
                if sy < 0 || sy >= h as isize {
                    row.fill(0);
                    continue;
                }
                let src_row = &plane[sy as usize * w..(sy as usize + 1) * w];
                for (x, v) in row.iter_mut().enumerate() {
                    let xx = if flip { ow - 1 - x } else { x };
                    let sx = (xx + dx) as isize - pad as isize;
                    *v = if sx < 0 || sx >= w as isize {
                        0
                    } else {
                        src_row[sx as usize]
                    };
                }
            }
        }
    }
}
