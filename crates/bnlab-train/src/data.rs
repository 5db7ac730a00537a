//! The images of one run: training, validation and test parts, and loaders over them.

use std::sync::Arc;

use bnlab_data::{
    Augment, BatchOrder, Batching, Corruption, Holdout, ImageSet, Loader, LoaderConfig, Part,
    Scaling, Source, channel_stats, stratified_split, synthetic,
};

use crate::{DataConfig, ScalingName, TrainError};

/// The data of a run, in memory.
pub struct RunData {
    /// The training part (training and validation images).
    pub train: Arc<ImageSet>,
    /// The test part.
    pub test: Arc<ImageSet>,
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
    /// Reads (or generates) the data set and splits off the validation images.
    pub fn load(config: &DataConfig, scaling: ScalingName) -> Result<Self, TrainError> {
        let (train, test) = if config.dataset == "synthetic" {
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
            (all.select(&train), all.select(&test))
        } else {
            let (id, dir) = crate::data_folder(config)?.ok_or_else(|| {
                TrainError::Config(format!("`{}` is not read from files", config.dataset))
            })?;
            (
                id.load_from(&dir, Part::Train)?,
                id.load_from(&dir, Part::Test)?,
            )
        };
        if train.shape != test.shape || train.classes != test.classes {
            return Err(TrainError::Config(format!(
                "`{}`: the training images are {:?} in {} classes but the test images {:?} in {}",
                config.dataset, train.shape, train.classes, test.shape, test.classes
            )));
        }
        let labels = train.labels();
        let (train_pool, val_pool) = if config.validation > 0.0 {
            stratified_split(
                &labels,
                train.classes,
                Holdout::Fraction(config.validation),
                config.split_seed,
            )?
        } else {
            ((0..train.len()).collect(), Vec::new())
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
            train: Arc::new(train),
            test: Arc::new(test),
            train_pool,
            val_pool,
            test_pool,
            scaling,
            config: config.clone(),
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.train.classes
    }

    /// (channels, height, width) of the network input.
    pub fn input_shape(&self) -> [usize; 3] {
        self.config.eval_augment().output_shape(self.train.shape)
    }

    /// Per-channel μ and σ of the training images, 0–255 units (offline input normalization).
    pub fn offline_stats(&self) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
        Ok(channel_stats(self.train.as_ref(), &self.train_pool)?)
    }

    /// A loader of `set`: shuffled batches of `batch` seeded by `seed`.
    pub fn loader(
        &self,
        set: &Arc<ImageSet>,
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
        set: &Arc<ImageSet>,
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
        let set: Arc<dyn Source> = set.clone();
        Ok(Loader::new(set, config)?)
    }

    /// Whether training augments images (evaluation never does).
    pub fn augments(&self) -> bool {
        self.config.train_augment() != Augment::None
    }
}
