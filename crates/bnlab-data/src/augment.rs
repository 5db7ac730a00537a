//! Augmentation of 8-bit CHW images, deterministic in (seed, epoch, index).

use serde::{Deserialize, Serialize};

use crate::Rng;
use crate::rng::stream;

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
        let mut rng = Rng::new(seed, stream::AUGMENT, epoch, index);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(c: usize, h: usize, w: usize) -> Vec<u8> {
        (0..c * h * w).map(|i| (i % 251) as u8 + 1).collect()
    }

    /// The window of `src` at padded offset (dy, dx), optionally mirrored: plain loops.
    fn window(
        src: &[u8],
        [c, h, w]: [usize; 3],
        pad: usize,
        (dy, dx): (usize, usize),
        (oh, ow): (usize, usize),
        flip: bool,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for ch in 0..c {
            for y in 0..oh {
                for x in 0..ow {
                    let x = if flip { ow - 1 - x } else { x };
                    let (sy, sx) = ((y + dy) as i64 - pad as i64, (x + dx) as i64 - pad as i64);
                    let inside = (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx);
                    out.push(if inside {
                        src[(ch * h + sy as usize) * w + sx as usize]
                    } else {
                        0
                    });
                }
            }
        }
        out
    }

    fn run(a: Augment, src: &[u8], shape: [usize; 3], index: u64) -> Vec<u8> {
        let [c, h, w] = a.output_shape(shape);
        let mut out = vec![0; c * h * w];
        a.apply(src, shape, 5, 1, index, &mut out);
        out
    }

    #[test]
    fn flip_really_mirrors_and_happens_about_half_the_time() {
        let shape = [3, 4, 5];
        let src = image(3, 4, 5);
        let mirrored = window(&src, shape, 0, (0, 0), (4, 5), true);
        let mut flips = 0;
        for i in 0..400 {
            let out = run(Augment::Flip, &src, shape, i);
            if out == mirrored {
                flips += 1;
            } else {
                assert_eq!(out, src);
            }
        }
        assert!((150..250).contains(&flips), "{flips} flips of 400");
    }

    #[test]
    fn pad_crop_is_a_shifted_window_and_deterministic() {
        let shape = [2, 6, 6];
        let src = image(2, 6, 6);
        let mut offsets = std::collections::HashSet::new();
        for i in 0..200 {
            let out = run(Augment::PadCropFlip { pad: 2 }, &src, shape, i);
            assert_eq!(out, run(Augment::PadCropFlip { pad: 2 }, &src, shape, i));
            let found = (0..5)
                .flat_map(|dy| (0..5).flat_map(move |dx| [false, true].map(move |f| (dy, dx, f))))
                .find(|&(dy, dx, f)| window(&src, shape, 2, (dy, dx), (6, 6), f) == out);
            offsets.insert(found.expect("output is a padded window"));
        }
        assert!(offsets.len() > 30, "offsets vary: {}", offsets.len());
    }

    #[test]
    fn crop_and_center_crop() {
        let shape = [3, 10, 12];
        let src = image(3, 10, 12);
        assert_eq!(
            run(Augment::CenterCrop { crop: 6 }, &src, shape, 0),
            window(&src, shape, 0, (2, 3), (6, 6), false)
        );
        let out = run(Augment::CropFlip { crop: 6 }, &src, shape, 9);
        let ok = (0..5).any(|dy| {
            (0..7).any(|dx| {
                [false, true]
                    .iter()
                    .any(|&f| window(&src, shape, 0, (dy, dx), (6, 6), f) == out)
            })
        });
        assert!(ok);
        assert_eq!(run(Augment::None, &src, shape, 3), src);
    }
}
