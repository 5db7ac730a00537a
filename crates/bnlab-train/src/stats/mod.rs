//! Statistics across seeds: summaries, t-tests and intervals, the signed-rank test, bootstrap
//! intervals, power, equivalence, Holm's correction and verdicts on claims.

pub mod bootstrap;
mod difference;
mod holm;
pub mod power;
mod summary;
mod ttest;
mod unpaired;
mod wilcoxon;

pub use difference::{ALPHA, Expect, LEVEL, PairedDifference, TargetPower, Tost, Verdict};
pub use holm::{AUTO_ABOVE, Correction, holm};
pub use summary::{Summary, summary};
pub use ttest::{
    Alternative, Interval, PValues, TTest, paired_t_test, t_interval, t_p_values, welch_t_test,
};
pub use unpaired::UnpairedDifference;
pub use wilcoxon::{SignedRank, signed_rank};
