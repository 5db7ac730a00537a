//! ImageNet-C style corruptions (Hendrycks & Dietterich), applied on the fly to make target
//! domains for Adaptive BN (Wu & Johnson §5.1): contrast, Gaussian noise and JPEG, severity 1–5.

use std::io::Cursor;

use image::codecs::jpeg::{JpegDecoder, JpegEncoder};
use image::{ExtendedColorType, ImageDecoder};
use serde::{Deserialize, Serialize};

use crate::{DataError, Rng};

/// A corruption family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CorruptionKind {
    /// Contrast scaled by c ∈ (0.4, 0.3, 0.2, 0.1, 0.05) around each image's mean.
    Contrast,
    /// Additive N(0, σ²) with σ ∈ (0.08, 0.12, 0.18, 0.26, 0.38) on [0, 1] pixels.
    GaussianNoise,
    /// JPEG re-encoding at quality (25, 18, 15, 10, 7).
    Jpeg,
}

/// A corruption at a severity from 1 to 5 (ImageNet-C's parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corruption {
    /// The family.
    pub kind: CorruptionKind,
    /// 1 (mild) to 5 (severe).
    pub severity: u8,
}

impl Corruption {
    /// Checks the severity.
    pub fn new(kind: CorruptionKind, severity: u8) -> Result<Self, DataError> {
        if !(1..=5).contains(&severity) {
            return Err(DataError::Invalid(format!(
                "corruption severity {severity} outside 1..=5"
            )));
        }
        Ok(Self { kind, severity })
    }

    /// Corrupts one 8-bit CHW image of `shape` in place; noise is drawn from (seed, index).
    pub fn apply(
        &self,
        img: &mut [u8],
        shape: [usize; 3],
        seed: u64,
        index: u64,
    ) -> Result<(), DataError> {
        let s = (self.severity.clamp(1, 5) - 1) as usize;
        match self.kind {
            CorruptionKind::Contrast => {
                let c = [0.4, 0.3, 0.2, 0.1, 0.05][s];
                let mean = img.iter().map(|&v| v as f64).sum::<f64>() / img.len().max(1) as f64;
                for v in img.iter_mut() {
                    *v = ((*v as f64 - mean) * c + mean).round().clamp(0.0, 255.0) as u8;
                }
            }
            CorruptionKind::GaussianNoise => {
                let sigma = [0.08, 0.12, 0.18, 0.26, 0.38][s] * 255.0;
                let mut rng = Rng::new(seed, 0xc0_77, index, 0);
                for v in img.iter_mut() {
                    *v = (*v as f64 + sigma * rng.normal()).round().clamp(0.0, 255.0) as u8;
                }
            }
            CorruptionKind::Jpeg => {
                let quality = [25, 18, 15, 10, 7][s];
                jpeg_roundtrip(img, shape, quality)?;
            }
        }
        Ok(())
    }
}

/// Encodes the image as JPEG at `quality` and decodes it back into `img`.
fn jpeg_roundtrip(img: &mut [u8], shape: [usize; 3], quality: u8) -> Result<(), DataError> {
    let [c, h, w] = shape;
    let plane = h * w;
    let (color, interleaved): (ExtendedColorType, Vec<u8>) = match c {
        1 => (ExtendedColorType::L8, img.to_vec()),
        3 => (
            ExtendedColorType::Rgb8,
            (0..plane)
                .flat_map(|p| (0..3).map(move |ch| (p, ch)))
                .map(|(p, ch)| img[ch * plane + p])
                .collect(),
        ),
        _ => {
            return Err(DataError::Invalid(format!(
                "JPEG corruption needs 1 or 3 channels, got {c}"
            )));
        }
    };
    let fail = |e: image::ImageError| DataError::Invalid(format!("JPEG corruption: {e}"));
    let mut encoded = Vec::new();
    JpegEncoder::new_with_quality(&mut encoded, quality)
        .encode(&interleaved, w as u32, h as u32, color)
        .map_err(fail)?;
    let decoder = JpegDecoder::new(Cursor::new(&encoded)).map_err(fail)?;
    let mut decoded = vec![0u8; decoder.total_bytes() as usize];
    decoder.read_image(&mut decoded).map_err(fail)?;
    if decoded.len() != img.len() {
        return Err(DataError::Invalid(
            "JPEG corruption changed the image size".into(),
        ));
    }
    if c == 1 {
        img.copy_from_slice(&decoded);
    } else {
        for p in 0..plane {
            for ch in 0..3 {
                img[ch * plane + p] = decoded[p * 3 + ch];
            }
        }
    }
    Ok(())
}
