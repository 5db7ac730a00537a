//! Evaluation settings of a spec: PreciseBN lists (N, B, batch policy) evaluated on the same
//! trained model, a change in them re-evaluated without retraining, and settings chosen on
//! the validation split (Wu & Johnson Tables 1–2; Summers & Dinneen §3.1).

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use bnlab_norm::{NormMode, PopulationEstimator, set_norm_mode};
use bnlab_train::{
    EvalKey, RunData, RunFile, RunResult, Spec, StatDraw, SweepResults, evaluate_batches,
    precise_bn, result_path, run_dir, run_sweep, stat_batches,
};
use burn::tensor::Device;
use common::options;

const SPEC: &str = r#"
name = "evaluation"
seeds = 2

[data]
dataset = "synthetic"
validation = 0.25
threads = 1
[data.synthetic]
classes = 4
train_per_class = 48
test_per_class = 16
shape = [1, 8, 8]
difficulty = 0.3

[model]
name = "plain-cnn"
[model.norm]
ghost_size = 4

[optimizer]
lr = 0.05

[train]
epochs = 2
batch_size = 16

[eval]
schemes = ["population", "precise", "alpha"]
precise_samples = 64
precise_batch = 16
alphas = [0.0, 0.3, 1.0]
"#;

fn sweep(text: &str, out: &Path) -> bnlab_train::SweepSummary {
    let spec = Spec::parse(text, "evaluation.toml").unwrap();
    run_sweep(&spec, out, &options(None, 1)).unwrap()
}

/// Modification time of every run's model file.
fn model_times(out: &Path) -> BTreeMap<String, std::time::SystemTime> {
    ["base-s1", "base-s2"]
        .into_iter()
        .map(|id| {
            let meta = std::fs::metadata(run_dir(out, id).join("model.bpk")).unwrap();
            (id.to_string(), meta.modified().unwrap())
        })
        .collect()
}

#[test]
fn a_precise_list_is_evaluated_on_the_trained_model_without_retraining() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let first = sweep(SPEC, out);
    assert_eq!(first.finished, 2);
    let times = model_times(out);
    let before = RunResult::load(&result_path(out, "base-s1")).unwrap();

    // N ∈ {64, 256}, both batch policies: evaluation settings only
    let listed = SPEC
        .replace("precise_samples = 64", "precise_samples = [64, 256]")
        .replace(
            "precise_batch = 16",
            "precise_batch = 16\nprecise_policy = [\"as-trained\", \"whole-batch\"]",
        );
    let again = sweep(&listed, out);
    assert_eq!((again.finished, again.reevaluated), (0, 2), "{again:?}");
    assert_eq!(model_times(out), times, "a model file was written again");
    let after = RunResult::load(&result_path(out, "base-s1")).unwrap();
    assert_eq!(after.epochs, before.epochs, "retrained");
    for key in [
        "precise",
        "precise-whole",
        "precise-n256-b16",
        "precise-n256-b16-whole",
    ] {
        assert!(
            after.test.contains_key(key),
            "{key}: {:?}",
            after.test.keys()
        );
    }
    assert_eq!(after.test["precise"], before.test["precise"]);
    assert_eq!(after.test["population"], before.test["population"]);

    // the N = 256 number by a direct PreciseBN call on the saved model
    let dir = run_dir(out, "base-s1");
    let run = RunFile::load(&dir).unwrap();
    let device = Device::flex();
    let data = RunData::load(&run.config.data, run.config.scaling()).unwrap();
    let model = set_norm_mode(run.network(&dir, &data, &device).unwrap(), NormMode::EVAL);
    let seed = run.seed as u64;
    let pass = 1u64 << 32; // the final evaluation's draw, as every run's
    let draw = StatDraw {
        samples: 256,
        batch: 16,
        corruption: None,
        augment: true,
    };
    let pool = (&data.train, &data.train_pool[..]);
    let batches = stat_batches(&data, pool, draw, (seed, pass + 1), None, &device).unwrap();
    let precise = precise_bn(model, batches, PopulationEstimator::Pooled).unwrap();
    let loader = data
        .loader(&data.test, 256, false, false, None, seed)
        .unwrap();
    let direct = evaluate_batches(
        &precise,
        loader.epoch(&data.test_pool, pass).unwrap(),
        &device,
    )
    .unwrap();
    assert_eq!(after.test["precise-n256-b16"], direct);
    assert_ne!(
        after.test["precise-n256-b16"].loss,
        after.test["precise"].loss
    );

    // nothing left to do: a third run is a no-op
    let third = sweep(&listed, out);
    assert_eq!(
        (third.finished, third.reevaluated, third.already_done),
        (0, 0, 2)
    );
}

