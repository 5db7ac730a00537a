//! The TOML experiment spec: one base [`RunConfig`], named variants, a grid over any field,
//! the seeds and the baseline. Every unknown key and impossible combination is an error with
//! its line number, before any training starts.
//!
//! ```toml
//! name = "gamma"
//! seeds = 3                 # run seeds 1..=3, each through MD5 (Davis & Frank §4.2)
//! baseline = "base"         # the configuration the report tests the others against
//!
//! [data]
//! dataset = "fashion-mnist-subset" # a catalogue name, "synthetic", or "image-folder" with
//! # root = "path"           # root/train/<class>/*.png and root/test/… (CUB-200, Cars, Caltech)
//! # image_size = 256        # image folders: resized to this square before augmentation
//! validation = 0.1          # share of each class held out (Davis & Frank §4.1)
//! # split_seed = 0          # the validation split's (and the subset's) seed
//! # train_per_class = 500   # a seeded class-balanced training subset
//! augment = "flip"          # "none", "flip", "pad-crop-flip" (pad), "crop-flip" (crop)
//! # scaling = "unit"        # "raw" 0–255 (default with input_norm), "unit", "fixed"
//! # order = "shuffle"       # training batches: "shuffle", "class-pattern",
//! #                         # "class-distinct-ghosts" (Wu & Johnson Fig. 8 and its remedy),
//! #                         # "per-domain", "mixed-domain" (§5.2)
//! # train_domains = ["clean"] # the domains that train; evaluation reads all of them
//! # [data.class_pattern]    # k classes × m examples per batch (Wu & Johnson §6.1)
//! # classes_per_batch = 8
//! # per_class = 16
//! # [[data.domains]]        # parts with a domain id each (Wu & Johnson §5.2, Table 5)
//! # name = "clean"
//! # [[data.domains]]
//! # name = "inverted"
//! # transform = "invert"    # or "rotate-channels"; dataset = "mnist" for another data set
//! # corruption = { corruption = "contrast", severity = 5 } # every image corrupted
//!
//! [model]
//! name = "resnet20"         # `bnlab models` lists them; resnet8 is the smallest
//! input_norm = "bn"         # "bn" (γ̂ = 0.58·γ), "fixed", "offline" (Davis & Frank §3.4)
//! # width = 1.0             # width multiplier (ResNets, MobileNetV2, VGG)
//! # zero_init_residual = false
//! # conv_kernel = "auto"    # or "burn", Burn's own convolution (the reference)
//! [model.norm]
//! # unit = "batch"          # "group", "layer", "instance", "batch-group" (Summers &
//! #                         # Dinneen §3.4), "none" (AffineLayer with affine = "standard")
//! # groups = 32             # channel groups of group and batch-group
//! # example_groups = 1      # example groups of batch-group
//! # ghost_size = 32         # Ghost BN (Summers & Dinneen §3.2); ghost_split = "strided"
//! # allow_remainder = false # a partial last ghost batch
//! # running = "ema"         # "cumulative", "off"; momentum = 0.1 (PyTorch's convention)
//! # variance = "unbiased"   # how the running variance is stored, or "biased"
//! # affine = "standard"     # "off" (BN-minus, Peerthum & Stamp), "a1", "a2", "rbn", "iebn",
//! #                         # "rbn-minus", "iebn-minus" (Davis & Frank §4.5)
//! # gamma = 1.0             # initial γ (Davis & Frank: < 1); beta = 0.0
//! # epsilon = 1e-5
//! # kernel = "auto"         # or "composed", the reference; check_finite = false
//! # [model.norm.domains]    # with [[data.domains]]: "shared" or "per-domain" each
//! # train_stats = "per-domain"
//! # population_stats = "per-domain"
//! # affine = "shared"
//! # [model.overrides."stages.2.*"] # per-site settings on top of [model.norm]
//! # unit = "group"
//! # groups = 8
//!
//! [optimizer]
//! # kind = "sgd"            # or "adam" (beta1, beta2, adam_epsilon)
//! lr = 0.1
//! # momentum = 0.9          # no dampening; nesterov = false
//! weight_decay = 1e-4       # on conv and linear weights
//! # norm_decay = "off"      # "toward-zero", "toward-one": decay γ/β (Summers & Dinneen §3.3)
//! # norm_weight_decay = 5e-4 # λ of that decay alone (default: weight_decay)
//! # gamma_lr_divisor = 1.0  # c: γ learns at α/c (Davis & Frank: 100)
//! # input_norm_lr_divisor = 100.0
//!
//! # [schedule]              # kind = "cosine" (default), "constant", or "step" with
//! # kind = "step"           # milestones = [30, 60] and factor = 0.1
//!
//! [train]
//! epochs = 2
//! batch_size = 128          # the SGD batch
//! # micro_batch_size = 32   # the forward (normalization) batch, gradients accumulated
//! # warmup_epochs = 0
//! # freeze_at_epoch = 9     # FrozenBN from here (Wu & Johnson §4.3)
//! # evaluate = "best-validation" # the checkpoint evaluated, or "last" (the final model)
//! # precise_every_epoch = false # per-epoch validation with PreciseBN too (Fig. 3–4)
//! # minibatch_every_epoch = false # and with mini-batch statistics (Fig. 8)
//! # device = "flex"         # or "vulkan", "vulkan:1", "vulkan-cpu", "cuda" (--device wins)
//! # precision = "f32"       # activations in "f16" or "bf16", statistics and weights in f32
//! # [train.distributed]     # workers = 8, norm = "all" (SyncBN), shuffle = true (Shuffle BN)
//!
//! [eval]
//! schemes = ["population", "precise", "alpha"] # also "minibatch", "train-minibatch"
//! # batch_size = 256
//! precise_samples = [2048, 512] # PreciseBN's N; a list is evaluated on the same model
//! precise_batch = 128       # PreciseBN's B, one or a list (Wu & Johnson Tables 1–2)
//! # precise_policy = ["as-trained", "whole-batch"] # ghost batches, or whole PreciseBN batches
//! # estimator = "pooled"    # or "mean-of-variances" (Wu & Johnson A.2, eq. 2 or 3)
//! # exact = false           # layer by layer (A.3)
//! # stats_augment = true    # PreciseBN / Adaptive BN statistics with training augmentation
//! alphas = [0.0, 0.1, 0.3]  # example weighing at inference (Summers & Dinneen §3.1)
//! # minibatch_sizes = [128]
//! # minibatch_order = "class-pattern" # patterned evaluation batches (Fig. 8)
//! # adapt = [{ corruption = "contrast", severity = 3, reverse = true }] # Adaptive BN (Table 4)
//! splits = ["validation", "test"] # choose α or N/B on validation, report on test
//!
//! [[variant]]
//! name = "base"
//! [[variant]]
//! name = "gamma0.1-c100"
//! "model.norm.gamma" = 0.1
//! "optimizer.gamma_lr_divisor" = 100.0
//!
//! [grid]
//! "optimizer.lr" = [0.1, 0.01]
//!
//! # what a paper expects, for the report's verdict (reproduced, reversed, not reproduced,
//! # underpowered): a − b paired by run, in `metric` (accuracy by default)
//! [[claim]]
//! name = "gamma-gain"
//! paper = "Davis & Frank Table 1"
//! a = "gamma0.1-c100,lr=0.1" # configurations, as named in run ids
//! b = "base,lr=0.1"
//! scheme = "population"     # or a_scheme / b_scheme: scheme against scheme in the same runs
//!                           # (alpha@val: α chosen on validation); c, d (and c_scheme,
//!                           # d_scheme): (a − b) − (c − d)
//! expect = "greater"        # "less", or "equivalent" with `margin = 0.5`
//! effect = 1.0              # the paper's Δ (metric units): power for it separates the nulls
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::{
    DataConfig, EvalConfig, ModelConfig, OptimizerConfig, RunConfig, Schedule, TrainConfig,
    TrainError, run_seed,
};

