//! `mpirun -np 2 bnlab run --distributed mpi`: two processes over Open MPI train exactly what
//! two threads train (SyncBN, per-worker BN, Shuffle BN, a single-worker run), and a job
//! whose size does not match the spec stops with an error instead of hanging.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::Command;

use common::bnlab;

const SPEC: &str = r#"name = "mpi"
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
difficulty = 0.2

[model]
name = "resnet20"

[optimizer]
lr = 0.1

[train]
epochs = 1
batch_size = 16
precise_every_epoch = true

[eval]
schemes = ["population", "precise"]
precise_samples = 32
precise_batch = 16
batch_size = 32

[[variant]]
name = "single"
[[variant]]
name = "sync2"
"train.distributed.workers" = 2
"train.distributed.norm" = "all"
[[variant]]
name = "worker2"
"train.distributed.workers" = 2
[[variant]]
name = "shuffle2"
"train.distributed.workers" = 2
"train.distributed.shuffle" = true
"#;

/// `mpirun -np N` with the flags a root user in a container needs, bounded by `timeout`.
fn mpirun(np: usize, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .args([
            "300",
            "mpirun",
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
        ])
        .arg(np.to_string())
        .arg(env!("CARGO_BIN_EXE_bnlab"))
        .args(args)
        .output()
        .expect("mpirun (apt-get install openmpi-bin)")
}

fn result_texts(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir.join("results"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            (e.file_name().into_string().unwrap(), text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn two_mpi_processes_train_what_two_threads_train() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let (mpi, threads) = (dir.path().join("mpi"), dir.path().join("threads"));
    let spec_arg = spec.to_str().unwrap();
    let out = mpirun(
        2,
        &[
            "run",
            spec_arg,
            "--out",
            mpi.to_str().unwrap(),
            "--quiet",
            "--distributed",
            "mpi",
        ],
    );
    assert!(
        out.status.success(),
        "mpirun failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _, stderr) = bnlab(&[
        "run",
        spec_arg,
        "--out",
        threads.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    let (a, b) = (result_texts(&mpi), result_texts(&threads));
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "MPI and threads differ");
    // rank 1 wrote no result of its own and logged apart
    assert!(mpi.join("bnlab.rank1.log").exists());
}

#[test]
fn a_job_of_the_wrong_size_stops_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    // a spec for 4 workers launched as 2 processes
    std::fs::write(&spec, SPEC.replace("workers\" = 2", "workers\" = 4")).unwrap();
    let out = mpirun(
        2,
        &[
            "run",
            spec.to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
            "--quiet",
            "--distributed",
            "mpi",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_ne!(
        out.status.code(),
        Some(124),
        "timed out instead of stopping: {stderr}"
    );
    assert!(stderr.contains("but the job has 2 workers"), "{stderr}");
}
