//! Runs trained as their spec says whose evaluation settings changed: evaluated again from
//! their saved model, never retrained.

use std::path::Path;

use bnlab_norm::{NormMode, set_norm_mode};

use super::{Stamp, result_path, run_dir};
use crate::{
    RunConfig, RunData, RunFile, RunKey, RunResult, Spec, Status, TrainError, evaluate_schemes,
};

/// The result of run `key` when it was trained under `stamp`'s training settings but
/// evaluated under others (`eval.*` changed since): the run to evaluate again.
pub(super) fn stale_evaluation(
    out: &Path,
    key: &RunKey,
    stamp: &Stamp,
) -> Result<Option<RunResult>, TrainError> {
    let path = result_path(out, &key.id);
    if !path.exists() {
        return Ok(None);
    }
    let result = RunResult::load(&path)?;
    Ok(match &result.fingerprint {
        Some(f) if f.training == stamp.fingerprint.training && *f != stamp.fingerprint => {
            Some(result)
        }
        _ => None,
    })
}

/// Evaluates run `key` again under its configuration's evaluation settings, from the model
/// it saved (`runs/<id>/model.bpk`, checked against its MD5), and rewrites its result and
/// run file atomically. A failed run has nothing to evaluate: only its settings are updated.
pub(super) fn reevaluate(
    out: &Path,
    spec: &Spec,
    key: &RunKey,
    stamp: &Stamp,
    mut result: RunResult,
) -> Result<RunResult, TrainError> {
    let config: &RunConfig = &spec.configurations[key.configuration].config;
    let dir = run_dir(out, &key.id);
    if result.status == Status::Finished {
        let mut run = RunFile::load(&dir)?;
        let data = RunData::load(&config.data, config.scaling())?;
        let device = config.train.device.device()?;
        let model = set_norm_mode(run.network(&dir, &data, &device)?, NormMode::EVAL);
        let evaluations = evaluate_schemes(config, &data, &model, key.seed as u64, &device)?;
        result.test = evaluations.test;
        result.validation = evaluations.validation;
        run.config = config.clone();
        run.fingerprint = Some(stamp.fingerprint.clone());
        run.save(&dir)?;
    }
    result.config = config.clone();
    result.fingerprint = Some(stamp.fingerprint.clone());
    result.save(&result_path(out, &key.id))?;
    Ok(result)
}
