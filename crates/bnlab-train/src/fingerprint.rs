//! What ties a result to the configuration that produced it: the [`Fingerprint`] (a hash of
//! the canonical settings, the bytes of the data and the results format; the same for every
//! seed of a configuration, since a run's seed follows from its index, which is in its id)
//! and its [`Provenance`] (where the data came from, and which bnlab read it).
//!
//! Settings that cannot change a result (loader threads, the data folder's path, a
//! collective's timeout) are left out, so moving the data or using more threads keeps the
//! fingerprint; of the device, only its kind counts. A setting added later keeps old
//! fingerprints only if it is skipped when it has its default value; otherwise adding it must
//! bump [`RESULT_FORMAT`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use bnlab_data::{DatasetId, FileDigest, Part};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DataConfig, RESULT_FORMAT, RunConfig, TrainError};

/// Dotted settings that never change a result.
const IGNORED: [&str; 3] = [
    "data.threads",
    "data.root",
    "train.distributed.timeout_secs",
];

/// Dotted settings used only after training, by the final evaluation: a change in them
/// alone leaves the training fingerprint (and the checkpoints) valid.
const EVALUATION_ONLY: [&str; 5] = [
    "eval.schemes",
    "eval.minibatch_sizes",
    "eval.alphas",
    "eval.adapt",
    "eval.splits",
];

/// PreciseBN settings that may be lists: training (per-epoch PreciseBN, FrozenBN) uses only
/// their first value, so the training fingerprint holds that value alone.
const FIRST_FOR_TRAINING: [&str; 3] = ["precise_samples", "precise_batch", "precise_policy"];

/// The hashes that identify a run: one over what training depends on, one over everything
/// the result depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// MD5 of the canonical training settings, data files and format.
    pub training: String,
    /// MD5 of the same with the evaluation-only settings too.
    pub result: String,
}

/// Where a run's data came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The data folder that was read (none for generated data).
    pub folder: Option<PathBuf>,
    /// Every file read, with its size and MD5.
    pub files: Vec<FileDigest>,
    /// The bnlab version that trained the run.
    pub bnlab: String,
}

/// The catalogue data set of `config` and the folder it is read from: the spec's `root`,
/// else the first place the catalog finds it (none for generated data and image folders).
pub fn data_folder(config: &DataConfig) -> Result<Option<(DatasetId, PathBuf)>, TrainError> {
    if config.dataset == "synthetic" || config.dataset == crate::IMAGE_FOLDER {
        return Ok(None);
    }
    let id = DatasetId::from_name(&config.dataset)?;
    let dir = match &config.root {
        Some(dir) => dir.clone(),
        None => id.locate()?,
    };
    Ok(Some((id, dir)))
}

impl Provenance {
    /// Finds and digests every file `config` reads.
    pub fn of(config: &DataConfig) -> Result<Self, TrainError> {
        if config.dataset == crate::IMAGE_FOLDER {
            return Self::of_image_folder(config);
        }
        let (folder, mut files) = match data_folder(config)? {
            None => (None, Vec::new()),
            Some((id, dir)) => (Some(dir.clone()), catalogue_files(id, &dir)?),
        };
        // domains drawn from other data sets
        for part in &config.domains {
            if let Some(name) = &part.dataset {
                let other = DataConfig {
                    dataset: name.clone(),
                    root: part.root.clone(),
                    domains: Vec::new(),
                    ..config.clone()
                };
                files.extend(Self::of(&other)?.files);
            }
        }
        Ok(Self {
            folder,
            files,
            bnlab: env!("CARGO_PKG_VERSION").into(),
        })
    }
}

/// The name, size and MD5 of every file of catalogue data set `id` in `dir`.
fn catalogue_files(id: DatasetId, dir: &std::path::Path) -> Result<Vec<FileDigest>, TrainError> {
    let mut files = Vec::new();
    for part in [Part::Train, Part::Test] {
        for path in id.files(dir, part)? {
            files.push(FileDigest::of(&path)?);
        }
    }
    Ok(files)
}

impl Provenance {
    /// Every image of an image folder (`root/train`, `root/test`), named by its path under
    /// `root`.
    fn of_image_folder(config: &DataConfig) -> Result<Self, TrainError> {
        let root = config
            .root
            .clone()
            .ok_or_else(|| TrainError::Config(format!("`{}` needs `root`", crate::IMAGE_FOLDER)))?;
        let mut files = Vec::new();
        for part in ["train", "test"] {
            let folder = bnlab_data::ImageFolder::open(&root.join(part), config.image_size)?;
            for (path, _) in &folder.files {
                let mut digest = FileDigest::of(path)?;
                if let Ok(relative) = path.strip_prefix(&root) {
                    digest.name = relative.display().to_string();
                }
                files.push(digest);
            }
        }
        Ok(Self {
            folder: Some(root),
            files,
            bnlab: env!("CARGO_PKG_VERSION").into(),
        })
    }
}

