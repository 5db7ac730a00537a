//! Domains and batch orders of a spec end to end (Wu & Johnson §5.2 and §6): per-domain
//! statistics checked against f64 loops over each domain's images, evaluation per domain,
//! class-distinct ghost batches, patterned evaluation batches, Adaptive BN's reverse rows and
//! statistics without augmentation.

use std::collections::BTreeSet;

mod common;

use bnlab_models::Network;
use bnlab_norm::{NormMode, set_norm_mode};
use bnlab_train::{
    OrderName, RunData, RunFile, RunResult, Spec, final_precise, result_path, run_dir, run_sweep,
};
use burn::tensor::Device;
use common::options;

const SPEC: &str = r#"
name = "domains"
seeds = 1

[data]
dataset = "synthetic"
validation = 0.25
threads = 1
[data.synthetic]
classes = 4
train_per_class = 32
test_per_class = 8
shape = [1, 8, 8]
difficulty = 0.3

[[data.domains]]
name = "clean"
[[data.domains]]
name = "inverted"
transform = "invert"

[model]
name = "plain-cnn"
input_norm = "bn"
[model.norm.domains]
train_stats = "per-domain"
population_stats = "per-domain"

[optimizer]
lr = 0.05

[train]
epochs = 1
batch_size = 16

[eval]
schemes = ["population", "precise"]
precise_samples = 192
precise_batch = 16
stats_augment = false
"#;

/// The running mean and variance of the input normalization layer, [P, 1] each.
fn input_stats(net: &Network) -> (Vec<f32>, Vec<f32>) {
    let Network::Vgg(vgg) = net else {
        panic!("plain-cnn is a VGG")
    };
    let norm = vgg.input_norm.as_ref().unwrap().norm.as_ref().unwrap();
    let read =
        |t: burn::tensor::Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    (
        read(norm.state.running_mean()),
        read(norm.state.running_var()),
    )
}

#[test]
fn per_domain_statistics_come_from_each_domains_own_images() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let spec = Spec::parse(SPEC, "domains.toml").unwrap();
    run_sweep(&spec, out, &options(None, 1)).unwrap();
    let result = RunResult::load(&result_path(out, "base-s1")).unwrap();
    // evaluation pooled and per domain, each on its own test images
    assert_eq!(result.test["population"].examples, 64);
    assert_eq!(result.test["population/clean"].examples, 32);
    assert_eq!(result.test["population/inverted"].examples, 32);
    assert!(result.test.contains_key("precise/inverted"));

    // PreciseBN over every training image once: the input layer's statistics per domain are
    // each domain's pixel mean and (unbiased) variance, by f64 loops over its images
    let dir = run_dir(out, "base-s1");
    let run = RunFile::load(&dir).unwrap();
    let device = Device::flex();
    let config = &spec.configurations[0].config;
    let data = RunData::load(&config.data, config.scaling()).unwrap();
    assert_eq!(data.train_pool.len(), 192);
    let model = set_norm_mode(run.network(&dir, &data, &device).unwrap(), NormMode::EVAL);
    let setting = config.eval.primary_precise();
    let precise = final_precise(config, &data, &model, setting, None, 1, &device).unwrap();
    let (mean, var) = input_stats(&precise);
    assert_eq!((mean.len(), var.len()), (2, 2));
    let ids = data.domains_of(&data.train).unwrap();
    for d in 0..2 {
        let mut pixels = Vec::new();
        for &i in data.train_pool.iter().filter(|&&i| ids[i] == d) {
            let mut img = Vec::new();
            data.train.read(i, &mut img).unwrap();
            pixels.extend(img.iter().map(|&v| v as f64));
        }
        let n = pixels.len() as f64;
        let m = pixels.iter().sum::<f64>() / n;
        let v = pixels.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
        assert!(
            (mean[d] as f64 - m).abs() < 1e-3 * m.abs().max(1.0),
            "domain {d}: mean {} vs {m}",
            mean[d]
        );
        assert!(
            (var[d] as f64 - v).abs() < 1e-3 * v,
            "domain {d}: var {} vs {v}",
            var[d]
        );
    }
    // the two domains differ: inverted pixels have mean 255 − μ
    assert!((mean[0] + mean[1] - 255.0).abs() < 1e-2, "{mean:?}");
}

