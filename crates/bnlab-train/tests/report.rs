//! The report on results directories the tests write themselves: exact Markdown with bold and
//! underline, pairing of incomplete sweeps, clear errors on bad files with nothing written,
//! and every figure a valid PNG and SVG showing its series.

use std::collections::BTreeMap;
use std::path::Path;

use bnlab_train::{
    Baseline, Correction, Diagnostics, EpochRecord, Histogram, LayerDiagnostics, LinePanel, Metric,
    Metrics, PALETTE, Panel, RESULT_FORMAT, ReportOptions, RunResult, Spec, Status, SweepFile,
    SweepResults, TableSettings, TestKind, Verdict, build_report, figures, png, result_path,
    run_seed, scheme_section, size, stamps, svg, tables, write_report,
};

const TABLE_SPEC: &str = r#"name = "fixture"
seeds = 3
baseline = "base"
[data]
dataset = "synthetic"
[model]
name = "plain-cnn"
[train]
epochs = 1
batch_size = 8
[[variant]]
name = "base"
[[variant]]
name = "better"
"model.norm.gamma" = 0.5
[grid]
"optimizer.lr" = [0.1, 0.01]
"#;

/// Test accuracy (%) of the table fixture by configuration and seed.
const ACCURACY: [(&str, [f64; 3]); 4] = [
    ("base,lr=0.1", [80.0, 82.0, 81.0]),
    ("base,lr=0.01", [70.0, 72.0, 74.0]),
    ("better,lr=0.1", [83.0, 86.0, 84.0]),
    ("better,lr=0.01", [71.0, 69.0, 75.0]),
];

fn metrics(accuracy_percent: f64, loss: f64) -> Metrics {
    Metrics {
        loss,
        accuracy: accuracy_percent / 100.0,
        examples: 100,
    }
}

fn write_sweep(dir: &Path, spec: &Spec) {
    let sweep = SweepFile::of(spec, &stamps(spec).unwrap());
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("sweep.json"),
        serde_json::to_vec_pretty(&sweep).unwrap(),
    )
    .unwrap();
}

/// A finished run of configuration `c` at run index `index` with `test` metrics.
fn run(spec: &Spec, c: usize, index: u32, test: BTreeMap<String, Metrics>) -> RunResult {
    let conf = &spec.configurations[c];
    RunResult {
        format: RESULT_FORMAT,
        sweep: spec.name.clone(),
        configuration: conf.name.clone(),
        axes: conf.axes.clone(),
        index,
        seed: run_seed(index),
        config: conf.config.clone(),
        fingerprint: Some(stamps(spec).unwrap()[c].fingerprint.clone()),
        provenance: None,
        status: Status::Finished,
        epochs: vec![],
        best_epoch: Some(1),
        test,
        validation: BTreeMap::new(),
        diagnostics: Diagnostics::default(),
    }
}

fn save(dir: &Path, spec: &Spec, r: &RunResult) {
    let key = spec
        .runs()
        .into_iter()
        .find(|k| {
            spec.configurations[k.configuration].name == r.configuration && k.index == r.index
        })
        .unwrap();
    r.save(&result_path(dir, &key.id)).unwrap();
}

/// Writes the table fixture; returns the spec.
fn table_fixture(dir: &Path) -> Spec {
    let spec = Spec::parse(TABLE_SPEC, "fixture.toml").unwrap();
    write_sweep(dir, &spec);
    for (c, conf) in spec.configurations.iter().enumerate() {
        let (name, acc) = ACCURACY[c];
        assert_eq!(conf.name, name);
        for (i, &a) in acc.iter().enumerate() {
            let test = BTreeMap::from([("population".to_string(), metrics(a, 1.0 - a / 100.0))]);
            save(dir, &spec, &run(&spec, c, i as u32 + 1, test));
        }
    }
    spec
}

fn settings(rows: &[&str], cols: &[&str], metric: Metric) -> TableSettings {
    TableSettings {
        rows: rows.iter().map(|s| s.to_string()).collect(),
        cols: cols.iter().map(|s| s.to_string()).collect(),
        metric,
        test: TestKind::Paired,
        level: 0.05,
        correction: Correction::Auto,
    }
}

