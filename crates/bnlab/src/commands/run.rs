//! `bnlab run SPEC --out DIR`: a sweep with progress bars and a log file in DIR.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bnlab_norm::DeviceName;
use bnlab_train::{Bars, Progress, Quiet, Spec, SweepOptions, SweepSummary, Transport, run_sweep};

use crate::args::{Distributed, RunArgs};

/// Sends tracing events to `out/NAME` (once per process).
fn log_to(out: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // a second sweep in the same process keeps the first log
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .try_init();
    Ok(())
}

/// How this process takes part in a sweep: everything of `bnlab run` but the spec and
/// the transport.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Runs trained at once.
    pub jobs: usize,
    /// No progress bars.
    pub quiet: bool,
    /// Stop after this many epochs.
    pub stop_after_epochs: Option<usize>,
    /// Retrain changed runs.
    pub restart_changed: bool,
    /// Only this part of the runs.
    pub shard: Option<bnlab_train::Shard>,
    /// The claim lease.
    pub lease: std::time::Duration,
}

impl Launch {
    /// A plain sweep in this process: `jobs` at once, nothing else asked.
    pub fn simple(jobs: usize, quiet: bool) -> Self {
        Self {
            jobs,
            quiet,
            stop_after_epochs: None,
            restart_changed: false,
            shard: None,
            lease: SweepOptions::DEFAULT_LEASE,
        }
    }
}

/// Runs `bnlab run`; an interrupted or failed sweep is an error.
pub fn run(args: &RunArgs) -> Result<SweepSummary> {
    let mut spec = Spec::load(&args.spec)?;
    if let Some(device) = args.device.device {
        spec.set_device(device);
    }
    let out = args.out.as_path();
    if args.lease_secs == 0 {
        anyhow::bail!("--lease-secs must be at least 1");
    }
    let launch = Launch {
        jobs: args.jobs,
        quiet: args.quiet,
        stop_after_epochs: args.stop_after_epochs,
        restart_changed: args.restart_changed,
        shard: args.shard,
        lease: std::time::Duration::from_secs(args.lease_secs),
    };
    match args.distributed {
        Distributed::Threads => sweep(&spec, out, &launch, Transport::Threads),
        Distributed::Mpi => sweep_mpi(&spec, out, &launch),
        Distributed::Cuda => {
            // every run of the sweep computes on CUDA, single-worker ones too, so that the
            // fingerprint names the device the results come from
            match args.device.device {
                Some(d) if d.kind() != "cuda" => anyhow::bail!(
                    "--distributed cuda trains on CUDA devices, not on {d}: drop --device or use --device cuda"
                ),
                _ => spec.set_device(DeviceName::Cuda(0)),
            }
            let workers = spec
                .configurations
                .iter()
                .map(|c| c.config.train.distributed.workers)
                .max()
                .unwrap_or(1);
            let transport = Transport::Devices(cuda_devices(workers)?);
            sweep(&spec, out, &launch, transport)
        }
    }
}

/// CUDA devices 0..k.
#[cfg(feature = "cuda")]
fn cuda_devices(k: usize) -> Result<Vec<burn::tensor::Device>> {
    Ok((0..k).map(burn::tensor::Device::cuda).collect())
}

/// Without the `cuda` feature: says how to get it.
#[cfg(not(feature = "cuda"))]
fn cuda_devices(_: usize) -> Result<Vec<burn::tensor::Device>> {
    anyhow::bail!(
        "this bnlab was built without CUDA: build with `cargo build --release -p bnlab --features cuda` (its build downloads an LLVM bundle: see the README's Backends)"
    )
}

/// Runs `spec` as one process of an MPI job: rank 0 shows progress and writes results; a
/// failing rank stops the whole job.
#[cfg(feature = "mpi")]
fn sweep_mpi(spec: &Spec, out: &Path, launch: &Launch) -> Result<SweepSummary> {
    use bnlab_norm::Collective;
    // the longest timeout any configuration allows
    let secs = spec
        .configurations
        .iter()
        .map(|c| c.config.train.distributed.timeout_secs)
        .max()
        .unwrap_or(600);
    let (_universe, world) =
        bnlab_collective::MpiGroup::start(std::time::Duration::from_secs(secs))?;
    let launch = Launch {
        quiet: launch.quiet || world.rank() > 0,
        ..launch.clone()
    };
    let transport = Transport::Processes(world.clone());
    let outcome = sweep(spec, out, &launch, transport);
    if let Err(e) = &outcome
        && world.size() > 1
    {
        world.abort(&format!("{e:#}"));
    }
    outcome
}

/// Without the `mpi` feature: says how to get it.
#[cfg(not(feature = "mpi"))]
fn sweep_mpi(_: &Spec, _: &Path, _: &Launch) -> Result<SweepSummary> {
    anyhow::bail!(
        "this bnlab was built without MPI: install Open MPI and libclang (apt-get install libopenmpi-dev openmpi-bin libclang-dev) and build with `cargo build --release -p bnlab --features mpi`"
    )
}

/// Runs a parsed spec into `out`.
pub fn sweep(
    spec: &Spec,
    out: &Path,
    launch: &Launch,
    transport: Transport,
) -> Result<SweepSummary> {
    let log = match &transport {
        Transport::Processes(c) if c.rank() > 0 => format!("bnlab.rank{}.log", c.rank()),
        _ => "bnlab.log".to_string(),
    };
    log_to(out, &log)?;
    let mut runs = spec.runs();
    if let Some(shard) = launch.shard {
        runs = shard.select(runs);
    }
    let total = runs.len();
    let done = runs
        .iter()
        .filter(|r| bnlab_train::result_path(out, &r.id).exists())
        .count();
    let progress: Arc<dyn Progress> = if launch.quiet {
        Arc::new(Quiet)
    } else {
        Arc::new(Bars::new(total, done))
    };
    let options = SweepOptions {
        budget: launch.stop_after_epochs,
        transport,
        restart_changed: launch.restart_changed,
        shard: launch.shard,
        lease: launch.lease,
        ..SweepOptions::new(launch.jobs, progress)
    };
    let summary = run_sweep(spec, out, &options)
        .with_context(|| format!("sweep `{}` into {}", spec.name, out.display()))?;
    if matches!(&options.transport, Transport::Processes(c) if c.rank() > 0) {
        return Ok(summary);
    }
    let mut also = String::new();
    if summary.elsewhere > 0 {
        also.push_str(&format!(", {} by other workers", summary.elsewhere));
    }
    if summary.reevaluated > 0 {
        also.push_str(&format!(
            ", {} evaluated again (only their [eval] settings changed)",
            summary.reevaluated
        ));
    }
    if summary.restarted > 0 {
        also.push_str(&format!(
            ", {} changed runs retrained (old files in {})",
            summary.restarted,
            out.join("superseded").display()
        ));
    }
    eprintln!(
        "{}: {} finished, {} failed, {} already done{also}; results in {}",
        spec.name,
        summary.finished,
        summary.failed,
        summary.already_done,
        out.join("results").display()
    );
    Ok(summary)
}