/// Which seeds a spec runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Seeds {
    /// Runs 1..=n.
    Count(u32),
    /// These run indices.
    List(Vec<u32>),
}

/// The spec file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default = "default_name")]
    name: String,
    seeds: Seeds,
    #[serde(default)]
    baseline: Option<String>,
    data: DataConfig,
    model: ModelConfig,
    #[serde(default)]
    optimizer: OptimizerConfig,
    #[serde(default = "default_schedule")]
    schedule: Schedule,
    train: TrainConfig,
    #[serde(default)]
    eval: EvalConfig,
    #[serde(default)]
    variant: Vec<Table>,
    #[serde(default)]
    grid: Table,
    #[serde(default)]
    claim: Vec<crate::ClaimSpec>,
}

fn default_name() -> String {
    "sweep".into()
}
fn default_schedule() -> Schedule {
    Schedule::Cosine
}

/// One configuration of a sweep: its name, axes and settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    /// `variant` or `variant,key=value,…`: unique in the sweep, used in run ids.
    pub name: String,
    /// Axis → value: `variant` and each grid key (for report tables).
    pub axes: BTreeMap<String, String>,
    /// The settings.
    pub config: RunConfig,
}

/// A parsed, expanded and checked spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The sweep's name.
    pub name: String,
    /// The configurations (variants × grid points), in spec order.
    pub configurations: Vec<Configuration>,
    /// Run indices (1-based); the seed of index i is [`run_seed`]`(i)`.
    pub seeds: Vec<u32>,
    /// The configuration the others are compared with.
    pub baseline: Option<String>,
    /// What the papers expect of the results (`[[claim]]`), for the report's verdicts.
    pub claims: Vec<crate::ClaimSpec>,
}

