//! The command-line tree; the `///` docs are the help text.

use std::path::PathBuf;

use bnlab_norm::DeviceName;
use clap::{Parser, Subcommand};

/// bnlab: the BatchNorm laboratory.
#[derive(Debug, Parser)]
#[command(name = "bnlab", version, about)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `bnlab run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The spec file.
    pub spec: PathBuf,
    /// Output directory (results, checkpoints, log).
    #[arg(long)]
    pub out: PathBuf,
    /// Runs trained at once by this process, each on a thread pool of its own with an equal
    /// share of the cores (results are bit-identical to `--jobs 1`).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Stop after this many epochs (then rerun to continue).
    #[arg(long, hide = true)]
    pub stop_after_epochs: Option<usize>,
    /// Where the workers of runs with `train.distributed.workers` > 1 live: `threads` of
    /// this process (the default), `mpi` processes started by `mpirun -np K`, or `cuda`
    /// devices 0..K of this process.
    #[arg(long, value_enum, default_value_t = Distributed::Threads)]
    pub distributed: Distributed,
    /// Retrain the runs whose settings or data changed since they were trained (their old
    /// files are moved to OUT/superseded/), instead of stopping before training.
    #[arg(long)]
    pub restart_changed: bool,
    /// Only part I of N of the runs (1-based), for a scheduler's job array: `--shard 2/4`.
    #[arg(long)]
    pub shard: Option<bnlab_train::Shard>,
    /// Seconds a run's claim lasts without renewal; after that another worker takes the
    /// run over and resumes it from its checkpoint.
    #[arg(long, default_value_t = 60)]
    pub lease_secs: u64,
    /// Where to compute.
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `--device`: where a command computes.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct DeviceArg {
    /// Where to compute: flex (the CPU), vulkan or vulkan:N (the first or N-th discrete
    /// GPU), vulkan-cpu (Mesa's lavapipe), cuda or cuda:N; GPUs need a build with
    /// `--features vulkan` or `--features cuda`. Default: the spec's or the run's
    /// `[train] device` (flex if unset).
    #[arg(long)]
    pub device: Option<DeviceName>,
}

impl DeviceArg {
    /// The device asked for, else `default` (the command line wins over a spec).
    pub fn or(self, default: DeviceName) -> DeviceName {
        self.device.unwrap_or(default)
    }
}

