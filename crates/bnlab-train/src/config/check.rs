//! What makes a run impossible: every check of a [`RunConfig`] before it trains, each with
//! the dotted key it concerns.

use bnlab_models::InputNormName;
use bnlab_norm::{SyncName, UnitName};

use crate::{OrderName, PrecisePolicy, RunConfig, ScalingName, Scheme, Split};

impl RunConfig {
    /// Every impossible combination, as (dotted key, message); empty when the run can start.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let t = &self.train;
        let n = t.micro_batch();
        if t.epochs == 0 {
            out.push(("train.epochs", "epochs must be at least 1".to_string()));
        }
        if t.batch_size == 0 || n == 0 || !t.batch_size.is_multiple_of(n) {
            out.push((
                "train.micro_batch_size",
                format!(
                    "micro_batch_size = {n} must be ≥ 1 and divide batch_size = {}",
                    t.batch_size
                ),
            ));
        } else if t.distributed.workers == 0 || !n.is_multiple_of(t.distributed.workers) {
            out.push((
                "train.distributed.workers",
                format!(
                    "workers = {} must be ≥ 1 and divide the forward batch of {n}",
                    t.distributed.workers
                ),
            ));
        }
        let d = &t.distributed;
        if d.norm == SyncName::Groups
            && !d
                .group_size
                .is_some_and(|g| g >= 1 && d.workers.is_multiple_of(g))
        {
            out.push((
                "train.distributed.group_size",
                format!(
                    "norm = \"groups\" needs a group_size that divides workers = {}",
                    d.workers
                ),
            ));
        }
        if d.timeout_secs == 0 {
            out.push((
                "train.distributed.timeout_secs",
                "timeout_secs must be at least 1".into(),
            ));
        }
        if let Some(p) = self.data.class_pattern
            && p.classes_per_batch * p.per_class != n
        {
            out.push((
                "data.class_pattern",
                format!(
                    "classes_per_batch × per_class = {} × {} must equal the forward batch of {n}",
                    p.classes_per_batch, p.per_class
                ),
            ));
        }
        if let Some(k) = t.freeze_at_epoch
            && (k == 0 || k >= t.epochs)
        {
            out.push((
                "train.freeze_at_epoch",
                format!(
                    "freeze_at_epoch = {k} must be in 1..{} (epochs = {})",
                    t.epochs, t.epochs
                ),
            ));
        }
        if let Err(e) = self.optimizer.validate() {
            out.push(("optimizer", e));
        }
        let v = self.data.validation;
        if !(0.0..1.0).contains(&v) {
            out.push((
                "data.validation",
                format!("validation must be in [0, 1), got {v}"),
            ));
        }
        if self.data.threads == 0 {
            out.push(("data.threads", "threads must be at least 1".into()));
        }
        if matches!(
            self.model.input_norm,
            Some(InputNormName::Fixed | InputNormName::Offline)
        ) && self.scaling() != ScalingName::Raw
        {
            out.push((
                "data.scaling",
                "fixed and offline input normalization expect raw 0–255 pixels: set scaling = \"raw\""
                    .into(),
            ));
        }
        let e = &self.eval;
        if e.batch_size == 0 {
            out.push(("eval.batch_size", "batch_size must be at least 1".into()));
        }
        let uses = |s: Scheme| e.schemes.contains(&s);
        if uses(Scheme::Precise)
            || t.precise_every_epoch
            || t.freeze_at_epoch.is_some()
            || !e.adapt.is_empty()
        {
            for (key, values) in [
                ("eval.precise_samples", e.precise_samples.values()),
                ("eval.precise_batch", e.precise_batch.values()),
            ] {
                if values.is_empty() || values.contains(&0) {
                    out.push((
                        key,
                        "every value must be ≥ 1, and at least one given".into(),
                    ));
                }
            }
            if e.precise_policy.values().is_empty() {
                out.push(("eval.precise_policy", "give at least one policy".into()));
            }
        }
        if e.splits.is_empty() {
            out.push(("eval.splits", "give at least one split".into()));
        }
        if e.splits.contains(&Split::Validation) && self.data.validation <= 0.0 {
            out.push((
                "eval.splits",
                "the validation split needs validation images: set data.validation > 0".into(),
            ));
        }
        if uses(Scheme::Minibatch) && e.minibatch_sizes.is_empty() {
            out.push((
                "eval.minibatch_sizes",
                "the minibatch scheme needs minibatch_sizes".into(),
            ));
        }
        if uses(Scheme::Alpha) {
            if e.alphas.is_empty() {
                out.push(("eval.alphas", "the alpha scheme needs alphas".into()));
            }
            if let Some(a) = e.alphas.iter().find(|a| !(0.0..=1.0).contains(*a)) {
                out.push(("eval.alphas", format!("α = {a} is outside [0, 1]")));
            }
        }
        for a in &e.adapt {
            if !(1..=5).contains(&a.severity) {
                out.push((
                    "eval.adapt",
                    format!("severity {} is outside 1..=5", a.severity),
                ));
            }
        }
        let known_model = bnlab_models::model_names().contains(&self.model.name.as_str());
        if let (true, Some((channels, classes))) = (known_model, self.input_channels_and_classes())
        {
            out.extend(self.batch_problems(channels, classes));
        }
        if !known_model {
            out.push((
                "model.name",
                format!(
                    "unknown model `{}`; `bnlab models` lists them",
                    self.model.name
                ),
            ));
        }
        let dataset = self.data.dataset.as_str();
        if dataset == crate::IMAGE_FOLDER {
            // a root that is not there yet is the data's problem, found when it is read: a
            // spec for a machine with the data validates anywhere
            if self.data.root.is_none() {
                out.push((
                    "data.dataset",
                    "`image-folder` needs `root`, the folder holding train/ and test/".into(),
                ));
            }
            if self.data.image_size == 0 {
                out.push(("data.image_size", "image_size must be at least 1".into()));
            }
        } else if dataset != "synthetic" && bnlab_data::DatasetId::from_name(dataset).is_err() {
            out.push((
                "data.dataset",
                format!(
                    "unknown dataset `{dataset}`; `bnlab data list` lists them, or use \"synthetic\" or \"{}\"",
                    crate::IMAGE_FOLDER
                ),
            ));
        }
        if self.model.norm.decay.is_some() && self.model.norm.momentum != 0.1 {
            out.push((
                "model.norm.decay",
                "set the EMA as PyTorch's momentum or as Keras' decay, not both".into(),
            ));
        }
        out.extend(self.data_problems());
        if self.data.train_per_class == Some(0) {
            out.push((
                "data.train_per_class",
                "train_per_class must be at least 1".into(),
            ));
        }
        out
    }

    /// The problems of the data set's domains and batch orders.
    fn data_problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let d = &self.data;
        let names = d.domain_names();
        for (i, part) in d.domains.iter().enumerate() {
            if part.name.is_empty() || part.name.contains('/') || names[..i].contains(&part.name) {
                out.push((
                    "data.domains",
                    format!(
                        "domain names must be unique, non-empty and without `/`: `{}`",
                        part.name
                    ),
                ));
            }
            if let Some(c) = part.corruption
                && !(1..=5).contains(&c.severity)
            {
                out.push((
                    "data.domains",
                    format!("severity {} is outside 1..=5", c.severity),
                ));
            }
            if let Some(name) = &part.dataset
                && name != "synthetic"
                && name != crate::IMAGE_FOLDER
                && bnlab_data::DatasetId::from_name(name).is_err()
            {
                out.push((
                    "data.domains",
                    format!("unknown dataset `{name}` in domain `{}`", part.name),
                ));
            }
        }
        if let Some(wanted) = &d.train_domains {
            for name in wanted {
                if !names.contains(name) {
                    out.push((
                        "data.train_domains",
                        format!("no domain `{name}`; the domains are [{}]", names.join(", ")),
                    ));
                }
            }
            if wanted.is_empty() {
                out.push(("data.train_domains", "name at least one domain".into()));
            }
        }
        if self.model.norm.domains.is_some() && names.len() < 2 {
            out.push((
                "model.norm.domains",
                "per-domain settings need a data set of two or more [[data.domains]]".into(),
            ));
        }
        let ghost = self.model.norm.ghost_size;
        let order = d.order();
        if matches!(order, OrderName::PerDomain | OrderName::MixedDomain) && names.len() < 2 {
            out.push((
                "data.order",
                "domain orders need two or more [[data.domains]]".into(),
            ));
        }
        if let Err(e) = d.batch_order(order, ghost) {
            out.push(("data.order", e));
        }
        // a class pattern fixes the batch: k · m examples
        let pattern = d.class_pattern.map(|p| p.classes_per_batch * p.per_class);
        let patterned =
            |o: OrderName| matches!(o, OrderName::ClassPattern | OrderName::ClassDistinctGhosts);
        if let Some(o) = self.eval.minibatch_order {
            if let Err(e) = d.batch_order(o, ghost) {
                out.push(("eval.minibatch_order", e));
            }
            if let (true, Some(km)) = (patterned(o), pattern) {
                let one_worker = self.train.micro_batch() / self.train.distributed.workers.max(1);
                let sizes = self.eval.minibatch_sizes.iter().copied();
                let per_epoch = self.train.minibatch_every_epoch.then_some(one_worker);
                if let Some(b) = sizes.chain(per_epoch).find(|&b| b != km) {
                    out.push((
                        "eval.minibatch_order",
                        format!("patterned mini-batches hold k·m = {km} examples, not {b}"),
                    ));
                }
            }
        }
        if self.train.minibatch_every_epoch && d.validation <= 0.0 {
            out.push((
                "train.minibatch_every_epoch",
                "mini-batch validation needs validation images: set data.validation > 0".into(),
            ));
        }
        out
    }

    /// (input channels, classes) of the spec's data set; `None` for an unknown name.
    fn input_channels_and_classes(&self) -> Option<(usize, usize)> {
        if self.data.dataset == crate::IMAGE_FOLDER {
            let root = self.data.root.as_ref()?.join("train");
            let classes = std::fs::read_dir(root)
                .ok()?
                .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
                .count();
            return Some((3, classes));
        }
        if self.data.dataset == "synthetic" {
            let s = self.data.synthetic.clone().unwrap_or_default();
            return Some((s.shape[0], s.classes));
        }
        let id = bnlab_data::DatasetId::from_name(&self.data.dataset).ok()?;
        Some((id.channels(), id.classes()))
    }

    /// The batch problems at every normalization site of the network, by the layer's own rule
    /// ([`bnlab_norm::check_batch`]) at each site's own channel count: the forward batch of one
    /// worker, PreciseBN's batches (whole at the final evaluation, a worker's shard during
    /// training) and the mini-batch evaluation sizes. The first failing site is named.
    fn batch_problems(&self, channels: usize, classes: usize) -> Vec<(&'static str, String)> {
        let options = match self.model_options(classes, channels) {
            Ok(options) => options,
            Err(e) => return vec![("model.overrides", crate::error::chain(&e))],
        };
        let sites = match bnlab_models::norm_site_configs(&self.model.name, &options) {
            Ok(sites) => sites,
            Err(e) => {
                let message = crate::error::chain(&e);
                let key = if message.contains("norm override") {
                    "model.overrides"
                } else if matches!(e, bnlab_models::ModelError::Norm { .. }) {
                    "model.norm"
                } else {
                    "model.name"
                };
                return vec![(key, message)];
            }
        };
        let (t, e) = (&self.train, &self.eval);
        let workers = t.distributed.workers.max(1);
        let n = t.micro_batch();
        let training_key = match self.model.norm.unit {
            UnitName::BatchGroup => "model.norm.example_groups",
            _ if self.model.norm.ghost_size.is_some() => "model.norm.ghost_size",
            _ => "train.batch_size",
        };
        // (key, batch size, whether it is normalized whole, what the batch is)
        let mut batches: Vec<(&'static str, usize, bool, &'static str)> = Vec::new();
        if n > 0 && n.is_multiple_of(workers) {
            batches.push((
                training_key,
                n / workers,
                false,
                "the forward batch of one worker",
            ));
        }
        let uses = |s: Scheme| e.schemes.contains(&s);
        // PreciseBN draws exactly N images: full batches of B and the rest, N mod B
        let mut precise = Vec::new();
        if uses(Scheme::Precise) {
            precise.extend(e.precise_settings().into_iter().map(|(_, s)| (s, 1)));
        }
        if !e.adapt.is_empty() {
            precise.push((e.primary_precise(), 1));
        }
        if t.precise_every_epoch || t.freeze_at_epoch.is_some() {
            precise.push((e.primary_precise(), workers));
        }
        for (s, workers) in precise {
            let whole = s.policy == PrecisePolicy::WholeBatch;
            let last = s.samples % s.batch.max(1);
            let what = if workers > 1 {
                "one worker's shard of a PreciseBN batch during training"
            } else {
                "a PreciseBN batch"
            };
            for size in shard_sizes(s.batch, workers) {
                batches.push(("eval.precise_batch", size, whole, what));
            }
            for size in shard_sizes(last, workers) {
                batches.push((
                    "eval.precise_samples",
                    size,
                    whole,
                    "(a shard of) the last PreciseBN batch, N mod B",
                ));
            }
        }
        if uses(Scheme::Minibatch) {
            for &b in &e.minibatch_sizes {
                batches.push((
                    "eval.minibatch_sizes",
                    b,
                    false,
                    "a mini-batch evaluation batch",
                ));
            }
        }
        batches.dedup();
        batches
            .into_iter()
            .filter_map(|(key, size, whole, what)| {
                sites.iter().find_map(|(site, config)| {
                    let config = match whole {
                        true => config
                            .clone()
                            .with_batch(bnlab_norm::BatchPolicy::default()),
                        false => config.clone(),
                    };
                    bnlab_norm::check_batch(&config, size)
                        .err()
                        .map(|err| (key, format!("{err} ({what}, at site `{site}`)")))
                })
            })
            .collect()
    }
}

/// The distinct non-zero shard sizes of a batch of `n` over `workers` (as [`crate::shard`]
/// cuts it).
fn shard_sizes(n: usize, workers: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..workers)
        .map(|rank| crate::shard(n, rank, workers).len())
        .filter(|&s| s > 0)
        .collect();
    sizes.dedup();
    sizes
}
