//! Networks by name (`resnet20`, `resnet18-cifar`, `mobilenetv2-cifar`, …), for experiment
//! specs and the CLI.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::{
    FoldNorms, InceptionV3, InceptionV3Config, MobileNetV2, MobileNetV2Config, ModelError,
    ModelOptions, RepVgg, RepVggConfig, ResNet, ResNetConfig, Stem, Vgg, VggConfig,
};

/// A registered network: its name, what it is, and how to build it.
pub struct ModelEntry {
    /// The name specs and the CLI use.
    pub name: &'static str,
    /// What it is, in a line.
    pub what: &'static str,
    /// Builds it with the given options on a device.
    build: fn(&ModelOptions, &Device) -> Result<Network, ModelError>,
}

/// Every registered network, in listing order: the one table that names, lists and builds them.
pub const MODELS: &[ModelEntry] = &[
    ModelEntry {
        name: "resnet18",
        what: "ResNet-18, ImageNet stem",
        build: |o, d| resnet(ResNetConfig::resnet(18)?, o, d),
    },
    ModelEntry {
        name: "resnet34",
        what: "ResNet-34, ImageNet stem",
        build: |o, d| resnet(ResNetConfig::resnet(34)?, o, d),
    },
    ModelEntry {
        name: "resnet50",
        what: "ResNet-50, ImageNet stem",
        build: |o, d| resnet(ResNetConfig::resnet(50)?, o, d),
    },
    ModelEntry {
        name: "resnet101",
        what: "ResNet-101, ImageNet stem",
        build: |o, d| resnet(ResNetConfig::resnet(101)?, o, d),
    },
    ModelEntry {
        name: "resnet152",
        what: "ResNet-152, ImageNet stem",
        build: |o, d| resnet(ResNetConfig::resnet(152)?, o, d),
    },
    ModelEntry {
        name: "resnet18-cifar",
        what: "ResNet-18, CIFAR stem (3×3 stride 1, no max-pool)",
        build: |o, d| resnet(ResNetConfig::resnet(18)?.with_stem(Stem::Cifar), o, d),
    },
    ModelEntry {
        name: "resnet34-cifar",
        what: "ResNet-34, CIFAR stem",
        build: |o, d| resnet(ResNetConfig::resnet(34)?.with_stem(Stem::Cifar), o, d),
    },
    ModelEntry {
        name: "resnet50-cifar",
        what: "ResNet-50, CIFAR stem",
        build: |o, d| resnet(ResNetConfig::resnet(50)?.with_stem(Stem::Cifar), o, d),
    },
    ModelEntry {
        name: "resnet101-cifar",
        what: "ResNet-101, CIFAR stem",
        build: |o, d| resnet(ResNetConfig::resnet(101)?.with_stem(Stem::Cifar), o, d),
    },
    ModelEntry {
        name: "resnet152-cifar",
        what: "ResNet-152, CIFAR stem",
        build: |o, d| resnet(ResNetConfig::resnet(152)?.with_stem(Stem::Cifar), o, d),
    },
    ModelEntry {
        name: "resnet8",
        what: "He et al.'s CIFAR ResNet-8 (one basic block per stage, 75 k parameters)",
        build: |o, d| resnet(ResNetConfig::cifar(8)?, o, d),
    },
    ModelEntry {
        name: "resnet20",
        what: "He et al.'s CIFAR ResNet-20 (widths 16/32/64, 0.27 M parameters)",
        build: |o, d| resnet(ResNetConfig::cifar(20)?, o, d),
    },
    ModelEntry {
        name: "resnet32",
        what: "He et al.'s CIFAR ResNet-32",
        build: |o, d| resnet(ResNetConfig::cifar(32)?, o, d),
    },
    ModelEntry {
        name: "resnet44",
        what: "He et al.'s CIFAR ResNet-44",
        build: |o, d| resnet(ResNetConfig::cifar(44)?, o, d),
    },
    ModelEntry {
        name: "resnet56",
        what: "He et al.'s CIFAR ResNet-56",
        build: |o, d| resnet(ResNetConfig::cifar(56)?, o, d),
    },
    ModelEntry {
        name: "resnet110",
        what: "He et al.'s CIFAR ResNet-110",
        build: |o, d| resnet(ResNetConfig::cifar(110)?, o, d),
    },
    ModelEntry {
        name: "resnext50-32x4d",
        what: "ResNeXt-50 32×4d, ImageNet stem",
        build: |o, d| resnet(ResNetConfig::resnext50_32x4d(), o, d),
    },
    ModelEntry {
        name: "resnext50-32x4d-cifar",
        what: "ResNeXt-50 32×4d, CIFAR stem",
        build: |o, d| resnet(ResNetConfig::resnext50_32x4d().with_stem(Stem::Cifar), o, d),
    },
    ModelEntry {
        name: "mobilenetv2",
        what: "MobileNetV2, width 1.0",
        build: |o, d| mobilenet(false, 0.2, o, d),
    },
    ModelEntry {
        name: "mobilenetv2-cifar",
        what: "MobileNetV2 with CIFAR strides (Davis & Frank §4.4)",
        build: |o, d| mobilenet(true, 0.0, o, d),
    },
    ModelEntry {
        name: "repvgg-a0",
        what: "RepVGG-A0, training-time branches",
        build: |o, d| repvgg(false, o, d),
    },
    ModelEntry {
        name: "repvgg-a0-cifar",
        what: "RepVGG-A0 with stages 0 and 1 at stride 1",
        build: |o, d| repvgg(true, o, d),
    },
    ModelEntry {
        name: "inception-v3",
        what: "Inception-v3 for 299×299 inputs, with the auxiliary head",
        build: |o, d| inception(o, d),
    },
    ModelEntry {
        name: "vgg11",
        what: "VGG-11 convolutions with a GAP head; no residual paths",
        build: |o, d| vgg(VggConfig::vgg11(), o, d),
    },
    ModelEntry {
        name: "plain-cnn",
        what: "A 6-conv VGG-style CNN without residual paths",
        build: |o, d| vgg(VggConfig::plain_cnn(), o, d),
    },
];

