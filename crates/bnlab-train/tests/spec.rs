//! Spec parsing: expansion into variants × grid, and one error per kind of bad spec, each with
//! its line.

mod common;

use bnlab_train::{Spec, TrainError, run_seed};
use common::{error, line_of};

const GOOD: &str = r#"name = "gamma"
seeds = 3
baseline = "base"

[data]
dataset = "fashion-mnist-subset"

[model]
name = "resnet20"

[model.norm]
ghost_size = 32

[train]
epochs = 2
batch_size = 128

[[variant]]
name = "base"

[[variant]]
name = "ours"
"model.norm.gamma" = 0.1
optimizer.gamma_lr_divisor = 100.0

[grid]
"optimizer.lr" = [0.1, 0.01]
"#;

#[test]
fn variants_times_grid_times_seeds() {
    let spec = Spec::parse(GOOD, "good.toml").unwrap();
    let names: Vec<&str> = spec
        .configurations
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["base,lr=0.1", "base,lr=0.01", "ours,lr=0.1", "ours,lr=0.01"]
    );
    let ours = &spec.configurations[3];
    assert_eq!(ours.config.model.norm.gamma, 0.1);
    assert_eq!(ours.config.optimizer.gamma_lr_divisor, 100.0);
    assert_eq!(ours.config.optimizer.lr, 0.01);
    assert_eq!(ours.config.model.norm.ghost_size, Some(32));
    assert_eq!(ours.axes["optimizer.lr"], "0.01");
    assert_eq!(ours.axes["variant"], "ours");
    assert_eq!(spec.configurations[0].config.model.norm.gamma, 1.0);
    let runs = spec.runs();
    assert_eq!(runs.len(), 12);
    assert_eq!(runs[0].id, "base_lr=0.1-s1");
    // seed-major: the first seed of every configuration, then the second
    let n = spec.configurations.len();
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.configuration, i % n, "{}", run.id);
        assert_eq!(run.seed, run_seed(spec.seeds[i / n]), "{}", run.id);
    }
}

#[test]
fn each_bad_spec_gives_its_error_at_its_line() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, expected line containing, expected message part)
        (
            "epochs = 2",
            "epochs = 2\nepoch = 3",
            "epoch = 3",
            "unknown field `epoch`",
        ),
        (
            "ghost_size = 32",
            "ghost_size = 32\ngamma_init = 0.1",
            "gamma_init",
            "unknown field `gamma_init`",
        ),
        (
            "ghost_size = 32",
            "ghost_size = 48",
            "ghost_size = 48",
            "does not divide the batch of 128",
        ),
        (
            "name = \"resnet20\"",
            "name = \"resnet21\"",
            "resnet21",
            "unknown model `resnet21`",
        ),
        (
            "dataset = \"fashion-mnist-subset\"",
            "dataset = \"imagenet\"",
            "imagenet",
            "unknown dataset",
        ),
        ("seeds = 3", "seeds = 0", "seeds = 0", "seeds"),
        (
            "baseline = \"base\"",
            "baseline = \"nope\"",
            "nope",
            "baseline `nope`",
        ),
        (
            "\"optimizer.lr\" = [0.1, 0.01]",
            "\"optimizer.lr\" = [0.1, -1.0]",
            "optimizer.lr",
            "optimizer.lr must be finite and > 0",
        ),
        (
            "\"optimizer.lr\" = [0.1, 0.01]",
            "\"optimizer.rate\" = [0.1]",
            "optimizer.rate",
            "unknown field `rate`",
        ),
        (
            "\"optimizer.lr\" = [0.1, 0.01]",
            "\"optimizer.lr\" = []",
            "optimizer.lr",
            "non-empty array",
        ),
        (
            "batch_size = 128",
            "batch_size = 128\nmicro_batch_size = 48",
            "micro_batch_size",
            "must be ≥ 1 and divide batch_size",
        ),
        (
            "\"model.norm.gamma\" = 0.1",
            "\"model.norm.ghost_size\" = 24",
            "ghost_size\" = 24",
            "ghost_size = 24 does not divide",
        ),
        (
            "epochs = 2",
            "epochs = 2\nfreeze_at_epoch = 2",
            "freeze_at_epoch",
            "freeze_at_epoch = 2",
        ),
        (
            "ghost_size = 32",
            // 4 channel groups fit ResNet-20's 16, 32 and 64 channels (the default 32 does not),
            // and a ghost size is for the Batch unit only
            "unit = \"batch-group\"\ngroups = 4\nexample_groups = 200",
            "example_groups",
            "example_groups = 200 exceeds",
        ),
        (
            "name = \"resnet20\"",
            "name = \"resnet20\"\ninput_norm = \"fixed\"\n[data2]",
            "[data2]",
            "unknown field `data2`",
        ),
        (
            "epochs = 2",
            "epochs = 2\ndevice = \"tpu\"",
            "device = \"tpu\"",
            "unknown device `tpu`: expected flex, vulkan[:N], vulkan-cpu or cuda[:N]",
        ),
        (
            "epochs = 2",
            "epochs = 2\nprecision = \"fp16\"",
            "precision = \"fp16\"",
            "unknown variant `fp16`",
        ),
        (
            "epochs = 2",
            "epochs = \"two\"",
            "epochs = \"two\"",
            "invalid type",
        ),
    ];
    for (from, to, at, says) in cases {
        assert!(GOOD.contains(from), "{from}");
        let text = GOOD.replacen(from, to, 1);
        let (line, message) = error(&text);
        assert!(message.contains(says), "{to}: `{message}` lacks `{says}`");
        assert_eq!(line, line_of(&text, at), "{to}: {message}");
    }
}

