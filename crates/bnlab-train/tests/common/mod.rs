//! Helpers shared by bnlab-train's integration tests.
#![allow(dead_code)] // each test crate uses its own subset

use std::sync::Arc;

use bnlab_train::{Quiet, Spec, SweepOptions, TrainError};

/// The error of spec `text`: its line and message; panics when the spec is accepted.
pub fn error(text: &str) -> (usize, String) {
    match Spec::parse(text, "bad.toml") {
        Err(TrainError::Spec { line, message, .. }) => (line, message),
        Err(other) => panic!("not a spec error: {other}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

/// The line (1-based) of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// Quiet sweep options with `jobs` runs at once and an optional epoch budget.
pub fn options(budget: Option<usize>, jobs: usize) -> SweepOptions {
    SweepOptions {
        budget,
        ..SweepOptions::new(jobs, Arc::new(Quiet))
    }
}