// p-values computed once with scipy 1.17.1 (throw-away venv):
//   ttest_rel([83,86,84], [80,82,81], alternative='greater') → t = 10.0, p = 0.004926228511662845
//   ttest_rel([71,69,75], [70,72,74], alternative='greater') → t = -0.25, p = 0.5870388279778489
//   ttest_rel([83,86], [80,82], alternative='greater')       → t = 7.0, p = 0.04516723530086655
//   ttest_ind([83,86,84], [80,82,81], equal_var=False, alternative='greater')
//                                       → t = 3.1622776601683746, p = 0.02095725873572711,
//                                         df = 3.4482758620689657
// Means and sample standard deviations by hand: [83,86,84] → 84.333…, 1.5275…;
// [71,69,75] → 71.666…, 3.0550…; [80,82,81] → 81, 1; [70,72,74] → 72, 2.

#[test]
fn the_table_is_exact_with_bold_for_significant_and_underline_for_best() {
    let tmp = tempfile::tempdir().unwrap();
    table_fixture(tmp.path());
    let results = SweepResults::load(tmp.path()).unwrap();
    let baseline = Baseline::resolve("base", &results).unwrap();
    let s = settings(&["variant"], &["optimizer.lr"], Metric::Accuracy);
    let (md, _, json) = scheme_section(&results, "population", Some(&baseline), &s).unwrap();
    let (tables_md, tests_md) = md.split_once("| configuration |").unwrap();
    assert_eq!(
        tables_md,
        "## Accuracy (%): test set, population statistics from the training EMA

| variant \\ lr | 0.1 | 0.01 |
|---|---|---|
| base | 81.00 ± 1.00 | <ins>72.00 ± 2.00</ins> |
| better | <ins>**84.33 ± 1.53**</ins> | 71.67 ± 3.06 |

Against the baseline (one-sided paired t-test, runs paired by seed):

"
    );
    // The t interval: Δ ± t.ppf(0.975, 2) · s/√n with t.ppf(0.975, 2) = 4.302652729749464
    // (scipy 1.17.1): [3,4,3] → 3.333 ± 1.434; [1,-3,1] → -0.333 ± 5.737. Two comparisons: no
    // correction, so p adj. is p.
    let rows: Vec<Vec<&str>> = tests_md
        .lines()
        .skip(2)
        .take(2)
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    let pick = |r: &[&str]| [r[0], r[3], r[4], r[6], r[7], r[8], r[9], r[12]].map(String::from);
    assert_eq!(
        pick(&rows[0]),
        [
            "better,lr=0.1",
            "+3.33",
            "[+1.90, +4.77]",
            "10.000",
            "2.0",
            "0.0049",
            "**0.0049**",
            "3 pairs"
        ]
    );
    assert_eq!(
        pick(&rows[1]),
        [
            "better,lr=0.01",
            "-0.33",
            "[-6.07, +5.40]",
            "-0.250",
            "2.0",
            "0.5870",
            "0.5870",
            "3 pairs"
        ]
    );
    assert_eq!(json.len(), 2);
    let low = json[0]["difference"]["t_ci"]["low"].as_f64().unwrap();
    assert!(
        (low - (10.0 / 3.0 - 4.302652729749464 * (1.0f64 / 3.0).sqrt() / 3f64.sqrt())).abs() < 1e-9
    );
    assert_eq!(json[0]["difference"]["test"], "paired");

    // Error: lower is better, so the same runs are bold and underlined the other way round.
    let s = settings(&["variant"], &["optimizer.lr"], Metric::Error);
    let t = tables(&results, "population", Some(&baseline), &s).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        t[0].markdown(),
        "| variant \\ lr | 0.1 | 0.01 |
|---|---|---|
| base | 19.00 ± 1.00 | <ins>28.00 ± 2.00</ins> |
| better | <ins>**15.67 ± 1.53**</ins> | 28.33 ± 3.06 |
"
    );
}

#[test]
fn the_unpaired_test_is_welchs() {
    let tmp = tempfile::tempdir().unwrap();
    table_fixture(tmp.path());
    let results = SweepResults::load(tmp.path()).unwrap();
    let baseline = Baseline::resolve("base", &results).unwrap();
    let mut s = settings(&["variant"], &["optimizer.lr"], Metric::Accuracy);
    s.test = TestKind::Welch;
    let (md, _, _) = scheme_section(&results, "population", Some(&baseline), &s).unwrap();
    assert!(
        md.contains("| better,lr=0.1 | base,lr=0.1 | 84.33 ± 1.53 | +3.33 | ["),
        "{md}"
    );
    assert!(
        md.contains("| 3.162 | 3.4 | 0.0210 | **0.0210** | – | – | 3 vs 3 runs |"),
        "{md}"
    );
    assert!(
        md.contains("Against the baseline (one-sided Welch t-test"),
        "{md}"
    );
}

