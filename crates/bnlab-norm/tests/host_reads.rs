//! How often the layer waits for the device to read values back to the host: on a GPU every
//! read is a pipeline stall. The composed path keeps everything on the device in every mode
//! (training step, PreciseBN collection, example weighing, population statistics); the fused
//! path plans its statistics on the host, so the layer takes it on a CubeCL device only with a
//! stats reducer, and a training step there reads nothing back.

mod common;

use bnlab_norm::{
    BatchPolicy, GhostSplit, Kernel, Norm, NormConfig, NormMode, StatUnit, StatsSource, host_reads,
};
use burn::tensor::{Device, Distribution, Tensor};
use common::{device, total};

/// The layers the target covers: BN, Ghost BN, Batch-Group Norm and GroupNorm.
fn layers() -> Vec<(&'static str, NormConfig)> {
    let c = 8;
    vec![
        ("BN", NormConfig::new(c)),
        (
            "Ghost 4",
            NormConfig::new(c).with_batch(BatchPolicy::ghost(4, GhostSplit::Strided)),
        ),
        (
            "BatchGroup 4 × 2",
            NormConfig::new(c).with_unit(StatUnit::BatchGroup {
                channel_groups: 4,
                example_groups: 2,
            }),
        ),
        (
            "GroupNorm 4",
            NormConfig::new(c).with_unit(StatUnit::Group { groups: 4 }),
        ),
    ]
}

fn input(device: &Device) -> Tensor<4> {
    Tensor::random([8, 8, 3, 3], Distribution::Normal(0.0, 1.0), device)
}

/// Reads back to the host during one training step (forward and backward) of `config`.
fn reads_per_step(config: NormConfig, device: &Device) -> u64 {
    let device = device.clone().autodiff();
    let norm = config.init(&device).unwrap();
    let x = input(&device);
    // a first step outside the count (one-time set-up may read)
    let _ = total(norm.forward(x.clone()).unwrap()).backward();
    let before = host_reads();
    let y = norm.forward(x.require_grad()).unwrap();
    let _ = total(y.clone() * y).backward();
    host_reads() - before
}

/// Reads back to the host during one forward call in `mode` without autodiff (PreciseBN
/// collection, example weighing, population statistics).
fn reads_per_call(config: NormConfig, mode: NormMode, device: &Device) -> u64 {
    let norm: Norm = config.init(device).unwrap().with_mode(mode);
    let x = input(device);
    let _ = norm.forward(x.clone()).unwrap();
    let before = host_reads();
    let _ = norm.forward(x).unwrap();
    host_reads() - before
}

/// The inference and collection modes each layer is checked in.
const MODES: [NormMode; 3] = [
    NormMode::Collect,
    NormMode::Eval(StatsSource::ExampleWeighed { alpha: 0.5 }),
    NormMode::Eval(StatsSource::Population),
];

/// Asserts that neither a training step nor a call in any of [`MODES`] reads back.
fn assert_no_reads(device: &Device, kernel: Kernel) {
    for (name, config) in layers() {
        let config = config.with_kernel(kernel);
        let reads = reads_per_step(config.clone(), device);
        assert_eq!(reads, 0, "{name}, a training step");
        for mode in MODES {
            let reads = reads_per_call(config.clone(), mode, device);
            assert_eq!(reads, 0, "{name} in {mode:?}");
        }
    }
}

#[test]
fn the_composed_path_never_reads_back() {
    assert_no_reads(&device(), Kernel::Composed);
}

#[test]
fn the_counter_sees_the_fused_paths_reads() {
    // on Flex the fused path reads its statistics back at least once per step: the counter
    // sees it
    let device = Device::flex();
    for (name, config) in layers() {
        assert!(reads_per_step(config, &device) >= 1, "{name}");
    }
}

/// The target of issue 25 on a CubeCL device (`BNLAB_TEST_DEVICE=vulkan` or `vulkan-cpu`, run
/// by `vulkan-test.sh`): with the default kernel choice, no read per training step or
/// forward call.
#[cfg(feature = "vulkan")]
#[test]
#[ignore = "needs BNLAB_TEST_DEVICE naming a CubeCL device: vulkan-test.sh runs it"]
fn a_cube_device_reads_nothing_back() {
    let device = device();
    assert!(
        bnlab_norm::is_cube(&device),
        "BNLAB_TEST_DEVICE must name a CubeCL device"
    );
    assert_no_reads(&device, Kernel::Auto);
}

/// The device path is deterministic on a CubeCL device: the same training step twice gives
/// the same output and gradients bit for bit (fixed reduction trees, no float atomics).
#[cfg(feature = "vulkan")]
#[test]
#[ignore = "needs BNLAB_TEST_DEVICE naming a CubeCL device: vulkan-test.sh runs it"]
fn a_cube_training_step_repeats_bit_for_bit() {
    let device = device().autodiff();
    assert!(
        bnlab_norm::is_cube(&device),
        "BNLAB_TEST_DEVICE must name a CubeCL device"
    );
    let x = Tensor::<4>::random([16, 8, 5, 5], Distribution::Normal(1.0, 2.0), &device);
    for (name, config) in layers() {
        let norm = config.init(&device).unwrap();
        let step = || {
            let x = x.clone().detach().require_grad();
            let y = norm.forward(x.clone()).unwrap();
            let grads = total(y.clone() * y.clone()).backward();
            let dx = x.grad(&grads).unwrap();
            (common::values(y), common::values(dx))
        };
        assert_eq!(step(), step(), "{name}");
    }
}
