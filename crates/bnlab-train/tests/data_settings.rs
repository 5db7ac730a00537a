//! Data settings of a spec end to end: an image folder the test writes, and a seeded
//! class-balanced training subset.

use std::path::Path;

mod common;

use bnlab_train::{RunData, RunResult, Spec, Status, result_path, run_sweep};
use common::options;

/// Writes `per_class` small PNGs of `classes` classes under `root/part/class-c/`.
fn image_folder(root: &Path, part: &str, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(part).join(format!("class-{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            // each class its own colour, each image its own brightness
            let img = image::RgbImage::from_fn(10, 12, |x, y| {
                let v = (40 * c + 3 * i + (x + y) as usize) as u8;
                image::Rgb([v, 255 - v, (60 * c) as u8])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

#[test]
fn an_image_folder_spec_trains_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    image_folder(&root, "train", 3, 8);
    image_folder(&root, "test", 3, 4);
    let text = format!(
        r#"seeds = 1
[data]
dataset = "image-folder"
root = "{}"
image_size = 8
validation = 0.25
threads = 1
[model]
name = "plain-cnn"
[train]
epochs = 1
batch_size = 6
"#,
        root.display()
    );
    let spec = Spec::parse(&text, "folder.toml").unwrap();
    let data = RunData::load(
        &spec.configurations[0].config.data,
        spec.configurations[0].config.scaling(),
    )
    .unwrap();
    assert_eq!(data.classes(), 3);
    assert_eq!(data.input_shape(), [3, 8, 8]);
    assert_eq!(
        (
            data.train_pool.len(),
            data.val_pool.len(),
            data.test_pool.len()
        ),
        (18, 6, 12)
    );
    let out = tmp.path().join("out");
    run_sweep(&spec, &out, &options(None, 1)).unwrap();
    let result = RunResult::load(&result_path(&out, "base-s1")).unwrap();
    assert_eq!(result.status, Status::Finished);
    assert_eq!(result.test["population"].examples, 12);
    // every image is part of the provenance, named under the root
    let files = &result.provenance.unwrap().files;
    assert_eq!(files.len(), 36);
    assert!(
        files
            .iter()
            .any(|f| f.name.ends_with("train/class-2/007.png")),
        "{files:?}"
    );
    // a spec without a root is refused at its data set; a root not there yet is an error
    // with its path when the data is read
    let rootless = text.replace(&format!("root = \"{}\"\n", root.display()), "");
    let (line, message) = common::error(&rootless);
    assert_eq!(line, common::line_of(&rootless, "dataset = "), "{message}");
    let missing = text.replace(&root.display().to_string(), "/nonexistent/folder");
    let config = Spec::parse(&missing, "m.toml").unwrap().configurations[0]
        .config
        .clone();
    let err = RunData::load(&config.data, config.scaling())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/folder"), "{err}");
}

#[test]
fn train_per_class_takes_a_seeded_class_balanced_subset() {
    let text = r#"seeds = 1
[data]
dataset = "synthetic"
validation = 0.25
train_per_class = 20
[data.synthetic]
classes = 4
train_per_class = 48
test_per_class = 16
[model]
name = "plain-cnn"
[train]
epochs = 1
batch_size = 8
"#;
    let config = Spec::parse(text, "subset.toml").unwrap().configurations[0]
        .config
        .clone();
    let data = RunData::load(&config.data, config.scaling()).unwrap();
    // 20 per class, of which a quarter is held out for validation
    assert_eq!(
        (data.train_pool.len(), data.val_pool.len()),
        (4 * 15, 4 * 5)
    );
    for c in 0..4 {
        let count = |pool: &[usize]| pool.iter().filter(|&&i| data.train.label(i) == c).count();
        assert_eq!(
            (count(&data.train_pool), count(&data.val_pool)),
            (15, 5),
            "class {c}"
        );
    }
    let mut all: Vec<usize> = data
        .train_pool
        .iter()
        .chain(&data.val_pool)
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 80, "an image is used twice");
    // the same seed, the same subset; another split seed, another one
    let again = RunData::load(&config.data, config.scaling()).unwrap();
    assert_eq!(again.train_pool, data.train_pool);
    let mut other = config.data.clone();
    other.split_seed = 7;
    let moved = RunData::load(&other, config.scaling()).unwrap();
    assert_ne!(moved.train_pool, data.train_pool);
    // more than a class holds is refused
    let mut too_many = config.data.clone();
    too_many.train_per_class = Some(49);
    assert!(RunData::load(&too_many, config.scaling()).is_err());
}