impl Fingerprint {
    /// The fingerprint of runs of `config` on the data of `provenance`.
    pub fn of(config: &RunConfig, provenance: &Provenance) -> Result<Self, TrainError> {
        let settings = settings(config)?;
        let hash = |settings: &Value| {
            let whole = serde_json::json!({
                "format": RESULT_FORMAT,
                "data": provenance.files,
                "settings": settings,
            });
            bnlab_data::md5_hex(canonical(&whole).as_bytes())
        };
        let mut training = settings.clone();
        for key in EVALUATION_ONLY {
            remove(&mut training, key);
        }
        if let Some(eval) = training.get_mut("eval").and_then(Value::as_object_mut) {
            for key in FIRST_FOR_TRAINING {
                if let Some(Value::Array(values)) = eval.get(key).cloned() {
                    match values.into_iter().next() {
                        Some(first) => eval.insert(key.into(), first),
                        None => eval.remove(key),
                    };
                }
            }
            // the default policy is left out of settings written before policies existed
            if eval.get("precise_policy") == Some(&Value::String("as-trained".into())) {
                eval.remove("precise_policy");
            }
        }
        Ok(Self {
            training: hash(&training),
            result: hash(&settings),
        })
    }
}

/// The settings of `config` that can change a result, as JSON.
fn settings(config: &RunConfig) -> Result<Value, TrainError> {
    let mut value = serde_json::to_value(config)
        .map_err(|e| TrainError::Config(format!("the settings cannot be written as JSON: {e}")))?;
    for key in IGNORED {
        remove(&mut value, key);
    }
    // which card of a kind does not change a result (two shards may run on two GPUs)
    if let Some(device) = value.pointer_mut("/train/device") {
        *device = Value::String(config.train.device.kind().into());
    }
    Ok(value)
}

/// Every setting that differs between `old` and `new`, as `key: old → new` lines (the
/// settings that cannot change a result are not listed).
pub fn changes(old: &RunConfig, new: &RunConfig) -> Result<Vec<String>, TrainError> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves("", &settings(old)?, &mut a);
    leaves("", &settings(new)?, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let none = "(unset)".to_string();
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none));
            format!("{k}: {x} → {y}")
        })
        .collect())
}

/// Leaves of `value` as dotted key → JSON text.
fn leaves(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        v => {
            out.insert(prefix.to_string(), canonical(v));
        }
    }
}

/// Removes the dotted `key` from `value`, if present.
fn remove(value: &mut Value, key: &str) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut here = value;
    for p in parts {
        match here.get_mut(p) {
            Some(v) => here = v,
            None => return,
        }
    }
    if let Some(map) = here.as_object_mut() {
        map.remove(last);
    }
}