#[test]
fn training_on_one_domain_and_impossible_domain_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let only_clean = SPEC.replace(
        "threads = 1\n",
        "threads = 1\ntrain_domains = [\"clean\"]\n",
    );
    let config = Spec::parse(&only_clean, "one.toml").unwrap().configurations[0]
        .config
        .clone();
    let data = RunData::load(&config.data, config.scaling()).unwrap();
    let ids = data.domains_of(&data.train).unwrap();
    assert_eq!((data.train_pool.len(), data.val_pool.len()), (96, 32));
    assert!(
        data.train_pool
            .iter()
            .chain(&data.val_pool)
            .all(|&i| ids[i] == 0)
    );
    // the test set keeps both domains
    assert_eq!(data.test_pool.len(), 64);
    let _ = tmp;

    for (bad, key) in [
        (
            only_clean.replace("train_domains = [\"clean\"]", "train_domains = [\"sepia\"]"),
            "train_domains",
        ),
        (
            SPEC.replace("name = \"inverted\"", "name = \"clean\""),
            "[[data.domains]]",
        ),
        (
            SPEC.replace(
                "[[data.domains]]\nname = \"inverted\"\ntransform = \"invert\"\n",
                "",
            ),
            "[model.norm.domains]",
        ),
        (
            SPEC.replace("transform = \"invert\"", "transform = \"sepia\""),
            "transform",
        ),
    ] {
        let (line, message) = common::error(&bad);
        assert_eq!(line, common::line_of(&bad, key), "{key}: {message}");
    }
}

