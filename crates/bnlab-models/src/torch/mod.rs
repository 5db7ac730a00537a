//! PyTorch state dicts of the networks whose layout is torchvision's (ResNets, ResNeXt,
//! MobileNetV2, Inception-v3; timm's `resnet*` share the ResNet keys): the key of every
//! parameter and buffer, and how its tensor differs from bnlab's. [`import_state_dict`]
//! loads one into a network, [`export_state_dict`] writes one back with PyTorch's names and
//! conventions (BN's running variance unbiased, `num_batches_tracked` an int64).

use std::collections::{BTreeMap, BTreeSet};

use bnlab_norm::ModulePath;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor, TensorData};

use crate::{ModelError, Network};

mod files;

pub use files::{read_state_dict, write_safetensors};

/// How a tensor is laid out in PyTorch against bnlab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The same shape.
    Same,
    /// bnlab `[1, C]` (one affine or statistics set), PyTorch `[C]`.
    Row,
    /// A linear layer's weight: bnlab [in, out], PyTorch [out, in].
    Transposed,
    /// BN's update count: bnlab f32 `[1]`, PyTorch's `num_batches_tracked`, an int64 scalar.
    Count,
}

/// One tensor of a network and its PyTorch key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchKey {
    /// Its path in the bnlab module tree (`ResNet.stages.0.1.conv2.norm.affine.gamma`).
    pub path: String,
    /// Its key in the PyTorch state dict (`layer1.1.bn2.weight`).
    pub key: String,
    /// How the two tensors differ.
    pub layout: Layout,
}

/// A float tensor of a module: its path in the module tree, its shape and, when read, its
/// values.
type Found = (String, Vec<usize>, Option<TensorData>);

/// Every float tensor of `module`, in tree order; their values only when `read` (listing the
/// keys must not materialize a network's weights).
fn tensors<M: Module>(module: &M, read: bool) -> Vec<Found> {
    struct Tensors {
        path: ModulePath,
        read: bool,
        out: Vec<Found>,
    }
    impl ModuleVisitor for Tensors {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = self.read.then(|| param.val().into_data());
            self.out
                .push((self.path.joined(), param.lazy_shape().to_vec(), data));
        }
    }
    let mut found = Tensors {
        path: ModulePath::default(),
        read,
        out: Vec::new(),
    };
    module.visit(&mut found);
    found.out
}

/// The bnlab path and shape of every float tensor of `module`, in tree order.
fn tensor_paths<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    tensors(module, false)
        .into_iter()
        .map(|(path, shape, _)| (path, shape))
        .collect()
}

/// A norm layer's tensor in PyTorch: (name, layout).
fn norm_tensor(rest: &str) -> Option<(&'static str, Layout)> {
    Some(match rest {
        "affine.gamma" => ("weight", Layout::Row),
        "affine.beta" => ("bias", Layout::Row),
        "state.running_mean" => ("running_mean", Layout::Row),
        "state.running_var" => ("running_var", Layout::Row),
        "state.updates" => ("num_batches_tracked", Layout::Count),
        _ => return None,
    })
}

/// A conv–norm pair's tensor: `conv.weight` → `{conv}.weight`, `norm.X` → `{bn}.Y`.
fn conv_norm(rest: &str, conv: &str, bn: &str) -> Option<(String, Layout)> {
    if rest == "conv.weight" {
        return Some((format!("{conv}.weight"), Layout::Same));
    }
    let (name, layout) = norm_tensor(rest.strip_prefix("norm.")?)?;
    Some((format!("{bn}.{name}"), layout))
}

/// A classifier's tensor: `fc.weight` (transposed) and `fc.bias` under `prefix`.
fn linear(rest: &str, prefix: &str) -> Option<(String, Layout)> {
    match rest {
        "weight" => Some((format!("{prefix}.weight"), Layout::Transposed)),
        "bias" => Some((format!("{prefix}.bias"), Layout::Same)),
        _ => None,
    }
}

