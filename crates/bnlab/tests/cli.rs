//! The `bnlab` binary: `data list` works offline; bad input exits non-zero with a message.

mod common;

use common::bnlab;

#[test]
fn data_list_finds_the_bundled_subset_and_says_where_it_looked_for_the_rest() {
    let (ok, out, _) = bnlab(&["data", "list"]);
    assert!(ok);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("fashion-mnist-subset").contains("found"), "{out}");
    for name in ["cifar10", "cifar100", "svhn", "mnist", "fashion-mnist"] {
        let l = line(name);
        assert!(
            l.contains("found") || l.contains("looked in"),
            "{name}: {out}"
        );
    }
}

#[test]
fn unknown_datasets_and_models_fail_with_a_clear_message() {
    let (ok, _, err) = bnlab(&["data", "fetch", "imagenet"]);
    assert!(!ok);
    assert!(
        err.contains("unknown dataset `imagenet`") && err.contains("cifar10"),
        "{err}"
    );
    let (ok, out, _) = bnlab(&["models"]);
    assert!(ok && out.contains("resnet20") && out.contains("mobilenetv2-cifar"));
}

#[test]
fn bench_train_times_a_step_and_refuses_an_empty_batch() {
    let (ok, out, err) = bnlab(&[
        "bench",
        "train",
        "--model",
        "plain-cnn",
        "--batch",
        "4",
        "--steps",
        "2",
        "--warmup",
        "0",
        "--size",
        "8",
    ]);
    assert!(ok, "{out}{err}");
    let last = out.lines().last().unwrap_or_default();
    let rate: f64 = last
        .strip_prefix("step ")
        .and_then(|r| r.strip_suffix(" img/s"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("last line: {last}"));
    assert!(rate > 0.0, "{out}");
    let (ok, _, err) = bnlab(&["bench", "train", "--batch", "0"]);
    assert!(!ok && err.contains("at least 1"), "{err}");
    let (ok, _, err) = bnlab(&["bench", "train", "--model", "resnet-nope"]);
    assert!(!ok && err.contains("resnet-nope"), "{err}");
    let (ok, _, err) = bnlab(&["bench", "norm", "--reps", "0"]);
    assert!(!ok && err.contains("--reps"), "{err}");
}

#[test]
fn bench_norm_takes_one_shape_and_refuses_a_malformed_one() {
    let (ok, out, err) = bnlab(&[
        "bench", "norm", "--shape", "2,8,3,5", "--reps", "1", "--only", "plain",
    ]);
    assert!(ok, "{out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("plain BN")).collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(rows[0].contains("2×8×3×5"), "{}", rows[0]);
    for bad in ["2,8,3", "2,8,0,5", "2,x,3,5"] {
        let (ok, _, err) = bnlab(&["bench", "norm", "--shape", bad]);
        assert!(!ok && err.contains("--shape"), "{bad}: {err}");
    }
}

#[test]
fn bench_conv_times_every_shape_and_refuses_an_unknown_network() {
    let (ok, out, err) = bnlab(&[
        "bench", "conv", "--batch", "1", "--reps", "1", "--only", "r20",
    ]);
    assert!(ok, "{out}{err}");
    // six ResNet-20 shapes, each with four positive times
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("r20")).collect();
    assert_eq!(rows.len(), 6, "{out}");
    for row in rows {
        let times: Vec<f64> = row
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        assert!(times.len() >= 4 && times.iter().all(|t| *t > 0.0), "{row}");
    }
    let (ok, _, err) = bnlab(&["bench", "conv", "--only", "r99"]);
    assert!(!ok && err.contains("r99"), "{err}");
    let (ok, _, err) = bnlab(&["bench", "conv", "--reps", "0"]);
    assert!(!ok && err.contains("at least 1"), "{err}");
}

#[test]
#[cfg(not(feature = "cuda"))]
fn cuda_workers_without_the_cuda_feature_say_how_to_get_it() {
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../specs/leakage-distributed.toml"
    );
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    let (ok, _, err) = bnlab(&["run", spec, "--out", out, "--distributed", "cuda"]);
    assert!(!ok);
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn every_training_command_takes_a_device_and_names_the_good_ones() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../../specs/quickstart.toml");
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["run", spec, "--out", out],
        &["eval", out],
        &["precise-bn", out],
        &["quickstart", "--out", out],
        &["bench", "train"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--device", "tpu"]);
        let (ok, _, err) = bnlab(&args);
        assert!(!ok, "{command:?}");
        assert!(
            err.contains("unknown device `tpu`") && err.contains("vulkan-cpu"),
            "{command:?}: {err}"
        );
    }
    // a device this build lacks stops the sweep before anything trains, saying how to build
    #[cfg(not(feature = "vulkan"))]
    for command in commands {
        if command[0] == "eval" || command[0] == "precise-bn" {
            continue; // they need a run: tests/run.rs
        }
        let mut args = command.to_vec();
        args.extend(["--device", "vulkan-cpu"]);
        let (ok, _, err) = bnlab(&args);
        assert!(
            !ok && err.contains("--features vulkan"),
            "{command:?}: {err}"
        );
        assert!(!std::path::Path::new(out).join("results").exists());
    }
}

