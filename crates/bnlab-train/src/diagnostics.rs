//! Diagnostics stored with each run: γ and β drift from their initial values (Davis & Frank
//! §1), the gradient factor γ/√(σ²+ε) per layer at the first step (§3.3), and histograms of
//! first- and last-layer weights and gradients over the first and last 20 updates of epoch 1
//! (Peerthum & Stamp §4.3).

use std::collections::BTreeMap;

use bnlab_norm::{ModulePath, NormError, ParamRole, ReadError, norm_of_param, param_roles};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Updates at the start and end of epoch 1 whose weights and gradients are histogrammed.
pub const HISTOGRAM_UPDATES: usize = 20;
/// Bins of every histogram.
pub const HISTOGRAM_BINS: usize = 50;

/// One float tensor of a module: its path, role and values.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: ParamId,
    pub(crate) path: String,
    pub(crate) role: Option<ParamRole>,
    pub(crate) values: Vec<f32>,
}

#[derive(Default)]
struct Reader {
    path: ModulePath,
    roles: std::collections::HashMap<ParamId, ParamRole>,
    out: Vec<Entry>,
    wanted: Option<Vec<ParamId>>,
    /// The first tensor that could not be read, and why (a visitor cannot return it).
    failed: Option<TrainError>,
}

impl ModuleVisitor for Reader {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(w) = &self.wanted
            && !w.contains(&param.id)
        {
            return;
        }
        let path = self.path.joined();
        let values = match f32_values(param.val().into_data(), &path) {
            Ok(v) => v,
            Err(e) => {
                self.failed.get_or_insert(e);
                return;
            }
        };
        self.out.push(Entry {
            id: param.id,
            path,
            role: self.roles.get(&param.id).copied(),
            values,
        });
    }
}

/// The values of one read tensor (`what`, for the error) as f32.
fn f32_values(data: TensorData, what: &str) -> Result<Vec<f32>, TrainError> {
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| {
        TrainError::Norm(NormError::DeviceRead {
            what: what.to_string(),
            source: ReadError(format!("{e:?}")),
        })
    })
}

/// Every float tensor of `module` (parameters and running statistics), in tree order.
pub(crate) fn read_tensors<M: Module>(module: &M) -> Result<Vec<Entry>, TrainError> {
    let reader = Reader {
        roles: param_roles(module),
        ..Reader::default()
    };
    visit_all(module, reader)
}

/// The tensors with ids `ids` only (without their roles: callers want values).
fn read_some<M: Module>(module: &M, ids: &[ParamId]) -> Result<Vec<Entry>, TrainError> {
    let reader = Reader {
        wanted: Some(ids.to_vec()),
        ..Reader::default()
    };
    visit_all(module, reader)
}

/// What `reader` read of `module`, or the first tensor it could not read.
fn visit_all<M: Module>(module: &M, mut reader: Reader) -> Result<Vec<Entry>, TrainError> {
    module.visit(&mut reader);
    match reader.failed {
        Some(e) => Err(e),
        None => Ok(reader.out),
    }
}

/// A histogram over equal-width bins from `min` to `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub min: f64,
    /// Upper edge of the last bin.
    pub max: f64,
    /// Count per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// The histogram of `values` over [`HISTOGRAM_BINS`] bins spanning their range.
    pub fn of(values: &[f32]) -> Self {
        let finite = values.iter().filter(|v| v.is_finite()).map(|&v| v as f64);
        let (min, max) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (min, max) = if min.is_finite() {
            (min, max)
        } else {
            (0.0, 0.0)
        };
        let mut counts = vec![0u64; HISTOGRAM_BINS];
        let width = (max - min) / HISTOGRAM_BINS as f64;
        for &v in values.iter().filter(|v| v.is_finite()) {
            let bin = if width > 0.0 {
                (((v as f64 - min) / width) as usize).min(HISTOGRAM_BINS - 1)
            } else {
                0
            };
            counts[bin] += 1;
        }
        Self { min, max, counts }
    }
}

