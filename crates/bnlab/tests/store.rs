//! The sweep store through the CLI, on small data the tests write: results tied to their
//! settings (edits before and after a finish and mid-run), unique run ids, many workers on
//! one --out (one killed), shards, `bnlab status`, PreciseBN's N, an overflowing IDX header,
//! a flipped byte in a model, and the seed bound.

mod common;

use common::bnlab;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const SPEC: &str = r#"name = "store"
seeds = 2

[data]
dataset = "synthetic"
validation = 0.25
threads = 1
[data.synthetic]
classes = 3
train_per_class = 40
test_per_class = 10
shape = [1, 8, 8]
difficulty = 0.2

[model]
name = "plain-cnn"

[optimizer]
lr = 0.05

[train]
epochs = 3
batch_size = 10

[eval]
schemes = ["population", "precise"]
precise_samples = 40
precise_batch = 10

[[variant]]
name = "a"
[[variant]]
name = "b"
"model.norm.gamma" = 0.5
"#;

fn results(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("results"))
        .map(|entries| {
            entries
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().into_string().unwrap(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .filter(|(name, _)| name.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn run(spec: &str, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["run", spec, "--out", out.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    bnlab(&args)
}

fn lr_of(result: &[u8]) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(result).unwrap();
    v["config"]["optimizer"]["lr"].as_f64().unwrap()
}

#[test]
fn an_edited_spec_is_refused_then_retrained_with_its_old_files_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(tmp.path(), "s.toml", SPEC);
    let out = tmp.path().join("out");
    let (ok, _, err) = run(&spec, &out, &[]);
    assert!(ok, "{err}");
    let before = results(&out);
    assert_eq!(before.len(), 4);

    // after a finish: the edit is listed, nothing is trained or skipped
    let edited = write(
        tmp.path(),
        "edited.toml",
        &SPEC.replace("lr = 0.05", "lr = 0.02"),
    );
    let (ok, _, err) = run(&edited, &out, &[]);
    assert!(!ok, "an edited spec was accepted");
    assert!(
        err.contains("4 run(s)") && err.contains("optimizer.lr: 0.05 → 0.02"),
        "{err}"
    );
    assert!(err.contains("--restart-changed"), "{err}");
    assert_eq!(results(&out), before, "results changed although refused");
    // and the report refuses a result copied in from the other settings
    let (ok, _, err) = run(&edited, &tmp.path().join("other"), &[]);
    assert!(ok, "{err}");
    std::fs::copy(
        tmp.path().join("other/results/a-s1.json"),
        out.join("results/a-s1.json"),
    )
    .unwrap();
    let (ok, _, err) = bnlab(&["report", out.to_str().unwrap()]);
    assert!(!ok && err.contains("fingerprint"), "{err}");
    std::fs::write(out.join("results/a-s1.json"), &before["a-s1.json"]).unwrap();

    // --restart-changed retrains every changed run under the new settings, and keeps the old
    let (ok, _, err) = run(&edited, &out, &["--restart-changed"]);
    assert!(ok, "{err}");
    assert!(err.contains("4 changed runs retrained"), "{err}");
    let after = results(&out);
    assert!(after.values().all(|r| lr_of(r) == 0.02));
    for id in ["a-s1", "a-s2", "b-s1", "b-s2"] {
        let old = std::fs::read(out.join(format!("superseded/{id}.1/result.json"))).unwrap();
        assert_eq!(old, before[&format!("{id}.json")]);
    }
    // identical to a sweep that had the new settings from the start
    assert_eq!(after, results(&tmp.path().join("other")));

    // mid-run: a run stopped after an epoch is neither continued nor restarted silently
    let mid = tmp.path().join("mid");
    let (ok, _, _) = run(&spec, &mid, &["--stop-after-epochs", "1"]);
    assert!(!ok, "a budget stop is reported as unfinished");
    let (ok, _, err) = run(&edited, &mid, &[]);
    assert!(!ok && err.contains("optimizer.lr: 0.05 → 0.02"), "{err}");
    let (ok, _, err) = run(&edited, &mid, &["--restart-changed"]);
    assert!(ok, "{err}");
    // every epoch of the result was trained with the new settings: as a fresh sweep
    assert_eq!(results(&mid), results(&tmp.path().join("other")));
    assert!(mid.join("superseded/a-s1.1/run/checkpoints").is_dir());

    // a flipped byte in a finished model is found when it is loaded
    let model = out.join("runs/a-s1/model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let k = bytes.len() / 2;
    bytes[k] ^= 0x10;
    std::fs::write(&model, bytes).unwrap();
    let (ok, _, err) = bnlab(&["eval", out.join("runs/a-s1").to_str().unwrap()]);
    assert!(!ok && err.contains("checksum mismatch"), "{err}");
}

#[test]
fn configurations_that_would_share_a_run_id_are_refused_with_both_names() {
    let tmp = tempfile::tempdir().unwrap();
    let head = SPEC.split("[[variant]]").next().unwrap();
    let cases = [
        (
            format!("{head}[[variant]]\nname = \"a b\"\n[[variant]]\nname = \"a/b\"\n"),
            vec!["`a b`", "`a/b`", "share run ids"],
        ),
        (
            format!("{head}[grid]\n\"optimizer.lr\" = [0.1, 0.1]\n"),
            vec!["`base,lr=0.1` appears twice"],
        ),
        (
            format!("{head}[[variant]]\nname = \"Big\"\n[[variant]]\nname = \"big\"\n"),
            vec!["`Big`", "`big`", "letter case"],
        ),
    ];
    for (text, wants) in cases {
        let spec = write(tmp.path(), "ids.toml", &text);
        let out = tmp.path().join("ids");
        let (ok, _, err) = run(&spec, &out, &["--jobs", "2"]);
        assert!(!ok, "accepted:\n{text}");
        for want in wants {
            assert!(err.contains(want), "{want}: {err}");
        }
        assert!(!out.join("results").exists(), "trained although refused");
    }
    let spec = write(
        tmp.path(),
        "n.toml",
        &SPEC.replace("seeds = 2", "seeds = 4294967295"),
    );
    let (ok, _, err) = run(&spec, &tmp.path().join("n"), &[]);
    assert!(!ok && err.contains("at most 10000 seeds"), "{err}");
}

#[test]
fn three_workers_on_one_out_train_each_run_once_even_when_one_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SPEC
        .replace("seeds = 2", "seeds = 3")
        .replace("epochs = 3", "epochs = 4");
    let spec = write(tmp.path(), "w.toml", &text);
    let alone = tmp.path().join("alone");
    let start = Instant::now();
    let (ok, _, err) = run(&spec, &alone, &[]);
    assert!(ok, "{err}");
    let one_process = start.elapsed();
    let reference = results(&alone);
    assert_eq!(reference.len(), 6);

    let shared = tmp.path().join("shared");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_bnlab"))
            .args(["run", &spec, "--out", shared.to_str().unwrap(), "--quiet"])
            .args(["--lease-secs", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut workers: Vec<_> = (0..3).map(|_| spawn()).collect();
    // kill one while it trains (every run takes about a sixth of the single sweep)
    std::thread::sleep(one_process.mul_f64(0.25));
    workers[0].kill().unwrap();
    workers[0].wait().unwrap();
    for w in workers.iter_mut().skip(1) {
        let out = w.wait_with_output_ref();
        assert!(out.0, "a surviving worker failed: {}", out.1);
    }
    assert_eq!(
        results(&shared),
        reference,
        "differs from one process's sweep"
    );
    // the log of all three: each run finished once
    let log = std::fs::read_to_string(shared.join("bnlab.log")).unwrap();
    for id in reference.keys() {
        let id = id.trim_end_matches(".json");
        let finished = log
            .lines()
            .filter(|l| {
                l.contains("finished, test acc")
                    && l.split_whitespace().any(|w| w == format!("run={id}"))
            })
            .count();
        assert_eq!(finished, 1, "{id} finished {finished} times:\n{log}");
    }
    let (ok, out, err) = bnlab(&["status", shared.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("6 runs: 6 finished, 0 failed, 0 running"),
        "{out}"
    );
    // no claim outlives its run
    for id in reference.keys() {
        let dir = shared.join("runs").join(id.trim_end_matches(".json"));
        let claims: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("claim-"))
            .collect();
        assert!(claims.is_empty(), "{claims:?}");
    }
}

/// `wait_with_output` for a borrowed child: (success, stderr).
trait WaitRef {
    fn wait_with_output_ref(&mut self) -> (bool, String);
}

impl WaitRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> (bool, String) {
        use std::io::Read;
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (self.wait().unwrap().success(), err)
    }
}

#[test]
fn shards_cover_every_run_once_and_status_tells_where_a_sweep_stands() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SPEC
        .replace("seeds = 2", "seeds = 3")
        .replace("epochs = 3", "epochs = 2");
    let spec = write(tmp.path(), "sh.toml", &text);
    let whole = tmp.path().join("whole");
    let (ok, _, err) = run(&spec, &whole, &[]);
    assert!(ok, "{err}");
    let parts = tmp.path().join("parts");
    let mut trained = 0;
    for i in 1..=4 {
        let shard = format!("{i}/4");
        let (ok, _, err) = run(&spec, &parts, &["--shard", &shard]);
        assert!(ok, "{err}");
        // 6 runs in 4 parts: 2, 2, 1, 1, none already done
        let want = if i <= 2 { 2 } else { 1 };
        assert!(
            err.contains(&format!("{want} finished, 0 failed, 0 already done")),
            "{err}"
        );
        trained += want;
    }
    assert_eq!(trained, 6);
    assert_eq!(results(&parts), results(&whole));
    for bad in ["0/4", "5/4", "2", "a/b"] {
        let (ok, _, err) = run(&spec, &parts, &["--shard", bad]);
        assert!(!ok && err.contains("not a shard"), "{bad}: {err}");
    }

    // a stopped sweep: finished, abandoned (resumable) and missing runs
    let stopped = tmp.path().join("stopped");
    let (ok, _, _) = run(&spec, &stopped, &["--stop-after-epochs", "3"]);
    assert!(!ok);
    let (ok, out, err) = bnlab(&["status", stopped.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("a-s1") && out.contains("finished"), "{out}");
    assert!(out.contains("abandoned after 1 epochs"), "{out}");
    assert!(
        out.contains("6 runs: 1 finished, 0 failed, 0 running, 1 abandoned, 4 missing"),
        "{out}"
    );
    let (ok, _, err) = bnlab(&["status", tmp.path().join("none").to_str().unwrap()]);
    assert!(!ok && err.contains("sweep.json"), "{err}");
}

#[test]
fn precise_bn_draws_exactly_n_images_even_beyond_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SPEC
        .replace("seeds = 2", "seeds = 1")
        .replace("threads = 1", "threads = 1\naugment = \"flip\"");
    let text = text.split("[[variant]]").next().unwrap();
    let spec = write(tmp.path(), "p.toml", text);
    let out = tmp.path().join("p");
    let (ok, _, err) = run(&spec, &out, &[]);
    assert!(ok, "{err}");
    let dir = out.join("runs/base-s1");
    // 90 training images: N = 90 is one pass; 180 two; 95 one pass and five more
    let model = |n: &str| {
        let to = tmp.path().join(format!("m{n}.bpk"));
        let (ok, stdout, err) = bnlab(&[
            "precise-bn",
            dir.to_str().unwrap(),
            "--samples",
            n,
            "--batch",
            "10",
            "--out",
            to.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        assert!(stdout.contains(&format!("N = {n}, B = 10")), "{stdout}");
        std::fs::read(to).unwrap()
    };
    let md5 = |bytes: Vec<u8>| {
        use md5::Digest;
        format!("{:x}", md5::Md5::digest(bytes))
    };
    let (one, two, odd) = (md5(model("90")), md5(model("180")), md5(model("95")));
    assert_ne!(one, two, "N beyond one pass was capped");
    assert_ne!(one, odd, "the last partial batch was dropped");
    assert_eq!(two, md5(model("180")), "not deterministic");
}

#[test]
fn an_idx_header_whose_sizes_overflow_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("idx");
    std::fs::create_dir_all(&data).unwrap();
    // 2^31 · 2^31 · 4 bytes wraps to 0 in 64 bits: the empty data would pass a length check
    let mut images = vec![0, 0, 8, 3];
    for d in [1u32 << 31, 1 << 31, 4] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&2u32.to_be_bytes());
    labels.extend_from_slice(&[0, 1]);
    for part in ["train", "t10k"] {
        std::fs::write(data.join(format!("{part}-images-idx3-ubyte")), &images).unwrap();
        std::fs::write(data.join(format!("{part}-labels-idx1-ubyte")), &labels).unwrap();
    }
    let head = SPEC.split("[data]").next().unwrap();
    let tail = SPEC.split("[model]").nth(1).unwrap();
    let text = format!(
        "{head}[data]\ndataset = \"fashion-mnist-subset\"\nroot = \"{}\"\n[model]{tail}",
        data.display()
    );
    let spec = write(tmp.path(), "idx.toml", &text);
    let (ok, _, err) = run(&spec, &tmp.path().join("o"), &[]);
    assert!(!ok);
    assert!(
        err.contains("train-images-idx3-ubyte")
            && err.contains("hold more values than any file can"),
        "{err}"
    );
}

#[test]
fn runs_trained_two_at_a_time_on_their_own_thread_pools_are_bit_identical() {
    // a network and images big enough for the kernels to split work across threads
    let text = SPEC
        .replace("shape = [1, 8, 8]", "shape = [3, 16, 16]")
        .replace("name = \"plain-cnn\"", "name = \"resnet8\"")
        .replace("epochs = 3", "epochs = 2");
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(tmp.path(), "jobs.toml", &text);
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    let (ok, _, err) = run(&spec, &one, &["--jobs", "1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&spec, &two, &["--jobs", "2"]);
    assert!(ok, "{err}");
    let (a, b) = (results(&one), results(&two));
    assert_eq!(a.len(), 4);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(
            b[name] == *bytes,
            "{name} differs between --jobs 1 and --jobs 2"
        );
    }
}
