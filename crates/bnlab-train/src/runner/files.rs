//! The sweep's files: `sweep.json`, the stamps of its runs, and where each run's files live.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Fingerprint, Provenance, Spec, TrainError};

/// `sweep.json`: what the report needs to know about the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepFile {
    /// The spec's name.
    pub name: String,
    /// The baseline configuration or variant.
    pub baseline: Option<String>,
    /// Configuration name → axes.
    pub configurations: BTreeMap<String, BTreeMap<String, String>>,
    /// The configurations in spec order.
    pub order: Vec<String>,
    /// Run indices.
    pub seeds: Vec<u32>,
    /// Configuration name → its fingerprint.
    #[serde(default)]
    pub fingerprints: BTreeMap<String, Fingerprint>,
    /// The spec's claims (outside the fingerprint: they change the report, not the runs).
    #[serde(default)]
    pub claims: Vec<crate::ClaimSpec>,
}

impl SweepFile {
    /// Reads `sweep.json` of the sweep directory `out`.
    pub fn load(out: &Path) -> Result<Self, TrainError> {
        let path = out.join("sweep.json");
        let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
            path,
            why: format!("not a bnlab sweep file: {e}"),
        })
    }

    /// Writes this file as `sweep.json` of the sweep directory `out`, atomically.
    pub fn save(&self, out: &Path) -> Result<(), TrainError> {
        let path = out.join("sweep.json");
        let json = serde_json::to_vec_pretty(self).map_err(|e| TrainError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        Ok(bnlab_data::write_atomic(&path, &json)?)
    }

    /// What `spec` asks for, with each configuration's fingerprint.
    pub fn of(spec: &Spec, stamps: &[Stamp]) -> Self {
        Self {
            name: spec.name.clone(),
            baseline: spec.baseline.clone(),
            claims: spec.claims.clone(),
            configurations: spec
                .configurations
                .iter()
                .map(|c| (c.name.clone(), c.axes.clone()))
                .collect(),
            order: spec.configurations.iter().map(|c| c.name.clone()).collect(),
            seeds: spec.seeds.clone(),
            fingerprints: spec
                .configurations
                .iter()
                .zip(stamps)
                .map(|(c, s)| (c.name.clone(), s.fingerprint.clone()))
                .collect(),
        }
    }
}

/// A configuration's fingerprint and the provenance of its data.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// Where its data comes from.
    pub provenance: Provenance,
}

/// The stamp of every configuration of `spec`, in order (each data folder digested once).
pub fn stamps(spec: &Spec) -> Result<Vec<Stamp>, TrainError> {
    let mut provenances: BTreeMap<String, Provenance> = BTreeMap::new();
    spec.configurations
        .iter()
        .map(|c| {
            let data = &c.config.data;
            // the files read: the data set's, its other domains' and an image folder's
            let others: Vec<_> = data.domains.iter().map(|d| (&d.dataset, &d.root)).collect();
            let key = format!(
                "{}|{:?}|{:?}|{:?}",
                data.dataset,
                crate::data_folder(data)?,
                data.root,
                others
            );
            let provenance = match provenances.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let p = Provenance::of(data)?;
                    provenances.insert(key, p.clone());
                    p
                }
            };
            Ok(Stamp {
                fingerprint: Fingerprint::of(&c.config, &provenance)?,
                provenance,
            })
        })
        .collect()
}

/// Where the result of run `id` goes.
pub fn result_path(out: &Path, id: &str) -> PathBuf {
    out.join("results").join(format!("{id}.json"))
}

/// Where run `id` works.
pub fn run_dir(out: &Path, id: &str) -> PathBuf {
    out.join("runs").join(id)
}