/// `value` as compact JSON with every object's keys sorted, whatever map type serde_json
/// was built with.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RunConfig {
        let spec = crate::Spec::parse(
            "seeds = 1\n[data]\ndataset = \"synthetic\"\n[model]\nname = \"plain-cnn\"\n[train]\nepochs = 1\nbatch_size = 8\n",
            "<spec>",
        )
        .unwrap();
        spec.configurations[0].config.clone()
    }

    fn none() -> Provenance {
        Provenance {
            folder: None,
            files: Vec::new(),
            bnlab: "0".into(),
        }
    }

    #[test]
    fn a_changed_setting_changes_the_fingerprint_and_is_listed() {
        let a = config();
        let mut b = a.clone();
        b.optimizer.lr *= 0.5;
        let (fa, fb) = (
            Fingerprint::of(&a, &none()).unwrap(),
            Fingerprint::of(&b, &none()).unwrap(),
        );
        assert_ne!(fa.training, fb.training);
        assert_ne!(fa.result, fb.result);
        assert_eq!(
            changes(&a, &b).unwrap(),
            vec![format!(
                "optimizer.lr: {} → {}",
                a.optimizer.lr, b.optimizer.lr
            )]
        );
        // the data bytes are part of it too
        let mut other = none();
        other.files.push(FileDigest {
            name: "x".into(),
            bytes: 1,
            md5: "00".into(),
        });
        assert_ne!(fa, Fingerprint::of(&a, &other).unwrap());
    }

    #[test]
    fn settings_that_cannot_change_a_result_keep_it() {
        let a = config();
        let mut b = a.clone();
        b.data.threads += 3;
        b.data.root = Some("/elsewhere".into());
        b.train.distributed.timeout_secs += 1;
        let mut p = none();
        p.folder = Some("/moved".into());
        p.bnlab = "9.9".into();
        assert_eq!(
            Fingerprint::of(&a, &none()).unwrap(),
            Fingerprint::of(&b, &p).unwrap()
        );
        assert!(changes(&a, &b).unwrap().is_empty());
    }

    #[test]
    fn an_evaluation_only_change_keeps_the_training_fingerprint() {
        let a = config();
        let mut b = a.clone();
        b.eval.alphas.push(0.25);
        let (fa, fb) = (
            Fingerprint::of(&a, &none()).unwrap(),
            Fingerprint::of(&b, &none()).unwrap(),
        );
        assert_eq!(fa.training, fb.training);
        assert_ne!(fa.result, fb.result);
        // an evaluation setting that validation uses during training is not evaluation-only
        let mut c = a.clone();
        c.eval.batch_size += 1;
        assert_ne!(fa.training, Fingerprint::of(&c, &none()).unwrap().training);
    }

    #[test]
    fn precise_lists_keep_the_training_fingerprint_of_their_first_value() {
        use crate::{OneOrMany, PrecisePolicy, Split};
        let a = config();
        let fa = Fingerprint::of(&a, &none()).unwrap();
        let (n, b) = (
            a.eval.precise_samples.values()[0],
            a.eval.precise_batch.values()[0],
        );
        let mut lists = a.clone();
        lists.eval.precise_samples = OneOrMany::Many(vec![n, 64, 256]);
        lists.eval.precise_batch = OneOrMany::Many(vec![b, 2]);
        lists.eval.precise_policy =
            OneOrMany::Many(vec![PrecisePolicy::AsTrained, PrecisePolicy::WholeBatch]);
        lists.eval.splits = vec![Split::Validation, Split::Test];
        let fl = Fingerprint::of(&lists, &none()).unwrap();
        assert_eq!(fa.training, fl.training);
        assert_ne!(fa.result, fl.result);
        // the first value is what training uses
        let mut first = a.clone();
        first.eval.precise_samples = OneOrMany::Many(vec![64, n]);
        assert_ne!(
            fa.training,
            Fingerprint::of(&first, &none()).unwrap().training
        );
        let mut whole = a.clone();
        whole.eval.precise_policy = OneOrMany::One(PrecisePolicy::WholeBatch);
        assert_ne!(
            fa.training,
            Fingerprint::of(&whole, &none()).unwrap().training
        );
        // a default written out is the same setting as one left out
        let mut explicit = a.clone();
        explicit.eval.precise_policy = OneOrMany::Many(vec![PrecisePolicy::AsTrained]);
        assert_eq!(
            fa.training,
            Fingerprint::of(&explicit, &none()).unwrap().training
        );
    }

    #[test]
    fn the_device_kind_and_the_precision_count_and_the_device_index_does_not() {
        use bnlab_norm::DeviceName;
        let flex = config();
        // the default is left out, so fingerprints made before devices existed still hold
        assert!(settings(&flex).unwrap()["train"].get("device").is_none());
        let on = |device| {
            let mut c = flex.clone();
            c.train.device = device;
            Fingerprint::of(&c, &none()).unwrap()
        };
        let fingerprint = Fingerprint::of(&flex, &none()).unwrap();
        assert_ne!(fingerprint, on(DeviceName::Vulkan(0)));
        assert_ne!(on(DeviceName::Vulkan(0)), on(DeviceName::VulkanCpu));
        assert_ne!(on(DeviceName::Vulkan(0)), on(DeviceName::Cuda(0)));
        assert_eq!(on(DeviceName::Vulkan(0)), on(DeviceName::Vulkan(1)));
        assert_eq!(on(DeviceName::Cuda(0)), on(DeviceName::Cuda(3)));
        assert_eq!(fingerprint, on(DeviceName::Flex));
        // so does the precision (f32, the default, is left out too)
        let mut half = flex.clone();
        half.train.precision = bnlab_norm::Precision::BF16;
        assert_ne!(fingerprint, Fingerprint::of(&half, &none()).unwrap());
        assert!(settings(&flex).unwrap()["train"].get("precision").is_none());
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = serde_json::json!({"b": {"z": 1, "a": [ {"y": 2, "x": 3} ]}, "a": "s"});
        assert_eq!(
            canonical(&v),
            r#"{"a":"s","b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }
}
