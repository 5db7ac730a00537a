//! `bnlab quickstart`: a claim of the papers that bnlab reproduces at small scale, Wu &
//! Johnson's Adaptive BN (Table 4): on low-contrast images, BN statistics re-estimated on the
//! shifted images beat the training statistics, and the reverse hurts clean images. A
//! CIFAR-style ResNet-20, 4 seeds, 3 epochs, on the bundled Fashion-MNIST subset; prints each
//! claim with the paper's figure, ours and the verdict, and writes the full report.

use std::path::Path;

use anyhow::{Context, Result};
use bnlab_norm::DeviceName;
use bnlab_train::{ReportOptions, Spec, SweepResults, build_report, claims, summary};

/// The quickstart's spec, `specs/quickstart.toml` (also written to `OUT/quickstart.toml`).
pub const SPEC: &str = include_str!("../../../../specs/quickstart.toml");

/// Runs the quickstart into `out`, prints each claim with its verdict and writes the report
/// to `out/report`.
pub fn run(out: &Path, quiet: bool, jobs: usize, device: Option<DeviceName>) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec_path = out.join("quickstart.toml");
    bnlab_data::write_atomic(&spec_path, SPEC.as_bytes())?;
    let mut spec = Spec::parse(SPEC, &spec_path.display().to_string())?;
    if let Some(device) = device {
        spec.set_device(device);
    }
    super::run::sweep(
        &spec,
        out,
        &super::run::Launch::simple(jobs, quiet),
        Default::default(),
    )?;
    let results = SweepResults::load(out)?;
    let options = ReportOptions::default();
    for outcome in claims(&results, options.table.correction) {
        let c = &outcome.claim;
        println!("Claim: {} ({})", c.name, c.describe());
        println!("  paper:  {}", c.paper.as_deref().unwrap_or("–"));
        let means: Vec<String> = c
            .cells()
            .into_iter()
            .map(|(_, configuration, scheme)| {
                let v: Vec<f64> = results
                    .values(configuration, scheme, c.metric)
                    .into_values()
                    .collect();
                match summary(&v) {
                    Some(s) => format!("{scheme} {:.2} %", s.mean),
                    None => format!("{scheme} –"),
                }
            })
            .collect();
        println!("  ours:   test accuracy, {}", means.join(" vs "));
        match (&outcome.difference, &outcome.error) {
            (Some(d), _) => println!(
                "  Δ:      {:+.2} points over {} seeds, 95 % CI {:.2}, p = {:.4} (two-sided paired t)",
                d.mean, d.n, d.t_ci, d.t_p.two_sided
            ),
            (None, Some(why)) => println!("  Δ:      no difference: {why}"),
            (None, None) => println!("  Δ:      no difference"),
        }
        let verdict = outcome.verdict.map_or("– (no verdict)", |v| v.label());
        println!("  verdict: {verdict}\n");
    }
    let report = out.join("report");
    build_report(&results, &options)?.write(&report)?;
    println!(
        "Report with tables and figures: {}",
        report.join("report.md").display()
    );
    println!(
        "3 epochs on 5,400 images: the full small-scale claim (8 seeds, 12 epochs, 10k images)\n\
         is repro/wj-table4-adaptive-bn, and REPRODUCTION.md lists every claim measured.\n\
         Results: {}; rerunning continues an interrupted sweep.",
        out.join("results").display()
    );
    Ok(())
}
