//! Epoch checkpoints of a run: the model, the optimizer state, the best model so far and the
//! loop state, written as a directory under a temporary name and renamed into place, so a run
//! killed at any moment resumes from its last complete epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bnlab_data::{FileDigest, write_atomic};
use bnlab_models::Network;
use burn::module::Module;
use serde::{Deserialize, Serialize};

use crate::{EpochRecord, Histogram, TrainError};

/// The loop state after an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// The training fingerprint of the settings this run was trained with (empty in
    /// checkpoints written before fingerprints).
    #[serde(default)]
    pub fingerprint: String,
    /// Epochs done.
    pub epochs_done: usize,
    /// Optimizer updates done.
    pub updates_done: usize,
    /// Metrics of every epoch done.
    pub history: Vec<EpochRecord>,
    /// The best epoch so far and its validation accuracy.
    pub best: Option<(usize, f64)>,
    /// Whether the norm layers are frozen (FrozenBN).
    pub frozen: bool,
    /// γ and β at initialization, by layer.
    pub init_affine: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
    /// γ/√(σ²+ε) at the first step, by layer.
    pub gradient_factors: BTreeMap<String, Vec<f64>>,
    /// Epoch-1 histograms, once epoch 1 is done.
    pub histograms: BTreeMap<String, Histogram>,
}

const STATE: &str = "state.json";
const MODEL: &str = "model.bpk";
const OPTIM: &str = "optim.bpk";
const BEST: &str = "best.bpk";
const PREFIX: &str = "epoch-";

/// The checkpoints of one run, under `dir`.
pub struct Checkpoints {
    dir: PathBuf,
}

/// A complete checkpoint on disk.
pub struct Checkpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// The loop state.
    pub state: LoopState,
}

impl Checkpoint {
    /// The model file.
    pub fn model(&self) -> PathBuf {
        self.dir.join(MODEL)
    }
    /// The optimizer-state file.
    pub fn optimizer(&self) -> PathBuf {
        self.dir.join(OPTIM)
    }
    /// The best model so far.
    pub fn best(&self) -> PathBuf {
        self.dir.join(BEST)
    }
    /// Checks every file of the checkpoint against its checksum.
    pub fn verify(&self) -> Result<(), TrainError> {
        for file in [self.model(), self.optimizer(), self.best()] {
            verify(&file)?;
        }
        Ok(())
    }
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> TrainError {
    TrainError::Corrupt {
        path: path.into(),
        why: why.to_string(),
    }
}

/// The checksum file beside `path`.
fn checksum_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".md5");
    PathBuf::from(p)
}

/// Writes the MD5 of `path` beside it, so a later load can tell a damaged file.
pub fn seal(path: &Path) -> Result<(), TrainError> {
    let digest = FileDigest::of(path)?;
    Ok(write_atomic(&checksum_path(path), digest.md5.as_bytes())?)
}

/// Checks `path` against the checksum [`seal`] wrote beside it.
pub fn verify(path: &Path) -> Result<(), TrainError> {
    let sum = checksum_path(path);
    let expected = std::fs::read_to_string(&sum).map_err(|e| {
        corrupt(
            path,
            format!("its checksum file {} cannot be read ({e})", sum.display()),
        )
    })?;
    let actual = FileDigest::of(path)?.md5;
    if expected.trim() != actual {
        return Err(corrupt(
            path,
            format!(
                "checksum mismatch: {} says {}, the file has {actual}; it was damaged or \
                 changed after it was written",
                sum.display(),
                expected.trim()
            ),
        ));
    }
    Ok(())
}

/// Saves `model` (its parameters and running statistics) to `path`, atomically, with its
/// checksum beside it.
pub fn save_model(model: &Network, path: &Path) -> Result<(), TrainError> {
    let tmp = bnlab_data::temp_path(path);
    model
        .clone()
        .save_file(&tmp)
        .map_err(|e| corrupt(path, format!("writing model: {e}")))?;
    let digest = FileDigest::of(&tmp)?;
    write_atomic(&checksum_path(path), digest.md5.as_bytes())?;
    std::fs::rename(&tmp, path).map_err(TrainError::io(path))
}

/// Loads parameters and running statistics from `path` into `model` (same architecture),
/// after checking the file against its checksum.
///
/// Files written before a norm layer's affine parameters had their own module (`x.gamma`
/// where it is now `x.affine.gamma`) are read with their keys renamed.
pub fn load_model(model: Network, path: &Path) -> Result<Network, TrainError> {
    verify(path)?;
    let first = match model.clone().try_load_file(path) {
        Ok(model) => return Ok(model),
        Err(e) => e,
    };
    load_renamed(model, path).map_err(|_| corrupt(path, format!("reading model: {first}")))
}

/// Loads a model file whose norm layers hold their affine parameters directly (the layout
/// before [`AffineParams`](bnlab_norm::AffineParams)); every tensor must find its place.
fn load_renamed(mut model: Network, path: &Path) -> Result<Network, String> {
    use burn::store::{BurnpackStore, ModuleSnapshot};
    let fields = bnlab_norm::AffineParams::FIELDS.join("|");
    let mut store = BurnpackStore::from_file(path)
        .with_remap_pattern(format!(r"^(.+)\.({fields})$"), "$1.affine.$2");
    let applied = model.load_from(&mut store).map_err(|e| e.to_string())?;
    if applied.missing.is_empty() && applied.unused.is_empty() && applied.errors.is_empty() {
        Ok(model)
    } else {
        Err(format!("{applied:?}"))
    }
}