#[test]
fn axes_left_out_of_rows_and_columns_make_one_table_each() {
    let tmp = tempfile::tempdir().unwrap();
    table_fixture(tmp.path());
    let results = SweepResults::load(tmp.path()).unwrap();
    let baseline = Baseline::resolve("base", &results).unwrap();
    let t = tables(
        &results,
        "population",
        Some(&baseline),
        &settings(&["variant"], &[], Metric::Accuracy),
    )
    .unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(
        t[0].block,
        vec![("optimizer.lr".to_string(), "0.1".to_string())]
    );
    assert_eq!(
        t[1].markdown(),
        "| variant | accuracy (%) |
|---|---|
| base | <ins>72.00 ± 2.00</ins> |
| better | 71.67 ± 3.06 |
"
    );
    // No layout: one row per configuration, variant first.
    let t = tables(
        &results,
        "population",
        None,
        &settings(&[], &[], Metric::Accuracy),
    )
    .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].row_header, "variant / lr");
    let labels: Vec<&str> = t[0].rows.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        ["base / 0.1", "base / 0.01", "better / 0.1", "better / 0.01"]
    );
    // Without a baseline nothing is bold.
    assert!(!t[0].markdown().contains("**"));

    // A baseline given as AXIS=VALUE pairs each configuration within its grid point.
    let b = Baseline::resolve("variant=base", &results).unwrap();
    assert_eq!(
        b.partner("better,lr=0.01", &results).as_deref(),
        Some("base,lr=0.01")
    );
    let b = Baseline::resolve("base,lr=0.1", &results).unwrap();
    assert_eq!(
        b.partner("better,lr=0.01", &results).as_deref(),
        Some("base,lr=0.1")
    );
    for bad in ["nothing", "lr=0.1", "variant"] {
        let e = Baseline::resolve(bad, &results).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("optimizer.lr"), "{e}");
    }
    let e = tables(
        &results,
        "population",
        None,
        &settings(&["lr"], &[], Metric::Accuracy),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`lr` is not an axis") && e.contains("optimizer.lr"),
        "{e}"
    );
}

#[test]
fn an_incomplete_sweep_pairs_only_matched_seeds_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = table_fixture(tmp.path());
    // better,lr=0.1 run 3 never finished; base,lr=0.01 run 2 failed.
    let key = |name: &str, index: u32| {
        spec.runs()
            .into_iter()
            .find(|k| spec.configurations[k.configuration].name == name && k.index == index)
            .unwrap()
            .id
    };
    std::fs::remove_file(result_path(tmp.path(), &key("better,lr=0.1", 3))).unwrap();
    let mut failed = run(&spec, 1, 2, BTreeMap::new());
    failed.status = Status::Failed {
        reason: "loss is NaN at epoch 1, step 3".into(),
    };
    save(tmp.path(), &spec, &failed);

    let results = SweepResults::load(tmp.path()).unwrap();
    assert_eq!(results.missing.len(), 1);
    let baseline = Baseline::resolve("base", &results).unwrap();
    let s = settings(&["variant"], &["optimizer.lr"], Metric::Accuracy);
    let (md, _, _) = scheme_section(&results, "population", Some(&baseline), &s).unwrap();
    // [70, 74] → 72 ± 2.83; [83, 86] → 84.5 ± 2.12
    assert!(
        md.contains("| base | 81.00 ± 1.00 | <ins>72.00 ± 2.83</ins> (n=2) |"),
        "{md}"
    );
    assert!(
        md.contains("| better | <ins>**84.50 ± 2.12**</ins> (n=2) | 71.67 ± 3.06 |"),
        "{md}"
    );
    assert!(
        md.contains("| better,lr=0.1 | base,lr=0.1 | 84.50 ± 2.12 | +3.50 | [-2.85, +9.85] | "),
        "{md}"
    );
    // 3.5 ± t.ppf(0.975, 1) · 0.5, t.ppf(0.975, 1) = 12.706204736174698 (scipy 1.17.1)
    assert!(md.contains("| 7.000 | 1.0 | 0.0452 | **0.0452** |"), "{md}");
    assert!(
        md.contains("- `better,lr=0.1` against `base,lr=0.1`: run 3 finished on one side only, left out of the pairing."),
        "{md}"
    );
    assert!(
        md.contains("- `better,lr=0.01` against `base,lr=0.01`: run 2 finished on one side only, left out of the pairing."),
        "{md}"
    );
    let report = build_report(&results, &ReportOptions::default()).unwrap();
    let text = String::from_utf8(report.files.last().unwrap().1.clone()).unwrap();
    assert!(text.contains("11 of 12 runs"), "{text}");
    assert!(
        text.contains("- `better,lr=0.1` run 3: missing (no result file yet)"),
        "{text}"
    );
    assert!(
        text.contains("- `base,lr=0.01` run 2: failed: loss is NaN at epoch 1, step 3"),
        "{text}"
    );
    assert!(
        text.contains("1 → 0x6f75849b") && text.contains("3 → 0xf2a7baf3"),
        "{text}"
    );
}