/// One run of a sweep: a configuration at a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunKey {
    /// The configuration's position in [`Spec::configurations`].
    pub configuration: usize,
    /// The run index (1-based).
    pub index: u32,
    /// The MD5 seed of `index`.
    pub seed: u32,
    /// `<configuration name>-s<index>`, file-safe.
    pub id: String,
}

impl Spec {
    /// Runs every configuration on `device` (`bnlab run --device`: the command line wins over
    /// the spec's `[train] device`).
    pub fn set_device(&mut self, device: bnlab_norm::DeviceName) {
        for c in &mut self.configurations {
            c.config.train.device = device;
        }
    }

    /// Reads and checks the spec at `path`.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks spec `text`; errors name `file` and the line.
    pub fn parse(text: &str, file: &str) -> Result<Self, TrainError> {
        let err = |line: usize, message: String| TrainError::Spec {
            file: file.to_string(),
            line,
            message,
        };
        let spec: SpecFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_at(text, s.start));
            err(line, e.message().trim().to_string())
        })?;
        let base = RunConfig {
            data: spec.data,
            model: spec.model,
            optimizer: spec.optimizer,
            schedule: spec.schedule,
            train: spec.train,
            eval: spec.eval,
        };
        let base_value = Value::try_from(&base).map_err(|e| err(0, e.to_string()))?;

        let mut variants: Vec<(String, Vec<(String, Value)>)> = Vec::new();
        for table in &spec.variant {
            let name = match table.get("name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(err(
                        line_of(text, "[[variant]]"),
                        "every [[variant]] needs a name".into(),
                    ));
                }
            };
            if variants.iter().any(|(n, _)| *n == name) {
                return Err(err(
                    line_of(text, &name),
                    format!("variant `{name}` is defined twice"),
                ));
            }
            let mut sets = Vec::new();
            for (k, v) in table.iter().filter(|(k, _)| *k != "name") {
                flatten(k, v, &mut sets);
            }
            variants.push((name, sets));
        }
        if variants.is_empty() {
            variants.push(("base".into(), Vec::new()));
        }
        let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
        for (k, v) in &spec.grid {
            match v {
                Value::Array(values) if !values.is_empty() => {
                    axes.push((k.clone(), values.clone()))
                }
                _ => {
                    return Err(err(
                        line_of(text, k),
                        format!("grid key `{k}` needs a non-empty array of values"),
                    ));
                }
            }
        }

        let mut configurations = Vec::new();
        for (variant, sets) in &variants {
            for point in grid_points(&axes) {
                let mut value = base_value.clone();
                let mut name = variant.clone();
                let mut axis_values = BTreeMap::from([("variant".to_string(), variant.clone())]);
                for (k, v) in sets.iter().chain(point.iter()) {
                    set_path(&mut value, k)
                        .map(|slot| *slot = v.clone())
                        .ok_or_else(|| {
                            err(line_of(text, k), format!("`{k}` does not name a setting"))
                        })?;
                }
                for (k, v) in &point {
                    let shown = show(v);
                    name.push_str(&format!(",{}={shown}", k.rsplit('.').next().unwrap_or(k)));
                    axis_values.insert(k.clone(), shown);
                }
                let config: RunConfig = value.try_into().map_err(|e: toml::de::Error| {
                    let key = sets
                        .iter()
                        .chain(point.iter())
                        .map(|(k, _)| k.as_str())
                        .find(|k| e.message().contains(k.rsplit('.').next().unwrap_or(k)))
                        .unwrap_or(variant);
                    err(
                        line_of(text, key),
                        format!("{variant}: {}", e.message().trim()),
                    )
                })?;
                if let Some((key, message)) = config.problems().into_iter().next() {
                    let overridden = sets
                        .iter()
                        .chain(point.iter())
                        .find(|(k, _)| k.starts_with(key) || key.starts_with(k.as_str()))
                        .map(|(k, _)| k.as_str());
                    let line = line_of(text, overridden.unwrap_or(key));
                    return Err(err(line, format!("configuration `{name}`: {message}")));
                }
                configurations.push(Configuration {
                    name,
                    axes: axis_values,
                    config,
                });
            }
        }

        check_ids(&configurations).map_err(|(variant, m)| err(line_of(text, &variant), m))?;
        let seeds = match spec.seeds {
            Seeds::Count(n) if n as usize > MAX_SEEDS => {
                return Err(err(
                    line_of(text, "seeds"),
                    format!("seeds = {n}: a sweep runs at most {MAX_SEEDS} seeds"),
                ));
            }
            Seeds::List(list) if list.len() > MAX_SEEDS => {
                return Err(err(
                    line_of(text, "seeds"),
                    format!(
                        "{} seeds listed: a sweep runs at most {MAX_SEEDS}",
                        list.len()
                    ),
                ));
            }
            Seeds::Count(n) => (1..=n).collect(),
            Seeds::List(list) => list,
        };
        if seeds.is_empty() || seeds.contains(&0) {
            return Err(err(
                line_of(text, "seeds"),
                "seeds must be a count ≥ 1 or a list of run indices ≥ 1".into(),
            ));
        }
        let mut sorted = seeds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != seeds.len() {
            return Err(err(line_of(text, "seeds"), "seeds repeat an index".into()));
        }
        if let Some(b) = &spec.baseline
            && !configurations
                .iter()
                .any(|c| c.axes.get("variant") == Some(b) || &c.name == b)
        {
            return Err(err(
                line_of(text, "baseline"),
                format!("baseline `{b}` is not a variant or configuration of this spec"),
            ));
        }
        let names: Vec<String> = configurations.iter().map(|c| c.name.clone()).collect();
        for claim in &spec.claim {
            claim
                .check(&names)
                .map_err(|why| err(line_of(text, &format!("\"{}\"", claim.name)), why))?;
        }
        Ok(Spec {
            name: spec.name,
            configurations,
            seeds,
            baseline: spec.baseline,
            claims: spec.claim,
        })
    }

    /// Every run: seeds × configurations, seed-major, so that a sweep stopped part-way has
    /// every configuration at the same seeds (paired comparisons over all arms), not some
    /// configurations finished and others not started.
    pub fn runs(&self) -> Vec<RunKey> {
        let mut out = Vec::new();
        for &index in &self.seeds {
            for (c, conf) in self.configurations.iter().enumerate() {
                out.push(RunKey {
                    configuration: c,
                    index,
                    seed: run_seed(index),
                    id: run_id(&conf.name, index),
                });
            }
        }
        out
    }
}

