//! The class-balanced, deterministic subset of a dataset that bnlab bundles for offline runs.

use std::path::Path;

use crate::{DataError, ImageSet, write_idx};

/// The first `per_class` images of every class, in file order; an error if a class has fewer.
pub fn class_balanced_subset(set: &ImageSet, per_class: usize) -> Result<ImageSet, DataError> {
    let mut taken = vec![0usize; set.classes];
    let mut keep = Vec::with_capacity(per_class * set.classes);
    for (i, &l) in set.labels.iter().enumerate() {
        if taken[l as usize] < per_class {
            taken[l as usize] += 1;
            keep.push(i);
        }
    }
    if let Some((c, n)) = taken.iter().enumerate().find(|(_, n)| **n < per_class) {
        return Err(DataError::Invalid(format!(
            "class {c} has only {n} images, fewer than {per_class}"
        )));
    }
    Ok(set.select(&keep))
}

/// Writes a 1-channel set as gzipped IDX `{prefix}-images-idx3-ubyte.gz` and
/// `{prefix}-labels-idx1-ubyte.gz` in `dir`.
pub fn write_idx_set(dir: &Path, prefix: &str, set: &ImageSet) -> Result<(), DataError> {
    let [c, h, w] = set.shape;
    if c != 1 {
        return Err(DataError::Invalid(format!(
            "IDX image files hold 1 channel, the set has {c}"
        )));
    }
    let labels: Vec<u8> = set
        .labels
        .iter()
        .map(|&l| {
            u8::try_from(l)
                .map_err(|_| DataError::Invalid(format!("label {l} does not fit a byte")))
        })
        .collect::<Result<_, _>>()?;
    let n = labels.len();
    write_idx(
        &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        &[n, h, w],
        &set.pixels,
        true,
    )?;
    write_idx(
        &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        &[n],
        &labels,
        true,
    )
}