#[test]
fn bad_result_files_are_named_and_nothing_is_written() {
    for (what, bytes) in [
        ("empty", &b""[..]),
        (
            "truncated",
            &br#"{"format": 1, "sweep": "fixture", "configur"#[..],
        ),
        ("not json", &b"\x00\x01garbage"[..]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let spec = table_fixture(tmp.path());
        let id = &spec.runs()[2].id;
        let bad = result_path(tmp.path(), id);
        std::fs::write(&bad, bytes).unwrap();
        let out = tmp.path().join("report");
        let e = write_report(tmp.path(), &ReportOptions::default(), &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&bad.display().to_string()), "{what}: {e}");
        assert!(!out.exists(), "{what}: something was written");
    }
    // a result of another sweep, and a missing sweep.json
    let tmp = tempfile::tempdir().unwrap();
    let spec = table_fixture(tmp.path());
    let mut other = run(&spec, 0, 1, BTreeMap::new());
    other.sweep = "elsewhere".into();
    save(tmp.path(), &spec, &other);
    let e = SweepResults::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("belongs to sweep `elsewhere`"), "{e}");
    std::fs::remove_file(tmp.path().join("sweep.json")).unwrap();
    let e = SweepResults::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("sweep.json"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    write_sweep(empty.path(), &spec);
    let e = SweepResults::load(empty.path()).unwrap_err().to_string();
    assert!(e.contains("no result files"), "{e}");
}

const FIGURE_SPEC: &str = r#"name = "figures"
seeds = 2
baseline = "bn"
[data]
dataset = "synthetic"
[model]
name = "plain-cnn"
[train]
epochs = 3
batch_size = 16
precise_every_epoch = true
[eval]
schemes = ["population", "precise", "minibatch", "alpha", "train-minibatch"]
minibatch_sizes = [8, 16]
alphas = [0.0, 0.5]
[[variant]]
name = "bn"
[[variant]]
name = "small-gamma"
"model.norm.gamma" = 0.5
[grid]
"train.batch_size" = [8, 16]
"#;

/// A value that differs by configuration, seed and slot, in (0, 100).
fn value(c: usize, index: u32, slot: usize) -> f64 {
    50.0 + 7.0 * c as f64 + 3.0 * index as f64 + 1.5 * slot as f64
}

fn figure_fixture(dir: &Path) -> Spec {
    let spec = Spec::parse(FIGURE_SPEC, "figures.toml").unwrap();
    write_sweep(dir, &spec);
    for (c, conf) in spec.configurations.iter().enumerate() {
        let b = conf.config.train.batch_size;
        for index in 1..=2 {
            let mut test = BTreeMap::new();
            for (slot, key) in [
                "population".to_string(),
                "precise".to_string(),
                format!("minibatch-{b}"),
                "alpha-0".to_string(),
                "alpha-0.5".to_string(),
                "train-minibatch".to_string(),
            ]
            .into_iter()
            .enumerate()
            {
                let v = value(c, index, slot);
                test.insert(key, metrics(v, v / 50.0));
            }
            let mut r = run(&spec, c, index, test);
            r.epochs = (1..=3)
                .map(|e| EpochRecord {
                    epoch: e,
                    lr: 0.1,
                    train_loss: 1.0,
                    train_accuracy: 0.5,
                    val: Some(metrics(value(c, index, e), 1.0)),
                    val_precise: Some(metrics(value(c, index, e) + 2.0, 1.0)),
                    val_minibatch: None,
                    frozen: false,
                })
                .collect();
            let layer = |k: usize| LayerDiagnostics {
                path: format!("Net.block{k}.norm"),
                gamma_init: vec![1.0; 8],
                gamma: (0..8)
                    .map(|j| 0.8 + 0.05 * j as f32 + 0.01 * c as f32)
                    .collect(),
                beta_init: vec![0.0; 8],
                beta: (0..8).map(|j| -0.1 + 0.03 * j as f32).collect(),
                gamma_drift: 0.1,
                beta_drift: 0.1,
                gradient_factor: vec![1.0; 8],
            };
            let spread: Vec<f32> = (0..200)
                .map(|j| ((j * 37) % 101) as f32 / 50.0 - 1.0)
                .collect();
            r.diagnostics = Diagnostics {
                layers: vec![layer(1), layer(2)],
                histograms: ["first", "last"]
                    .iter()
                    .flat_map(|l| ["weights", "gradients"].map(|w| (l, w)))
                    .flat_map(|(l, w)| {
                        let spread = spread.clone();
                        ["first", "last"].map(move |win| {
                            (
                                format!("{l}-layer {w}, {win} 20 updates of epoch 1"),
                                Histogram::of(&spread),
                            )
                        })
                    })
                    .collect(),
                outlier_share: BTreeMap::from([
                    ("Net.block1.norm".to_string(), 0.001 * index as f64),
                    ("Net.block2.norm".to_string(), 0.002 * c as f64),
                ]),
            };
            save(dir, &spec, &r);
        }
    }
    spec
}

