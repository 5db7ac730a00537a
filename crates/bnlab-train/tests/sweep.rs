//! End-to-end sweeps on synthetic data: learning, determinism, resume after a stop between
//! runs and mid-run, failures that do not stop the sweep.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use bnlab_train::{RunResult, Spec, Status, TrainError, run_sweep};
use common::options;

const SPEC: &str = r#"
name = "tiny"
seeds = 2
baseline = "base"

[data]
dataset = "synthetic"
validation = 0.25
threads = 1
[data.synthetic]
classes = 4
train_per_class = 48
test_per_class = 16
shape = [1, 8, 8]
difficulty = 0.2

[model]
name = "resnet20"

[optimizer]
lr = 0.1

[train]
epochs = 3
batch_size = 16

[eval]
schemes = ["population", "precise", "minibatch", "alpha", "train-minibatch"]
precise_samples = 64
precise_batch = 16
minibatch_sizes = [8]
alphas = [0.0, 0.5]
batch_size = 32

[[variant]]
name = "base"
[[variant]]
name = "gamma0.1"
"model.norm.gamma" = 0.1
"optimizer.gamma_lr_divisor" = 100.0
"#;

/// Every file under `dir/results`, by name, as bytes.
fn results(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("results"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Asserts two result sets are equal file for file, naming the first differing line.
fn assert_same(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, x) in a {
        let (x, y) = (
            String::from_utf8_lossy(x),
            String::from_utf8_lossy(&b[name]),
        );
        if let Some((i, (l, r))) = x
            .lines()
            .zip(y.lines())
            .enumerate()
            .find(|(_, (l, r))| l != r)
        {
            let ctx: Vec<&str> = x.lines().skip(i.saturating_sub(12)).take(14).collect();
            panic!(
                "{name} differs at line {}: {l} vs {r}\n{}",
                i + 1,
                ctx.join("\n")
            );
        }
        assert_eq!(x.len(), y.len(), "{name}");
    }
}

#[test]
fn a_sweep_learns_is_deterministic_and_resumes_file_for_file() {
    let spec = Spec::parse(SPEC, "tiny.toml").unwrap();
    assert_eq!(spec.runs().len(), 4);

    // uninterrupted
    let full = tempfile::tempdir().unwrap();
    let summary = run_sweep(&spec, full.path(), &options(None, 1)).unwrap();
    assert_eq!(summary.finished, 4);
    let reference = results(full.path());
    assert_eq!(reference.len(), 4);
    for (name, bytes) in &reference {
        let r: RunResult = serde_json::from_slice(bytes).unwrap();
        assert_eq!(r.status, Status::Finished, "{name}");
        assert_eq!(r.epochs.len(), 3);
        let first = r.epochs[0].train_loss;
        let last = r.epochs[2].train_loss;
        // chance is ln 4 = 1.386
        assert!(last < 0.7 && last < first, "{name}: {first} → {last}");
        // PreciseBN statistics classify the test set; after only 27 updates the EMA of the
        // γ = 0.1 variant still carries its initial variance of 1 (Wu & Johnson §3)
        let precise = r.test["precise"];
        assert!(precise.accuracy > 0.8, "{name}: {precise:?}");
        let test = r.test["population"];
        if name.starts_with("base") {
            assert!(test.accuracy > 0.8, "{name}: {test:?}");
        }
        for key in [
            "precise",
            "minibatch-8",
            "alpha-0",
            "alpha-0.5",
            "train-minibatch",
        ] {
            assert!(r.test.contains_key(key), "{name}: {key}");
        }
        // α = 0 is the population statistics
        assert_eq!(r.test["alpha-0"].accuracy, test.accuracy);
        assert!(r.best_epoch.is_some());
        assert!(!r.diagnostics.layers.is_empty());
        assert_eq!(r.diagnostics.histograms.len(), 8);
        // resnet20: 19 norm layers, each with an outlier share in [0, 1]
        let shares = &r.diagnostics.outlier_share;
        assert_eq!(shares.len(), 19, "{shares:?}");
        assert!(shares.values().all(|s| (0.0..=1.0).contains(s)));
        let layer = &r.diagnostics.layers[0];
        assert_eq!(layer.gamma.len(), layer.gamma_init.len());
        assert_eq!(layer.gradient_factor.len(), layer.gamma.len());
        assert!(r.diagnostics.layers.iter().any(|l| l.gamma_drift > 0.0));
    }
    // the same seed, the same bytes
    let again = tempfile::tempdir().unwrap();
    run_sweep(&spec, again.path(), &options(None, 2)).unwrap();
    assert_same(&results(again.path()), &reference);

    // stopped after one run and a half (5 epochs), then mid-run again, then finished
    let resumed = tempfile::tempdir().unwrap();
    for budget in [5, 2, 1] {
        let e = run_sweep(&spec, resumed.path(), &options(Some(budget), 1)).unwrap_err();
        assert!(matches!(e, TrainError::Interrupted), "{e}");
    }
    assert_eq!(results(resumed.path()).len(), 2);
    let summary = run_sweep(&spec, resumed.path(), &options(None, 1)).unwrap();
    assert_eq!(summary.already_done, 2);
    assert_same(&results(resumed.path()), &reference);
    // nothing is left to do
    let summary = run_sweep(&spec, resumed.path(), &options(None, 1)).unwrap();
    assert_eq!((summary.finished, summary.already_done), (0, 4));
}

#[test]
fn a_diverging_run_is_recorded_as_failed_and_the_sweep_goes_on() {
    let text = SPEC
        .replace("seeds = 2", "seeds = 1")
        .replace("lr = 0.1", "lr = 1e30")
        .replace("epochs = 3", "epochs = 1");
    let spec = Spec::parse(&text, "nan.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = run_sweep(&spec, dir.path(), &options(None, 1)).unwrap();
    assert_eq!(summary.failed + summary.finished, 2);
    assert!(summary.failed >= 1);
    let failed: Vec<RunResult> = results(dir.path())
        .values()
        .map(|b| serde_json::from_slice(b).unwrap())
        .filter(|r: &RunResult| matches!(r.status, Status::Failed { .. }))
        .collect();
    assert!(!failed.is_empty());
}

#[test]
fn frozen_bn_accumulation_precise_every_epoch_and_adaptive_bn_run_end_to_end() {
    let text = SPEC
        .replace("seeds = 2", "seeds = 1")
        .replace(
            "batch_size = 16\n",
            "batch_size = 16\nmicro_batch_size = 8\nfreeze_at_epoch = 2\nprecise_every_epoch = true\n",
        )
        .replace(
            "batch_size = 32\n",
            "batch_size = 32\nadapt = [{ corruption = \"Contrast\", severity = 3 }]\n",
        );
    let spec = Spec::parse(&text, "features.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    run_sweep(&spec, dir.path(), &options(None, 1)).unwrap();
    for bytes in results(dir.path()).values() {
        let r: RunResult = serde_json::from_slice(bytes).unwrap();
        assert_eq!(r.status, Status::Finished);
        let frozen: Vec<bool> = r.epochs.iter().map(|e| e.frozen).collect();
        assert_eq!(frozen, [false, false, true]);
        assert!(r.epochs.iter().all(|e| e.val_precise.is_some()));
        // 144 training images in micro-batches of 8, two per update: 9 updates per epoch, 27
        // in all; the frozen epoch's re-warm-up ends at its last update (t = 26), so that update
        // is at the cosine rate 0.1 · ½(1 + cos(π · 26/27))
        let cosine = 0.1 * 0.5 * (1.0 + (std::f64::consts::PI * 26.0 / 27.0).cos());
        assert!(
            (r.epochs[2].lr - cosine).abs() < 1e-12,
            "{}",
            r.epochs[2].lr
        );
        for key in ["adapt-contrast-3-source", "adapt-contrast-3-adapted"] {
            assert!(r.test.contains_key(key), "{key}: {:?}", r.test.keys());
        }
        assert!(r.epochs[2].train_loss < 1.0, "{:?}", r.epochs);
    }
}
