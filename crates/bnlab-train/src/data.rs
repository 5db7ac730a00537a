//! The images of one run: training, validation and test parts, and loaders over them.

use std::sync::Arc;

use bnlab_data::{
    Augment, Batching, Corruption, Domains, EpochBatches, Holdout, ImageFolder, Loader,
    LoaderConfig, Part, Scaling, Source, Transformed, channel_stats, stratified_split, synthetic,
};

use crate::{DataConfig, OrderName, ScalingName, TrainError};

/// The `dataset` name of an image folder: `root/train/<class>/*` and `root/test/<class>/*`.
pub const IMAGE_FOLDER: &str = "image-folder";

/// The training and the test part of a data set.
type Parts = (Arc<dyn Source>, Arc<dyn Source>);

/// The (training, test) parts of the data set `dataset` (read from `root` when given):
/// catalogue data, a synthetic draw, or an image folder.
fn load_parts(
    config: &DataConfig,
    dataset: &str,
    root: Option<&std::path::PathBuf>,
) -> Result<Parts, TrainError> {
    Ok(match dataset {
        "synthetic" => {
            let s = config.synthetic.clone().unwrap_or_default();
            // one draw (the same class prototypes), then a per-class test split
            let per_class = s.train_per_class + s.test_per_class;
            let all = synthetic(s.classes, per_class, s.shape, s.difficulty, 1)?;
            let (train, test) = stratified_split(
                &all.labels(),
                s.classes,
                Holdout::PerClass(s.test_per_class),
                1,
            )?;
            (Arc::new(all.select(&train)), Arc::new(all.select(&test)))
        }
        IMAGE_FOLDER => {
            let root = root.ok_or_else(|| {
                TrainError::Config(
                    "`image-folder` needs `root`, the folder holding train/ and test/".into(),
                )
            })?;
            let open = |part: &str| ImageFolder::open(&root.join(part), config.image_size);
            (Arc::new(open("train")?), Arc::new(open("test")?))
        }
        name => {
            let id = bnlab_data::DatasetId::from_name(name)?;
            let dir = match root {
                Some(dir) => dir.clone(),
                None => id.locate()?,
            };
            (
                Arc::new(id.load_from(&dir, Part::Train)?),
                Arc::new(id.load_from(&dir, Part::Test)?),
            )
        }
    })
}

/// (training, validation) indices of one part of the training images with `labels`: its
/// seeded class-balanced subset (`train_per_class`), then the validation share.
fn split_part(
    config: &DataConfig,
    labels: &[usize],
    classes: usize,
) -> Result<(Vec<usize>, Vec<usize>), TrainError> {
    let candidates: Vec<usize> = match config.train_per_class {
        Some(k) => {
            let (_, mut subset) =
                stratified_split(labels, classes, Holdout::PerClass(k), config.split_seed)?;
            subset.sort_unstable();
            subset
        }
        None => (0..labels.len()).collect(),
    };
    if config.validation <= 0.0 {
        return Ok((candidates, Vec::new()));
    }
    let sub_labels: Vec<usize> = candidates.iter().map(|&i| labels[i]).collect();
    let (kept, held) = stratified_split(
        &sub_labels,
        classes,
        Holdout::Fraction(config.validation),
        config.split_seed,
    )?;
    let pick = |v: Vec<usize>| v.into_iter().map(|j| candidates[j]).collect();
    Ok((pick(kept), pick(held)))
}

/// A loader of one part of a run's data that gives every batch its examples' domain ids.
pub struct PartLoader {
    loader: Loader,
    domains: Option<Arc<Vec<usize>>>,
}

impl PartLoader {
    /// The batches of pass `pass` over the images `pool`.
    pub fn epoch(&self, pool: &[usize], pass: u64) -> Result<EpochBatches, TrainError> {
        let domains = self.domains.as_deref().map(|d| &d[..]);
        Ok(self.loader.epoch(pool, domains, pass)?)
    }
}