fn line_panel(p: &Panel) -> &LinePanel {
    match p {
        Panel::Lines(l) => l,
        Panel::Histograms(_) => panic!("expected lines"),
    }
}

/// (mean, sample std) by hand.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64;
    (m, var.sqrt())
}

#[test]
fn the_figures_carry_the_runs_values() {
    let tmp = tempfile::tempdir().unwrap();
    figure_fixture(tmp.path());
    let results = SweepResults::load(tmp.path()).unwrap();
    let figs = figures(&results, "population", Metric::Accuracy);
    let names: Vec<&str> = figs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "validation-per-epoch",
            "example-weighing-alpha",
            "batch-size",
            "norm-batch-size",
            "gamma-beta",
            "layers-bn_batch_size=8",
            "layers-bn_batch_size=16",
            "layers-small-gamma_batch_size=8",
            "layers-small-gamma_batch_size=16",
        ]
    );
    let close = |a: (f64, f64, f64), b: (f64, f64, f64)| {
        assert!(
            (a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-9 && (a.2 - b.2).abs() < 1e-9,
            "{a:?} vs {b:?}"
        );
    };
    // validation: configuration 2 (small-gamma, batch 8), epoch 3, EMA and PreciseBN
    let val = line_panel(&figs[0].panels[0]);
    let ema = val
        .series
        .iter()
        .find(|s| s.label == "small-gamma,batch_size=8, EMA")
        .unwrap();
    let (m, s) = mean_std(&[value(2, 1, 3), value(2, 2, 3)]);
    close(ema.points[2], (3.0, m, s));
    let precise = val
        .series
        .iter()
        .find(|s| s.label == "small-gamma,batch_size=8, PreciseBN")
        .unwrap();
    assert!(precise.dashed && !ema.dashed);
    close(precise.points[2], (3.0, m + 2.0, s));
    // α: accuracy and cross-entropy of configuration 1 at α = 0.5 (slot 4)
    let acc = line_panel(&figs[1].panels[0]);
    let (m, s) = mean_std(&[value(1, 1, 4), value(1, 2, 4)]);
    close(acc.series[1].points[1], (0.5, m, s));
    let ce = line_panel(&figs[1].panels[1]);
    let (m, s) = mean_std(&[value(1, 1, 4) / 50.0, value(1, 2, 4) / 50.0]);
    close(ce.series[1].points[1], (0.5, m, s));
    // batch size: one line per variant, x = batch sizes
    let bs = line_panel(&figs[2].panels[0]);
    let labels: Vec<&str> = bs.series.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["bn", "small-gamma"]);
    let (m, s) = mean_std(&[value(3, 1, 0), value(3, 2, 0)]);
    close(bs.series[1].points[1], (16.0, m, s));
    // norm batch: error under mini-batch statistics at the training batch (slot 2)
    let nb = line_panel(&figs[3].panels[0]);
    let mb = nb
        .series
        .iter()
        .find(|s| s.label == "bn: test, mini-batch stats at the training norm. batch")
        .unwrap();
    let (m, s) = mean_std(&[100.0 - value(0, 1, 2), 100.0 - value(0, 2, 2)]);
    close(mb.points[0], (8.0, m, s));
    // outliers: layer 2 of configuration 3 in %
    let out = line_panel(&figs[4].panels[2]);
    close(out.series[3].points[1], (2.0, 0.6, 0.0));
}

