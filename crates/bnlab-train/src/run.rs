//! One training run: epochs of training and validation with per-epoch checkpoints, the
//! best-validation checkpoint, and its evaluation under every scheme of the spec
//! (Davis & Frank §4.2; Wu & Johnson §3–5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bnlab_data::{Batch, Corruption, Source};
use bnlab_models::{InputNormConfig, Network, build};
use bnlab_norm::{NormError, StatsSource, norm_sites, set_outlier_probe};
use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint::load_model;
use crate::dist::{ShuffleAssignment, select, shard, shuffle};
use crate::eval::{evaluate_batches, with_source};
use crate::{
    Configuration, Fingerprint, Progress, Provenance, RunConfig, RunData, TrainError, Worker,
};

/// Burn's CPU random generator is global: seeding and building a network hold this lock, so
/// parallel runs initialize exactly as they would alone.
static INIT: Mutex<()> = Mutex::new(());

/// A number of epochs a process may still train; when it runs out, runs stop with
/// [`TrainError::Interrupted`] after their checkpoint (a controlled stand-in for a kill).
#[derive(Debug)]
pub struct Budget(AtomicUsize);

impl Budget {
    /// A budget of `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Self(AtomicUsize::new(epochs))
    }

    /// Spends one epoch; false once none is left.
    pub(crate) fn spend(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Whether any epoch is left.
    pub(crate) fn left(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// What identifies a run and where it works.
pub struct RunRequest<'a> {
    /// The sweep's name.
    pub sweep: &'a str,
    /// The configuration.
    pub configuration: &'a Configuration,
    /// The run index (1-based).
    pub index: u32,
    /// Its MD5 seed.
    pub seed: u32,
    /// The run's id (progress and logs).
    pub id: &'a str,
    /// Checkpoints and the final model go here.
    pub work_dir: PathBuf,
    /// Progress reporting.
    pub progress: &'a dyn Progress,
    /// An optional epoch budget.
    pub budget: Option<&'a Budget>,
    /// This process's place in a data-parallel job (`train.distributed.workers` > 1).
    pub worker: Option<Worker>,
    /// The configuration's fingerprint, kept in every checkpoint and in the result.
    pub fingerprint: &'a Fingerprint,
    /// Where the data comes from, kept in the result.
    pub provenance: &'a Provenance,
    /// Set when the run must stop after its current epoch (its lease was lost).
    pub cancel: Option<&'a AtomicBool>,
}

/// What `bnlab eval` needs to rebuild a run's network: written next to its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    /// The configuration's name.
    pub configuration: String,
    /// The run index.
    pub index: u32,
    /// The seed.
    pub seed: u32,
    /// The settings.
    pub config: RunConfig,
    /// Their fingerprint (absent in run files written before fingerprints).
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    /// Offline input-normalization statistics, if used.
    pub input_stats: Option<(Vec<f64>, Vec<f64>)>,
}

/// The file names inside a run's work directory.
pub const RUN_FILE: &str = "run.json";
/// The evaluated (best-validation) model of a finished run.
pub const MODEL_FILE: &str = "model.bpk";

impl RunFile {
    /// Writes this run file into the run directory `dir` (created if needed), atomically.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
        let path = dir.join(RUN_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| TrainError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        Ok(bnlab_data::write_atomic(&path, &json)?)
    }

    /// Reads the run file of the run directory `dir`.
    pub fn load(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join(RUN_FILE);
        let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
            path,
            why: format!("not a bnlab run file: {e}"),
        })
    }

    /// Builds the network of this run on `device` and loads the model file of `dir`.
    pub fn network(
        &self,
        dir: &Path,
        data: &RunData,
        device: &Device,
    ) -> Result<Network, TrainError> {
        let net = new_network(
            &self.config,
            data,
            self.seed,
            self.input_stats.clone(),
            device,
        )?;
        load_model(net, &dir.join(MODEL_FILE))
    }
}

/// Builds the network of `config` for `data`, initialized from `seed`.
pub fn new_network(
    config: &RunConfig,
    data: &RunData,
    seed: u32,
    input_stats: Option<(Vec<f64>, Vec<f64>)>,
    device: &Device,
) -> Result<Network, TrainError> {
    let [channels, _, _] = data.input_shape();
    let mut options = config.model_options(data.classes(), channels)?;
    if let (Some(InputNormConfig::Offline { .. }), Some((mean, std))) =
        (&options.input_norm, input_stats)
    {
        options.input_norm = Some(InputNormConfig::Offline { mean, std });
    }
    // the parameters are drawn on Flex whatever the device, then moved: every backend has its
    // own generator, and a seed should give the same network on a GPU as on the CPU
    let on_gpu = bnlab_norm::is_cube(device);
    let home = if !on_gpu {
        device.clone()
    } else if matches!(
        device.as_dispatch(),
        burn::backend::DispatchDevice::Autodiff(_)
    ) {
        Device::flex().autodiff()
    } else {
        Device::flex()
    };
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    home.seed(seed as u64);
    let network = build(&config.model.name, &options, &home)?;
    // parameters initialize lazily: draw them now, while the seeded generator is ours
    network.visit(&mut Materialize);
    // fork, not to_device: the moved parameters are leaves of their own autodiff graph
    Ok(if on_gpu {
        network.fork(device)
    } else {
        network
    })
}

