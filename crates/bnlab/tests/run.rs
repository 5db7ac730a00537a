//! `bnlab run` killed with SIGKILL at arbitrary moments and rerun ends with the same results,
//! file for file, as an uninterrupted sweep; `report`, `eval` and `precise-bn` on a finished
//! run; bad specs exit non-zero with their line.

mod common;

use common::bnlab;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const SPEC: &str = r#"name = "kill"
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
epochs = 4
batch_size = 10

[eval]
schemes = ["population", "precise"]
precise_samples = 40
precise_batch = 10
"#;

fn results(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("results"))
        .map(|entries| {
            entries
                .map(|e| {
                    let e = e.unwrap();
                    let name = e.file_name().into_string().unwrap();
                    (name, std::fs::read(e.path()).unwrap())
                })
                .filter(|(name, _)| name.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_sweep_killed_at_any_moment_resumes_without_loss_or_duplication() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("kill.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let spec = spec.to_str().unwrap();

    let whole = tmp.path().join("whole");
    let start = Instant::now();
    let (ok, _, err) = bnlab(&["run", spec, "--out", whole.to_str().unwrap(), "--quiet"]);
    assert!(ok, "{err}");
    let full_time = start.elapsed();
    let reference = results(&whole);
    assert_eq!(reference.len(), 2);

    // kill at moments spread over the sweep, each time rerunning from where it stopped
    let killed = tmp.path().join("killed");
    let mut kills = 0;
    for k in 1.. {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bnlab"))
            .args(["run", spec, "--out", killed.to_str().unwrap(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = full_time.mul_f64(0.13 * k as f64 % 0.5 + 0.05);
        std::thread::sleep(wait);
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success());
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
        assert!(k < 100, "never finished");
    }
    assert!(kills >= 2, "only {kills} kills");
    let got = results(&killed);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &reference {
        assert!(got[name] == *bytes, "{name} differs after {kills} kills");
    }
    // no temporary file survives next to the results
    let leftovers: Vec<_> = std::fs::read_dir(killed.join("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".json"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // the report of the finished sweep, then of one with a truncated result file
    let (ok, out, err) = bnlab(&["report", whole.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let report = whole.join("report");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.starts_with("# Report: kill"), "{md}");
    assert!(md.contains("2 of 2 runs"), "{md}");
    assert!(report.join("figures/validation-per-epoch.png").is_file());
    let (ok, _, err) = bnlab(&["report", whole.to_str().unwrap(), "--rows", "nope"]);
    assert!(!ok && err.contains("`nope` is not an axis"), "{err}");
    // the claims of another spec of the same sweep, without running it again
    let with_claim = tmp.path().join("claim.toml");
    let claim = "\n[[claim]]\nname = \"precise-vs-ema\"\na = \"base\"\nb = \"base\"\na_scheme = \"precise\"\nb_scheme = \"population\"\n";
    std::fs::write(&with_claim, format!("{SPEC}{claim}")).unwrap();
    let claimed = tmp.path().join("claimed");
    let (ok, _, err) = bnlab(&[
        "report",
        whole.to_str().unwrap(),
        "--claims",
        with_claim.to_str().unwrap(),
        "--out",
        claimed.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(claimed.join("report.md")).unwrap();
    assert!(md.contains("precise-vs-ema"), "{md}");
    let other = tmp.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "{}{claim}",
            SPEC.replace("name = \"kill\"", "name = \"other\"")
        ),
    )
    .unwrap();
    let (ok, _, err) = bnlab(&[
        "report",
        whole.to_str().unwrap(),
        "--claims",
        other.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("is not the spec of the sweep"), "{err}");
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(broken.join("results")).unwrap();
    std::fs::copy(whole.join("sweep.json"), broken.join("sweep.json")).unwrap();
    let bad = broken.join("results/base-s1.json");
    std::fs::write(&bad, &reference["base-s1.json"][..100]).unwrap();
    let (ok, _, err) = bnlab(&["report", broken.to_str().unwrap()]);
    assert!(!ok && err.contains(&bad.display().to_string()), "{err}");
    assert!(!broken.join("report").exists());

    // eval and precise-bn on the finished run
    let run = whole.join("runs").join("base-s1");
    let run = run.to_str().unwrap();
    let (ok, out, err) = bnlab(&["eval", run, "--stats", "population"]);
    assert!(ok && out.contains("accuracy"), "{out}{err}");
    let r: serde_json::Value = serde_json::from_slice(&reference["base-s1.json"]).unwrap();
    let expected = r["test"]["population"]["accuracy"].as_f64().unwrap();
    assert!(
        out.contains(&format!("{:.2}%", 100.0 * expected)),
        "{out} vs {expected}"
    );
    for stats in ["minibatch", "alpha=0.5", "precise"] {
        let (ok, out, err) = bnlab(&[
            "eval",
            run,
            "--stats",
            stats,
            "--batch",
            "10",
            "--samples",
            "40",
        ]);
        assert!(ok && out.contains("accuracy"), "{stats}: {out}{err}");
    }
    let (ok, _, err) = bnlab(&["eval", run, "--stats", "alpha=2"]);
    assert!(!ok && err.contains("alpha=A"), "{err}");
    // the run's own device by default (the same figure), and another on request
    let (ok, again, err) = bnlab(&["eval", run, "--stats", "population", "--device", "flex"]);
    assert!(ok && again == out, "{again}{err}");
    #[cfg(not(feature = "vulkan"))]
    {
        for command in ["eval", "precise-bn"] {
            let (ok, _, err) = bnlab(&[command, run, "--device", "vulkan"]);
            assert!(!ok && err.contains("--features vulkan"), "{command}: {err}");
        }
        // a run trained on a GPU: by default on its own device (here: not built in, so the
        // error says how to evaluate it on the CPU), and on the CPU when asked
        let copy = whole.join("runs").join("gpu-copy");
        std::fs::create_dir_all(&copy).unwrap();
        for file in ["model.bpk", "model.bpk.md5"] {
            std::fs::copy(Path::new(run).join(file), copy.join(file)).unwrap();
        }
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(Path::new(run).join("run.json")).unwrap())
                .unwrap();
        file["config"]["train"]["device"] = "vulkan".into();
        std::fs::write(copy.join("run.json"), serde_json::to_vec(&file).unwrap()).unwrap();
        let copy = copy.to_str().unwrap();
        let (ok, _, err) = bnlab(&["eval", copy, "--stats", "population"]);
        assert!(!ok && err.contains("--device flex"), "{err}");
        let (ok, on_cpu, err) = bnlab(&["eval", copy, "--stats", "population", "--device", "flex"]);
        let accuracy = |text: &str| text.lines().next().unwrap_or_default().to_string();
        assert!(ok && accuracy(&on_cpu) == accuracy(&out), "{on_cpu}{err}");
        std::fs::remove_dir_all(copy).unwrap();
    }
    for exact in [false, true] {
        let mut args = vec!["precise-bn", run, "--samples", "40", "--batch", "10"];
        if exact {
            args.push("--exact");
        }
        let (ok, out, err) = bnlab(&args);
        assert!(ok && out.contains("PreciseBN"), "{out}{err}");
    }
    assert!(Path::new(run).join("model-precise.bpk").exists());
    // what eval and precise-bn measured is added to the run, and the report reads it
    let added: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(run).join("evaluations.json")).unwrap())
            .unwrap();
    for key in [
        "minibatch-10",
        "alpha-0.5",
        "precise-n40-b10",
        "precise-n40-b10-exact",
    ] {
        assert!(
            added["evaluations"][key]["test"]["accuracy"].is_f64(),
            "{key}: {added}"
        );
    }
    let report = whole.join("report-added");
    let (ok, _, err) = bnlab(&[
        "report",
        whole.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let runs = std::fs::read_to_string(report.join("runs.csv")).unwrap();
    assert!(
        runs.lines()
            .any(|l| l.contains("base,1,") && l.contains("precise-n40-b10-exact")),
        "{runs}"
    );
}

#[test]
fn a_bad_spec_exits_non_zero_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("bad.toml");
    std::fs::write(&spec, SPEC.replace("epochs = 4", "epochs = 4\nepoch = 4")).unwrap();
    let out = tmp.path().join("out");
    let (ok, _, err) = bnlab(&[
        "run",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    let line = SPEC.lines().position(|l| l.starts_with("epochs")).unwrap() + 2;
    assert!(err.contains(&format!("bad.toml:{line}:")), "{err}");
    assert!(err.contains("unknown field `epoch`"), "{err}");
    let (ok, _, err) = bnlab(&["eval", tmp.path().to_str().unwrap()]);
    assert!(!ok && err.contains("run.json"), "{err}");
}
