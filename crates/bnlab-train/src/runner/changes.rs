//! Runs trained under other settings: what changed, and moving their old files aside.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Stamp, result_path, run_dir};
use crate::checkpoint::Checkpoints;
use crate::{Provenance, RunConfig, RunFile, RunKey, RunResult, Spec, TrainError, changes};

/// Why run `key`'s files on disk do not belong to `stamp`'s settings, if they do not: its
/// result or its checkpoint was made under other settings or data, or cannot be read.
/// A run another worker is training is only compared, not verified.
pub(super) fn recorded_change(
    out: &Path,
    spec: &Spec,
    key: &RunKey,
    stamp: &Stamp,
    lease: Duration,
) -> Result<Option<Vec<String>>, TrainError> {
    let config = &spec.configurations[key.configuration].config;
    let describe =
        |old: &RunConfig, old_data: Option<&Provenance>| -> Result<Vec<String>, TrainError> {
            let mut out = changes(old, config)?;
            if let Some(p) = old_data
                && p.files != stamp.provenance.files
            {
                out.push(format!(
                    "data files: {} → {}",
                    describe_files(&p.files),
                    describe_files(&stamp.provenance.files)
                ));
            }
            if out.is_empty() {
                out.push("the fingerprint differs (another results format or data)".into());
            }
            Ok(out)
        };
    let result = result_path(out, &key.id);
    if result.exists() {
        return match RunResult::load(&result) {
            Err(e) => Ok(Some(vec![format!(
                "its result cannot be read: {}",
                crate::error::chain(&e)
            )])),
            Ok(r) => match &r.fingerprint {
                None => Ok(Some(vec![format!(
                    "recorded before fingerprints (results format {})",
                    r.format
                )])),
                Some(f) if *f == stamp.fingerprint => Ok(None),
                // trained as the spec says; only its evaluation is stale (re-evaluated)
                Some(f) if f.training == stamp.fingerprint.training => Ok(None),
                Some(_) => describe(&r.config, r.provenance.as_ref()).map(Some),
            },
        };
    }
    let dir = run_dir(out, &key.id);
    let ckpts = Checkpoints::new(dir.join("checkpoints"));
    let checkpoint = match ckpts.peek() {
        Err(e) => {
            return Ok(Some(vec![format!(
                "its checkpoint cannot be read: {}",
                crate::error::chain(&e)
            )]));
        }
        Ok(None) => return Ok(None),
        Ok(Some(c)) => c,
    };
    if checkpoint.state.fingerprint != stamp.fingerprint.training {
        return Ok(Some(match RunFile::load(&dir) {
            Ok(file) => describe(&file.config, None)?,
            Err(_) => vec![format!(
                "its checkpoint {} was trained with other settings",
                checkpoint.dir.display()
            )],
        }));
    }
    let busy = crate::claim::latest_claim(&dir)?
        .is_some_and(|(_, c)| c.live(crate::claim::now_ms(), lease));
    if !busy && let Err(e) = checkpoint.verify() {
        return Ok(Some(vec![format!(
            "its checkpoint is damaged: {}",
            crate::error::chain(&e)
        )]));
    }
    Ok(None)
}

/// `name (bytes, md5)` of each file, for a change list.
pub(super) fn describe_files(files: &[bnlab_data::FileDigest]) -> String {
    if files.is_empty() {
        return "none (generated)".into();
    }
    files
        .iter()
        .map(|f| format!("{} ({} bytes, md5 {})", f.name, f.bytes, f.md5))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Moves run `id`'s result and work directory to `superseded/<id>.<n>/`, the first free n.
pub(super) fn supersede(out: &Path, id: &str) -> Result<PathBuf, TrainError> {
    let base = out.join("superseded");
    let target = (1..)
        .map(|n| base.join(format!("{id}.{n}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| base.join(id));
    std::fs::create_dir_all(&target).map_err(TrainError::io(&target))?;
    let result = result_path(out, id);
    if result.exists() {
        let to = target.join("result.json");
        std::fs::rename(&result, &to).map_err(TrainError::io(&to))?;
    }
    let dir = run_dir(out, id);
    if dir.exists() {
        let to = target.join("run");
        std::fs::rename(&dir, &to).map_err(TrainError::io(&to))?;
    }
    Ok(target)
}
