//! `bnlab quickstart`: Davis & Frank's γ = 0.1, c = 100 against BASE (γ = 1, c = 1) on a
//! CIFAR-style ResNet-20 with BN input normalization, 3 seeds, on the bundled Fashion-MNIST
//! subset; prints the comparison table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use bnlab_train::{Alternative, RunResult, Spec, Status, paired_t_test, result_path, summary};

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

/// Test accuracy (%) under `scheme` of every finished run, by run index.
fn accuracies(runs: &[RunResult], scheme: &str) -> BTreeMap<u32, f64> {
    runs.iter()
        .filter(|r| r.status == Status::Finished)
        .filter_map(|r| r.test.get(scheme).map(|m| (r.index, 100.0 * m.accuracy)))
        .collect()
}

/// The comparison table of a finished quickstart under `out`: mean ± std over seeds, and a
/// one-sided paired t-test (paired by seed) of each configuration against the baseline.
pub fn table(spec: &Spec, out: &Path) -> Result<String> {
    let mut by_config: BTreeMap<usize, Vec<RunResult>> = BTreeMap::new();
    for key in spec.runs() {
        let path = result_path(out, &key.id);
        let r = RunResult::load(&path).with_context(|| format!("reading {}", path.display()))?;
        by_config.entry(key.configuration).or_default().push(r);
    }
    let baseline = spec
        .configurations
        .iter()
        .position(|c| Some(&c.name) == spec.baseline.as_ref());
    let base_acc = baseline
        .and_then(|b| by_config.get(&b))
        .map(|runs| accuracies(runs, "population"))
        .unwrap_or_default();
    let mut rows = String::from(
        "| configuration | seeds | test acc. (EMA stats) | test acc. (PreciseBN) | vs baseline: one-sided paired t-test |\n|---|---|---|---|---|\n",
    );
    for (c, runs) in &by_config {
        let (pop, precise) = (accuracies(runs, "population"), accuracies(runs, "precise"));
        let cell = |v: &BTreeMap<u32, f64>| match summary(&v.values().copied().collect::<Vec<_>>())
        {
            Some(s) => format!("{:.2} ± {:.2} %", s.mean, s.std),
            None => "–".into(),
        };
        let test = if Some(*c) == baseline {
            "baseline".to_string()
        } else {
            let (a, b): (Vec<f64>, Vec<f64>) = pop
                .iter()
                .filter_map(|(i, a)| base_acc.get(i).map(|b| (*a, *b)))
                .unzip();
            match paired_t_test(&a, &b, Alternative::Greater) {
                Ok(t) => format!(
                    "t = {:.2}, p = {:.3} ({} pairs)",
                    t.statistic,
                    t.p_value,
                    a.len()
                ),
                Err(e) => format!("n/a: {e}"),
            }
        };
        rows.push_str(&format!(
            "| {} | {}/{} | {} | {} | {} |\n",
            spec.configurations[*c].name,
            pop.len(),
            runs.len(),
            cell(&pop),
            cell(&precise),
            test
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