#[test]
fn class_distinct_ghost_batches_hold_distinct_classes() {
    let text = SPEC
        .replace("\n[[data.domains]]\nname = \"clean\"\n[[data.domains]]\nname = \"inverted\"\ntransform = \"invert\"\n", "[data.class_pattern]\nclasses_per_batch = 4\nper_class = 4\n")
        .replace("threads = 1\n", "threads = 1\norder = \"class-distinct-ghosts\"\n")
        .replace("[model.norm.domains]\ntrain_stats = \"per-domain\"\npopulation_stats = \"per-domain\"\n", "[model.norm]\nghost_size = 4\n");
    let config = Spec::parse(&text, "ghosts.toml").unwrap().configurations[0]
        .config
        .clone();
    assert_eq!(config.data.order(), OrderName::ClassDistinctGhosts);
    let data = RunData::load(&config.data, config.scaling()).unwrap();
    let loader = data.train_loader(16, Some(4), 1).unwrap();
    let mut batches = 0;
    for batch in loader.epoch(&data.train_pool, 0).unwrap() {
        let labels = batch.unwrap().labels;
        assert_eq!(labels.len(), 16);
        for ghost in labels.chunks(4) {
            let distinct: BTreeSet<_> = ghost.iter().collect();
            assert_eq!(
                distinct.len(),
                4,
                "a ghost batch repeats a class: {ghost:?}"
            );
        }
        batches += 1;
    }
    assert!(batches > 0);
    // the grouped pattern, for contrast: a ghost batch of 4 is one class
    let grouped = data
        .ordered_loader(&data.train, (OrderName::ClassPattern, Some(4)), 16, true, 1)
        .unwrap();
    let labels = grouped
        .epoch(&data.train_pool, 0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .labels;
    assert!(
        labels.chunks(4).all(|g| g.iter().all(|&l| l == g[0])),
        "{labels:?}"
    );
    // without a ghost size the order cannot be built
    let no_ghost = text.replace("[model.norm]\nghost_size = 4\n", "");
    let (line, message) = common::error(&no_ghost);
    assert_eq!(line, common::line_of(&no_ghost, "order = "), "{message}");
}

#[test]
fn patterned_evaluation_reverse_adaptation_and_unaugmented_statistics_run() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SPEC
        .replace("\n[[data.domains]]\nname = \"clean\"\n[[data.domains]]\nname = \"inverted\"\ntransform = \"invert\"\n", "[data.class_pattern]\nclasses_per_batch = 4\nper_class = 4\n")
        .replace("threads = 1\n", "threads = 1\naugment = \"pad-crop-flip\"\n")
        .replace("[model.norm.domains]\ntrain_stats = \"per-domain\"\npopulation_stats = \"per-domain\"\n", "")
        .replace("input_norm = \"bn\"\n", "")
        .replace("epochs = 1", "epochs = 2\nminibatch_every_epoch = true")
        .replace(
            "stats_augment = false",
            "minibatch_sizes = [16]\nminibatch_order = \"class-pattern\"\nadapt = [{ corruption = \"contrast\", severity = 4, reverse = true }]\n\n[[variant]]\nname = \"plain\"\n[[variant]]\nname = \"unaugmented\"\n\"eval.stats_augment\" = false",
        )
        .replace("schemes = [\"population\", \"precise\"]", "schemes = [\"population\", \"precise\", \"minibatch\"]");
    let spec = Spec::parse(&text, "patterns.toml").unwrap();
    run_sweep(&spec, tmp.path(), &options(None, 1)).unwrap();
    let load = |id| RunResult::load(&result_path(tmp.path(), id)).unwrap();
    let (plain, unaugmented) = (load("plain-s1"), load("unaugmented-s1"));
    for key in [
        "minibatch-16",
        "adapt-contrast-4-adapted",
        "adapt-contrast-4-reverse",
    ] {
        assert!(
            plain.test.contains_key(key),
            "{key}: {:?}",
            plain.test.keys()
        );
    }
    assert!(plain.epochs.iter().all(|e| e.val_minibatch.is_some()));
    // the same trained model (the setting is evaluation-only), other statistics images
    assert_eq!(plain.test["population"], unaugmented.test["population"]);
    assert_ne!(plain.test["precise"], unaugmented.test["precise"]);
    // a pattern that does not fill the evaluation batch is refused
    let bad = text.replace("minibatch_sizes = [16]", "minibatch_sizes = [12]");
    let (line, message) = common::error(&bad);
    assert_eq!(line, common::line_of(&bad, "minibatch_order"), "{message}");
}

#[test]
fn a_corrupted_domain_trains_on_corrupted_images_and_tests_on_both() {
    // train on low-contrast images only, evaluate on both domains (Davis & Frank §3.4's
    // low-contrast argument; Wu & Johnson Table 4's reverse direction)
    let text = SPEC
        .replace(
            "name = \"inverted\"\ntransform = \"invert\"",
            "name = \"low-contrast\"\ncorruption = { corruption = \"contrast\", severity = 5 }",
        )
        .replace(
            "threads = 1\n",
            "threads = 1\ntrain_domains = [\"low-contrast\"]\n",
        );
    let config = Spec::parse(&text, "contrast.toml").unwrap().configurations[0]
        .config
        .clone();
    let data = RunData::load(&config.data, config.scaling()).unwrap();
    let ids = data.domains_of(&data.train).unwrap();
    assert!(data.train_pool.iter().all(|&i| ids[i] == 1));
    // image i of the corrupted domain is image i of the clean one, corrupted
    let n = data.train.len() / 2;
    let corruption = bnlab_data::Corruption::new(bnlab_data::CorruptionKind::Contrast, 5).unwrap();
    for i in [0, 7, n - 1] {
        let (mut clean, mut corrupted) = (Vec::new(), Vec::new());
        data.train.read(i, &mut clean).unwrap();
        data.train.read(n + i, &mut corrupted).unwrap();
        corruption
            .apply(&mut clean, [1, 8, 8], 0, i as u64)
            .unwrap();
        assert_eq!(clean, corrupted, "image {i}");
        assert_eq!(data.train.label(i), data.train.label(n + i));
    }
}
