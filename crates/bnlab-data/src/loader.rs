//! The loader: decodes, corrupts, augments and scales batches on a thread pool, a few batches
//! ahead of the consumer, and yields Burn tensors.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::{Augment, BatchIndices, Batching, Corruption, DataError, Scaling, Source};

/// How a loader turns dataset images into batches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// How batches are formed.
    pub batching: Batching,
    /// Augmentation (use `Augment::None` for evaluation).
    pub augment: Augment,
    /// Pixel scaling.
    pub scaling: Scaling,
    /// A corruption applied before augmentation (target domains for Adaptive BN).
    pub corruption: Option<Corruption>,
    /// Worker threads decoding and augmenting (≥ 1).
    pub threads: usize,
    /// Batches prepared ahead of the consumer (≥ 1).
    pub prefetch: usize,
    /// Seed of shuffling, augmentation and corruption noise.
    pub seed: u64,
}

impl LoaderConfig {
    /// Shuffled batches of `batch_size` with `augment`, unit scaling, 2 threads, prefetch 2.
    pub fn new(batching: Batching, augment: Augment, seed: u64) -> Self {
        Self {
            batching,
            augment,
            scaling: Scaling::Unit,
            corruption: None,
            threads: 2,
            prefetch: 2,
            seed,
        }
    }
}

/// One batch on the host: f32 NCHW pixels, labels, domains.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Pixels, `shape` row-major.
    pub pixels: Vec<f32>,
    /// [N, C, H, W].
    pub shape: [usize; 4],
    /// Class of each example.
    pub labels: Vec<usize>,
    /// Domain of each example, for the domain policies.
    pub domains: Option<Vec<usize>>,
    /// Dataset index of each example.
    pub indices: Vec<usize>,
}

/// One batch as Burn tensors.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images [N, C, H, W].
    pub images: Tensor<4>,
    /// Labels, shape \[N\].
    pub labels: Tensor<1, Int>,
    /// Domain of each example, for the domain policies.
    pub domains: Option<Vec<usize>>,
    /// Dataset index of each example.
    pub indices: Vec<usize>,
}

impl HostBatch {
    /// The batch as tensors on `device`.
    pub fn to_device(self, device: &Device) -> Batch {
        let n = self.labels.len();
        let labels: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        Batch {
            images: Tensor::from_data(TensorData::new(self.pixels, self.shape), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
            domains: self.domains,
            indices: self.indices,
        }
    }
}

/// Decodes and prepares one planned batch (the work the loader spreads over threads).
pub fn prepare_batch(
    source: &dyn Source,
    config: &LoaderConfig,
    plan: &BatchIndices,
    epoch: u64,
) -> Result<HostBatch, DataError> {
    let in_shape = source.shape();
    let out_shape = config.augment.output_shape(in_shape);
    let per = out_shape.iter().product::<usize>();
    let affine = config.scaling.affine(in_shape[0])?;
    let plane = out_shape[1] * out_shape[2];
    let mut pixels = vec![0f32; plan.indices.len() * per];
    pixels
        .par_chunks_mut(per)
        .zip(plan.indices.par_iter())
        .try_for_each_init(
            || (Vec::new(), vec![0u8; per]),
            |(raw, aug), (out, &i)| -> Result<(), DataError> {
                source.read(i, raw)?;
                if let Some(c) = &config.corruption {
                    c.apply(raw, in_shape, config.seed, i as u64)?;
                }
                config
                    .augment
                    .apply(raw, in_shape, config.seed, epoch, i as u64, aug);
                for (ch, &(shift, scale)) in affine.iter().enumerate() {
                    let src = &aug[ch * plane..(ch + 1) * plane];
                    for (o, &v) in out[ch * plane..(ch + 1) * plane].iter_mut().zip(src) {
                        *o = (v as f32 - shift) * scale;
                    }
                }
                Ok(())
            },
        )?;
    Ok(HostBatch {
        pixels,
        shape: [plan.indices.len(), out_shape[0], out_shape[1], out_shape[2]],
        labels: plan.indices.iter().map(|&i| source.label(i)).collect(),
        domains: plan.domains.clone(),
        indices: plan.indices.clone(),
    })
}

/// The batches of one epoch, prepared in the background; dropping it stops the work. A
/// loader thread that dies (a panic) before the last batch yields an error, never a short
/// epoch.
pub struct EpochBatches {
    rx: Receiver<Result<HostBatch, DataError>>,
    /// Number of batches planned.
    pub len: usize,
    delivered: usize,
    ended: bool,
}

impl Iterator for EpochBatches {
    type Item = Result<HostBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        match self.rx.recv() {
            Ok(batch) => {
                self.delivered += 1;
                self.ended = batch.is_err();
                Some(batch)
            }
            Err(_) if self.delivered < self.len => {
                self.ended = true;
                Some(Err(DataError::LoaderDied {
                    delivered: self.delivered,
                    planned: self.len,
                    why: "its thread stopped without a reason".into(),
                }))
            }
            Err(_) => None,
        }
    }
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Loads batches of a [`Source`] as a [`LoaderConfig`] says.
pub struct Loader {
    source: Arc<dyn Source>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

impl Loader {
    /// A loader of `source` with `config`.
    pub fn new(source: Arc<dyn Source>, config: LoaderConfig) -> Result<Self, DataError> {
        if config.threads == 0 || config.prefetch == 0 {
            return Err(DataError::Invalid(
                "loader threads and prefetch must be at least 1".into(),
            ));
        }
        let [_, h, w] = source.shape();
        if let Augment::CropFlip { crop } | Augment::CenterCrop { crop } = config.augment
            && (crop == 0 || crop > h || crop > w)
        {
            return Err(DataError::Invalid(format!(
                "crop {crop} does not fit images of {h}×{w}"
            )));
        }
        config.scaling.affine(source.shape()[0])?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .build()
            .map_err(|e| DataError::Invalid(format!("loader thread pool: {e}")))?;
        Ok(Self {
            source,
            config,
            pool: Arc::new(pool),
        })
    }

