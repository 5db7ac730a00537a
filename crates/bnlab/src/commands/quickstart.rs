//! `bnlab quickstart`: Davis & Frank's γ = 0.1, c = 100 against BASE (γ = 1, c = 1) on a
//! CIFAR-style ResNet-20 with BN input normalization, 3 seeds, on the bundled Fashion-MNIST
//! subset; prints the comparison tables and writes the full report.

use std::path::Path;

use anyhow::{Context, Result};
use bnlab_train::{Baseline, ReportOptions, Spec, SweepResults, build_report, scheme_section};

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
precise_every_epoch = true

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

/// Runs the quickstart into `out`, prints its tables and writes its report to `out/report`.
pub fn run(out: &Path, quiet: bool, jobs: usize) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec_path = out.join("quickstart.toml");
    bnlab_data::write_atomic(&spec_path, SPEC.as_bytes())?;
    let spec = Spec::parse(SPEC, &spec_path.display().to_string())?;
    super::run::sweep(
        &spec,
        out,
        &super::run::Launch::simple(jobs, quiet),
        Default::default(),
    )?;
    let results = SweepResults::load(out)?;
    let options = ReportOptions::default();
    let baseline = Baseline::resolve("base", &results)?;
    for scheme in ["population", "precise"] {
        let (section, _, _) = scheme_section(&results, scheme, Some(&baseline), &options.table)?;
        println!("{section}");
    }
    let report = out.join("report");
    build_report(&results, &options)?.write(&report)?;
    println!(
        "Report with figures: {}",
        report.join("report.md").display()
    );
    println!(
        "2 epochs per run: a smoke-sized budget next to the papers' 180, so read the gap as\n\
         \"at this budget\"; `bnlab run` takes the spec in {} for longer runs.\n\
         Results: {}; rerunning continues an interrupted sweep.",
        spec_path.display(),
        out.join("results").display()
    );
    Ok(())
}