impl Checkpoints {
    /// Checkpoints under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn epoch_dirs(&self) -> Vec<(usize, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(usize, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let epoch = name.strip_prefix(PREFIX)?.parse().ok()?;
                Some((epoch, e.path()))
            })
            .collect();
        out.sort();
        out
    }

    /// The latest complete checkpoint, read only: the sweep's look at what a run was trained
    /// with (only the run's owner cleans its directory). A checkpoint removed while it is
    /// read (its owner wrote a newer one) is looked up again.
    pub fn peek(&self) -> Result<Option<Checkpoint>, TrainError> {
        for _ in 0..3 {
            let Some((_, dir)) = self.epoch_dirs().pop() else {
                return Ok(None);
            };
            let path = dir.join(STATE);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let state = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
                    return Ok(Some(Checkpoint { dir, state }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(TrainError::Io { path, source: e }),
            }
        }
        Ok(None)
    }

    /// The latest complete checkpoint, if any.
    /// Temporary directories a killed process left are removed first.
    pub fn latest(&self) -> Result<Option<Checkpoint>, TrainError> {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    std::fs::remove_dir_all(e.path()).map_err(TrainError::io(e.path()))?;
                }
            }
        }
        let Some((_, dir)) = self.epoch_dirs().pop() else {
            return Ok(None);
        };
        let path = dir.join(STATE);
        let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
        let state = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
        Ok(Some(Checkpoint { dir, state }))
    }

    /// Writes the checkpoint after epoch `state.epochs_done`; `best` is the best model so far
    /// (a file to copy) or `None` when `model` itself is the best. Older checkpoints go.
    /// Returns the path of the best model in the new checkpoint.
    pub fn save(
        &self,
        state: &LoopState,
        model: &Network,
        optimizer: &crate::GroupedOptimizer,
        best: Option<&Path>,
    ) -> Result<PathBuf, TrainError> {
        let name = format!("{PREFIX}{:04}", state.epochs_done);
        let tmp = self.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
        save_model(model, &tmp.join(MODEL))?;
        optimizer.save(&tmp.join(OPTIM))?;
        seal(&tmp.join(OPTIM))?;
        match best {
            Some(file) => {
                verify(file)?;
                std::fs::copy(file, tmp.join(BEST)).map_err(TrainError::io(file))?;
                seal(&tmp.join(BEST))?;
            }
            None => save_model(model, &tmp.join(BEST))?,
        }
        let json = serde_json::to_vec_pretty(state).map_err(|e| corrupt(&tmp, e))?;
        write_atomic(&tmp.join(STATE), &json)?;
        let target = self.dir.join(&name);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(TrainError::io(&target))?;
        }
        std::fs::rename(&tmp, &target).map_err(TrainError::io(&target))?;
        for (epoch, dir) in self.epoch_dirs() {
            if epoch < state.epochs_done {
                std::fs::remove_dir_all(&dir).map_err(TrainError::io(&dir))?;
            }
        }
        Ok(target.join(BEST))
    }

    /// Removes every checkpoint and leftover temporary directory.
    pub fn clear(&self) -> Result<(), TrainError> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(TrainError::io(&self.dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::read_tensors;
    use bnlab_models::{InputNormConfig, ModelOptions, NormSpec, build};
    use bnlab_norm::{Affine, NormConfig};
    use burn::store::{BurnpackStore, ModuleAdapter, ModuleContext, ModuleSnapshot};
    use burn::tensor::Device;

    /// Writes keys as files did before `AffineParams`: `x.affine.gamma` → `x.gamma`.
    #[derive(Clone)]
    struct OldLayout;

    impl ModuleAdapter for OldLayout {
        fn adapt(
            &self,
            mut tensor: burn::store::burn_pack::Tensor,
            _ctx: ModuleContext<'_>,
        ) -> burn::store::burn_pack::Tensor {
            tensor.name = tensor.name.replace(".affine.", ".");
            tensor
        }

        fn clone_box(&self) -> Box<dyn ModuleAdapter> {
            Box::new(self.clone())
        }
    }

    fn net(gamma: f64, beta: f64) -> Network {
        let norm = NormConfig::new(1).with_affine(Affine::Standard {
            gamma_init: gamma,
            beta_init: beta,
        });
        let options = ModelOptions::new(10, 1)
            .with_norm(NormSpec::new(norm))
            .with_input_norm(Some(InputNormConfig::Bn));
        build("plain-cnn", &options, &Device::flex()).unwrap()
    }

    #[test]
    fn a_model_file_of_the_layout_before_affine_params_loads_with_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.bpk");
        let original = net(0.3, 0.7);
        let mut store = BurnpackStore::from_file(&path).with_to_adapter(OldLayout);
        original.save_into(&mut store).unwrap();
        seal(&path).unwrap();
        // the file holds the old keys, which a plain load refuses
        assert!(net(1.0, 0.0).try_load_file(&path).is_err());
        let loaded = load_model(net(1.0, 0.0), &path).unwrap();
        let (want, got) = (
            read_tensors(&original).unwrap(),
            read_tensors(&loaded).unwrap(),
        );
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!((&w.path, &w.values), (&g.path, &g.values));
        }
        assert!(
            want.iter()
                .any(|e| e.path.ends_with("affine.beta") && e.values[0] == 0.7)
        );
        assert!(want.iter().any(|e| e.path.ends_with("affine.input_gamma")));
    }
}
