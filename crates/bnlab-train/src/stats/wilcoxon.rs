//! The Wilcoxon signed-rank test of paired differences: zero differences dropped (Wilcoxon's
//! own rule, scipy's `zero_method="wilcox"`), the exact null distribution when no absolute
//! differences tie and at most 50 remain, else the normal approximation with the tie
//! correction of the variance and no continuity correction.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use super::ttest::PValues;

/// Above this many non-zero differences the normal approximation is used (as scipy).
const EXACT_MAX: usize = 50;

/// The outcome of a signed-rank test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SignedRank {
    /// The smaller of the positive and negative rank sums (scipy's two-sided statistic).
    pub statistic: f64,
    /// Non-zero differences ranked.
    pub n: usize,
    /// Whether the p-values come from the exact distribution.
    pub exact: bool,
    /// The p-values.
    pub p: PValues,
}

/// Average ranks (1-based) of `values`, ties sharing their mean rank, and whether any tied.
fn ranks(values: &[f64]) -> (Vec<f64>, bool) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut tied = false;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        tied |= end - start > 1;
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    (ranks, tied)
}

/// The number of subsets of {1, …, n} with each sum 0..=n(n+1)/2: the exact null
/// distribution of the positive rank sum, times 2ⁿ.
fn subset_sums(n: usize) -> Vec<f64> {
    let max = n * (n + 1) / 2;
    let mut counts = vec![0.0; max + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            counts[s] += counts[s - k];
        }
    }
    counts
}

/// The signed-rank test of the differences `d`; `None` when every difference is zero.
pub fn signed_rank(d: &[f64]) -> Option<SignedRank> {
    let nonzero: Vec<f64> = d.iter().copied().filter(|&x| x != 0.0).collect();
    let n = nonzero.len();
    if n == 0 || nonzero.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let abs: Vec<f64> = nonzero.iter().map(|x| x.abs()).collect();
    let (r, tied) = ranks(&abs);
    let r_plus: f64 = nonzero
        .iter()
        .zip(&r)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let statistic = r_plus.min(total - r_plus);
    let exact = !tied && n <= EXACT_MAX;
    let (greater, less) = if exact {
        // r_plus is an integer here: no ties
        let counts = subset_sums(n);
        let all = 2f64.powi(n as i32);
        let k = r_plus.round() as usize;
        let at_most: f64 = counts[..=k].iter().sum();
        let at_least: f64 = counts[k..].iter().sum();
        (at_least / all, at_most / all)
    } else {
        let mean = total / 2.0;
        // the tie correction: Σ (t³ − t) / 48 over groups of tied |d|
        let mut sorted = abs.clone();
        sorted.sort_by(f64::total_cmp);
        let mut ties = 0.0;
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i + 1;
            while j < sorted.len() && sorted[j] == sorted[i] {
                j += 1;
            }
            let t = (j - i) as f64;
            ties += t * t * t - t;
            i = j;
        }
        let nf = n as f64;
        let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - ties / 48.0;
        let z = (r_plus - mean) / var.sqrt();
        let normal = Normal::standard();
        (normal.sf(z), normal.cdf(z))
    };
    Some(SignedRank {
        statistic,
        n,
        exact,
        p: PValues {
            two_sided: (2.0 * greater.min(less)).min(1.0),
            greater,
            less,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact distribution by enumerating all 2ⁿ sign patterns.
    fn brute_force(n: usize) -> Vec<f64> {
        let max = n * (n + 1) / 2;
        let mut counts = vec![0.0; max + 1];
        for mask in 0u32..(1 << n) {
            let s: usize = (0..n).filter(|k| mask >> k & 1 == 1).map(|k| k + 1).sum();
            counts[s] += 1.0;
        }
        counts
    }

    #[test]
    fn the_exact_distribution_counts_every_sign_pattern() {
        for n in 1..=12 {
            assert_eq!(subset_sums(n), brute_force(n), "n = {n}");
        }
    }

    #[test]
    fn ranks_average_over_ties() {
        let (r, tied) = ranks(&[3.0, 1.0, 3.0, 2.0]);
        assert_eq!(r, vec![3.5, 1.0, 3.5, 2.0]);
        assert!(tied);
        assert!(signed_rank(&[0.0, 0.0]).is_none());
    }
}
