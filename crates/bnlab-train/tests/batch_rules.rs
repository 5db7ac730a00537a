//! The spec check and the layer apply one batch-split rule (`bnlab_norm::check_batch`), at the
//! real channel count of every site of the network and for each worker's shard: what the spec
//! accepts, the layer runs, and what the layer would refuse, the spec refuses with its line.

mod common;

use bnlab_models::build;
use bnlab_norm::{NormMode, set_norm_mode};
use bnlab_train::{Spec, Status, run_sweep};
use burn::tensor::{Device, Distribution, Tensor};
use common::{error, line_of, options};

/// A tiny synthetic spec; `norm` and `train` are appended to their tables.
fn spec(norm: &str, train: &str, eval: &str) -> String {
    format!(
        r#"name = "rules"
seeds = 1

[data]
dataset = "synthetic"
validation = 0.25
threads = 1
[data.synthetic]
classes = 4
train_per_class = 24
test_per_class = 8
shape = [1, 8, 8]

[model]
name = "resnet20"

[model.norm]
{norm}

[train]
epochs = 1
{train}

[eval]
schemes = ["population"]
batch_size = 16
{eval}
"#
    )
}

/// Runs one training-mode forward pass of `batch` examples through the spec's network.
fn forward_of(text: &str, batch: usize) -> Result<(), bnlab_models::ModelError> {
    let spec = Spec::parse(text, "rules.toml").unwrap();
    let config = &spec.configurations[0].config;
    let device = Device::flex();
    let network = build(
        &config.model.name,
        &config.model_options(4, 1).unwrap(),
        &device,
    )?;
    let network = set_norm_mode(network, NormMode::Train);
    let x = Tensor::<4>::random([batch, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    network.forward(x, None).map(|_| ())
}

#[test]
fn batch_group_with_example_groups_that_do_not_divide_is_refused_by_the_spec() {
    let text = spec(
        "unit = \"batch-group\"\ngroups = 4\nexample_groups = 3",
        "batch_size = 8",
        "",
    );
    let (line, message) = error(&text);
    assert_eq!(line, line_of(&text, "example_groups = 3"), "{message}");
    assert!(
        message.contains("example_groups = 3 does not divide the batch of 8"),
        "{message}"
    );
    // with uneven groups allowed, the spec accepts it and the layer runs it
    let allowed = spec(
        "unit = \"batch-group\"\ngroups = 4\nexample_groups = 3\nallow_remainder = true",
        "batch_size = 8",
        "",
    );
    forward_of(&allowed, 8).unwrap();
}

#[test]
fn a_strided_ghost_batch_with_a_remainder_is_accepted_as_the_layer_splits_it() {
    let text = spec(
        "ghost_size = 4\nghost_split = \"strided\"\nallow_remainder = true",
        "batch_size = 9",
        "",
    );
    // the layer splits 9 into 3 + 3 + 3
    forward_of(&text, 9).unwrap();
    // contiguous ghost batches of 4 leave 1 example: both refuse it
    let contiguous = text.replace("\"strided\"", "\"contiguous\"");
    let (line, message) = error(&contiguous);
    assert_eq!(line, line_of(&contiguous, "ghost_size = 4"), "{message}");
    assert!(message.contains("at least 2"), "{message}");
}

#[test]
fn precise_bn_batches_in_training_are_checked_per_worker_shard() {
    // 2 workers: each gets 6 of a PreciseBN batch of 12, which ghost batches of 4 cannot split,
    // although 4 divides 12
    let text = spec(
        "ghost_size = 4",
        "batch_size = 8\nprecise_every_epoch = true\n[train.distributed]\nworkers = 2",
        "precise_batch = 12\nprecise_samples = 24",
    );
    let (line, message) = error(&text);
    assert_eq!(line, line_of(&text, "precise_batch = 12"), "{message}");
    assert!(message.contains("batch of 6"), "{message}");
    assert!(message.contains("shard"), "{message}");
    // 16 splits into shards of 8
    let ok = text.replace("precise_batch = 12", "precise_batch = 16");
    assert!(Spec::parse(&ok, "rules.toml").is_ok());
}

#[test]
fn minibatch_evaluation_sizes_are_checked_by_the_layer_rule() {
    let text = spec(
        "ghost_size = 4",
        "batch_size = 8",
        "schemes = [\"minibatch\"]\nminibatch_sizes = [6]",
    )
    .replace("schemes = [\"population\"]\n", "");
    let (line, message) = error(&text);
    assert_eq!(line, line_of(&text, "minibatch_sizes"), "{message}");
    assert!(
        message.contains("ghost_size = 4 does not divide the batch of 6"),
        "{message}"
    );
}

#[test]
fn group_counts_are_checked_at_every_site_with_its_own_channels() {
    // ResNet-20 has 16, 32 and 64 channels; 32 groups cannot split the 16-channel stem
    let text = spec("unit = \"group\"\ngroups = 32", "batch_size = 8", "");
    let (_, message) = error(&text);
    assert!(
        message.contains("groups = 32 must be ≥ 1 and divide num_features = 16"),
        "{message}"
    );
    assert!(message.contains("stem"), "{message}");
    for norm in [
        "unit = \"group\"\ngroups = 8",
        "unit = \"group\"\ngroups = 16",
        "unit = \"batch-group\"\ngroups = 4\nexample_groups = 2",
    ] {
        let ok = spec(norm, "batch_size = 8", "");
        Spec::parse(&ok, "rules.toml").unwrap_or_else(|e| panic!("{norm}: {e}"));
        forward_of(&ok, 8).unwrap_or_else(|e| panic!("{norm}: {e}"));
    }
}

#[test]
fn group_norm_and_batch_group_norm_specs_with_many_groups_train() {
    let text = spec("unit = \"group\"\ngroups = 8", "batch_size = 8", "")
        .replace("seeds = 1", "seeds = 1\nbaseline = \"gn\"")
        + "\n[[variant]]\nname = \"gn\"\n[[variant]]\nname = \"bgn\"\n\"model.norm.unit\" = \"batch-group\"\n\"model.norm.groups\" = 4\n\"model.norm.example_groups\" = 2\n";
    let spec = Spec::parse(&text, "rules.toml").unwrap();
    let out = tempfile::tempdir().unwrap();
    let summary = run_sweep(&spec, out.path(), &options(None, 1)).unwrap();
    assert_eq!(summary.finished, 2);
    for run in spec.runs() {
        let path = out.path().join("results").join(format!("{}.json", run.id));
        let r: bnlab_train::RunResult =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(r.status, Status::Finished, "{}", run.id);
        assert!(r.epochs[0].train_loss.is_finite(), "{}", run.id);
    }
}
