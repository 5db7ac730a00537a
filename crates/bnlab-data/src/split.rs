//! Class-wise stratified, seeded splits: by fraction (Davis & Frank's 10 % per class, Summers
//! & Dinneen's CIFAR-100 40k/10k and SVHN 80/20) or by per-class counts (Caltech-256's
//! 40/10/30 per class).

use serde::{Deserialize, Serialize};

use crate::{DataError, Rng};

/// How much of each class goes to the held-out part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Holdout {
    /// round(fraction · n_c) images of each class c.
    Fraction(f64),
    /// This many images of each class.
    PerClass(usize),
}

/// Indices of each class, each list shuffled by (seed, class).
fn shuffled_by_class(
    labels: &[usize],
    classes: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>, DataError> {
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class
            .get_mut(l)
            .ok_or_else(|| {
                DataError::Invalid(format!("label {l} of image {i} outside 0..{classes}"))
            })?
            .push(i);
    }
    for (c, idx) in by_class.iter_mut().enumerate() {
        Rng::new(seed, 0x5b1_17, c as u64, 0).shuffle(idx);
    }
    Ok(by_class)
}

/// Splits image indices into (kept, held out) with the same share of every class; seeded.
pub fn stratified_split(
    labels: &[usize],
    classes: usize,
    holdout: Holdout,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    if let Holdout::Fraction(f) = holdout
        && !(0.0..=1.0).contains(&f)
    {
        return Err(DataError::Invalid(format!(
            "holdout fraction {f} outside [0, 1]"
        )));
    }
    let mut kept = Vec::new();
    let mut held = Vec::new();
    for (c, idx) in shuffled_by_class(labels, classes, seed)?
        .into_iter()
        .enumerate()
    {
        let n = match holdout {
            Holdout::Fraction(f) => (f * idx.len() as f64).round() as usize,
            Holdout::PerClass(k) => k,
        };
        if n > idx.len() {
            return Err(DataError::Invalid(format!(
                "class {c} has {} images, fewer than the {n} to hold out",
                idx.len()
            )));
        }
        held.extend_from_slice(&idx[..n]);
        kept.extend_from_slice(&idx[n..]);
    }
    kept.sort_unstable();
    held.sort_unstable();
    Ok((kept, held))
}

/// Splits into parts of `counts[k]` images per class each (e.g. [40, 10, 30]); the rest of
/// each class is unused. Seeded; parts are disjoint.
pub fn per_class_parts(
    labels: &[usize],
    classes: usize,
    counts: &[usize],
    seed: u64,
) -> Result<Vec<Vec<usize>>, DataError> {
    let need: usize = counts.iter().sum();
    let mut parts = vec![Vec::new(); counts.len()];
    for (c, idx) in shuffled_by_class(labels, classes, seed)?
        .into_iter()
        .enumerate()
    {
        if idx.len() < need {
            return Err(DataError::Invalid(format!(
                "class {c} has {} images, fewer than the {need} the split needs",
                idx.len()
            )));
        }
        let mut start = 0;
        for (part, &k) in parts.iter_mut().zip(counts) {
            part.extend_from_slice(&idx[start..start + k]);
            start += k;
        }
    }
    for p in &mut parts {
        p.sort_unstable();
    }
    Ok(parts)
}
