//! ImageNet-C style corruptions (Hendrycks & Dietterich), applied on the fly to make target
//! domains for Adaptive BN (Wu & Johnson §5.1): contrast, Gaussian noise and JPEG, severity 1–5.

use std::io::Cursor;

use image::codecs::jpeg::{JpegDecoder, JpegEncoder};
use image::{ExtendedColorType, ImageDecoder};
use serde::{Deserialize, Serialize};

use crate::rng::stream;
use crate::{DataError, Rng};

/// A corruption family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptionKind {
    /// Contrast scaled by c ∈ (0.4, 0.3, 0.2, 0.1, 0.05) around each image's mean.
    #[serde(alias = "Contrast")]
    Contrast,
    /// Additive N(0, σ²) with σ ∈ (0.08, 0.12, 0.18, 0.26, 0.38) on [0, 1] pixels.
    #[serde(alias = "GaussianNoise")]
    GaussianNoise,
    /// JPEG re-encoding at quality (25, 18, 15, 10, 7).
    #[serde(alias = "Jpeg")]
    Jpeg,
}

impl CorruptionKind {
    /// Every family.
    pub const ALL: [CorruptionKind; 3] = [
        CorruptionKind::Contrast,
        CorruptionKind::GaussianNoise,
        CorruptionKind::Jpeg,
    ];
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
                let mut rng = Rng::new(seed, stream::NOISE, index, 0);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(v: &[u8]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (
            m,
            (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt(),
        )
    }

    fn image() -> Vec<u8> {
        (0..3 * 32 * 32)
            .map(|i| ((i * 37) % 200 + 20) as u8)
            .collect()
    }

    #[test]
    fn contrast_scales_spread_around_the_mean() {
        let src = image();
        let (m0, s0) = moments(&src);
        for sev in 1..=5 {
            let mut img = src.clone();
            Corruption::new(CorruptionKind::Contrast, sev)
                .unwrap()
                .apply(&mut img, [3, 32, 32], 0, 0)
                .unwrap();
            let (m, s) = moments(&img);
            let c = [0.4, 0.3, 0.2, 0.1, 0.05][sev as usize - 1];
            assert!((m - m0).abs() < 0.6, "mean kept");
            assert!(
                (s - c * s0).abs() < 0.6,
                "severity {sev}: std {s} vs {}",
                c * s0
            );
        }
    }

    #[test]
    fn gaussian_noise_has_the_severity_sigma_and_is_seeded() {
        let src = vec![128u8; 3 * 64 * 64];
        let mut a = src.clone();
        let c = Corruption::new(CorruptionKind::GaussianNoise, 2).unwrap();
        c.apply(&mut a, [3, 64, 64], 1, 5).unwrap();
        let (m, s) = moments(&a);
        assert!(
            (m - 128.0).abs() < 1.0 && (s - 0.12 * 255.0).abs() < 0.5,
            "mean {m} std {s}"
        );
        let mut b = src.clone();
        c.apply(&mut b, [3, 64, 64], 1, 5).unwrap();
        assert_eq!(a, b);
        c.apply(&mut b, [3, 64, 64], 1, 6).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn jpeg_degrades_more_at_higher_severity() {
        let src = image();
        let err = |sev| {
            let mut img = src.clone();
            Corruption::new(CorruptionKind::Jpeg, sev)
                .unwrap()
                .apply(&mut img, [3, 32, 32], 0, 0)
                .unwrap();
            img.iter()
                .zip(&src)
                .map(|(&a, &b)| (a as f64 - b as f64).abs())
                .sum::<f64>()
        };
        assert!(err(1) > 0.0 && err(5) > err(1));
        let mut gray = vec![100u8; 16 * 16];
        Corruption::new(CorruptionKind::Jpeg, 3)
            .unwrap()
            .apply(&mut gray, [1, 16, 16], 0, 0)
            .unwrap();
        assert!(Corruption::new(CorruptionKind::Jpeg, 0).is_err());
        assert!(Corruption::new(CorruptionKind::Jpeg, 6).is_err());
    }
}
