//! `bnlab eval RUN --stats …` and `bnlab precise-bn RUN …`: a finished run's model under
//! another statistics source.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bnlab_models::Network;
use bnlab_norm::{PopulationEstimator, StatsSource};
use bnlab_train::{
    EvalKey, Metrics, RunData, RunFile, evaluate_batches, precise_bn, precise_bn_exact, save_model,
    stat_batches, with_source,
};
use burn::module::Module;
use burn::tensor::Device;

/// A run's data and model on the CPU.
struct Loaded {
    run: RunFile,
    data: RunData,
    model: Network,
    device: Device,
}

fn load(dir: &Path) -> Result<Loaded> {
    let run = RunFile::load(dir)?;
    let data = RunData::load(&run.config.data, run.config.scaling())?;
    let device = Device::flex();
    let model = run
        .network(dir, &data, &device)
        .with_context(|| format!("loading the model of {}", dir.display()))?;
    Ok(Loaded {
        run,
        data,
        model,
        device,
    })
}

impl Loaded {
    /// Test metrics of `model` in batches of `batch`.
    fn test(&self, model: &Network, batch: usize, drop_last: bool) -> Result<Metrics> {
        let loader = self.data.loader(
            &self.data.test,
            batch,
            drop_last,
            false,
            None,
            self.run.seed as u64,
        )?;
        let batches = loader.epoch(&self.data.test_pool, None, 0)?;
        Ok(evaluate_batches(model, batches, &self.device)?)
    }

    /// PreciseBN statistics from `samples` training images in batches of `batch`.
    fn precise(
        &self,
        samples: usize,
        batch: usize,
        exact: bool,
        estimator: PopulationEstimator,
    ) -> Result<Network> {
        if batch == 0 || samples == 0 {
            bail!("--samples and --batch must be at least 1");
        }
        let (data, seed) = (&self.data, self.run.seed as u64);
        let batches = |layer: usize| {
            stat_batches(
                data,
                &data.train,
                &data.train_pool,
                samples,
                batch,
                None,
                seed,
                layer as u64,
                None,
                &self.device,
            )
        };
        Ok(if exact {
            precise_bn_exact(self.model.valid(), batches, estimator)?
        } else {
            precise_bn(self.model.valid(), batches(0)?, estimator)?
        })
    }
}

fn print(name: &str, m: &Metrics) {
    println!(
        "{name}: accuracy {:.2}%, loss {:.4} on {} test images",
        100.0 * m.accuracy,
        m.loss,
        m.examples
    );
}

/// `bnlab eval`.
pub fn eval(dir: &Path, stats: &str, batch: usize, samples: usize) -> Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let l = load(dir)?;
    // the scheme by its result key (`bnlab_train::EvalKey`); `minibatch` takes --batch, and
    // the documented `alpha=A` reads as the key `alpha-A`
    let name = match stats {
        "minibatch" => format!("minibatch-{batch}"),
        other => other.replacen("alpha=", "alpha-", 1),
    };
    let (model, batch, drop_last) = match EvalKey::parse(&name) {
        Some(EvalKey::Population) => (
            with_source(l.model.valid(), StatsSource::Population),
            batch,
            false,
        ),
        Some(EvalKey::Precise) => (
            l.precise(samples, batch, false, PopulationEstimator::Pooled)?,
            batch,
            false,
        ),
        Some(EvalKey::MiniBatch(b)) if b > 0 => (
            with_source(l.model.valid(), StatsSource::MiniBatch),
            b,
            true,
        ),
        Some(EvalKey::Alpha(alpha)) if (0.0..=1.0).contains(&alpha) => (
            with_source(l.model.valid(), StatsSource::ExampleWeighed { alpha }),
            batch,
            false,
        ),
        _ => bail!(
            "--stats must be population, precise, minibatch or alpha=A with A in [0, 1], not `{stats}`"
        ),
    };
    print(stats, &l.test(&model, batch, drop_last)?);
    Ok(())
}

/// `bnlab precise-bn`.
pub fn precise(
    dir: &Path,
    samples: usize,
    batch: usize,
    exact: bool,
    estimator: &str,
    out: Option<PathBuf>,
) -> Result<()> {
    let estimator: PopulationEstimator = bnlab_norm::by_name(estimator).context("--estimator")?;
    let l = load(dir)?;
    let before = l.test(
        &with_source(l.model.valid(), StatsSource::Population),
        128,
        false,
    )?;
    let model = l.precise(samples, batch, exact, estimator)?;
    let after = l.test(&model, 128, false)?;
    let out = out.unwrap_or_else(|| dir.join("model-precise.bpk"));
    save_model(&model, &out)?;
    print("stored (EMA) statistics", &before);
    let name = if exact {
        "PreciseBN, layer by layer"
    } else {
        "PreciseBN"
    };
    print(&format!("{name} (N = {samples}, B = {batch})"), &after);
    println!("model with PreciseBN statistics: {}", out.display());
    Ok(())
}
