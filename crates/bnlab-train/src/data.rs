//! The images of one run: training, validation and test parts, and loaders over them.

use std::sync::Arc;

use bnlab_data::{
    Augment, BatchOrder, Batching, Corruption, Holdout, ImageFolder, Loader, LoaderConfig, Part,
    Scaling, Source, channel_stats, stratified_split, synthetic,
};

use crate::{DataConfig, ScalingName, TrainError};

/// The `dataset` name of an image folder: `root/train/<class>/*` and `root/test/<class>/*`.
pub const IMAGE_FOLDER: &str = "image-folder";

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
    /// Pixel scaling of every loader.
    pub scaling: Scaling,
    config: DataConfig,
}

impl RunData {
    /// Reads (or generates) the data set, takes the training subset (`train_per_class`) and
    /// splits off the validation images.
    pub fn load(config: &DataConfig, scaling: ScalingName) -> Result<Self, TrainError> {
        let (train, test): (Arc<dyn Source>, Arc<dyn Source>) = match config.dataset.as_str() {
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
                let root = config.root.as_ref().ok_or_else(|| {
                    TrainError::Config(
                        "`image-folder` needs `root`, the folder holding train/ and test/".into(),
                    )
                })?;
                let open = |part: &str| ImageFolder::open(&root.join(part), config.image_size);
                (Arc::new(open("train")?), Arc::new(open("test")?))
            }
            _ => {
                let (id, dir) = crate::data_folder(config)?.ok_or_else(|| {
                    TrainError::Config(format!("`{}` is not read from files", config.dataset))
                })?;
                (
                    Arc::new(id.load_from(&dir, Part::Train)?),
                    Arc::new(id.load_from(&dir, Part::Test)?),
                )
            }
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
        // the seeded class-balanced training subset, if asked for
        let candidates: Vec<usize> = match config.train_per_class {
            Some(k) => {
                let (_, subset) =
                    stratified_split(&labels, classes, Holdout::PerClass(k), config.split_seed)?;
                let mut subset = subset;
                subset.sort_unstable();
                subset
            }
            None => (0..train.len()).collect(),
        };
        let (train_pool, val_pool) = if config.validation > 0.0 {
            let sub_labels: Vec<usize> = candidates.iter().map(|&i| labels[i]).collect();
            let (kept, held) = stratified_split(
                &sub_labels,
                classes,
                Holdout::Fraction(config.validation),
                config.split_seed,
            )?;
            let pick = |v: Vec<usize>| v.into_iter().map(|j| candidates[j]).collect();
            (pick(kept), pick(held))
        } else {
            (candidates, Vec::new())
        };
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
        };
        let test_pool = (0..test.len()).collect();
        Ok(Self {
            train,
            test,
            train_pool,
            val_pool,
            test_pool,
            scaling,
            config: config.clone(),
        })
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

    /// A loader of `set`: shuffled batches of `batch` seeded by `seed`.
    pub fn loader(
        &self,
        set: &Arc<dyn Source>,
        batch: usize,
        drop_last: bool,
        training: bool,
        corruption: Option<Corruption>,
        seed: u64,
    ) -> Result<Loader, TrainError> {
        let batching = Batching::shuffle(batch, drop_last);
        self.loader_with(set, batching, training, corruption, seed)
    }

    /// The training loader: forward batches of `batch`, with the spec's class pattern if any.
    pub fn train_loader(&self, batch: usize, seed: u64) -> Result<Loader, TrainError> {
        let batching = match self.config.class_pattern {
            Some(p) => Batching {
                order: BatchOrder::ClassPattern {
                    classes_per_batch: p.classes_per_batch,
                    per_class: p.per_class,
                },
                batch_size: batch,
                drop_last: true,
            },
            None => Batching::shuffle(batch, true),
        };
        self.loader_with(&self.train, batching, true, None, seed)
    }

    /// A loader of `set` with `batching`.
    fn loader_with(
        &self,
        set: &Arc<dyn Source>,
        batching: Batching,
        training: bool,
        corruption: Option<Corruption>,
        seed: u64,
    ) -> Result<Loader, TrainError> {
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
        Ok(Loader::new(set.clone(), config)?)
    }

    /// Whether training augments images (evaluation never does).
    pub fn augments(&self) -> bool {
        self.config.train_augment() != Augment::None
    }
}