/// γ and β of one normalization layer, at initialization and at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDiagnostics {
    /// The layer's path.
    pub path: String,
    /// γ at initialization.
    pub gamma_init: Vec<f32>,
    /// γ of the reported model.
    pub gamma: Vec<f32>,
    /// β at initialization.
    pub beta_init: Vec<f32>,
    /// β of the reported model.
    pub beta: Vec<f32>,
    /// Mean |γ − γ_init|.
    pub gamma_drift: f64,
    /// Mean |β − β_init|.
    pub beta_drift: f64,
    /// γ/√(σ²+ε) per channel at the first step (σ² of the first training batch).
    pub gradient_factor: Vec<f64>,
}

/// Everything diagnostic of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Per normalization layer with γ or β, from input to output.
    pub layers: Vec<LayerDiagnostics>,
    /// Histograms by name (`first-layer weights, first 20 updates`, …).
    pub histograms: BTreeMap<String, Histogram>,
    /// Share of normalized values with |x̂| > [`OUTLIER_THRESHOLD`] per norm layer, on the
    /// test set under population statistics (Davis & Frank §1).
    pub outlier_share: BTreeMap<String, f64>,
}

/// The |x̂| threshold of [`Diagnostics::outlier_share`].
pub const OUTLIER_THRESHOLD: f64 = 6.0;

/// A norm layer's γ and β.
pub(crate) type GammaBeta = (Vec<f32>, Vec<f32>);

/// γ and β of every norm layer in the network's order: (layer path, (γ, β)).
pub(crate) fn affine_layers<M: Module>(module: &M) -> Result<Vec<(String, GammaBeta)>, TrainError> {
    let mut out: Vec<(String, GammaBeta)> = Vec::new();
    for e in read_tensors(module)? {
        let layer = norm_of_param(&e.path).to_string();
        let slot = match e.role {
            Some(ParamRole::NormGamma | ParamRole::NormBeta) => {
                match out.iter().position(|(l, _)| *l == layer) {
                    Some(i) => &mut out[i].1,
                    None => {
                        out.push((layer, Default::default()));
                        &mut out.last_mut().expect("just pushed").1
                    }
                }
            }
            _ => continue,
        };
        if e.role == Some(ParamRole::NormGamma) {
            slot.0 = e.values;
        } else {
            slot.1 = e.values;
        }
    }
    Ok(out)
}

/// γ and β of every norm layer, by layer path: (γ, β).
pub(crate) fn affine_params<M: Module>(
    module: &M,
) -> Result<BTreeMap<String, GammaBeta>, TrainError> {
    Ok(affine_layers(module)?.into_iter().collect())
}

/// γ/√(σ²+ε) per norm layer from γ and the running variance of `module` (whose running
/// statistics hold the first batch's), by layer path.
pub(crate) fn gradient_factors<M: Module>(
    module: &M,
    epsilon: f64,
) -> Result<BTreeMap<String, Vec<f64>>, TrainError> {
    let tensors = read_tensors(module)?;
    let mut vars: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for e in &tensors {
        if let Some(layer) = e.path.strip_suffix(".state.running_var") {
            vars.insert(layer.to_string(), e.values.clone());
        }
    }
    let mut out = BTreeMap::new();
    for e in tensors
        .iter()
        .filter(|e| e.role == Some(ParamRole::NormGamma))
    {
        let layer = norm_of_param(&e.path);
        if let Some(var) = vars.get(layer)
            && var.len() == e.values.len()
        {
            let f = e
                .values
                .iter()
                .zip(var)
                .map(|(&g, &v)| g as f64 / (v as f64 + epsilon).sqrt())
                .collect();
            out.insert(layer.to_string(), f);
        }
    }
    Ok(out)
}