/// The most seeds one sweep runs (a guard against a typo that would exhaust memory).
pub const MAX_SEEDS: usize = 10_000;

/// The id of run `index` of configuration `name`: `<file-safe name>-s<index>`, the name of
/// its result file and work directory.
pub fn run_id(name: &str, index: u32) -> String {
    format!("{}-s{index}", file_safe(name))
}

/// Refuses configurations whose run ids would share a file: equal after [`file_safe`], or
/// equal but for letter case (one file on a case-insensitive file system). The error carries
/// the second configuration's variant (for its line) and the message.
fn check_ids(configurations: &[Configuration]) -> Result<(), (String, String)> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for c in configurations {
        let key = file_safe(&c.name).to_lowercase();
        if let Some(other) = seen.insert(key, &c.name) {
            let variant = c.axes.get("variant").cloned().unwrap_or_default();
            return Err((
                variant,
                if other == c.name {
                    format!(
                        "configuration `{other}` appears twice (a grid value or variant repeats)"
                    )
                } else {
                    format!(
                        "configurations `{other}` and `{}` would share run ids and result \
                     files (names are made file-safe, and letter case does not count); \
                     rename one",
                        c.name
                    )
                },
            ));
        }
    }
    Ok(())
}

/// `name` with every character outside `[A-Za-z0-9._=+-]` replaced by `_`.
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._=+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A grid value as it appears in names.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every combination of the axes' values (one empty point without axes).
fn grid_points(axes: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value)>> {
    let mut points = vec![Vec::new()];
    for (key, values) in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((key.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    points
}

/// Leaves of a (possibly nested) variant table as dotted keys.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        v => out.push((prefix.to_string(), v.clone())),
    }
}