/// The data of a run: images in memory, or read as needed (image folders).
pub struct RunData {
    /// The training part (training and validation images).
    pub train: Arc<dyn Source>,
    /// The test part.
    pub test: Arc<dyn Source>,
    /// Indices of `train` used for training.
    pub train_pool: Vec<usize>,
    /// Indices of `train` held out for validation (empty without validation).
    pub val_pool: Vec<usize>,
    /// Every index of `test`.
    pub test_pool: Vec<usize>,
    /// The domain of every image of `train`, when the data set has domains.
    pub train_domains: Option<Arc<Vec<usize>>>,
    /// The domain of every image of `test`, when the data set has domains.
    pub test_domains: Option<Arc<Vec<usize>>>,
    /// Pixel scaling of every loader.
    pub scaling: Scaling,
    config: DataConfig,
}

impl RunData {
    /// Reads (or generates) the data set and its domains, takes the training subset
    /// (`train_per_class`) and splits off the validation images.
    pub fn load(config: &DataConfig, scaling: ScalingName) -> Result<Self, TrainError> {
        let base = load_parts(config, &config.dataset, config.root.as_ref())?;
        let (train, test, domains) = if config.domains.is_empty() {
            (base.0, base.1, None)
        } else {
            let mut train_parts = Vec::new();
            let mut test_parts = Vec::new();
            for part in &config.domains {
                let (train, test) = match &part.dataset {
                    Some(name) => load_parts(config, name, part.root.as_ref())?,
                    None => base.clone(),
                };
                let corruption = part
                    .corruption
                    .map(|c| Corruption::new(c.corruption, c.severity))
                    .transpose()?;
                let transformed = |s: Arc<dyn Source>| -> Arc<dyn Source> {
                    if part.transform.is_none() && corruption.is_none() {
                        s
                    } else {
                        Arc::new(Transformed::new(s, part.transform, corruption))
                    }
                };
                train_parts.push(transformed(train));
                test_parts.push(transformed(test));
            }
            let train = Domains::new(train_parts)?;
            let test = Domains::new(test_parts)?;
            let ids = (Arc::new(train.domain_ids()), Arc::new(test.domain_ids()));
            let ranges: Vec<_> = (0..config.domains.len()).map(|d| train.range(d)).collect();
            (
                Arc::new(train) as Arc<dyn Source>,
                Arc::new(test) as Arc<dyn Source>,
                Some((ids, ranges)),
            )
        };
        if train.shape() != test.shape() || train.classes() != test.classes() {
            return Err(TrainError::Config(format!(
                "`{}`: the training images are {:?} in {} classes but the test images {:?} in {}",
                config.dataset,
                train.shape(),
                train.classes(),
                test.shape(),
                test.classes()
            )));
        }
        let classes = train.classes();
        let labels = train.labels();
        // the parts that train: every domain's images, split alike within each domain
        let training_parts: Vec<std::ops::Range<usize>> = match &domains {
            None => std::iter::once(0..train.len()).collect(),
            Some((_, ranges)) => {
                let names = config.domain_names();
                let wanted = config.train_domains.clone().unwrap_or(names.clone());
                let mut parts = Vec::new();
                for name in &wanted {
                    let d = names.iter().position(|n| n == name).ok_or_else(|| {
                        TrainError::Config(format!(
                            "train_domains: no domain `{name}` (the domains are {})",
                            names.join(", ")
                        ))
                    })?;
                    parts.push(ranges[d].clone());
                }
                parts
            }
        };
        let (mut train_pool, mut val_pool) = (Vec::new(), Vec::new());
        for range in training_parts {
            let (t, v) = split_part(config, &labels[range.clone()], classes)?;
            train_pool.extend(t.into_iter().map(|i| range.start + i));
            val_pool.extend(v.into_iter().map(|i| range.start + i));
        }
        if train_pool.is_empty() {
            return Err(TrainError::Config(format!(
                "`{}` leaves no training images after the validation split",
                config.dataset
            )));
        }
        let scaling = match scaling {
            ScalingName::Raw => Scaling::Raw,
            ScalingName::Unit => Scaling::Unit,
            ScalingName::Fixed => Scaling::Fixed,
            ScalingName::Imagenet => Scaling::imagenet(),
        };
        let test_pool = (0..test.len()).collect();
        let (train_domains, test_domains) = match domains {
            Some(((train, test), _)) => (Some(train), Some(test)),
            None => (None, None),
        };
        Ok(Self {
            train,
            test,
            train_pool,
            val_pool,
            test_pool,
            train_domains,
            test_domains,
            scaling,
            config: config.clone(),
        })
    }

