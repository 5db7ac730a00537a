//! A synthetic class-conditional image generator with adjustable difficulty, for tests and
//! quick runs.

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
            let mut rng = Rng::new(seed, 0x5e7, k as u64, 0);
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
        let mut rng = Rng::new(seed, 0x5e8, i as u64, 0);
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