/// The slot at dotted `path` inside `root`, creating the leaf (not the tables above it).
fn set_path<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop()?;
    let mut here = root;
    for p in parts {
        let table = here.as_table_mut()?;
        if !table.contains_key(p) {
            // an optional section left out of the base, e.g. `data.synthetic`
            table.insert(p.to_string(), Value::Table(Table::new()));
        }
        here = table.get_mut(p)?;
    }
    let table = here.as_table_mut()?;
    Some(
        table
            .entry(last.to_string())
            .or_insert(Value::Boolean(false)),
    )
}

/// The 1-based line of byte `offset`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `key` (a dotted key) is written, or 0: a quoted dotted key (variants,
/// grid), else `last = …` inside the `[parent]` section, else any mention.
fn line_of(text: &str, key: &str) -> usize {
    let (parent, last) = key.rsplit_once('.').unwrap_or(("", key));
    let quoted = format!("\"{key}\"");
    let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
    let assigns = |l: &str, k: &str| l.starts_with(k) && l[k.len()..].trim_start().starts_with('=');
    let in_section = || {
        let header = format!("[{parent}]");
        let start = if parent.is_empty() {
            0
        } else {
            lines.iter().position(|l| l.starts_with(&header))? + 1
        };
        lines[start..]
            .iter()
            .take_while(|l| parent.is_empty() || !l.starts_with('['))
            .position(|l| assigns(l, last))
            .map(|i| start + i)
    };
    lines
        .iter()
        .position(|l| l.starts_with(&quoted))
        .or_else(|| lines.iter().position(|l| assigns(l, key)))
        .or_else(in_section)
        .or_else(|| lines.iter().position(|l| l.contains(key)))
        .or_else(|| {
            lines
                .iter()
                .position(|l| l.starts_with(&format!("[{key}]")))
        })
        .map_or(0, |i| i + 1)
}