    /// The domain names, in id order (empty for a data set of one domain).
    pub fn domain_names(&self) -> Vec<String> {
        self.config.domain_names()
    }

    /// The domain id of every image of `set` (the training or the test part), when the data
    /// set has domains.
    pub fn domains_of(&self, set: &Arc<dyn Source>) -> Option<&[usize]> {
        if Arc::ptr_eq(set, &self.train) {
            self.train_domains.as_deref().map(|v| &v[..])
        } else if Arc::ptr_eq(set, &self.test) {
            self.test_domains.as_deref().map(|v| &v[..])
        } else {
            None
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.train.classes()
    }

    /// (channels, height, width) of the network input.
    pub fn input_shape(&self) -> [usize; 3] {
        self.config.eval_augment().output_shape(self.train.shape())
    }

    /// Per-channel μ and σ of the training images, 0–255 units (offline input normalization).
    pub fn offline_stats(&self) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
        Ok(channel_stats(self.train.as_ref(), &self.train_pool)?)
    }

    /// A loader of `set`: shuffled batches of `batch` seeded by `seed`, with training
    /// augmentation when `training`.
    pub fn loader(
        &self,
        set: &Arc<dyn Source>,
        batch: usize,
        drop_last: bool,
        training: bool,
        corruption: Option<Corruption>,
        seed: u64,
    ) -> Result<PartLoader, TrainError> {
        let batching = Batching::shuffle(batch, drop_last);
        self.loader_with(set, batching, training, corruption, seed)
    }

    /// A loader of `set` in batches of `batch` built in `order` for a model with ghost
    /// batches of `ghost_size` (the class patterns of Wu & Johnson Fig. 8, domain orders),
    /// dropping a last partial batch; training augmentation when `training`.
    pub fn ordered_loader(
        &self,
        set: &Arc<dyn Source>,
        (order, ghost_size): (OrderName, Option<usize>),
        batch: usize,
        training: bool,
        seed: u64,
    ) -> Result<PartLoader, TrainError> {
        let order = self
            .config
            .batch_order(order, ghost_size)
            .map_err(TrainError::Config)?;
        let batching = Batching {
            order,
            batch_size: batch,
            drop_last: true,
        };
        self.loader_with(set, batching, training, None, seed)
    }

    /// The training loader: forward batches of `batch` in the spec's order.
    pub fn train_loader(
        &self,
        batch: usize,
        ghost_size: Option<usize>,
        seed: u64,
    ) -> Result<PartLoader, TrainError> {
        let order = (self.config.order(), ghost_size);
        self.ordered_loader(&self.train, order, batch, true, seed)
    }

    /// A loader of `set` with `batching`.
    fn loader_with(
        &self,
        set: &Arc<dyn Source>,
        batching: Batching,
        training: bool,
        corruption: Option<Corruption>,
        seed: u64,
    ) -> Result<PartLoader, TrainError> {
        let augment = if training {
            self.config.train_augment()
        } else {
            self.config.eval_augment()
        };
        let config = LoaderConfig {
            scaling: self.scaling.clone(),
            corruption,
            threads: self.config.threads,
            ..LoaderConfig::new(batching, augment, seed)
        };
        Ok(PartLoader {
            loader: Loader::new(set.clone(), config)?,
            domains: self.domains_of(set).map(<[usize]>::to_vec).map(Arc::new),
        })
    }

    /// Whether training augments images (evaluation never does).
    pub fn augments(&self) -> bool {
        self.config.train_augment() != Augment::None
    }
}