#[test]
fn device_and_precision_are_train_settings_that_default_to_flex_and_f32() {
    use bnlab_norm::DeviceName;
    let spec = Spec::parse(GOOD, "good.toml").unwrap();
    assert!(
        spec.configurations
            .iter()
            .all(|c| c.config.train.device == DeviceName::Flex)
    );
    let text = GOOD.replacen("epochs = 2", "epochs = 2\ndevice = \"vulkan:1\"", 1);
    let mut spec = Spec::parse(&text, "gpu.toml").unwrap();
    assert_eq!(
        spec.configurations[0].config.train.device,
        DeviceName::Vulkan(1)
    );
    let text = text.replacen("epochs = 2", "epochs = 2\nprecision = \"bf16\"", 1);
    let half = Spec::parse(&text, "bf16.toml").unwrap();
    assert_eq!(
        half.configurations[0].config.train.precision,
        bnlab_norm::Precision::BF16
    );
    assert_eq!(
        spec.configurations[0].config.train.precision,
        bnlab_norm::Precision::F32
    );
    // `bnlab run --device` overrides it everywhere
    spec.set_device(DeviceName::VulkanCpu);
    assert!(
        spec.configurations
            .iter()
            .all(|c| c.config.train.device == DeviceName::VulkanCpu)
    );
}

#[test]
fn fixed_input_normalization_needs_raw_pixels() {
    let text = GOOD.replacen(
        "name = \"resnet20\"",
        "name = \"resnet20\"\ninput_norm = \"fixed\"",
        1,
    );
    let text = text.replacen("[data]\n", "[data]\nscaling = \"unit\"\n", 1);
    let (line, message) = error(&text);
    assert!(message.contains("raw"), "{message}");
    assert_eq!(line, line_of(&text, "scaling = \"unit\""));
    // without an explicit scaling, input normalization reads raw pixels
    let ok = GOOD.replacen(
        "name = \"resnet20\"",
        "name = \"resnet20\"\ninput_norm = \"fixed\"",
        1,
    );
    assert!(Spec::parse(&ok, "ok.toml").is_ok());
}

