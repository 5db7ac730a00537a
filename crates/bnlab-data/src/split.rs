//! Class-wise stratified, seeded splits: by fraction (Davis & Frank's 10 % per class, Summers
//! & Dinneen's CIFAR-100 40k/10k and SVHN 80/20) or by per-class counts (Caltech-256's
//! 40/10/30 per class).

use serde::{Deserialize, Serialize};

use crate::rng::stream;
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
        Rng::new(seed, stream::SPLIT, c as u64, 0).shuffle(idx);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn per_class(idx: &[usize], labels: &[usize], classes: usize) -> Vec<usize> {
        let mut n = vec![0; classes];
        for &i in idx {
            n[labels[i]] += 1;
        }
        n
    }

    proptest! {
        #[test]
        fn fraction_split_is_exact_per_class_disjoint_and_seeded(
            labels in proptest::collection::vec(0usize..5, 1..300),
            frac in 0.0f64..=1.0,
            seed in any::<u64>(),
        ) {
            let (kept, held) = stratified_split(&labels, 5, Holdout::Fraction(frac), seed).unwrap();
            let total = per_class(&(0..labels.len()).collect::<Vec<_>>(), &labels, 5);
            let h = per_class(&held, &labels, 5);
            for c in 0..5 {
                prop_assert_eq!(h[c], (frac * total[c] as f64).round() as usize);
            }
            let mut all: Vec<usize> = kept.iter().chain(&held).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
            prop_assert_eq!(stratified_split(&labels, 5, Holdout::Fraction(frac), seed).unwrap(), (kept, held));
        }
    }

    #[test]
    fn per_class_counts_and_parts() {
        let labels: Vec<usize> = (0..1000).map(|i| i % 10).collect();
        let (kept, held) = stratified_split(&labels, 10, Holdout::PerClass(20), 1).unwrap();
        assert_eq!(per_class(&held, &labels, 10), vec![20; 10]);
        assert_eq!(kept.len(), 800);
        let other = stratified_split(&labels, 10, Holdout::PerClass(20), 2)
            .unwrap()
            .1;
        assert_ne!(held, other, "the seed matters");
        let parts = per_class_parts(&labels, 10, &[40, 10, 30], 3).unwrap();
        for (part, k) in parts.iter().zip([40, 10, 30]) {
            assert_eq!(per_class(part, &labels, 10), vec![k; 10]);
        }
        let mut seen: Vec<usize> = parts.concat();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 800, "parts are disjoint");
        assert!(per_class_parts(&labels, 10, &[90, 20], 3).is_err());
        assert!(
            stratified_split(&labels, 5, Holdout::Fraction(0.1), 3).is_err(),
            "label 5 ≥ 5 classes"
        );
        assert!(stratified_split(&labels, 10, Holdout::Fraction(1.5), 3).is_err());
    }
}