/// `bnlab eval`'s arguments.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The run directory (`OUT/runs/<run id>`).
    pub run: PathBuf,
    /// population, precise, minibatch or alpha=A (also the result keys minibatch-B and
    /// alpha-A, as `bnlab report` names them).
    #[arg(long, default_value = "population")]
    pub stats: String,
    /// Batch size of the evaluation (and of `precise` statistics).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Training images for `precise` statistics.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// `precise`: normalize each PreciseBN batch whole, not under the training batch policy
    /// (ghost batches).
    #[arg(long)]
    pub whole_batch: bool,
    /// Where to compute.
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `bnlab precise-bn`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PreciseArgs {
    /// The run directory (`OUT/runs/<run id>`).
    pub run: PathBuf,
    /// Training images N.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Batch size B.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Normalize each batch whole, not under the training batch policy (ghost batches).
    #[arg(long)]
    pub whole_batch: bool,
    /// Layer-by-layer population statistics (Wu & Johnson A.3): one pass per layer.
    #[arg(long)]
    pub exact: bool,
    /// How batch statistics become population statistics (Wu & Johnson A.2): `pooled`
    /// (eq. 2, the variance of all samples) or `mean-of-variances` (eq. 3).
    #[arg(long, default_value = "pooled")]
    pub estimator: String,
    /// Where to write the model (default: `<run>/model-precise.bpk`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to compute.
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `bnlab import`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The weights: `.pth`, `.pt` or `.bin` (a PyTorch state dict) or `.safetensors`.
    pub weights: PathBuf,
    /// The registered network with the same layout (`resnet50`, `mobilenetv2`, …).
    #[arg(long)]
    pub model: String,
    /// The data set the model is evaluated on (a catalogue name or `image-folder`).
    #[arg(long)]
    pub dataset: String,
    /// Where that data set is (required for `image-folder`).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The classes the weights were trained for (checked against the data set).
    #[arg(long)]
    pub classes: Option<usize>,
    /// The network's width multiplier.
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Image folders: the square images are resized to before the centre crop.
    #[arg(long, default_value_t = 256)]
    pub image_size: usize,
    /// The centre crop of evaluation (ImageNet: 224); none by default.
    #[arg(long)]
    pub crop: Option<usize>,
    /// Pixel scaling: `imagenet` (torchvision's mean and std), `unit`, `raw` or `fixed`.
    #[arg(long, default_value = "imagenet")]
    pub scaling: String,
    /// The BN layers' EMA momentum, PyTorch's convention (torchvision: 0.1).
    #[arg(long, default_value_t = 0.1)]
    pub momentum: f64,
    /// The EMA as a Keras decay d = 1 − momentum, instead of `--momentum`.
    #[arg(long, conflicts_with = "momentum")]
    pub keras_decay: Option<f64>,
    /// The BN layers' ε (torchvision: 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    pub eps: f64,
    /// How the layers store the running variance: `unbiased` (PyTorch's, the default) or
    /// `biased`, which needs `--stats-values`.
    #[arg(long, default_value = "unbiased")]
    pub variance: String,
    /// Values per channel of the batches PyTorch's statistics came from (N·H·W), for
    /// converting the unbiased running variance to a biased one.
    #[arg(long)]
    pub stats_values: Option<f64>,
    /// Refuse a file with missing or unknown keys (the default); `--strict false` imports
    /// what fits and lists what it left at initialization.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub strict: bool,
    /// The output directory (a sweep of one run, `imported-s1`).
    #[arg(long)]
    pub out: PathBuf,
}

/// `bnlab export`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The run directory (`OUT/runs/<run id>`).
    pub run: PathBuf,
    /// The file format (safetensors).
    #[arg(long, default_value = "safetensors")]
    pub format: String,
    /// The model file of the run to export (`model.bpk`, or `model-precise.bpk` after
    /// `bnlab precise-bn`).
    #[arg(long, default_value = "model.bpk")]
    pub model_file: String,
    /// Values per channel of the batches the statistics came from, for a run that stores
    /// the running variance biased (PyTorch's is unbiased).
    #[arg(long)]
    pub stats_values: Option<f64>,
    /// Where to write (default: `<run>/model.safetensors`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// bnlab's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find, download and prepare datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// List the registered networks.
    Models,
    /// Run every configuration × seed of a TOML spec; rerun to resume. Any number of these
    /// may share one --out (on one machine or many): each run is trained once.
    Run(RunArgs),
    /// Validate a spec without training: its configurations, the number of runs, and an
    /// estimate of the time they take, from a few training steps measured on this machine.
    Check {
        /// The spec file.
        spec: PathBuf,
        /// Only validate and list: no timed steps (and no data read).
        #[arg(long)]
        no_timing: bool,
    },
    /// Show a sweep's finished, running, failed and missing runs.
    Status {
        /// The sweep's output directory.
        out: PathBuf,
    },
    /// Evaluate a finished run's model under one statistics source, on the splits its spec
    /// evaluates; the result is added to the run (`runs/<id>/evaluations.json`), where
    /// `bnlab report` reads it.
    Eval(EvalArgs),
    /// Recompute a run's population statistics with PreciseBN, save the model with them, and
    /// add its evaluation to the run (`runs/<id>/evaluations.json`).
    PreciseBn(PreciseArgs),
    /// Import PyTorch weights (a `.pth`/`.pt` state dict or a safetensors file of torchvision's
    /// or timm's layout, BN buffers included) as a finished one-run sweep that `eval`,
    /// `precise-bn` and `report` accept.
    Import(ImportArgs),
    /// Export a run's model as a safetensors file with PyTorch's key names and conventions,
    /// which PyTorch loads with `load_state_dict(strict=True)`.
    Export(ExportArgs),
    /// Tables with one-sided t-tests against a baseline, CSV and figures of a sweep's results
    /// (works on an unfinished sweep).
    Report(ReportArgs),
    /// Benchmarks (record their figures in BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The README's main job: Wu & Johnson's Adaptive BN on low-contrast images (Table 4)
    /// with a CIFAR-style ResNet-20, 4 seeds, on the bundled Fashion-MNIST subset; prints
    /// each claim with the paper's figure, ours and the verdict.
    Quickstart {
        /// Output directory.
        #[arg(long, default_value = "quickstart-out")]
        out: PathBuf,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Runs trained at once (2 keeps both cores of a small machine busy).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Where to compute.
        #[command(flatten)]
        device: DeviceArg,
    },
}

