//! `bnlab quickstart`: Davis & Frank's γ = 0.1, c = 100 against BASE (γ = 1, c = 1) on a
//! CIFAR-style ResNet-20 with BN input normalization, 3 seeds, on the bundled Fashion-MNIST
//! subset; prints the comparison table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use bnlab_train::{RunResult, Spec, Status, result_path};

/// The quickstart's spec (also written to `OUT/quickstart.toml`).
pub const SPEC: &str = r#"# bnlab quickstart: Davis & Frank's γ < 1 with γ learning rate ÷ c against BASE
name = "quickstart"
seeds = 3
baseline = "base"

[data]
dataset = "fashion-mnist-subset"
validation = 0.1

[model]
name = "resnet20"
input_norm = "bn"

[optimizer]
lr = 0.1
weight_decay = 1e-4

[train]
epochs = 2
batch_size = 128

[eval]
schemes = ["population", "precise"]
precise_samples = 2048
precise_batch = 128

[[variant]]
name = "base"

[[variant]]
name = "gamma0.1-c100"
"model.norm.gamma" = 0.1
"optimizer.gamma_lr_divisor" = 100.0
"#;

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The comparison table of a finished quickstart under `out`.
pub fn table(spec: &Spec, out: &Path) -> Result<String> {
    let mut rows = String::from(
        "| configuration | seeds | test acc. (EMA stats) | test acc. (PreciseBN) | per seed (EMA) |\n|---|---|---|---|---|\n",
    );
    let mut by_config: BTreeMap<usize, Vec<RunResult>> = BTreeMap::new();
    for key in spec.runs() {
        let path = result_path(out, &key.id);
        let r = RunResult::load(&path).with_context(|| format!("reading {}", path.display()))?;
        by_config.entry(key.configuration).or_default().push(r);
    }
    for (c, runs) in by_config {
        let ok: Vec<&RunResult> = runs
            .iter()
            .filter(|r| r.status == Status::Finished)
            .collect();
        let acc = |scheme: &str| -> Vec<f64> {
            ok.iter()
                .filter_map(|r| r.test.get(scheme).map(|m| 100.0 * m.accuracy))
                .collect()
        };
        let (pop, precise) = (acc("population"), acc("precise"));
        let cell = |v: &[f64]| {
            if v.is_empty() {
                "–".to_string()
            } else {
                let (m, s) = mean_std(v);
                format!("{m:.2} ± {s:.2} %")
            }
        };
        let seeds: Vec<String> = pop.iter().map(|a| format!("{a:.2}")).collect();
        rows.push_str(&format!(
            "| {} | {}/{} | {} | {} | {} |\n",
            spec.configurations[c].name,
            ok.len(),
            runs.len(),
            cell(&pop),
            cell(&precise),
            seeds.join(", ")
        ));
    }
    Ok(rows)
}

/// Runs the quickstart into `out` and prints its table.
pub fn run(out: &Path, quiet: bool, jobs: usize) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec_path = out.join("quickstart.toml");
    bnlab_data::write_atomic(&spec_path, SPEC.as_bytes())?;
    let spec = Spec::parse(SPEC, &spec_path.display().to_string())?;
    super::run::sweep(&spec, out, jobs, quiet, None)?;
    println!("{}", table(&spec, out)?);
    println!(
        "2 epochs per run: a smoke-sized budget next to the papers' 180, so read the gap as\n\
         \"at this budget\"; `bnlab run` takes the spec in {} for longer runs.\n\
         Results: {}; rerunning continues an interrupted sweep.",
        spec_path.display(),
        out.join("results").display()
    );
    Ok(())
}
