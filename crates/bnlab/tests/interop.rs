//! `bnlab import` → `eval` → `precise-bn` → `report` → `export` on the PyTorch fixture of
//! bnlab-models (a 1/8-width torchvision ResNet-18, 10 classes) and CIFAR-10 files the test
//! writes.

mod common;

use std::path::{Path, PathBuf};

use bnlab_models::torch::read_state_dict;
use common::bnlab;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bnlab-models/tests/fixtures")
        .join(name)
}

/// CIFAR-10's binary files with `per_file` random images each: a label byte then 3072 pixels.
fn cifar10(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 12345u64;
    let mut byte = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    let names = (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_string()]);
    for name in names {
        let mut bytes = Vec::new();
        for i in 0..per_file {
            bytes.push((i % 10) as u8);
            bytes.extend((0..3072).map(|_| byte()));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn a_pytorch_model_goes_through_import_eval_precise_bn_report_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    cifar10(&data, 20);
    let out = tmp.path().join("imported");
    let weights = fixture("resnet18_w8.pth");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            weights.to_str().unwrap(),
            "--model",
            "resnet18",
            "--width",
            "0.125",
            "--dataset",
            "cifar10",
            "--root",
            data.to_str().unwrap(),
            "--scaling",
            "unit",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        bnlab(&args)
    };
    let (ok, stdout, err) = import(&["--classes", "10"]);
    assert!(ok, "{stdout}{err}");
    let run = out.join("runs/imported-s1");
    let run = run.to_str().unwrap();

    for stats in ["population", "alpha=0.1", "minibatch"] {
        let (ok, stdout, err) = bnlab(&["eval", run, "--stats", stats, "--batch", "10"]);
        assert!(ok && stdout.contains("accuracy"), "{stats}: {stdout}{err}");
    }
    let (ok, stdout, err) = bnlab(&["precise-bn", run, "--samples", "60", "--batch", "20"]);
    assert!(ok && stdout.contains("PreciseBN"), "{stdout}{err}");
    let report = tmp.path().join("report");
    let (ok, _, err) = bnlab(&[
        "report",
        out.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let runs = std::fs::read_to_string(report.join("runs.csv")).unwrap();
    for key in ["population", "alpha-0.1", "minibatch-10", "precise-n60-b20"] {
        assert!(runs.contains(&format!(",{key},")), "{key}: {runs}");
    }

    // the export of the imported model is the file PyTorch wrote, bit for bit
    let exported = tmp.path().join("back.safetensors");
    let (ok, _, err) = bnlab(&["export", run, "--out", exported.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (original, back) = (
        read_state_dict(&weights).unwrap(),
        read_state_dict(&exported).unwrap(),
    );
    assert_eq!(original.len(), back.len());
    for (key, data) in &original {
        assert_eq!(back[key].as_bytes(), data.as_bytes(), "`{key}`");
    }
    // PreciseBN's model exports too, with other statistics
    let precise = tmp.path().join("precise.safetensors");
    let (ok, _, err) = bnlab(&[
        "export",
        run,
        "--model-file",
        "model-precise.bpk",
        "--out",
        precise.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let precise = read_state_dict(&precise).unwrap();
    assert_ne!(
        precise["bn1.running_mean"].as_bytes(),
        original["bn1.running_mean"].as_bytes()
    );

    // the wrong class count, the wrong network, and a biased store without its n
    let (ok, _, err) = import(&["--classes", "100"]);
    assert!(!ok && err.contains("--classes 100"), "{err}");
    let (ok, _, err) = bnlab(&[
        "import",
        weights.to_str().unwrap(),
        "--model",
        "mobilenetv2",
        "--dataset",
        "cifar10",
        "--root",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("wrong").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("features.0.0.weight"), "{err}");
    let (ok, _, err) = import(&["--variance", "biased"]);
    assert!(!ok && err.contains("--stats-values"), "{err}");
    let (ok, _, err) = import(&["--variance", "biased", "--stats-values", "512"]);
    assert!(ok, "{err}");
}
