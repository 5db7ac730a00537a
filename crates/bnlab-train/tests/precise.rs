//! PreciseBN on a network: ordinary and layer by layer (Wu & Johnson A.3).

use bnlab_data::{Augment, Batch, Batching, Loader, LoaderConfig, synthetic};
use bnlab_models::{ModelOptions, build};
use bnlab_norm::{NormMode, PopulationEstimator, norm_modes};
use bnlab_train::{TrainError, precise_bn, precise_bn_exact};
use burn::module::Module;
use burn::tensor::Device;
use std::sync::Arc;

/// The running mean and variance of every norm layer, in tree order.
fn stats<M: Module>(m: &M) -> Vec<Vec<f32>> {
    struct V(Vec<String>, Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            if matches!(
                self.0.last().map(String::as_str),
                Some("running_mean" | "running_var")
            ) {
                self.1.push(
                    p.val()
                        .into_data()
                        .convert::<f32>()
                        .try_into_vec::<f32>()
                        .unwrap(),
                );
            }
        }
    }
    let mut v = V(Vec::new(), Vec::new());
    m.visit(&mut v);
    assert!(!v.1.is_empty(), "no running statistics found");
    v.1
}

#[test]
fn layer_by_layer_statistics_agree_on_the_first_layer_and_differ_after_it() {
    let device = Device::flex();
    device.seed(3);
    let net = build("plain-cnn", &ModelOptions::new(4, 1), &device).unwrap();
    let set = Arc::new(synthetic(4, 32, [1, 8, 8], 0.3, 5).unwrap());
    let loader = Loader::new(
        set,
        LoaderConfig::new(Batching::shuffle(16, true), Augment::None, 1),
    )
    .unwrap();
    let pool: Vec<usize> = (0..128).collect();
    let batches = |_pass: usize| -> Result<_, TrainError> {
        Ok(loader
            .epoch(&pool, None, 0)?
            .map(|b| -> Result<Batch, TrainError> { Ok(b?.to_device(&Device::flex())) }))
    };
    let plain = precise_bn(
        net.valid(),
        batches(0).unwrap(),
        PopulationEstimator::Pooled,
    )
    .unwrap();
    let exact = precise_bn_exact(net.valid(), batches, PopulationEstimator::Pooled).unwrap();
    let (exact, modes) = norm_modes(exact);
    assert!(modes.iter().all(|m| *m == NormMode::EVAL));
    let (a, b, before) = (stats(&plain), stats(&exact), stats(&net));
    assert_eq!(a.len(), b.len());
    // the first layer's input does not depend on any norm layer
    assert_eq!(a[0], b[0]);
    assert_eq!(a[1], b[1]);
    assert_ne!(a[0], before[0], "statistics were not recomputed");
    // later layers see inputs normalized with population instead of batch statistics
    let later_differ = a.iter().zip(&b).skip(2).any(|(x, y)| x != y);
    assert!(later_differ);
}