/// Every spec under `repro/`: each folder's full and small versions and the pools.
/// Every spec of `repro/` (one folder per claim) and `specs/` (the quickstart's and others).
fn repro_specs() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut folders = vec![root.join("specs")];
    for entry in std::fs::read_dir(root.join("repro")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            folders.push(path);
        }
    }
    let mut specs = Vec::new();
    for folder in folders {
        for file in std::fs::read_dir(folder).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                specs.push(path);
            }
        }
    }
    specs.sort();
    specs
}

#[test]
fn bnlab_check_validates_every_reproduction_spec_and_the_quickstarts() {
    let specs = repro_specs();
    assert!(specs.len() >= 40, "{} specs", specs.len());
    let pool = std::fs::read_to_string(
        specs
            .iter()
            .find(|p| p.ends_with("pools/nbs.toml"))
            .unwrap(),
    )
    .unwrap();
    for spec in &specs {
        let (ok, out, err) = bnlab(&["check", spec.to_str().unwrap(), "--no-timing"]);
        assert!(
            ok && out.contains("the spec is valid"),
            "{}: {out}{err}",
            spec.display()
        );
        // a claim of the shared pool is the pool byte for byte, then its claims
        let text = std::fs::read_to_string(spec).unwrap();
        if text.contains("name = \"pool-nbs\"") {
            assert!(
                text.starts_with(&pool),
                "{} has drifted from the pool",
                spec.display()
            );
        }
    }
    // and check refuses a bad one, with its line
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "seeds = 1\n[data]\ndataset = \"synthetic\"\n[model]\nname = \"resnet20\"\nwidth = 0\n[train]\nepochs = 1\nbatch_size = 8\n").unwrap();
    let (ok, _, err) = bnlab(&["check", bad.to_str().unwrap(), "--no-timing"]);
    assert!(!ok && err.contains("width"), "{err}");
    // with timing: measured steps and an estimate per configuration
    let tiny = tmp.path().join("tiny.toml");
    std::fs::write(&tiny, "seeds = 2\n[data]\ndataset = \"synthetic\"\n[model]\nname = \"resnet8\"\n[train]\nepochs = 2\nbatch_size = 8\n").unwrap();
    let (ok, out, err) = bnlab(&["check", tiny.to_str().unwrap()]);
    assert!(
        ok && out.contains("min per run") && out.contains("for 2 runs"),
        "{out}{err}"
    );
}

#[test]
fn a_closed_pipe_ends_bnlab_quietly() {
    // like `bnlab models | true`: the reader is gone before bnlab writes
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bnlab"))
        .args(["models"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