/// Reads every parameter once, which runs its (lazy) initializer.
struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        let _ = param.val();
    }
}

/// The pass of the `k`-th extra pass over the pool of a statistics draw that starts at
/// `pass`: far from the next draw's (one per epoch) for any run under 65,536 epochs.
fn extra_pass(pass: u64, k: u64) -> u64 {
    pass + (k << 16)
}

/// The images statistics (PreciseBN, Adaptive BN) are drawn from.
#[derive(Debug, Clone, Copy)]
pub struct StatDraw {
    /// N: exactly this many images.
    pub samples: usize,
    /// B: in batches of this many.
    pub batch: usize,
    /// Corrupted by this (Adaptive BN's target domain).
    pub corruption: Option<Corruption>,
    /// With training augmentation.
    pub augment: bool,
}

/// Batches for statistics (PreciseBN, Adaptive BN): exactly `draw.samples` images of `set` at
/// `pool`, in batches of `draw.batch`. The rule: full batches from pass `pass` of the run's
/// shuffling (seeded by `seed`), then from further passes when N is more than one pass holds
/// (every image of a pass once, then again in a new order), and a last batch of the N mod B
/// images left, when that is not zero. With a worker, its shard of each batch.
pub fn stat_batches<'a>(
    data: &RunData,
    (set, pool): (&Arc<dyn Source>, &[usize]),
    draw: StatDraw,
    (seed, pass): (u64, u64),
    worker: Option<&'a Worker>,
    device: &'a Device,
) -> Result<impl Iterator<Item = Result<Batch, TrainError>> + 'a, TrainError> {
    let StatDraw {
        samples,
        batch,
        corruption,
        augment,
    } = draw;
    if samples == 0 || batch == 0 {
        return Err(TrainError::Config(format!(
            "statistics need at least one image and a batch of at least one (N = {samples}, B = {batch})"
        )));
    }
    if batch > pool.len() {
        return Err(TrainError::Config(format!(
            "a statistics batch of {batch} is larger than the {} images it is drawn from",
            pool.len()
        )));
    }
    let loader = data.loader(set, batch, true, augment, corruption, seed)?;
    let per_pass = pool.len() / batch * batch;
    let passes = samples.div_ceil(per_pass) as u64;
    let pool = pool.to_vec();
    let host = (0..passes).flat_map(move |k| {
        let batches: Box<dyn Iterator<Item = Result<bnlab_data::HostBatch, TrainError>>> =
            match loader.epoch(&pool, extra_pass(pass, k)) {
                Ok(it) => Box::new(it.map(|b| b.map_err(TrainError::from))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
        batches
    });
    let mut left = samples;
    let exact = host.map_while(move |b| {
        if left == 0 {
            return None;
        }
        Some(b.map(|b| {
            let n = b.labels.len().min(left);
            left -= n;
            if n < b.labels.len() {
                select(&b, &(0..n).collect::<Vec<_>>())
            } else {
                b
            }
        }))
    });
    Ok(exact.map(move |b| {
        let b = b?;
        let b = match worker {
            Some(w) => {
                let mine: Vec<usize> = shard(b.labels.len(), w.rank(), w.size()).collect();
                select(&b, &mine)
            }
            None => b,
        };
        Ok(b.to_device(device))
    }))
}

/// This worker's examples of a global forward batch: its shard, or with Shuffle BN the
/// examples the step's shuffle sends it.
pub(crate) fn local_batch(
    worker: &Worker,
    batch: bnlab_data::HostBatch,
    shuffle_bn: bool,
    step_seed: u64,
) -> Result<bnlab_data::HostBatch, TrainError> {
    let n = batch.labels.len();
    let mine: Vec<usize> = shard(n, worker.rank(), worker.size()).collect();
    let own = select(&batch, &mine);
    if !shuffle_bn {
        return Ok(own);
    }
    let plan = ShuffleAssignment::new(n, worker.size(), step_seed);
    shuffle(worker.collective.as_ref(), &own, &plan)
}

/// Streams of the evaluation loaders, far from the training epochs'.
pub(crate) const EVAL_PASS: u64 = 1 << 32;

/// The share of |x̂| > 6 per norm layer of `model` over the test set, population statistics.
pub(crate) fn outlier_shares(
    data: &RunData,
    model: &Network,
    seed: u64,
    batch: usize,
    device: &Device,
) -> Result<BTreeMap<String, f64>, TrainError> {
    let probed = set_outlier_probe(
        with_source(model.valid(), StatsSource::Population),
        Some(crate::OUTLIER_THRESHOLD),
    );
    let loader = data.loader(&data.test, batch, false, false, None, seed)?;
    evaluate_batches(&probed, loader.epoch(&data.test_pool, EVAL_PASS)?, device)?;
    let (_, sites) = norm_sites(probed);
    Ok(sites
        .into_iter()
        .filter_map(|s| s.outliers.map(|o| (s.path, o.share())))
        .collect())
}

/// Whether an error ends only its run (recorded as a failure) rather than the sweep.
pub fn is_run_failure(e: &TrainError) -> bool {
    matches!(
        e,
        TrainError::Diverged { .. }
            | TrainError::Norm(NormError::NonFinite { .. })
            | TrainError::Model(bnlab_models::ModelError::Norm {
                source: NormError::NonFinite { .. },
                ..
            })
    )
}
