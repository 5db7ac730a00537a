//! `bnlab eval RUN --stats …` and `bnlab precise-bn RUN …`: a finished run's model under
//! another statistics source, measured by the sweep's own evaluation code and added to the
//! run, where the report reads it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use bnlab_models::Network;
use bnlab_norm::{NormMode, PopulationEstimator, set_norm_mode};
use bnlab_train::{
    AddedEvaluation, AddedEvaluations, EvalConfig, EvalKey, Evaluations, Metrics, OneOrMany,
    PrecisePolicy, RunConfig, RunData, RunFile, Scheme, evaluate_schemes, final_precise,
    save_model,
};
use burn::tensor::Device;

use crate::args::{DeviceArg, EvalArgs, PreciseArgs};

/// A run's data and model on its device.
struct Loaded {
    run: RunFile,
    data: RunData,
    model: Network,
    device: Device,
}

/// Loads the run in `dir` onto `device` (default: the device it was trained on).
fn load(dir: &Path, device: DeviceArg) -> Result<Loaded> {
    let run = RunFile::load(dir)?;
    let data = RunData::load(&run.config.data, run.config.scaling())?;
    let trained_on = run.config.train.device;
    let device = match device.device {
        Some(asked) => asked.device()?,
        None => trained_on.device().with_context(|| {
            format!(
                "the run was trained on {trained_on}: pass --device flex to evaluate it on the CPU"
            )
        })?,
    };
    let model = run
        .network(dir, &data, &device)
        .with_context(|| format!("loading the model of {}", dir.display()))?;
    Ok(Loaded {
        run,
        data,
        model: set_norm_mode(model, NormMode::EVAL),
        device,
    })
}

impl Loaded {
    /// The run's settings with `eval` as the evaluation: on the run's own splits, in batches
    /// of `batch`.
    fn config(&self, batch: usize, eval: EvalConfig) -> RunConfig {
        let mut config = self.run.config.clone();
        config.eval = EvalConfig {
            batch_size: batch,
            splits: config.eval.splits.clone(),
            ..eval
        };
        config
    }

    /// The one evaluation `config` asks for of `model`, by the sweep's own code.
    fn evaluate(&self, model: &Network, config: &RunConfig) -> Result<(Metrics, Option<Metrics>)> {
        let Evaluations { test, validation } = evaluate_schemes(
            config,
            &self.data,
            model,
            self.run.seed as u64,
            &self.device,
        )?;
        let first = |m: BTreeMap<String, Metrics>| m.into_values().next();
        let test = first(test).context("the evaluation measured nothing")?;
        Ok((test, first(validation)))
    }
}

/// Prints `m` under `name`.
fn print(name: &str, m: &Metrics) {
    println!(
        "{name}: accuracy {:.2}%, loss {:.4} on {} images",
        100.0 * m.accuracy,
        m.loss,
        m.examples
    );
}

/// Adds `key`'s metrics to the run in `dir` and prints them under `name`.
fn record(
    dir: &Path,
    key: &EvalKey,
    name: &str,
    (test, validation): (Metrics, Option<Metrics>),
) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    print(&format!("{name}, test set"), &test);
    if let Some(v) = &validation {
        print(&format!("{name}, validation images"), v);
    }
    let evaluation = AddedEvaluation {
        test,
        validation,
        command,
    };
    AddedEvaluations::record(dir, &key.to_string(), evaluation)?;
    println!(
        "added as `{key}` to {}",
        AddedEvaluations::path(dir).display()
    );
    Ok(())
}

/// An evaluation of one scheme.
fn one(scheme: Scheme) -> EvalConfig {
    EvalConfig {
        schemes: vec![scheme],
        ..EvalConfig::default()
    }
}

/// The PreciseBN evaluation of N = `samples` images in batches of B = `batch` (normalized
/// whole when `whole`), with `estimator`, layer by layer when `exact`; and its key.
fn precise_eval(
    samples: usize,
    batch: usize,
    whole: bool,
    (estimator, exact): (PopulationEstimator, bool),
) -> Result<(EvalConfig, EvalKey)> {
    if batch == 0 || samples == 0 {
        bail!("--samples and --batch must be at least 1");
    }
    let policy = if whole {
        PrecisePolicy::WholeBatch
    } else {
        PrecisePolicy::AsTrained
    };
    let eval = EvalConfig {
        precise_samples: OneOrMany::One(samples),
        precise_batch: OneOrMany::One(batch),
        precise_policy: OneOrMany::One(policy),
        estimator,
        exact,
        ..one(Scheme::Precise)
    };
    let key = EvalKey::Precise {
        size: Some((samples, batch)),
        whole,
        exact,
        eq3: estimator == PopulationEstimator::MeanOfVariances,
    };
    Ok((eval, key))
}

/// `bnlab eval`.
pub fn eval(a: &EvalArgs) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    // the scheme by its result key (`bnlab_train::EvalKey`); `minibatch` takes --batch, and
    // the documented `alpha=A` reads as the key `alpha-A`
    let name = match a.stats.as_str() {
        "minibatch" => format!("minibatch-{}", a.batch),
        other => other.replacen("alpha=", "alpha-", 1),
    };
    let (eval, key) = match EvalKey::parse(&name) {
        Some(EvalKey::Population) => (one(Scheme::Population), EvalKey::Population),
        Some(EvalKey::Precise { .. }) => precise_eval(
            a.samples,
            a.batch,
            a.whole_batch,
            (PopulationEstimator::Pooled, false),
        )?,
        Some(EvalKey::MiniBatch(b)) if b > 0 => (
            EvalConfig {
                minibatch_sizes: vec![b],
                ..one(Scheme::Minibatch)
            },
            EvalKey::MiniBatch(b),
        ),
        Some(EvalKey::Alpha(alpha)) if (0.0..=1.0).contains(&alpha) => (
            EvalConfig {
                alphas: vec![alpha],
                ..one(Scheme::Alpha)
            },
            EvalKey::Alpha(alpha),
        ),
        _ => bail!(
            "--stats must be population, precise, minibatch or alpha=A with A in [0, 1], not `{}`",
            a.stats
        ),
    };
    let l = load(&a.run, a.device)?;
    let measured = l.evaluate(&l.model, &l.config(a.batch, eval))?;
    record(&a.run, &key, &a.stats, measured)
}

/// `bnlab precise-bn`.
pub fn precise(a: &PreciseArgs) -> Result<()> {
    let estimator: PopulationEstimator =
        bnlab_norm::by_name(&a.estimator).context("--estimator")?;
    let how = (estimator, a.exact);
    let (eval, key) = precise_eval(a.samples, a.batch, a.whole_batch, how)?;
    let l = load(&a.run, a.device)?;
    let batch = l.run.config.eval.batch_size;
    let config = l.config(batch, eval);
    let setting = config.eval.primary_precise();
    let seed = l.run.seed as u64;
    let model = final_precise(&config, &l.data, &l.model, setting, None, seed, &l.device)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.run.join("model-precise.bpk"));
    save_model(&model, &out)?;
    let population = l.config(batch, one(Scheme::Population));
    let (before, _) = l.evaluate(&l.model, &population)?;
    print("stored (EMA) statistics, test set", &before);
    // the saved model under its own (PreciseBN) population statistics
    let measured = l.evaluate(&model, &population)?;
    let how = if a.exact {
        "PreciseBN, layer by layer"
    } else {
        "PreciseBN"
    };
    let name = format!("{how} (N = {}, B = {})", a.samples, a.batch);
    record(&a.run, &key, &name, measured)?;
    println!("model with PreciseBN statistics: {}", out.display());
    Ok(())
}