/// `bnlab data …`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Show every known dataset and where it was found, or where bnlab looked.
    List,
    /// Download a dataset from its canonical address and verify its checksums (needs internet).
    Fetch {
        /// cifar10, cifar100, svhn, mnist or fashion-mnist.
        name: String,
        /// Data root to download into (default: $BNLAB_DATA, else ./data).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Write the class-balanced subset of Fashion-MNIST that bnlab bundles.
    Subset {
        /// Images per class from the training set.
        #[arg(long, default_value_t = 600)]
        train: usize,
        /// Images per class from the test set.
        #[arg(long, default_value_t = 100)]
        test: usize,
        /// Output folder.
        #[arg(long, default_value = "data/fashion-mnist-subset")]
        out: PathBuf,
    },
}

/// `bnlab bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Images/s of a training step on Flex or a GPU (forward, backward, SGD step with momentum and
    /// weight decay) on random CIFAR-shaped batches.
    Train(TrainBenchArgs),
    /// Forward and backward time of every convolution shape of ResNet-20 and the CIFAR
    /// ResNet-18 on Flex, through bnlab's kernels and Burn's.
    Conv {
        /// Batch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Timed repetitions per figure (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Only one network's shapes: r20 or r18.
        #[arg(long)]
        only: Option<String>,
    },
    /// Normalization variants per training forward and forward + backward on Flex (or a GPU),
    /// as bandwidth against a triad measured in the same run, beside burn-nn's BatchNorm.
    Norm {
        /// Where to compute.
        #[command(flatten)]
        device: DeviceArg,
        /// Only the (128, 64, 32, 32) shape: under a minute.
        #[arg(long)]
        quick: bool,
        /// Timed repetitions per figure (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Only the variants whose name contains this text (e.g. "plain").
        #[arg(long)]
        only: Option<String>,
        /// One shape N,C,H,W instead of the four (e.g. a small batch: 8,16,32,32).
        #[arg(long, value_parser = parse_shape, conflicts_with = "quick")]
        shape: Option<[usize; 4]>,
    },
}