/// A network built by name.
// Built once per run and moved rarely; boxing would cost Burn's derive for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    /// ResNets, ResNeXt and the CIFAR ResNets.
    ResNet(ResNet),
    /// MobileNetV2.
    MobileNetV2(MobileNetV2),
    /// RepVGG.
    RepVgg(RepVgg),
    /// Inception-v3.
    InceptionV3(InceptionV3),
    /// Plain VGG-style CNNs.
    Vgg(Vgg),
}

impl Network {
    /// Logits; `domains` are the examples' domain ids for domain-aware normalization.
    ///
    /// # Shapes
    /// - input `[N, C, H, W]`, output `[N, num_classes]`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        domains: Option<&[usize]>,
    ) -> Result<Tensor<2>, ModelError> {
        match self {
            Network::ResNet(m) => m.forward(x, domains),
            Network::MobileNetV2(m) => m.forward(x, domains),
            Network::RepVgg(m) => m.forward(x, domains),
            Network::InceptionV3(m) => m.forward(x, domains),
            Network::Vgg(m) => m.forward(x, domains),
        }
    }

    /// The deploy form: RepVGG reparameterized and every conv–norm pair folded, on the
    /// inference device (a model still on an autodiff device leaves its graph behind first).
    pub fn deploy(self) -> Result<Self, ModelError> {
        self.valid().fold_norms()
    }
}

impl FoldNorms for Network {
    fn fold_norms(self) -> Result<Self, ModelError> {
        Ok(match self {
            Network::ResNet(m) => Network::ResNet(m.fold_norms()?),
            Network::MobileNetV2(m) => Network::MobileNetV2(m.fold_norms()?),
            Network::RepVgg(m) => Network::RepVgg(m.fold_norms()?),
            Network::InceptionV3(m) => Network::InceptionV3(m.fold_norms()?),
            Network::Vgg(m) => Network::Vgg(m.fold_norms()?),
        })
    }
}

/// Every registered name.
pub fn model_names() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.name).collect()
}

/// Builds the network called `name` on `device`; an unknown name lists the known ones.
pub fn build(name: &str, options: &ModelOptions, device: &Device) -> Result<Network, ModelError> {
    match MODELS.iter().find(|m| m.name == name) {
        Some(m) => (m.build)(options, device),
        None => Err(ModelError::UnknownModel {
            name: name.to_string(),
            known: model_names().join(", "),
        }),
    }
}

fn resnet(c: ResNetConfig, o: &ModelOptions, d: &Device) -> Result<Network, ModelError> {
    Ok(Network::ResNet(c.with_options(o.clone()).init(d)?))
}

fn mobilenet(
    cifar: bool,
    dropout: f64,
    o: &ModelOptions,
    d: &Device,
) -> Result<Network, ModelError> {
    let c = MobileNetV2Config::new()
        .with_cifar(cifar)
        .with_dropout(dropout)
        .with_options(o.clone());
    Ok(Network::MobileNetV2(c.init(d)?))
}