/// Pixels of `rgb` and pixels that are not white.
fn pixels(png_bytes: &[u8], rgb: [u8; 3]) -> (u32, u32, usize, usize) {
    let img = image::load_from_memory(png_bytes).unwrap().to_rgb8();
    let colored = img.pixels().filter(|p| p.0 == rgb).count();
    let ink = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    (img.width(), img.height(), colored, ink)
}

#[test]
fn every_figure_is_a_png_of_its_size_with_its_series_and_an_svg_that_parses() {
    let tmp = tempfile::tempdir().unwrap();
    figure_fixture(tmp.path());
    let results = SweepResults::load(tmp.path()).unwrap();
    for f in figures(&results, "population", Metric::Accuracy) {
        let (w, h) = size(&f);
        let (pw, ph, blue, ink) = pixels(
            &png(&f).unwrap(),
            [PALETTE[0].0, PALETTE[0].1, PALETTE[0].2],
        );
        assert_eq!((pw, ph), (w, h), "{}", f.name);
        assert!(
            ink > (w * h) as usize / 100,
            "{}: {ink} inked pixels",
            f.name
        );
        assert!(blue > 50, "{}: series 0 drew {blue} pixels", f.name);
        let text = svg(&f).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.attribute("width"), Some(w.to_string().as_str()));
        assert!(
            doc.descendants()
                .any(|n| n.text().map(str::trim) == Some(f.title.as_str())),
            "{}: no title text",
            f.name
        );
        assert!(
            doc.descendants()
                .filter(|n| n.tag_name().name() == "polyline")
                .count()
                > 0,
            "{}: no lines",
            f.name
        );
    }
    // a blank figure has no series colour: the check above can fail
    let blank = bnlab_train::Figure {
        name: "blank".into(),
        title: "blank".into(),
        caption: String::new(),
        panels: vec![Panel::Lines(LinePanel {
            title: String::new(),
            x_label: "x".into(),
            y_label: "y".into(),
            log2_x: false,
            series: vec![],
        })],
    };
    let (_, _, blue, _) = pixels(
        &png(&blank).unwrap(),
        [PALETTE[0].0, PALETTE[0].1, PALETTE[0].2],
    );
    assert_eq!(blue, 0);
}

#[test]
fn the_whole_report_is_written_with_every_file_it_links() {
    let tmp = tempfile::tempdir().unwrap();
    figure_fixture(tmp.path());
    let out = tmp.path().join("report");
    let report = write_report(tmp.path(), &ReportOptions::default(), &out).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for (path, _) in &report.files {
        assert!(out.join(path).is_file(), "{}", path.display());
        if path != Path::new("report.md") {
            assert!(
                md.contains(&path.display().to_string()),
                "{} not linked",
                path.display()
            );
        }
    }
    // tables for every scheme except the α grid, which is a figure
    for scheme in [
        "population",
        "precise",
        "minibatch-8",
        "minibatch-16",
        "train-minibatch",
    ] {
        assert!(
            out.join("tables").join(format!("{scheme}.csv")).is_file(),
            "{scheme}"
        );
    }
    assert!(!out.join("tables").join("alpha-0.5.csv").exists());
    let csv = std::fs::read_to_string(out.join("tables/population.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4);
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .starts_with("block,row,column,configuration")
    );
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 1 + 4 * 2 * 6);
}

/// Three claims on the table fixture: the lr = 0.1 gain (d = [3, 4, 3]) expected and
/// expected the other way, and the lr = 0.01 one (d = [1, −3, 1]) with a paper effect of 0.1.
const CLAIMS: &str = r#"
[[claim]]
name = "gain"
paper = "+3 pt"
a = "better,lr=0.1"
b = "base,lr=0.1"
expect = "greater"
effect = 3.0

[[claim]]
name = "loss"
a = "better,lr=0.1"
b = "base,lr=0.1"
expect = "less"

[[claim]]
name = "small"
a = "better,lr=0.01"
b = "base,lr=0.01"
expect = "greater"
effect = 0.1
"#;

