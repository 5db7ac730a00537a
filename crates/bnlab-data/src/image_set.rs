//! [`ImageSet`], labelled 8-bit images in memory, and [`Source`], anything that yields them.

use crate::DataError;

/// Labelled images that can be read one at a time, each as 8-bit CHW pixels.
pub trait Source: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (channels, height, width) of every image as read.
    fn shape(&self) -> [usize; 3];
    /// Number of classes.
    fn classes(&self) -> usize;
    /// The label of image `i`.
    fn label(&self, i: usize) -> usize;
    /// Writes image `i` into `out` (resized to [`Source::shape`]).
    fn read(&self, i: usize, out: &mut Vec<u8>) -> Result<(), DataError>;
    /// Every label, in order.
    fn labels(&self) -> Vec<usize> {
        (0..self.len()).map(|i| self.label(i)).collect()
    }
}

/// Labelled 8-bit images held in memory, CHW per image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels of all images, image after image, each `channels × height × width`.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u16>,
    /// (channels, height, width).
    pub shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
}

impl ImageSet {
    /// Checks sizes and labels and builds the set.
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u16>,
        shape: [usize; 3],
        classes: usize,
    ) -> Result<Self, DataError> {
        let per = shape.iter().product::<usize>();
        if per == 0 || pixels.len() != per * labels.len() {
            return Err(DataError::Invalid(format!(
                "{} pixels for {} images of shape {shape:?}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(DataError::Invalid(format!(
                "label {l} outside 0..{classes}"
            )));
        }
        Ok(Self {
            pixels,
            labels,
            shape,
            classes,
        })
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            classes: self.classes,
        }
    }

    /// How many images each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

impl Source for ImageSet {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn shape(&self) -> [usize; 3] {
        self.shape
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }

    fn read(&self, i: usize, out: &mut Vec<u8>) -> Result<(), DataError> {
        out.clear();
        out.extend_from_slice(self.image(i));
        Ok(())
    }
}
