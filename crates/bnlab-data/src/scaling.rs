//! Turning 8-bit pixels into network input: raw, unit, fixed (x − 128)/128, or offline
//! per-channel mean/std computed on the training split.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{DataError, Source};

/// How pixel values become floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scaling {
    /// The 8-bit values 0–255 as they are (for a network with its own input normalization).
    Raw,
    /// x / 255, in [0, 1].
    Unit,
    /// (x − 128) / 128 (Davis & Frank §3.4's fixed input normalization).
    Fixed,
    /// (x − μ_c) / σ_c with statistics of the training split, in 0–255 units.
    Offline {
        /// μ per channel.
        mean: Vec<f64>,
        /// σ per channel.
        std: Vec<f64>,
    },
}

impl Scaling {
    /// torchvision's ImageNet normalization: x/255 − (0.485, 0.456, 0.406), divided by
    /// (0.229, 0.224, 0.225), as [`Scaling::Offline`] in 0–255 units.
    pub fn imagenet() -> Self {
        Scaling::Offline {
            mean: [0.485, 0.456, 0.406].iter().map(|m| m * 255.0).collect(),
            std: [0.229, 0.224, 0.225].iter().map(|s| s * 255.0).collect(),
        }
    }

    /// (shift, scale) per channel with y = (x − shift)·scale.
    pub fn affine(&self, channels: usize) -> Result<Vec<(f32, f32)>, DataError> {
        Ok(match self {
            Scaling::Raw => vec![(0.0, 1.0); channels],
            Scaling::Unit => vec![(0.0, 1.0 / 255.0); channels],
            Scaling::Fixed => vec![(128.0, 1.0 / 128.0); channels],
            Scaling::Offline { mean, std } => {
                if mean.len() != channels || std.len() != channels {
                    return Err(DataError::Invalid(format!(
                        "offline scaling has {} means and {} stds for {channels} channels",
                        mean.len(),
                        std.len()
                    )));
                }
                if std.iter().any(|s| !(s.is_finite() && *s > 0.0))
                    || mean.iter().any(|m| !m.is_finite())
                {
                    return Err(DataError::Invalid(format!(
                        "offline scaling needs finite means and stds > 0: {mean:?}, {std:?}"
                    )));
                }
                mean.iter()
                    .zip(std)
                    .map(|(&m, &s)| (m as f32, (1.0 / s) as f32))
                    .collect()
            }
        })
    }
}

/// Per-channel mean and standard deviation (0–255 units) of the images at `indices`,
/// accumulated in f64: the statistics for [`Scaling::Offline`].
pub fn channel_stats(
    source: &dyn Source,
    indices: &[usize],
) -> Result<(Vec<f64>, Vec<f64>), DataError> {
    if indices.is_empty() {
        return Err(DataError::Invalid("channel statistics of no images".into()));
    }
    let [c, h, w] = source.shape();
    let plane = h * w;
    let sums = indices
        .par_chunks(256)
        .map(|chunk| {
            let mut buf = Vec::new();
            let mut s = vec![(0.0f64, 0.0f64); c];
            for &i in chunk {
                source.read(i, &mut buf)?;
                for (ch, acc) in s.iter_mut().enumerate() {
                    let (mut a, mut b) = (0u64, 0u64);
                    for &v in &buf[ch * plane..(ch + 1) * plane] {
                        a += v as u64;
                        b += (v as u64) * (v as u64);
                    }
                    acc.0 += a as f64;
                    acc.1 += b as f64;
                }
            }
            Ok(s)
        })
        .try_reduce(
            || vec![(0.0, 0.0); c],
            |a, b| {
                Ok(a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x.0 + y.0, x.1 + y.1))
                    .collect())
            },
        )?;
    let n = (indices.len() * plane) as f64;
    let mean: Vec<f64> = sums.iter().map(|s| s.0 / n).collect();
    let std = sums
        .iter()
        .zip(&mean)
        .map(|(s, m)| (s.1 / n - m * m).max(0.0).sqrt())
        .collect();
    Ok((mean, std))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    #[test]
    fn channel_stats_match_plain_f64_loops() {
        let set = synthetic(3, 40, [3, 8, 8], 0.5, 4).unwrap();
        let idx: Vec<usize> = (0..120).step_by(3).collect();
        let (mean, std) = channel_stats(&set, &idx).unwrap();
        for c in 0..3 {
            let vals: Vec<f64> = idx
                .iter()
                .flat_map(|&i| set.image(i)[c * 64..(c + 1) * 64].iter().map(|&v| v as f64))
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let s = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
            assert!((mean[c] - m).abs() < 1e-9 && (std[c] - s).abs() < 1e-9);
        }
        assert!(channel_stats(&set, &[]).is_err());
    }

    #[test]
    fn affine_maps() {
        let f = Scaling::Fixed.affine(1).unwrap()[0];
        assert_eq!(((128.0 - f.0) * f.1, (0.0 - f.0) * f.1), (0.0, -1.0));
        let u = Scaling::Unit.affine(1).unwrap()[0];
        assert_eq!((255.0 - u.0) * u.1, 1.0);
        let o = Scaling::Offline {
            mean: vec![10.0, 20.0],
            std: vec![2.0, 4.0],
        }
        .affine(2)
        .unwrap();
        assert_eq!(o, vec![(10.0, 0.5), (20.0, 0.25)]);
        assert!(
            Scaling::Offline {
                mean: vec![1.0],
                std: vec![0.0]
            }
            .affine(1)
            .is_err()
        );
        assert!(
            Scaling::Offline {
                mean: vec![1.0],
                std: vec![1.0]
            }
            .affine(3)
            .is_err()
        );
    }
}