/// `field.k.rest` of a chain of conv–norm pairs: torchvision numbers them `field_{k+1}`.
fn chain(path: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        match parts.get(i + 1).and_then(|p| p.parse::<usize>().ok()) {
            Some(k) if parts[i].starts_with("branch") => {
                out.push(format!("{}_{}", parts[i], k + 1));
                i += 2;
            }
            _ => {
                out.push(parts[i].to_string());
                i += 1;
            }
        }
    }
    out.join(".")
}

/// The torchvision key of a ResNet / ResNeXt tensor at `path` (without the variant).
fn resnet_key(path: &str) -> Option<(String, Layout)> {
    if let Some(rest) = path.strip_prefix("stem.") {
        return conv_norm(rest, "conv1", "bn1");
    }
    if let Some(rest) = path.strip_prefix("head.fc.") {
        return linear(rest, "fc");
    }
    let rest = path.strip_prefix("stages.")?;
    let mut parts = rest.splitn(4, '.');
    let (stage, block, layer, rest) = (
        parts.next()?.parse::<usize>().ok()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let at = format!("layer{}.{block}", stage + 1);
    match layer {
        "conv1" | "conv2" | "conv3" => {
            let n = &layer[4..];
            conv_norm(rest, &format!("{at}.conv{n}"), &format!("{at}.bn{n}"))
        }
        "projection" => conv_norm(
            rest,
            &format!("{at}.downsample.0"),
            &format!("{at}.downsample.1"),
        ),
        _ => None,
    }
}

/// The torchvision key of a MobileNetV2 tensor at `path`; `expands(k)` says whether block k
/// has a 1×1 expansion (which shifts the numbering of its other layers).
fn mobilenet_key(
    path: &str,
    expands: &dyn Fn(usize) -> bool,
    blocks: usize,
) -> Option<(String, Layout)> {
    if let Some(rest) = path.strip_prefix("stem.") {
        return conv_norm(rest, "features.0.0", "features.0.1");
    }
    if let Some(rest) = path.strip_prefix("last.") {
        let at = format!("features.{}", blocks + 1);
        return conv_norm(rest, &format!("{at}.0"), &format!("{at}.1"));
    }
    if let Some(rest) = path.strip_prefix("head.fc.") {
        return linear(rest, "classifier.1");
    }
    let rest = path.strip_prefix("blocks.")?;
    let (k, rest) = rest.split_once('.')?;
    let k: usize = k.parse().ok()?;
    let (layer, rest) = rest.split_once('.')?;
    let at = format!("features.{}.conv", k + 1);
    let first = usize::from(expands(k));
    match layer {
        "expand" => conv_norm(rest, &format!("{at}.0.0"), &format!("{at}.0.1")),
        "depthwise" => conv_norm(rest, &format!("{at}.{first}.0"), &format!("{at}.{first}.1")),
        "project" => conv_norm(
            rest,
            &format!("{at}.{}", first + 1),
            &format!("{at}.{}", first + 2),
        ),
        _ => None,
    }
}

/// The torchvision key of an Inception-v3 tensor at `path`.
fn inception_key(path: &str) -> Option<(String, Layout)> {
    const STEM: [&str; 5] = [
        "Conv2d_1a_3x3",
        "Conv2d_2a_3x3",
        "Conv2d_2b_3x3",
        "Conv2d_3b_1x1",
        "Conv2d_4a_3x3",
    ];
    if let Some(rest) = path.strip_prefix("head.fc.") {
        return linear(rest, "fc");
    }
    if let Some(rest) = path.strip_prefix("aux.fc.") {
        return linear(rest, "AuxLogits.fc");
    }
    let (block, rest) = path.split_once('.')?;
    let (name, rest) = match block {
        "stem" => {
            let (k, rest) = rest.split_once('.')?;
            (STEM.get(k.parse::<usize>().ok()?)?.to_string(), rest)
        }
        "mixed_5" | "mixed_6" | "mixed_7" => {
            let (k, rest) = rest.split_once('.')?;
            let k: usize = k.parse().ok()?;
            let letter = (b'b' + k as u8) as char;
            (format!("Mixed_{}{letter}", &block[6..]), rest)
        }
        "mixed_6a" => ("Mixed_6a".to_string(), rest),
        "mixed_7a" => ("Mixed_7a".to_string(), rest),
        "aux" => ("AuxLogits".to_string(), rest),
        _ => return None,
    };
    // inside a block: the branch (a chain becomes branch_1, branch_2, …), then conv or norm
    let rest = chain(rest);
    let (layer, tensor) = if rest.starts_with("conv.") || rest.starts_with("norm.") {
        (String::new(), rest.clone())
    } else if let Some((layer, w)) = rest.rsplit_once(".conv.") {
        (layer.to_string(), format!("conv.{w}"))
    } else {
        let (layer, t) = rest.split_once(".norm.")?;
        (layer.to_string(), format!("norm.{t}"))
    };
    let at = if layer.is_empty() {
        name
    } else {
        format!("{name}.{layer}")
    };
    conv_norm(&tensor, &format!("{at}.conv"), &format!("{at}.bn"))
}

/// The PyTorch key of every tensor of `network`, in tree order; an error names a tensor that
/// has none (a network or a part, such as input normalization, torchvision does not have).
pub fn torch_keys(network: &Network) -> Result<Vec<TorchKey>, ModelError> {
    let paths = tensor_paths(network);
    let all: BTreeSet<&str> = paths.iter().map(|(p, _)| p.as_str()).collect();
    let blocks = paths
        .iter()
        .filter_map(|(p, _)| {
            p.strip_prefix("MobileNetV2.blocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    let expands = |k: usize| {
        all.iter()
            .any(|p| p.starts_with(&format!("MobileNetV2.blocks.{k}.expand.")))
    };
    let mut out = Vec::new();
    for (path, _) in &paths {
        let (variant, rest) = path.split_once('.').unwrap_or((path, ""));
        let mapped = match variant {
            "ResNet" => resnet_key(rest),
            "MobileNetV2" => mobilenet_key(rest, &expands, blocks),
            "InceptionV3" => inception_key(rest),
            other => {
                return Err(ModelError::InvalidConfig(format!(
                    "{other} has no torchvision layout: ResNets, ResNeXt, MobileNetV2 and Inception-v3 have"
                )));
            }
        };
        let (key, layout) = mapped.ok_or_else(|| {
            ModelError::InvalidConfig(format!(
                "`{path}` has no torchvision counterpart (input normalization and other bnlab-only layers cannot be exported or imported)"
            ))
        })?;
        out.push(TorchKey {
            path: path.clone(),
            key,
            layout,
        });
    }
    Ok(out)
}

/// A tensor of a state dict as PyTorch holds it.
pub type StateDict = BTreeMap<String, TensorData>;

/// `data` (bnlab's layout, shape `bnlab`) as PyTorch lays it out.
fn to_torch(data: TensorData, layout: Layout) -> Result<TensorData, ModelError> {
    let shape = data.shape().to_vec();
    let values = || -> Result<Vec<f32>, ModelError> {
        data.clone()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::InvalidConfig(format!("a tensor cannot be read: {e:?}")))
    };
    Ok(match layout {
        Layout::Same => data.convert::<f32>(),
        Layout::Row => TensorData::new(values()?, [shape.iter().product::<usize>()]),
        Layout::Transposed => {
            let (rows, cols) = (shape[0], shape[1]);
            let v = values()?;
            let t: Vec<f32> = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| v[r * cols + c])
                .collect();
            TensorData::new(t, [cols, rows])
        }
        Layout::Count => {
            let count = values()?.first().copied().unwrap_or(0.0);
            TensorData::new(vec![count.round() as i64], Vec::<usize>::new())
        }
    })
}

/// PyTorch's `data` for a bnlab tensor of `shape` laid out as `layout`, or why it does not fit.
fn from_torch(
    data: &TensorData,
    layout: Layout,
    shape: &[usize],
    key: &str,
) -> Result<TensorData, ModelError> {
    let torch_shape = data.shape().to_vec();
    let wrong = || {
        ModelError::InvalidConfig(format!(
            "`{key}` has shape {torch_shape:?}; the network needs {:?}",
            match layout {
                Layout::Same => shape.to_vec(),
                Layout::Row => vec![shape.iter().product()],
                Layout::Transposed => shape.iter().rev().copied().collect(),
                Layout::Count => Vec::new(),
            }
        ))
    };
    let values = || -> Result<Vec<f32>, ModelError> {
        data.clone()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::InvalidConfig(format!("`{key}` cannot be read: {e:?}")))
    };
    let n: usize = shape.iter().product();
    Ok(match layout {
        Layout::Same if torch_shape == shape => TensorData::new(values()?, shape.to_vec()),
        Layout::Row if torch_shape == [n] => TensorData::new(values()?, shape.to_vec()),
        Layout::Transposed if shape.len() == 2 && torch_shape == [shape[1], shape[0]] => {
            let (rows, cols) = (shape[1], shape[0]);
            let v = values()?;
            let t: Vec<f32> = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| v[r * cols + c])
                .collect();
            TensorData::new(t, shape.to_vec())
        }
        Layout::Count if torch_shape.iter().product::<usize>() == 1 => {
            TensorData::new(vec![values()?[0]; n], shape.to_vec())
        }
        _ => return Err(wrong()),
    })
}