#[test]
fn claims_get_the_verdict_of_their_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!("{TABLE_SPEC}{CLAIMS}");
    let spec = Spec::parse(&text, "claims.toml").unwrap();
    table_fixture(tmp.path());
    write_sweep(tmp.path(), &spec);
    let results = SweepResults::load(tmp.path()).unwrap();
    let report = build_report(&results, &ReportOptions::default()).unwrap();
    let file = |name: &str| {
        let (_, bytes) = report
            .files
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap();
        String::from_utf8(bytes.clone()).unwrap()
    };
    let md = file("report.md");
    // two-sided p = 2 × 0.004926228511662845 (scipy's one-sided ttest_rel above); three claims:
    // no correction by default; each side with its mean ((83 + 86 + 84)/3, (80 + 82 + 81)/3)
    assert!(
        md.contains("| gain | +3 pt | better,lr=0.1:population (84.33) − base,lr=0.1:population (81.00) | +3.333 | [+1.899, +4.768] |"),
        "{md}"
    );
    assert!(md.contains("| 0.0099 | 0.0099 |"), "{md}");
    // statsmodels: TTestPower().power(0.1 / std([1, -3, 1], ddof=1), 3, 0.05) = 0.0503, and
    // solve_power(effect_size=…, alpha=0.05, power=0.8) = 4187.x
    assert!(md.contains("| 0.05 (4188 seeds for 80 %) |"), "{md}");
    let verdicts: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| gain") || l.starts_with("| loss") || l.starts_with("| small"))
        .map(|l| l.trim_end_matches(" |").rsplit("| ").next().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        ["**reproduced**", "**reversed**", "**underpowered**"]
    );
    let json: serde_json::Value = serde_json::from_str(&file("report.json")).unwrap();
    assert_eq!(json["claims"][2]["verdict"], "underpowered");
    let p = json["claims"][0]["difference"]["t_p"]["two_sided"]
        .as_f64()
        .unwrap();
    assert!((p - 2.0 * 0.004926228511662845).abs() < 1e-12, "{p}");
}

#[test]
fn a_claim_folders_report_keeps_what_its_claims_compare() {
    let tmp = tempfile::tempdir().unwrap();
    table_fixture(tmp.path());
    let text = format!("{TABLE_SPEC}{CLAIMS}");
    let spec = Spec::parse(&text, "claims.toml").unwrap();
    // the first two claims only: the lr = 0.1 configurations
    let options = ReportOptions {
        claims: Some(spec.claims[..2].to_vec()),
        svg: false,
        ..ReportOptions::default()
    };
    let out = tmp.path().join("claim");
    let report = write_report(tmp.path(), &options, &out).unwrap();
    assert_eq!((report.expected, report.present), (2 * 3, 2 * 3));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| gain |") && md.contains("| loss |"), "{md}");
    assert!(!md.contains("| small |") && !md.contains("lr=0.01"), "{md}");
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 1 + 2 * 3, "{runs}");
    assert!(!runs.contains("lr=0.01"), "{runs}");
    let svgs = report
        .files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "svg"))
        .count();
    assert_eq!(svgs, 0);
    assert!(!md.contains("[SVG]"), "{md}");
}

#[test]
fn impossible_claims_are_refused_with_their_line() {
    let bad = |claim: &str| {
        let text = format!("{TABLE_SPEC}\n[[claim]]\nname = \"c\"\n{claim}\n");
        Spec::parse(&text, "bad.toml").unwrap_err().to_string()
    };
    let e = bad("a = \"nope\"\nb = \"base,lr=0.1\"\nexpect = \"greater\"");
    assert!(
        e.contains("`nope` is not a configuration") && e.contains("bad.toml:"),
        "{e}"
    );
    let e = bad("a = \"better,lr=0.1\"\nb = \"base,lr=0.1\"\nexpect = \"equivalent\"");
    assert!(e.contains("needs a margin"), "{e}");
    let e = bad("a = \"better,lr=0.1\"\nb = \"base,lr=0.1\"\nexpect = \"greater\"\nmargn = 1");
    assert!(e.contains("margn"), "{e}");
}

#[test]
fn the_commented_spec_example_parses_with_its_claim() {
    let source = include_str!("../src/spec.rs");
    let text: String = source
        .lines()
        .skip_while(|l| *l != "//! ```toml")
        .skip(1)
        .take_while(|l| *l != "//! ```")
        .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start_matches(' ')))
        .collect();
    let spec = Spec::parse(&text, "spec.rs").unwrap();
    assert_eq!(spec.claims.len(), 1);
    assert_eq!(spec.claims[0].a, "gamma0.1-c100,lr=0.1");
}

/// Writes `sweep.json` of the table spec with `claim` over the results under `dir`, and
/// evaluates the claims.
fn outcomes(dir: &Path, claim: &str) -> Vec<bnlab_train::ClaimOutcome> {
    let spec = Spec::parse(&format!("{TABLE_SPEC}{claim}"), "claim.toml").unwrap();
    write_sweep(dir, &spec);
    let results = SweepResults::load(dir).unwrap();
    bnlab_train::claims(&results, Correction::Auto)
}

