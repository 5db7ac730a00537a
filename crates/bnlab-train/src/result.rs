//! The result of one run, written as one JSON file when the run ends: the format the report
//! reads.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use bnlab_data::write_atomic;

use crate::{Diagnostics, Fingerprint, Metrics, Provenance, RunConfig, TrainError};

/// The version of the result format.
pub const RESULT_FORMAT: u32 = 2;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Status {
    /// Trained and evaluated.
    Finished,
    /// Stopped by an error such as a NaN loss; the sweep went on.
    Failed {
        /// What happened.
        reason: String,
    },
}

/// Metrics after one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// The base learning rate of the epoch's last update.
    pub lr: f64,
    /// Mean training loss over the epoch (batch statistics, as trained).
    pub train_loss: f64,
    /// Training accuracy over the epoch (batch statistics, as trained).
    pub train_accuracy: f64,
    /// Validation under the running (EMA) statistics.
    pub val: Option<Metrics>,
    /// Validation under PreciseBN statistics (when `precise_every_epoch`).
    pub val_precise: Option<Metrics>,
    /// Validation under mini-batch statistics, batches of one worker's forward batch built
    /// in `eval.minibatch_order` (when `minibatch_every_epoch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_minibatch: Option<Metrics>,
    /// Whether the norm layers were frozen during this epoch.
    pub frozen: bool,
}

/// One run's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// [`RESULT_FORMAT`].
    pub format: u32,
    /// The sweep's name.
    pub sweep: String,
    /// The configuration's name.
    pub configuration: String,
    /// Axis → value of the configuration.
    pub axes: BTreeMap<String, String>,
    /// The run index (1-based).
    pub index: u32,
    /// The MD5 seed of the index.
    pub seed: u32,
    /// The settings.
    pub config: RunConfig,
    /// The fingerprint of the settings and data (absent in results of format 1).
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    /// Where the data came from (absent in results of format 1).
    #[serde(default)]
    pub provenance: Option<Provenance>,
    /// How it ended.
    pub status: Status,
    /// Per-epoch metrics.
    pub epochs: Vec<EpochRecord>,
    /// The epoch (1-based) whose checkpoint is evaluated: best validation accuracy, or the
    /// last without validation.
    pub best_epoch: Option<usize>,
    /// Test metrics by scheme: `population`, `precise`, `minibatch-B`, `alpha-A`,
    /// `train-minibatch`, `adapt-KIND-S-source`, `adapt-KIND-S-adapted`.
    pub test: BTreeMap<String, Metrics>,
    /// The same evaluations on the validation images, when `eval.splits` asks for them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validation: BTreeMap<String, Metrics>,
    /// Diagnostics.
    pub diagnostics: Diagnostics,
}

impl RunResult {
    /// The result of run `key` of `spec` that carries no training record: a failed run, or a
    /// model brought in from elsewhere (`bnlab import`), whose metrics are added later.
    pub fn untrained(
        spec: &crate::Spec,
        key: &crate::RunKey,
        stamp: &crate::Stamp,
        status: Status,
    ) -> Self {
        let configuration = &spec.configurations[key.configuration];
        RunResult {
            format: RESULT_FORMAT,
            sweep: spec.name.clone(),
            configuration: configuration.name.clone(),
            axes: configuration.axes.clone(),
            index: key.index,
            seed: key.seed,
            config: configuration.config.clone(),
            fingerprint: Some(stamp.fingerprint.clone()),
            provenance: Some(stamp.provenance.clone()),
            status,
            epochs: Vec::new(),
            best_epoch: None,
            test: BTreeMap::new(),
            validation: BTreeMap::new(),
            diagnostics: Default::default(),
        }
    }

    /// Writes the result atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| TrainError::Corrupt {
            path: path.into(),
            why: e.to_string(),
        })?;
        Ok(write_atomic(path, &json)?)
    }

    /// Reads a result file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
            path: path.into(),
            why: format!("not a bnlab result: {e}"),
        })
    }
}