/// Joins initial and final γ/β (in the network's order) and the gradient factors into
/// per-layer diagnostics.
pub(crate) fn layer_diagnostics(
    init: &BTreeMap<String, (Vec<f32>, Vec<f32>)>,
    end: &[(String, GammaBeta)],
    factors: &BTreeMap<String, Vec<f64>>,
) -> Vec<LayerDiagnostics> {
    let drift = |a: &[f32], b: &[f32]| {
        if a.is_empty() || a.len() != b.len() {
            return 0.0;
        }
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
    };
    end.iter()
        .map(|(path, (gamma, beta))| {
            let (gamma_init, beta_init) = init.get(path).cloned().unwrap_or_default();
            LayerDiagnostics {
                path: path.clone(),
                gamma_drift: drift(gamma, &gamma_init),
                beta_drift: drift(beta, &beta_init),
                gamma_init,
                gamma: gamma.clone(),
                beta_init,
                beta: beta.clone(),
                gradient_factor: factors.get(path).cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// Collects first- and last-layer weights and gradients during epoch 1.
pub(crate) struct HistogramProbe {
    first: Option<(ParamId, usize)>,
    last: Option<(ParamId, usize)>,
    /// (series name, values).
    series: BTreeMap<String, Vec<f32>>,
}

impl HistogramProbe {
    /// Finds the first convolution and the last linear weight of `module`.
    pub(crate) fn new<M: Module>(module: &M) -> Result<Self, TrainError> {
        let tensors = read_tensors(module)?;
        let rank = |e: &Entry| {
            if e.role == Some(ParamRole::ConvWeight) {
                4
            } else {
                2
            }
        };
        let first = tensors
            .iter()
            .find(|e| e.role == Some(ParamRole::ConvWeight))
            .map(|e| (e.id, rank(e)));
        let last = tensors
            .iter()
            .rev()
            .find(|e| {
                matches!(
                    e.role,
                    Some(ParamRole::LinearWeight | ParamRole::ConvWeight)
                )
            })
            .map(|e| (e.id, rank(e)));
        Ok(Self {
            first,
            last,
            series: BTreeMap::new(),
        })
    }

    /// Records update `update` (0-based) of an epoch of `updates`, before it is applied.
    pub(crate) fn record<M: Module>(
        &mut self,
        module: &M,
        grads: &GradientsParams,
        update: usize,
        updates: usize,
    ) -> Result<(), TrainError> {
        let windows: Vec<&str> = [
            ("first", update < HISTOGRAM_UPDATES),
            ("last", update + HISTOGRAM_UPDATES >= updates),
        ]
        .into_iter()
        .filter_map(|(w, inside)| inside.then_some(w))
        .collect();
        for (layer, slot) in [("first", self.first), ("last", self.last)] {
            let Some((id, rank)) = slot else { continue };
            let grad = match rank {
                4 => grads.get::<4>(id).map(|g| g.into_data()),
                _ => grads.get::<2>(id).map(|g| g.into_data()),
            };
            let grad = grad
                .map(|d| f32_values(d, &format!("the {layer} layer's gradient")))
                .transpose()?;
            let weights: Vec<f32> = read_some(module, &[id])?
                .into_iter()
                .flat_map(|e| e.values)
                .collect();
            for window in &windows {
                let series = |what: &str| {
                    format!("{layer}-layer {what}, {window} {HISTOGRAM_UPDATES} updates of epoch 1")
                };
                if let Some(g) = &grad {
                    self.series
                        .entry(series("gradients"))
                        .or_default()
                        .extend(g);
                }
                self.series
                    .entry(series("weights"))
                    .or_default()
                    .extend(&weights);
            }
        }
        Ok(())
    }

    /// The histograms.
    pub(crate) fn finish(self) -> BTreeMap<String, Histogram> {
        self.series
            .into_iter()
            .map(|(k, v)| (k, Histogram::of(&v)))
            .collect()
    }
}
