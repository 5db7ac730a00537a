//! The GPU code path end to end: a two-epoch `bnlab run --device D` on tiny data gives the
//! results of `--device flex` (test accuracy equal, losses within 1e-3). It runs in a build
//! with `--features vulkan`, as an ignored test run with `--ignored` where `BNLAB_TEST_DEVICE`
//! names the device (`vulkan-cpu` for Mesa's lavapipe, `vulkan` for a GPU): `./vulkan-test.sh`
//! sets both up.

#![cfg(feature = "vulkan")]

mod common;

use common::bnlab;
use serde_json::Value;

const SPEC: &str = r#"name = "device-check"
seeds = 2

[data]
dataset = "synthetic"
validation = 0.25
threads = 1
[data.synthetic]
classes = 3
train_per_class = 40
test_per_class = 20
shape = [3, 8, 8]
difficulty = 0.2

[model]
name = "resnet8"

[optimizer]
lr = 0.05

[train]
epochs = 2
batch_size = 16

[eval]
schemes = ["population", "minibatch"]
minibatch_sizes = [8]
"#;

/// The result files of a finished sweep in `out`, by run.
fn results(out: &std::path::Path) -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(out.join("results"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs a Vulkan device named by BNLAB_TEST_DEVICE: ./vulkan-test.sh runs it"]
fn a_run_on_the_device_matches_flex() {
    let device = std::env::var("BNLAB_TEST_DEVICE")
        .expect("BNLAB_TEST_DEVICE names the device (vulkan-cpu or vulkan)");
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let run = |on: &str| {
        let out = tmp.path().join(on);
        let (ok, stdout, err) = bnlab(&[
            "run",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--device",
            on,
        ]);
        assert!(ok, "{on}: {stdout}{err}");
        results(&out)
    };
    let (flex, other) = (run("flex"), run(&device));
    assert_eq!(flex.len(), 2);
    assert_eq!(flex.len(), other.len());
    for ((name, a), (_, b)) in flex.iter().zip(&other) {
        // (the default, flex, is not written)
        let stored = match &b["config"]["train"]["device"] {
            Value::Null => bnlab_norm::DeviceName::Flex,
            v => serde_json::from_value(v.clone()).unwrap(),
        };
        assert_eq!(stored, device.parse().unwrap(), "{name}");
        for (scheme, m) in a["test"].as_object().unwrap() {
            let n = &b["test"][scheme];
            assert_eq!(m["accuracy"], n["accuracy"], "{name} {scheme}: accuracy");
            let (la, lb) = (m["loss"].as_f64().unwrap(), n["loss"].as_f64().unwrap());
            assert!(
                (la - lb).abs() <= 1e-3,
                "{name} {scheme}: loss {la} vs {lb}"
            );
        }
        for (ea, eb) in a["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["epochs"].as_array().unwrap())
        {
            let (la, lb) = (
                ea["train_loss"].as_f64().unwrap(),
                eb["train_loss"].as_f64().unwrap(),
            );
            assert!(
                (la - lb).abs() <= 1e-3,
                "{name}: training loss {la} vs {lb}"
            );
        }
    }
}