    /// The batches of epoch `epoch` over dataset indices `pool`, with per-example `domains`
    /// (indexed like the dataset) for the domain policies.
    pub fn epoch(
        &self,
        pool: &[usize],
        domains: Option<&[usize]>,
        epoch: u64,
    ) -> Result<EpochBatches, DataError> {
        let labels = self.source.labels();
        let plans = self
            .config
            .batching
            .epoch(pool, &labels, domains, self.config.seed, epoch)?;
        let (tx, rx) = sync_channel(self.config.prefetch);
        let len = plans.len();
        let (source, config, workers) =
            (self.source.clone(), self.config.clone(), self.pool.clone());
        std::thread::spawn(move || {
            for (k, plan) in plans.iter().enumerate() {
                let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    workers.install(|| prepare_batch(source.as_ref(), &config, plan, epoch))
                }))
                .unwrap_or_else(|payload| {
                    Err(DataError::LoaderDied {
                        delivered: k,
                        planned: plans.len(),
                        why: format!("it panicked: {}", panic_message(payload.as_ref())),
                    })
                });
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        Ok(EpochBatches {
            rx,
            len,
            delivered: 0,
            ended: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Corruption, CorruptionKind, ImageSet, synthetic};

    fn config(threads: usize) -> LoaderConfig {
        LoaderConfig {
            threads,
            corruption: Some(Corruption::new(CorruptionKind::GaussianNoise, 1).unwrap()),
            scaling: Scaling::Fixed,
            ..LoaderConfig::new(
                Batching::shuffle(16, false),
                Augment::PadCropFlip { pad: 4 },
                9,
            )
        }
    }

    /// A source whose `read` panics at one index, like a reader bug or a bad image.
    struct Panicky {
        inner: ImageSet,
        at: usize,
    }

    impl Source for Panicky {
        fn len(&self) -> usize {
            self.inner.len()
        }
        fn shape(&self) -> [usize; 3] {
            self.inner.shape
        }
        fn classes(&self) -> usize {
            self.inner.classes
        }
        fn label(&self, i: usize) -> usize {
            self.inner.label(i)
        }
        fn read(&self, i: usize, out: &mut Vec<u8>) -> Result<(), DataError> {
            assert!(i != self.at, "image {i} is unreadable");
            self.inner.read(i, out)
        }
    }

    #[test]
    fn a_panicking_loader_is_an_error_not_a_short_epoch() {
        let inner = synthetic(2, 8, [1, 4, 4], 0.2, 1).unwrap();
        let set = Arc::new(Panicky { inner, at: 5 });
        let cfg = LoaderConfig::new(Batching::shuffle(4, false), Augment::None, 1);
        let pool: Vec<usize> = (0..16).collect();
        let out: Vec<_> = Loader::new(set, cfg)
            .unwrap()
            .epoch(&pool, None, 0)
            .unwrap()
            .collect();
        // the batches before the one holding image 5 arrive, then its error, then nothing
        let (last, before) = out.split_last().unwrap();
        assert!(
            before
                .iter()
                .all(|b| b.as_ref().is_ok_and(|b| !b.indices.contains(&5)))
        );
        let err = last.as_ref().unwrap_err().to_string();
        let want = format!("after {} of 4 batches", before.len());
        assert!(
            err.contains(&want) && err.contains("image 5 is unreadable"),
            "{err}"
        );
    }

    #[test]
    fn batches_are_identical_whatever_the_thread_count() {
        let set = Arc::new(synthetic(10, 10, [3, 32, 32], 0.2, 1).unwrap());
        let pool: Vec<usize> = (0..100).collect();
        let run = |threads| -> Vec<HostBatch> {
            Loader::new(set.clone(), config(threads))
                .unwrap()
                .epoch(&pool, None, 3)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.len(), 7);
        assert_eq!(one, two);
        assert_eq!(one[6].shape, [4, 3, 32, 32]);
    }

    #[test]
    fn a_batch_is_each_image_corrupted_augmented_and_scaled() {
        let set = synthetic(4, 5, [1, 6, 6], 0.2, 2).unwrap();
        let cfg = config(1);
        let plan = BatchIndices {
            indices: vec![3, 0, 7],
            domains: None,
        };
        let batch = prepare_batch(&set, &cfg, &plan, 1).unwrap();
        for (k, &i) in plan.indices.iter().enumerate() {
            let mut img = set.image(i).to_vec();
            cfg.corruption
                .unwrap()
                .apply(&mut img, [1, 6, 6], 9, i as u64)
                .unwrap();
            let mut aug = vec![0; 36];
            cfg.augment.apply(&img, [1, 6, 6], 9, 1, i as u64, &mut aug);
            let want: Vec<f32> = aug.iter().map(|&v| (v as f32 - 128.0) / 128.0).collect();
            assert_eq!(&batch.pixels[k * 36..(k + 1) * 36], &want[..]);
            assert_eq!(batch.labels[k], set.label(i));
        }
        let tensors = batch.to_device(&burn::tensor::Device::flex());
        assert_eq!(tensors.images.dims(), [3, 1, 6, 6]);
        let labels: Vec<i64> = tensors
            .labels
            .into_data()
            .convert::<i64>()
            .try_into_vec()
            .unwrap();
        assert_eq!(
            labels,
            plan.indices
                .iter()
                .map(|&i| set.label(i) as i64)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_settings_and_unreadable_images_are_errors() {
        let set: Arc<dyn Source> = Arc::new(synthetic(2, 2, [1, 4, 4], 0.0, 1).unwrap());
        let crop = LoaderConfig::new(
            Batching::shuffle(2, false),
            Augment::CropFlip { crop: 5 },
            0,
        );
        assert!(Loader::new(set.clone(), crop).is_err());
        let zero = LoaderConfig {
            threads: 0,
            ..LoaderConfig::new(Batching::shuffle(2, false), Augment::None, 0)
        };
        assert!(Loader::new(set, zero).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("c").join("a.png"), b"garbage").unwrap();
        let folder: Arc<dyn Source> = Arc::new(crate::ImageFolder::open(dir.path(), 8).unwrap());
        let loader = Loader::new(
            folder,
            LoaderConfig::new(Batching::shuffle(1, false), Augment::None, 0),
        )
        .unwrap();
        let first = loader.epoch(&[0], None, 0).unwrap().next().unwrap();
        assert!(first.unwrap_err().to_string().contains("a.png"));
    }
}
