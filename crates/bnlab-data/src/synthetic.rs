//! A synthetic class-conditional image generator with adjustable difficulty, for tests and
//! quick runs.

use crate::rng::stream;
use crate::{DataError, ImageSet, Rng};

/// `per_class` images of each of `classes` classes, shape `shape`, seeded.
///
/// Each class has a smooth random prototype (a 4×4 grid per channel, upsampled); an image is
/// its class prototype, randomly shifted in brightness, plus Gaussian noise. `difficulty` in
/// [0, 1] blends the prototype towards grey and scales the noise: 0 is trivially separable,
/// 1 is pure noise.
pub fn synthetic(
    classes: usize,
    per_class: usize,
    shape: [usize; 3],
    difficulty: f64,
    seed: u64,
) -> Result<ImageSet, DataError> {
    if classes == 0 || per_class == 0 || shape.contains(&0) || !(0.0..=1.0).contains(&difficulty) {
        return Err(DataError::Invalid(format!(
            "synthetic data needs classes, per_class and shape ≥ 1 and difficulty in [0, 1]: {classes}, {per_class}, {shape:?}, {difficulty}"
        )));
    }
    let [c, h, w] = shape;
    let protos: Vec<Vec<f64>> = (0..classes)
        .map(|k| {
            let mut rng = Rng::new(seed, stream::PROTOTYPE, k as u64, 0);
            let grid: Vec<f64> = (0..c * 16).map(|_| rng.uniform() * 255.0).collect();
            let mut p = vec![0.0; c * h * w];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let gy = (y * 4 / h).min(3);
                        let gx = (x * 4 / w).min(3);
                        p[(ch * h + y) * w + x] = grid[ch * 16 + gy * 4 + gx];
                    }
                }
            }
            p
        })
        .collect();
    let n = classes * per_class;
    let mut pixels = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % classes;
        let mut rng = Rng::new(seed, stream::SYNTHETIC, i as u64, 0);
        let shift = (rng.uniform() - 0.5) * 40.0;
        for &v in &protos[k] {
            let signal = 128.0 + (v - 128.0) * (1.0 - difficulty);
            let noise = rng.normal() * 80.0 * difficulty;
            pixels.push((signal + shift + noise).round().clamp(0.0, 255.0) as u8);
        }
        labels.push(k as u16);
    }
    ImageSet::new(pixels, labels, shape, classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_difficulty_controls_separation() {
        let a = synthetic(5, 8, [3, 8, 8], 0.3, 1).unwrap();
        assert_eq!(a, synthetic(5, 8, [3, 8, 8], 0.3, 1).unwrap());
        assert_ne!(a, synthetic(5, 8, [3, 8, 8], 0.3, 2).unwrap());
        assert_eq!(a.class_counts(), vec![8; 5]);
        // held-out nearest-class-mean accuracy: high when easy, near chance (0.2) when all noise
        let accuracy = |difficulty: f64| {
            let set = synthetic(5, 40, [1, 8, 8], difficulty, 3).unwrap();
            let n = set.image_len();
            let mut means = vec![vec![0.0; n]; 5];
            for i in 0..100 {
                for (m, &v) in means[set.labels[i] as usize].iter_mut().zip(set.image(i)) {
                    *m += v as f64 / 20.0;
                }
            }
            let correct = (100..set.labels.len())
                .filter(|&i| {
                    let d = |k: usize| {
                        means[k]
                            .iter()
                            .zip(set.image(i))
                            .map(|(m, &v)| (m - v as f64).powi(2))
                            .sum::<f64>()
                    };
                    (0..5).min_by(|&x, &y| d(x).total_cmp(&d(y))) == Some(set.labels[i] as usize)
                })
                .count();
            correct as f64 / 100.0
        };
        assert!(accuracy(0.1) > 0.95);
        assert!(accuracy(1.0) < 0.5);
        assert!(synthetic(0, 1, [1, 2, 2], 0.0, 0).is_err());
    }
}