#[test]
fn a_missing_file_is_an_io_error() {
    let e = Spec::load(std::path::Path::new("/nonexistent/spec.toml")).unwrap_err();
    assert!(matches!(e, TrainError::Io { .. }), "{e}");
}

/// The spec of the network-settings tests: ResNet-20 on one-channel synthetic images.
const NETWORK: &str = r#"seeds = 1
[data]
dataset = "synthetic"
[model]
name = "resnet20"
[train]
epochs = 1
batch_size = 16
"#;

/// The normalization settings at every site of `text`'s network, by site path.
fn sites(text: &str) -> Vec<(String, bnlab_norm::NormConfig)> {
    let spec = Spec::parse(text, "sites.toml").unwrap();
    let config = &spec.configurations[0].config;
    let options = config.model_options(4, 1).unwrap();
    bnlab_models::norm_site_configs(&config.model.name, &options).unwrap()
}

#[test]
fn per_site_overrides_change_only_their_sites_and_keep_the_other_settings() {
    let text = format!(
        "{NETWORK}[model.norm]\ngamma = 0.5\n[model.overrides.\"stages.2.*\"]\nunit = \"group\"\ngroups = 8\n[model.overrides.\"stem.norm\"]\nkernel = \"composed\"\ncheck_finite = true\n"
    );
    let all = sites(&text);
    assert_eq!(all.len(), 19);
    for (site, c) in &all {
        let want = if site.contains("stages.2.") {
            bnlab_norm::StatUnit::Group { groups: 8 }
        } else {
            bnlab_norm::StatUnit::Batch
        };
        assert_eq!(c.unit, want, "{site}");
        // every override starts from [model.norm]
        assert_eq!(c.affine.gamma_init(), Some(0.5), "{site}");
        let stem = site.ends_with("stem.norm");
        assert_eq!(c.kernel == bnlab_norm::Kernel::Composed, stem, "{site}");
        assert_eq!(c.check_finite, stem, "{site}");
    }
    // an override that matches no site is refused at its key, listing the sites
    let typo = format!("{NETWORK}[model.overrides.\"stages.9.*\"]\nunit = \"layer\"\n");
    let (line, message) = error(&typo);
    assert_eq!(line, line_of(&typo, "[model.overrides"), "{message}");
    assert!(
        message.contains("stages.9.*") && message.contains(", stages.2.2.conv2.norm"),
        "{message}"
    );
    // a setting the layer does not have is refused with the valid ones
    let bad = format!("{NETWORK}[model.overrides.\"stem.norm\"]\ngroup = 4\n");
    let (_, message) = error(&bad);
    assert!(
        message.contains("group") && message.contains("groups"),
        "{message}"
    );
}

#[test]
fn kernels_width_and_resnet8_are_settings() {
    let text = format!("{NETWORK}[model.norm]\nkernel = \"composed\"\ncheck_finite = true\n")
        .replace(
            "name = \"resnet20\"",
            "name = \"resnet8\"\nwidth = 0.5\nconv_kernel = \"burn\"",
        );
    let spec = Spec::parse(&text, "k.toml").unwrap();
    let config = &spec.configurations[0].config;
    let options = config.model_options(4, 1).unwrap();
    assert_eq!(options.conv_kernel, bnlab_models::ConvKernel::Burn);
    let all = sites(&text);
    // ResNet-8: the stem and one block of two convolutions per stage, at half width
    let channels: Vec<usize> = all.iter().map(|(_, c)| c.num_features).collect();
    assert_eq!(channels, [8, 8, 8, 16, 16, 32, 32]);
    assert!(
        all.iter()
            .all(|(_, c)| c.check_finite && c.kernel == bnlab_norm::Kernel::Composed)
    );
    // a network without a width multiplier refuses one, at the model's key
    let imagenet = text.replace("name = \"resnet8\"", "name = \"repvgg-a0-cifar\"");
    let (_, message) = error(&imagenet);
    assert!(message.contains("width multiplier"), "{message}");
}