#[test]
fn a_difference_of_differences_is_paired_by_run() {
    // (better − base at lr 0.1) − (better − base at lr 0.01) = [3, 4, 3] − [1, −3, 1] = [2, 7, 2];
    // scipy 1.17.1: ttest_1samp([2, 7, 2], 0) → t = 2.2, p = 0.15880897580794023,
    // CI (−3.5044212162491033, 10.837754549582437)
    let claim = r#"
[[claim]]
name = "interaction"
a = "better,lr=0.1"
b = "base,lr=0.1"
c = "better,lr=0.01"
d = "base,lr=0.01"
expect = "greater"
"#;
    let tmp = tempfile::tempdir().unwrap();
    table_fixture(tmp.path());
    let out = outcomes(tmp.path(), claim);
    let d = out[0].difference.as_ref().unwrap();
    assert!((d.t - 2.2).abs() < 1e-12 && (d.t_p.two_sided - 0.15880897580794023).abs() < 1e-12);
    assert!((d.t_ci.low + 3.5044212162491033).abs() < 1e-9);
    assert!((d.t_ci.high - 10.837754549582437).abs() < 1e-9);
    assert_eq!(out[0].verdict, Some(Verdict::Underpowered));
    // without `expect` it is a plain comparison: the same numbers, no verdict
    let out = outcomes(tmp.path(), &claim.replace("expect = \"greater\"\n", ""));
    assert_eq!(out[0].verdict, None);
    assert_eq!(out[0].difference.as_ref().unwrap().t, d.t);
    let half = format!(
        "{TABLE_SPEC}{}",
        claim.replace("d = \"base,lr=0.01\"\n", "")
    );
    let e = Spec::parse(&half, "dd.toml").unwrap_err().to_string();
    assert!(e.contains("needs both c and d"), "{e}");
}

#[test]
fn a_per_epoch_claim_averages_the_chosen_epochs() {
    // run i, epoch e: EMA validation 50 + e %, PreciseBN 50 + e + i + 0.5·e %, and in epoch 3
    // PreciseBN 20 points lower. Over epochs 1–2 the difference is i + 0.75: [1.75, 2.75, 3.75].
    let claim = r#"
[[claim]]
name = "early"
a = "base,lr=0.1"
b = "base,lr=0.1"
a_scheme = "val-precise@1-2"
b_scheme = "val@1-2"
expect = "greater"
"#;
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::parse(&format!("{TABLE_SPEC}{claim}"), "e.toml").unwrap();
    write_sweep(tmp.path(), &spec);
    for i in 1..=3u32 {
        let test = BTreeMap::from([("population".to_string(), metrics(80.0, 0.2))]);
        let mut r = run(&spec, 0, i, test);
        r.epochs = (1..=3)
            .map(|e| {
                let ema = 50.0 + e as f64;
                let shift = if e == 3 {
                    -20.0
                } else {
                    i as f64 + 0.5 * e as f64
                };
                EpochRecord {
                    epoch: e,
                    lr: 0.1,
                    train_loss: 1.0,
                    train_accuracy: 0.5,
                    val: Some(metrics(ema, 1.0)),
                    val_precise: Some(metrics(ema + shift, 1.0)),
                    frozen: false,
                    val_minibatch: None,
                }
            })
            .collect();
        save(tmp.path(), &spec, &r);
    }
    let out = outcomes(tmp.path(), claim);
    let d = out[0].difference.as_ref().unwrap();
    assert_eq!(d.n, 3);
    assert!(
        (d.mean - 2.75).abs() < 1e-9 && (d.std - 1.0).abs() < 1e-9,
        "{d:?}"
    );
    // each side's mean over the compared runs: EMA (51 + 52)/2 for every run; PreciseBN that
    // plus i + 0.75, i = 1..3
    let sides: Vec<(&str, f64, usize)> = out[0]
        .sides
        .iter()
        .map(|s| (s.scheme.as_str(), s.mean, s.n))
        .collect();
    assert_eq!(sides.len(), 2);
    assert_eq!((sides[0].0, sides[0].2), ("val-precise@1-2", 3));
    assert!((sides[0].1 - 54.25).abs() < 1e-9, "{sides:?}");
    assert!((sides[1].1 - 51.5).abs() < 1e-9, "{sides:?}");
    let out = outcomes(tmp.path(), &claim.replace("val@1-2", "val@2-1"));
    assert!(
        out[0].error.as_ref().unwrap().contains("E-F"),
        "{:?}",
        out[0].error
    );
}