#[test]
fn a_whole_batch_policy_is_checked_as_whole_batches() {
    // B = 6 does not split into ghost batches of 4: refused under the training policy only
    let as_trained = SPEC.replace("precise_batch = 16", "precise_batch = 6");
    let (line, message) = common::error(&as_trained);
    assert_eq!(
        line,
        common::line_of(&as_trained, "precise_batch = 6"),
        "{message}"
    );
    assert!(message.contains("PreciseBN"), "{message}");
    let whole = as_trained.replace(
        "precise_batch = 6",
        "precise_batch = 6\nprecise_policy = \"whole-batch\"",
    );
    assert!(Spec::parse(&whole, "whole.toml").is_ok());
}

#[test]
fn alpha_is_chosen_on_validation_and_reported_on_test() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let text = SPEC.replace(
        "alphas = [0.0, 0.3, 1.0]",
        "alphas = [0.0, 0.3, 1.0]\nsplits = [\"validation\", \"test\"]",
    );
    sweep(&text, out);
    // the arg-max of the mean validation accuracy, from the stored numbers
    let runs: Vec<RunResult> = ["base-s1", "base-s2"]
        .iter()
        .map(|id| RunResult::load(&result_path(out, id)).unwrap())
        .collect();
    let mut best: Option<(String, f64)> = None;
    for alpha in ["alpha-0", "alpha-0.3", "alpha-1"] {
        let mean = runs
            .iter()
            .map(|r| r.validation[alpha].accuracy)
            .sum::<f64>()
            / 2.0;
        if best.as_ref().is_none_or(|(_, b)| mean > *b) {
            best = Some((alpha.to_string(), mean));
        }
    }
    let (want, _) = best.unwrap();
    let results = SweepResults::load(out).unwrap();
    let chosen: Vec<_> = results
        .selections
        .iter()
        .filter(|s| s.family == "alpha")
        .collect();
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0].chosen, want);
    let key = EvalKey::ChosenOnValidation(bnlab_train::Family::Alpha).to_string();
    assert_eq!(key, "alpha@val");
    for (r, stored) in results.runs.iter().zip(&runs) {
        assert_eq!(r.test[&key], stored.test[&want]);
    }
    // every scheme was evaluated on both splits, on as many images as each holds
    let r = &runs[0];
    assert_eq!(r.validation["population"].examples, 4 * 12);
    assert_eq!(r.test["population"].examples, 4 * 16);
    assert!(r.validation.contains_key("precise"));
}

#[test]
fn the_last_epoch_is_evaluated_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SPEC
        .replace("epochs = 2", "epochs = 3\nevaluate = \"last\"")
        .replace("seeds = 2", "seeds = 1");
    sweep(&text, tmp.path());
    let r = RunResult::load(&result_path(tmp.path(), "base-s1")).unwrap();
    assert_eq!(r.best_epoch, Some(3));
    // by default, the best validation epoch (the first of equals)
    let tmp = tempfile::tempdir().unwrap();
    sweep(
        &SPEC
            .replace("epochs = 2", "epochs = 3")
            .replace("seeds = 2", "seeds = 1"),
        tmp.path(),
    );
    let r = RunResult::load(&result_path(tmp.path(), "base-s1")).unwrap();
    let accuracies: Vec<f64> = r.epochs.iter().map(|e| e.val.unwrap().accuracy).collect();
    let best = accuracies.iter().cloned().fold(f64::MIN, f64::max);
    let first_best = accuracies.iter().position(|&a| a == best).unwrap() + 1;
    assert_eq!(r.best_epoch, Some(first_best));
}