/// A shape `N,C,H,W` of four positive sizes.
fn parse_shape(text: &str) -> Result<[usize; 4], String> {
    let sizes: Vec<usize> = text
        .split(',')
        .map(|v| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match <[usize; 4]>::try_from(sizes) {
        Ok(shape) if shape.iter().all(|&v| v > 0) => Ok(shape),
        _ => Err(format!("{text:?}: want four positive sizes N,C,H,W")),
    }
}

/// `bnlab report …`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The sweep's directory (what `bnlab run` got as `--out`).
    pub dir: PathBuf,
    /// The baseline: a configuration, a variant or AXIS=VALUE[,AXIS=VALUE] (the rest of each
    /// configuration's grid point kept); default: the spec's `baseline`.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Axes whose values label the rows, comma-separated (default: every varying axis not in
    /// --cols; the others make one table each).
    #[arg(long, value_delimiter = ',')]
    pub rows: Vec<String>,
    /// Axes whose values label the columns, comma-separated (default: one column).
    #[arg(long, value_delimiter = ',')]
    pub cols: Vec<String>,
    /// accuracy (higher is better), error or loss (lower is better).
    #[arg(long, default_value = "accuracy")]
    pub metric: String,
    /// paired (runs paired by seed) or welch (unpaired).
    #[arg(long, default_value = "paired")]
    pub test: String,
    /// Significance level of the one-sided test.
    #[arg(long, default_value_t = 0.05)]
    pub level: f64,
    /// Correction of each table's p-values: auto (Holm above 3 comparisons), holm or none.
    #[arg(long, default_value = "auto")]
    pub correction: String,
    /// Evaluation schemes to tabulate, comma-separated (default: all but the α grid).
    #[arg(long, value_delimiter = ',')]
    pub schemes: Vec<String>,
    /// The scheme of the batch-size figure.
    #[arg(long, default_value = "population")]
    pub figure_scheme: String,
    /// Judge the `[[claim]]`s of this spec instead of those the sweep was run with (one
    /// claim folder's report of a shared pool): the report keeps the configurations and test
    /// schemes the claims compare. The spec must be the sweep's.
    #[arg(long)]
    pub claims: Option<PathBuf>,
    /// Figures as PNG only (no SVG copies), for reports that are committed.
    #[arg(long)]
    pub no_svg: bool,
    /// Output directory (default: DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `bnlab bench train …`.
#[derive(Debug, clap::Args)]
pub struct TrainBenchArgs {
    /// A registered network (`bnlab models`): resnet20, resnet18-cifar, …
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Timed steps (the medians are reported).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Image height and width.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// The normalization kernels: auto (bnlab's choice per device), fused (wherever
    /// available) or composed (the reference).
    #[arg(long, value_enum, default_value_t = KernelArg::Auto)]
    pub kernel: KernelArg,
    /// The convolution kernels: bnlab's (auto, fused) or Burn's own (composed).
    #[arg(long, value_enum, default_value_t = KernelArg::Auto)]
    pub conv: KernelArg,
    /// Also time PreciseBN over this many samples (0: skip) against one epoch of 50,000.
    #[arg(long, default_value_t = 0)]
    pub precise: usize,
    /// Under `mpirun -np K … --distributed mpi`: each of the K processes trains on batch/K
    /// examples, gradients summed every step.
    #[arg(long, value_enum)]
    pub distributed: Option<Distributed>,
    /// With `--distributed`: per-worker BN (`worker`), SyncBN (`all`) or Shuffle BN (`shuffle`).
    #[arg(long, value_enum, default_value_t = SyncArg::Worker)]
    pub sync: SyncArg,
    /// The activations' dtype: f32, f16 or bf16 (mixed precision: parameters and
    /// statistics stay f32).
    #[arg(long, default_value = "f32")]
    pub precision: bnlab_norm::Precision,
    /// Where to compute.
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `--sync` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncArg {
    /// Statistics of each worker's own examples.
    Worker,
    /// SyncBN over all workers.
    All,
    /// Per-worker statistics of examples shuffled across workers every step.
    Shuffle,
}

/// `--kernel` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    /// bnlab's choice per device (the default of specs).
    Auto,
    /// bnlab's kernels wherever the backend has them (on a GPU, the normalization kernels
    /// that plan their statistics on the host).
    Fused,
    /// Burn's own operations (the reference path).
    Composed,
}

/// The transport of data-parallel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distributed {
    /// One thread per worker in this process.
    Threads,
    /// One process per worker under `mpirun` (build with `--features mpi`).
    Mpi,
    /// One thread per CUDA device, through Burn's device all-reduce (build with
    /// `--features cuda`, whose build downloads an LLVM bundle).
    Cuda,
}
