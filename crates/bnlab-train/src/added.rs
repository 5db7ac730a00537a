//! Evaluations added to a finished run after its sweep, by `bnlab eval` and
//! `bnlab precise-bn`: `runs/<id>/evaluations.json`, beside the model they were measured on,
//! which the report reads with the run's own result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{MODEL_FILE, Metrics, TrainError};

/// The file name inside a run directory.
pub const ADDED_FILE: &str = "evaluations.json";

/// One added evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddedEvaluation {
    /// On the test set.
    pub test: Metrics,
    /// On the validation images, when the run has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Metrics>,
    /// The command that measured it.
    pub command: String,
}

/// Every evaluation added to one run, tied to the model file it was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AddedEvaluations {
    /// The MD5 of `model.bpk` when these were measured.
    pub model_md5: String,
    /// By result key ([`crate::EvalKey`]).
    pub evaluations: BTreeMap<String, AddedEvaluation>,
}

impl AddedEvaluations {
    /// The path of the file of run directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(ADDED_FILE)
    }

    /// The file of run directory `dir` as written, if there is one.
    fn read(dir: &Path) -> Result<Option<Self>, TrainError> {
        let path = Self::path(dir);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TrainError::Corrupt {
                path,
                why: format!("not a bnlab evaluations file: {e}"),
            })
    }

    /// The evaluations added to the run in `dir`, checked against its model: none when there
    /// is no file; an error when the file cannot be read or belongs to another model.
    pub fn load(dir: &Path) -> Result<Self, TrainError> {
        let Some(added) = Self::read(dir)? else {
            return Ok(Self::default());
        };
        let md5 = model_md5(dir)?;
        if added.model_md5 != md5 {
            return Err(TrainError::Corrupt {
                path: Self::path(dir),
                why: format!(
                    "measured on model {} but {} is {md5}: the run was trained again since",
                    added.model_md5,
                    dir.join(MODEL_FILE).display()
                ),
            });
        }
        Ok(added)
    }

    /// Adds (or replaces) `key` in the file of run directory `dir`, atomically. Evaluations
    /// of an earlier model of the run are dropped.
    pub fn record(dir: &Path, key: &str, evaluation: AddedEvaluation) -> Result<(), TrainError> {
        let md5 = model_md5(dir)?;
        let mut added = match Self::read(dir)? {
            Some(a) if a.model_md5 == md5 => a,
            _ => Self::default(),
        };
        added.model_md5 = md5;
        added.evaluations.insert(key.to_string(), evaluation);
        let path = Self::path(dir);
        let json = serde_json::to_vec_pretty(&added).map_err(|e| TrainError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        Ok(bnlab_data::write_atomic(&path, &json)?)
    }
}

/// The MD5 of the run's model file, from the checksum written beside it.
fn model_md5(dir: &Path) -> Result<String, TrainError> {
    let model = dir.join(MODEL_FILE);
    crate::checkpoint::verify(&model)?;
    Ok(bnlab_data::FileDigest::of(&model)?.md5)
}
