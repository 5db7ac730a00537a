//! Data sets made of domains (Wu & Johnson §5): a [`Transformed`] source (an inversion or a
//! corruption of every image, a new domain of the same images) and [`Domains`], sources of
//! the same shape and classes one after another, each example carrying its part's domain id.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Corruption, DataError, Source};

/// A pixel transform that makes a new domain of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transform {
    /// 255 − x: dark objects on a light ground.
    Invert,
    /// The channels rotated (R, G, B → G, B, R): a colour change (identity on one channel).
    RotateChannels,
}

/// A source whose every image is transformed: inverted, its channels rotated, and/or
/// corrupted (noise drawn from the image's index, so the set is the same every time).
#[derive(Clone)]
pub struct Transformed {
    inner: Arc<dyn Source>,
    transform: Option<Transform>,
    corruption: Option<Corruption>,
}

impl Transformed {
    /// `inner` with `transform` and then `corruption` applied to every image.
    pub fn new(
        inner: Arc<dyn Source>,
        transform: Option<Transform>,
        corruption: Option<Corruption>,
    ) -> Self {
        Self {
            inner,
            transform,
            corruption,
        }
    }
}

impl Source for Transformed {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn shape(&self) -> [usize; 3] {
        self.inner.shape()
    }

    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn label(&self, i: usize) -> usize {
        self.inner.label(i)
    }

    fn read(&self, i: usize, out: &mut Vec<u8>) -> Result<(), DataError> {
        self.inner.read(i, out)?;
        let [c, h, w] = self.shape();
        match self.transform {
            Some(Transform::Invert) => out.iter_mut().for_each(|v| *v = 255 - *v),
            Some(Transform::RotateChannels) if c > 1 => out.rotate_left(h * w),
            _ => {}
        }
        if let Some(corruption) = &self.corruption {
            // a fixed draw per image: the domain is a data set, not a per-run augmentation
            corruption.apply(out, [c, h, w], DOMAIN_NOISE_SEED, i as u64)?;
        }
        Ok(())
    }
}

/// The noise seed of corrupted domains.
const DOMAIN_NOISE_SEED: u64 = 0x00D0_3A1F;

/// Sources of one shape and class count one after another; the images of part d have domain
/// id d.
#[derive(Clone)]
pub struct Domains {
    parts: Vec<Arc<dyn Source>>,
    /// Index of each part's first image.
    starts: Vec<usize>,
}

impl Domains {
    /// The parts in order; an error when they differ in shape or classes, or there are none.
    pub fn new(parts: Vec<Arc<dyn Source>>) -> Result<Self, DataError> {
        let first = parts
            .first()
            .ok_or_else(|| DataError::Invalid("a data set of domains needs a domain".into()))?;
        let (shape, classes) = (first.shape(), first.classes());
        if let Some((d, p)) = parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.shape() != shape || p.classes() != classes)
        {
            return Err(DataError::Invalid(format!(
                "domain {d} has images {:?} in {} classes, domain 0 {shape:?} in {classes}",
                p.shape(),
                p.classes()
            )));
        }
        let mut starts = Vec::with_capacity(parts.len());
        let mut at = 0;
        for p in &parts {
            starts.push(at);
            at += p.len();
        }
        Ok(Self { parts, starts })
    }

    /// The domain id of every image, in order.
    pub fn domain_ids(&self) -> Vec<usize> {
        self.parts
            .iter()
            .enumerate()
            .flat_map(|(d, p)| std::iter::repeat_n(d, p.len()))
            .collect()
    }

    /// The indices of part `d`'s images.
    pub fn range(&self, d: usize) -> std::ops::Range<usize> {
        let start = self.starts[d];
        start..start + self.parts[d].len()
    }

    /// (part, index within it) of image `i`.
    fn locate(&self, i: usize) -> (usize, usize) {
        let d = self.starts.partition_point(|&s| s <= i) - 1;
        (d, i - self.starts[d])
    }
}

impl Source for Domains {
    fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    fn shape(&self) -> [usize; 3] {
        self.parts[0].shape()
    }

    fn classes(&self) -> usize {
        self.parts[0].classes()
    }

    fn label(&self, i: usize) -> usize {
        let (d, j) = self.locate(i);
        self.parts[d].label(j)
    }

    fn read(&self, i: usize, out: &mut Vec<u8>) -> Result<(), DataError> {
        if i >= self.len() {
            return Err(DataError::Invalid(format!(
                "image {i} of a data set of {}",
                self.len()
            )));
        }
        let (d, j) = self.locate(i);
        self.parts[d].read(j, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CorruptionKind, ImageSet};

    fn set(values: &[u8], shape: [usize; 3]) -> Arc<dyn Source> {
        let per: usize = shape.iter().product();
        let labels = (0..values.len() / per).map(|i| (i % 2) as u16).collect();
        Arc::new(ImageSet::new(values.to_vec(), labels, shape, 2).unwrap())
    }

    fn read(s: &dyn Source, i: usize) -> Vec<u8> {
        let mut out = Vec::new();
        s.read(i, &mut out).unwrap();
        out
    }

    #[test]
    fn transforms_change_pixels_as_named() {
        let base = set(&[0, 10, 200, 255, 1, 2, 3, 4], [1, 2, 2]);
        let inverted = Transformed::new(base.clone(), Some(Transform::Invert), None);
        assert_eq!(read(&inverted, 0), [255, 245, 55, 0]);
        let rgb = set(&[1, 1, 2, 2, 3, 3], [3, 1, 2]);
        let rotated = Transformed::new(rgb, Some(Transform::RotateChannels), None);
        assert_eq!(read(&rotated, 0), [2, 2, 3, 3, 1, 1]);
        // a corruption draws the same noise every time it reads an image
        let noisy = Transformed::new(
            base.clone(),
            None,
            Some(Corruption::new(CorruptionKind::GaussianNoise, 5).unwrap()),
        );
        assert_eq!(read(&noisy, 1), read(&noisy, 1));
        assert_ne!(read(&noisy, 1), read(base.as_ref(), 1));
        assert_eq!(noisy.labels(), base.labels());
    }

    #[test]
    fn domains_follow_each_other_with_their_ids() {
        let a = set(&[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 2]);
        let b = set(&[9, 9, 9, 9], [1, 2, 2]);
        let d = Domains::new(vec![a, b]).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.domain_ids(), [0, 0, 1]);
        assert_eq!(d.range(1), 2..3);
        assert_eq!(read(&d, 1), [5, 6, 7, 8]);
        assert_eq!(read(&d, 2), [9, 9, 9, 9]);
        assert_eq!(d.labels(), [0, 1, 0]);
        assert!(d.read(3, &mut Vec::new()).is_err());
        let other = set(&[1, 2], [1, 1, 2]);
        let err = Domains::new(vec![set(&[1, 2, 3, 4], [1, 2, 2]), other])
            .err()
            .unwrap();
        assert!(err.to_string().contains("domain 1"), "{err}");
    }
}
