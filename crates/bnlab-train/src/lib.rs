//! bnlab-train: the papers' recipes and a resumable multi-seed experiment runner.
//!
//! - optimizer parameter groups by role ([`GroupedOptimizer`]): γ at α/c, weight decay on
//!   conv/linear weights or also on γ/β (toward 0 or 1), SGD without dampening, Adam;
//! - schedules ([`Schedule`], [`LrCurve`]): half-period cosine, constant, step, warm-up;
//! - the run ([`train_run`]): training with gradient accumulation, validation, the
//!   best-validation checkpoint, FrozenBN, and evaluation under population, PreciseBN,
//!   mini-batch and example-weighed statistics, plus Adaptive BN on corrupted data;
//! - the sweep ([`Spec`], [`run_sweep`]): TOML specs with variants, grids and MD5 seeds,
//!   one JSON per run, resumable after a kill at any moment;
//! - the report ([`write_report`]): mean ± std tables with one-sided t-tests against a
//!   baseline, CSV, and the papers' figures.

#![warn(missing_docs)]

mod added;
mod checkpoint;
pub mod claim;
mod compute_pool;
mod config;
mod data;
mod diagnostics;
mod dist;
mod error;
mod eval;
mod eval_key;
mod fingerprint;
mod optim;
mod progress;
mod report;
mod result;
mod run;
mod runner;
mod schedule;
mod seeds;
mod spec;
pub mod stats;
mod status;
mod train_loop;

pub use added::{ADDED_FILE, AddedEvaluation, AddedEvaluations};
pub use checkpoint::{Checkpoint, Checkpoints, LoopState, load_model, save_model};
pub use compute_pool::on_compute_pool;
pub use config::*;
pub use data::{IMAGE_FOLDER, PartLoader, RunData};
pub use diagnostics::{
    Diagnostics, HISTOGRAM_BINS, HISTOGRAM_UPDATES, Histogram, LayerDiagnostics, OUTLIER_THRESHOLD,
};
pub use dist::*;
pub use error::TrainError;
pub use eval::{
    Evaluations, Metrics, cross_entropy_sum, evaluate_batches, evaluate_schemes, final_precise,
    precise_bn, precise_bn_exact, with_source,
};
pub use eval_key::{EvalKey, Family};
pub use fingerprint::{Fingerprint, Provenance, changes, data_folder};
pub use optim::*;
pub use progress::{Bars, Progress, Quiet};
pub use report::*;
pub use result::*;
pub use run::*;
pub use runner::*;
pub use schedule::{GroupLr, LrCurve, Schedule};
pub use seeds::run_seed;
pub use spec::*;
pub use stats::{
    Alternative, Correction, Expect, Interval, PValues, PairedDifference, Summary, TTest,
    UnpairedDifference, Verdict, paired_t_test, summary, welch_t_test,
};
pub use status::{RunState, RunStatus, sweep_status};
pub use train_loop::train_run;