/// What an import left out: network tensors the file did not have (left at their
/// initialization) and file keys no network tensor took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Network tensors left at their initial values, by PyTorch key.
    pub missing: Vec<String>,
    /// Keys of the file that no tensor of the network took.
    pub unused: Vec<String>,
}

/// `network` with every parameter and BN buffer from PyTorch state dict `state`. Strict, an
/// error lists every missing and unused key; otherwise they are reported and the missing
/// tensors keep their initial values. A shape that does not fit is always an error naming
/// its key.
pub fn import_state_dict(
    network: Network,
    state: &StateDict,
    strict: bool,
) -> Result<(Network, ImportReport), ModelError> {
    let keys = torch_keys(&network)?;
    let shapes: BTreeMap<String, Vec<usize>> = tensor_paths(&network).into_iter().collect();
    let mut values = BTreeMap::new();
    let mut report = ImportReport::default();
    for k in &keys {
        match state.get(&k.key) {
            Some(data) => {
                let converted = from_torch(data, k.layout, &shapes[&k.path], &k.key)?;
                values.insert(k.path.clone(), converted);
            }
            None => report.missing.push(k.key.clone()),
        }
    }
    let taken: BTreeSet<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    report.unused = state
        .keys()
        .filter(|k| !taken.contains(k.as_str()))
        .cloned()
        .collect();
    if strict && (!report.missing.is_empty() || !report.unused.is_empty()) {
        return Err(ModelError::InvalidConfig(format!(
            "the state dict does not fit the network: missing {:?}, unused {:?} (import with strict off to leave the missing ones at their initial values)",
            report.missing, report.unused
        )));
    }
    let mut setter = Setter {
        path: ModulePath::default(),
        values,
    };
    let network = network.map(&mut setter);
    Ok((network, report))
}

/// Replaces float tensors by path.
struct Setter {
    path: ModulePath,
    values: BTreeMap<String, TensorData>,
}

impl ModuleMapper for Setter {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(data) = self.values.remove(&self.path.joined()) else {
            return param;
        };
        let (id, tensor, _) = param.consume();
        let device = tensor.device();
        let value = Tensor::<D>::from_data(data, &device)
            .cast(DType::F32)
            .set_require_grad(tensor.is_require_grad());
        Param::initialized(id, value)
    }
}

/// The PyTorch state dict of `network`: every parameter and BN buffer under its torchvision
/// key, laid out as PyTorch lays it out.
pub fn export_state_dict(network: &Network) -> Result<StateDict, ModelError> {
    let keys = torch_keys(network)?;
    let mut values: BTreeMap<String, TensorData> = tensors(network, true)
        .into_iter()
        .filter_map(|(path, _, data)| Some((path, data?)))
        .collect();
    let mut out = StateDict::new();
    for k in keys {
        let data = values.remove(&k.path).ok_or_else(|| {
            ModelError::InvalidConfig(format!("`{}` was not found in the network", k.path))
        })?;
        out.insert(k.key, to_torch(data, k.layout)?);
    }
    Ok(out)
}
