//! `bnlab import` and `bnlab export`: PyTorch state dicts (torchvision's and timm's layouts)
//! in and out, with the BN buffers converted between conventions explicitly.

use anyhow::{Context, Result, bail};
use bnlab_models::torch::{
    StateDict, export_state_dict, import_state_dict, read_state_dict, write_safetensors,
};
use bnlab_norm::VarianceStorage;
use bnlab_train::{
    MODEL_FILE, RunData, RunFile, RunResult, Spec, Status, SweepFile, load_model, new_network,
    result_path, run_dir, save_model, stamps,
};
use burn::tensor::{Device, TensorData};

use crate::args::{ExportArgs, ImportArgs};

/// The configuration name of an imported model.
const IMPORTED: &str = "imported";

/// Every `running_var` of `state` converted from `from` to `to`, from batches of `n` values.
fn convert_variance(
    state: &mut StateDict,
    from: VarianceStorage,
    to: VarianceStorage,
    n: Option<f64>,
) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let Some(n) = n.filter(|n| *n > 1.0) else {
        bail!(
            "converting the running variance between biased and unbiased needs --stats-values, the values per channel of the batches it came from (N·H·W), more than 1"
        );
    };
    for (key, data) in state.iter_mut().filter(|(k, _)| k.ends_with("running_var")) {
        let values = data
            .clone()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("`{key}`: {e:?}"))?;
        let shape = data.shape().to_vec();
        let converted: Vec<f32> = values
            .iter()
            .map(|&v| from.convert(v as f64, to, n) as f32)
            .collect();
        *data = TensorData::new(converted, shape);
    }
    Ok(())
}

/// The spec of an imported model: its network and BN conventions, and the data it is
/// evaluated on (training settings are placeholders: it is never trained).
fn import_spec(a: &ImportArgs) -> Result<Spec> {
    let mut data = format!(
        "dataset = {:?}\nvalidation = 0.0\nscaling = {:?}\n",
        a.dataset, a.scaling
    );
    if let Some(root) = &a.root {
        data += &format!("root = {:?}\n", root.display().to_string());
    }
    if a.image_size != 256 {
        data += &format!("image_size = {}\n", a.image_size);
    }
    if let Some(crop) = a.crop {
        data += &format!("augment = \"crop-flip\"\ncrop = {crop}\n");
    }
    let ema = match a.keras_decay {
        Some(d) => format!("decay = {d}"),
        None => format!("momentum = {}", a.momentum),
    };
    let text = format!(
        "name = {IMPORTED:?}\nseeds = [1]\n[data]\n{data}[model]\nname = {:?}\nwidth = {}\n[model.norm]\n{ema}\nepsilon = {}\nvariance = {:?}\n[train]\nepochs = 1\nbatch_size = 64\n[[variant]]\nname = {IMPORTED:?}\n",
        a.model, a.width, a.eps, a.variance
    );
    Ok(Spec::parse(&text, "the import's settings")?)
}

/// `bnlab import`.
pub fn import(a: &ImportArgs) -> Result<()> {
    let spec = import_spec(a)?;
    let configuration = &spec.configurations[0];
    let config = &configuration.config;
    let data = RunData::load(&config.data, config.scaling())?;
    if let Some(k) = a.classes
        && k != data.classes()
    {
        bail!(
            "--classes {k}, but `{}` has {} classes",
            a.dataset,
            data.classes()
        );
    }
    let mut state = read_state_dict(&a.weights)?;
    // PyTorch stores the running variance unbiased
    convert_variance(
        &mut state,
        VarianceStorage::Unbiased,
        config.model.norm.variance,
        a.stats_values,
    )?;
    let key = &spec.runs()[0];
    let device = Device::flex();
    let network = new_network(config, &data, key.seed, None, &device)?;
    let (model, report) = import_state_dict(network, &state, a.strict)
        .with_context(|| format!("importing {} into {}", a.weights.display(), a.model))?;
    for key in &report.missing {
        eprintln!("left at initialization (not in the file): {key}");
    }
    for key in &report.unused {
        eprintln!("not used (no such tensor in {}): {key}", a.model);
    }

    let dir = run_dir(&a.out, &key.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamps = stamps(&spec)?;
    let stamp = &stamps[0];
    save_model(&model, &dir.join(MODEL_FILE))?;
    let run = RunFile {
        configuration: configuration.name.clone(),
        index: key.index,
        seed: key.seed,
        config: config.clone(),
        fingerprint: Some(stamp.fingerprint.clone()),
        input_stats: None,
    };
    run.save(&dir)?;
    let result = RunResult::untrained(&spec, key, stamp, Status::Finished);
    std::fs::create_dir_all(a.out.join("results"))?;
    result.save(&result_path(&a.out, &key.id))?;
    SweepFile::of(&spec, &stamps).save(&a.out)?;
    println!(
        "imported {} into {} ({} tensors); evaluate it with `bnlab eval {}`",
        a.weights.display(),
        a.model,
        state.len() - report.unused.len(),
        dir.display()
    );
    Ok(())
}

/// `bnlab export`.
pub fn export(a: &ExportArgs) -> Result<()> {
    if a.format != "safetensors" {
        bail!("--format {}: bnlab exports safetensors", a.format);
    }
    let run = RunFile::load(&a.run)?;
    let data = RunData::load(&run.config.data, run.config.scaling())?;
    let device = Device::flex();
    let network = new_network(
        &run.config,
        &data,
        run.seed,
        run.input_stats.clone(),
        &device,
    )?;
    let model = load_model(network, &a.run.join(&a.model_file))?;
    let mut state = export_state_dict(&model)?;
    convert_variance(
        &mut state,
        run.config.model.norm.variance,
        VarianceStorage::Unbiased,
        a.stats_values,
    )?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.run.join("model.safetensors"));
    write_safetensors(&state, &out)?;
    println!(
        "{} tensors with PyTorch's names: {}",
        state.len(),
        out.display()
    );
    Ok(())
}