fn repvgg(cifar: bool, o: &ModelOptions, d: &Device) -> Result<Network, ModelError> {
    let c = RepVggConfig::a0().with_cifar(cifar).with_options(o.clone());
    Ok(Network::RepVgg(c.init(d)?))
}

fn inception(o: &ModelOptions, d: &Device) -> Result<Network, ModelError> {
    let c = InceptionV3Config::new().with_options(o.clone());
    Ok(Network::InceptionV3(c.init(d)?))
}

fn vgg(c: VggConfig, o: &ModelOptions, d: &Device) -> Result<Network, ModelError> {
    Ok(Network::Vgg(c.with_options(o.clone()).init(d)?))
}

/// The normalization sites of the network `name` built with `options`: each site's path and
/// its layer settings at the site's own channel count, in tree order.
///
/// The network is built on Flex without drawing its parameters (they initialize lazily), so
/// this is cheap enough to validate every configuration of a spec before anything trains. An
/// invalid setting at a site (say `groups` that do not divide its channels) is the error of
/// that site, as in a real build.
pub fn norm_site_configs(
    name: &str,
    options: &ModelOptions,
) -> Result<Vec<(String, bnlab_norm::NormConfig)>, ModelError> {
    let network = build(name, options, &Device::flex())?;
    let (_, sites) = bnlab_norm::norm_sites(network);
    Ok(sites.into_iter().map(|s| (s.path, s.config)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NormSpec;
    use crate::testing::{device, input};
    use bnlab_norm::{
        DomainChoice, DomainConfig, NormConfig, NormMode, StatUnit, count_parameters, norm_sites,
        param_roles, set_norm_mode,
    };
    use burn::module::{ModuleVisitor, Param};

    /// Sums the sizes of the parameters that carry a role.
    struct RoleSizes<'a>(
        &'a std::collections::HashMap<burn::module::ParamId, bnlab_norm::ParamRole>,
        usize,
    );

    impl ModuleVisitor for RoleSizes<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.contains_key(&param.id) {
                self.1 += param.lazy_shape().num_elements();
            }
        }
    }

    #[test]
    fn every_name_builds_for_one_channel_data_and_every_parameter_has_a_role() {
        for name in model_names() {
            let net = build(name, &ModelOptions::new(10, 1), &device()).unwrap();
            let roles = param_roles(&net);
            let mut sizes = RoleSizes(&roles, 0);
            net.visit(&mut sizes);
            assert_eq!(
                sizes.1,
                count_parameters(&net),
                "{name}: a parameter without a role"
            );
        }
    }

    #[test]
    fn small_networks_run_on_fashion_mnist_shaped_input() {
        for name in [
            "resnet20",
            "plain-cnn",
            "resnet18-cifar",
            "mobilenetv2-cifar",
            "repvgg-a0-cifar",
        ] {
            let net = build(name, &ModelOptions::new(10, 1), &device()).unwrap();
            let y = net.forward(input([4, 1, 28, 28], 1), None).unwrap();
            assert_eq!(y.dims(), [4, 10], "{name}");
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = build("resnet19", &ModelOptions::new(10, 3), &device()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("resnet19")
                && msg.contains("resnet20")
                && msg.contains("mobilenetv2-cifar"),
            "{msg}"
        );
        assert!(build("resnet20-cifar", &ModelOptions::new(10, 3), &device()).is_err());
    }

    #[test]
    fn swapping_the_norm_config_changes_every_site() {
        let gn = NormConfig::new(1).with_unit(StatUnit::Group { groups: 8 });
        for name in model_names() {
            let options = ModelOptions::new(10, 3).with_norm(NormSpec::new(gn.clone()));
            let (_, sites) = norm_sites(build(name, &options, &device()).unwrap());
            assert!(!sites.is_empty());
            for site in &sites {
                assert_eq!(
                    site.config.unit,
                    StatUnit::Group { groups: 8 },
                    "{name}: {}",
                    site.path
                );
            }
            let (_, bn_sites) =
                norm_sites(build(name, &ModelOptions::new(10, 3), &device()).unwrap());
            assert_eq!(bn_sites.len(), sites.len());
            assert!(bn_sites.iter().all(|s| s.config.unit == StatUnit::Batch));
        }
    }

    #[test]
    fn a_site_override_changes_that_site_only() {
        let (_, sites) =
            norm_sites(build("resnet20", &ModelOptions::new(10, 3), &device()).unwrap());
        // the override keys are the tree paths (inside the `ResNet` variant)
        for target in &sites {
            let path = target.path.strip_prefix("ResNet.").expect("variant prefix");
            let spec = NormSpec::default()
                .with_override(path, NormConfig::new(1).with_unit(StatUnit::Layer));
            let (_, got) = norm_sites(
                build(
                    "resnet20",
                    &ModelOptions::new(10, 3).with_norm(spec),
                    &device(),
                )
                .unwrap(),
            );
            for s in &got {
                let want = if s.path == target.path {
                    StatUnit::Layer
                } else {
                    StatUnit::Batch
                };
                assert_eq!(s.config.unit, want, "override {path}, site {}", s.path);
            }
        }
        let typo = NormSpec::default().with_override("stages.9.*", NormConfig::new(1));
        let err = build(
            "resnet20",
            &ModelOptions::new(10, 3).with_norm(typo),
            &device(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("stages.9.*"));
    }

    #[test]
    fn per_domain_statistics_reach_every_layer() {
        let domains = DomainConfig {
            count: 2,
            train_stats: DomainChoice::PerDomain,
            population_stats: DomainChoice::PerDomain,
            affine: DomainChoice::Shared,
        };
        let spec = NormSpec::new(NormConfig::new(1).with_domains(Some(domains)));
        let net = build(
            "resnet20",
            &ModelOptions::new(10, 3).with_norm(spec),
            &device(),
        )
        .unwrap();
        let (a, b) = (input([3, 3, 8, 8], 1), input([3, 3, 8, 8], 2) * 3.0 + 1.0);
        let ids = [0, 0, 0, 1, 1, 1];
        let mixed = net
            .forward(Tensor::cat(vec![a.clone(), b.clone()], 0), Some(&ids))
            .unwrap();
        // each domain normalized only with itself, in every layer: equal to running them apart
        let apart = Tensor::cat(
            vec![
                net.forward(a, Some(&[0, 0, 0])).unwrap(),
                net.forward(b, Some(&[1, 1, 1])).unwrap(),
            ],
            0,
        );
        let (diff, scale) = crate::testing::max_diff(mixed, apart);
        assert!(diff <= 1e-4 * scale.max(1.0), "diff {diff}");
    }

    #[test]
    fn bad_input_is_an_error_naming_the_problem() {
        let net = build("resnet20", &ModelOptions::new(10, 3), &device()).unwrap();
        assert!(matches!(
            net.forward(input([2, 1, 8, 8], 1), None),
            Err(ModelError::Shape { .. })
        ));
        // a batch the ghost size does not divide is refused; the error names the site
        let ghost = NormSpec::new(
            NormConfig::new(1).with_batch(bnlab_norm::BatchPolicy::ghost(
                4,
                bnlab_norm::GhostSplit::Contiguous,
            )),
        );
        let ghosted = build(
            "resnet20",
            &ModelOptions::new(10, 3).with_norm(ghost),
            &device(),
        )
        .unwrap();
        match ghosted.forward(input([6, 3, 8, 8], 1), None) {
            Err(ModelError::Norm { site, .. }) => assert_eq!(site, "stem.norm"),
            other => panic!("expected a norm error, got {other:?}"),
        }
        let net = set_norm_mode(net, NormMode::EVAL);
        assert!(net.forward(input([1, 3, 8, 8], 1), None).is_ok());
        assert!(matches!(
            build("resnet20", &ModelOptions::new(0, 3), &device()),
            Err(ModelError::InvalidConfig(_))
        ));
    }
}

#[cfg(test)]
mod native_size_tests {
    use super::*;
    use crate::testing::{device, input};
    use bnlab_norm::{NormMode, set_norm_mode};

    /// The input side each registered network is designed for.
    fn native_side(name: &str) -> usize {
        match name {
            "inception-v3" => 299,
            "resnet20" | "resnet32" | "resnet44" | "resnet56" | "resnet110" | "vgg11"
            | "plain-cnn" => 32,
            n if n.ends_with("-cifar") => 32,
            _ => 224,
        }
    }

    #[test]
    fn every_network_gives_logits_at_its_input_size() {
        for name in model_names() {
            let side = native_side(name);
            let net = set_norm_mode(
                build(name, &ModelOptions::new(7, 3), &device()).unwrap(),
                NormMode::EVAL,
            );
            let y = net.forward(input([1, 3, side, side], 1), None).unwrap();
            assert_eq!(y.dims(), [1, 7], "{name} at {side}×{side}");
        }
    }
}
