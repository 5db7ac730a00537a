//! Plain f64 reference implementation of the layer, written independently of the crate,
//! plus small helpers shared by the integration tests.
#![allow(dead_code)]

pub mod sync_checks;

use bnlab_norm::{Affine, GhostSplit, StatUnit};
use burn::tensor::{Device, Tensor, TensorData};

/// A deterministic xorshift generator for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }
    pub fn vec(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// The test device: Flex, or the device `BNLAB_TEST_DEVICE` names (`vulkan` for the first
/// discrete GPU, `vulkan-cpu` for a CPU Vulkan driver such as Mesa's lavapipe) in a build
/// with `--features vulkan`.
pub fn device() -> Device {
    match std::env::var("BNLAB_TEST_DEVICE") {
        Ok(name) => name
            .parse::<bnlab_norm::DeviceName>()
            .and_then(|d| d.device())
            .unwrap_or_else(|e| panic!("BNLAB_TEST_DEVICE={name}: {e}")),
        Err(_) => Device::flex(),
    }
}

/// The sum of all values of `t`, [1], through `sum_dim`: Burn's full `sum` uses workgroup
/// shared memory, which CubeCL 0.11 compiles to SPIR-V that lavapipe crashes on
/// (BENCHMARKS.md, "Vulkan on a CPU"), so the suite's losses avoid it.
pub fn total<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    t.flatten::<1>(0, D - 1).sum_dim(0)
}

pub fn tensor<const D: usize>(v: &[f64], shape: [usize; D], device: &Device) -> Tensor<D> {
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 data")
}

/// max |a − b|.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        // (`total_cmp` keeps a NaN error, failing every bound; `f64::max` drops it)
        .max_by(f64::total_cmp)
        .unwrap_or(0.0)
}

/// ‖a − b‖ / max(‖b‖, 0.01·√len): relative error, with an absolute floor for gradients that
/// are exactly zero in exact arithmetic (f32 leaves ~1e-7 there).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(0.01 * (b.len() as f64).sqrt())
}

/// Input layout [n, c, s], row-major.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub n: usize,
    pub c: usize,
    pub s: usize,
}

impl Shape {
    pub fn at(&self, i: usize, ch: usize, p: usize) -> usize {
        (i * self.c + ch) * self.s + p
    }
    pub fn len(&self) -> usize {
        self.n * self.c * self.s
    }
}

/// Example blocks of the unit, computed independently of the crate.
pub fn ref_blocks(
    unit: StatUnit,
    ghost: Option<(usize, GhostSplit)>,
    n: usize,
    train_domains: Option<&[usize]>,
) -> Vec<Vec<usize>> {
    let blocks: Vec<Vec<usize>> = match unit {
        StatUnit::Batch => match ghost {
            None => vec![(0..n).collect()],
            Some((b, GhostSplit::Contiguous)) => {
                (0..n / b).map(|g| (g * b..(g + 1) * b).collect()).collect()
            }
            Some((b, GhostSplit::Strided)) => {
                let groups = n / b;
                (0..groups)
                    .map(|g| (0..n).filter(|i| i % groups == g).collect())
                    .collect()
            }
        },
        StatUnit::BatchGroup { example_groups, .. } => {
            let m = n / example_groups;
            (0..example_groups)
                .map(|g| (g * m..(g + 1) * m).collect())
                .collect()
        }
        _ => (0..n).map(|i| vec![i]).collect(),
    };
    match train_domains {
        None => blocks,
        Some(ids) => {
            let d = ids.iter().max().map_or(1, |m| m + 1);
            blocks
                .into_iter()
                .flat_map(|b| {
                    (0..d)
                        .map(|dom| {
                            b.iter()
                                .copied()
                                .filter(|&i| ids[i] == dom)
                                .collect::<Vec<_>>()
                        })
                        .filter(|p: &Vec<usize>| !p.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }
}

/// Channel groups of the unit.
pub fn ref_channel_groups(unit: StatUnit, c: usize) -> Vec<Vec<usize>> {
    let per = match unit {
        StatUnit::Group { groups } => c / groups,
        StatUnit::Layer => c,
        StatUnit::BatchGroup { channel_groups, .. } => c / channel_groups,
        _ => 1,
    };
    (0..c / per)
        .map(|g| (g * per..(g + 1) * per).collect())
        .collect()
}

/// Biased mean and variance of the values of `examples` × `channels` (two-pass).
pub fn ref_moments(x: &[f64], sh: Shape, examples: &[usize], channels: &[usize]) -> (f64, f64) {
    let vals: Vec<f64> = examples
        .iter()
        .flat_map(|&i| {
            channels
                .iter()
                .flat_map(move |&ch| (0..sh.s).map(move |p| (i, ch, p)))
        })
        .map(|(i, ch, p)| x[sh.at(i, ch, p)])
        .collect();
    let m = vals.iter().sum::<f64>() / vals.len() as f64;
    let v = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64;
    (m, v)
}

/// x̂ with batch statistics over `blocks` × channel groups.
pub fn ref_xhat_batch(
    x: &[f64],
    sh: Shape,
    unit: StatUnit,
    blocks: &[Vec<usize>],
    eps: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; sh.len()];
    for block in blocks {
        for group in ref_channel_groups(unit, sh.c) {
            let (m, v) = ref_moments(x, sh, block, &group);
            for &i in block {
                for &ch in &group {
                    for p in 0..sh.s {
                        out[sh.at(i, ch, p)] = (x[sh.at(i, ch, p)] - m) / (v + eps).sqrt();
                    }
                }
            }
        }
    }
    out
}

/// x̂ with given statistics per (set, channel group): `mean[set][k]`, `var[set][k]`.
pub fn ref_xhat_population(
    x: &[f64],
    sh: Shape,
    unit: StatUnit,
    set_of: &[usize],
    mean: &[Vec<f64>],
    var: &[Vec<f64>],
    eps: f64,
) -> Vec<f64> {
    let groups = ref_channel_groups(unit, sh.c);
    let mut out = vec![0.0; sh.len()];
    for i in 0..sh.n {
        for (k, group) in groups.iter().enumerate() {
            for &ch in group {
                for p in 0..sh.s {
                    let (m, v) = (mean[set_of[i]][k], var[set_of[i]][k]);
                    out[sh.at(i, ch, p)] = (x[sh.at(i, ch, p)] - m) / (v + eps).sqrt();
                }
            }
        }
    }
    out
}

/// x̂ with example weighing (Summers & Dinneen eq. 3).
#[allow(clippy::too_many_arguments)]
pub fn ref_xhat_weighed(
    x: &[f64],
    sh: Shape,
    unit: StatUnit,
    set_of: &[usize],
    mean: &[Vec<f64>],
    var: &[Vec<f64>],
    alpha: f64,
    eps: f64,
) -> Vec<f64> {
    let groups = ref_channel_groups(unit, sh.c);
    let mut out = vec![0.0; sh.len()];
    for i in 0..sh.n {
        for (k, group) in groups.iter().enumerate() {
            let vals: Vec<f64> = group
                .iter()
                .flat_map(|&ch| (0..sh.s).map(move |p| (ch, p)))
                .map(|(ch, p)| x[sh.at(i, ch, p)])
                .collect();
            let ex = vals.iter().sum::<f64>() / vals.len() as f64;
            let ex2 = vals.iter().map(|v| v * v).sum::<f64>() / vals.len() as f64;
            let (m, v) = (mean[set_of[i]][k], var[set_of[i]][k]);
            let mu = alpha * ex + (1.0 - alpha) * m;
            let sig2 = (alpha * ex2 + (1.0 - alpha) * (v + m * m) - mu * mu).max(0.0);
            for &ch in group {
                for p in 0..sh.s {
                    out[sh.at(i, ch, p)] = (x[sh.at(i, ch, p)] - mu) / (sig2 + eps).sqrt();
                }
            }
        }
    }
    out
}

/// Affine parameters per set, each `[A][C]`.
#[derive(Clone, Debug, Default)]
pub struct RefAffine {
    pub gamma: Vec<Vec<f64>>,
    pub beta: Vec<Vec<f64>>,
    pub gamma0: Vec<Vec<f64>>,
    pub gate_weight: Vec<Vec<f64>>,
    pub gate_bias: Vec<Vec<f64>>,
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// y from x̂ (and x for IEBN) by the affine tail.
pub fn ref_affine(
    x: &[f64],
    xhat: &[f64],
    sh: Shape,
    affine: Affine,
    p: &RefAffine,
    set_of: &[usize],
) -> Vec<f64> {
    let mut y = vec![0.0; sh.len()];
    for i in 0..sh.n {
        let a = set_of[i];
        for ch in 0..sh.c {
            let gap =
                |src: &[f64]| (0..sh.s).map(|q| src[sh.at(i, ch, q)]).sum::<f64>() / sh.s as f64;
            for q in 0..sh.s {
                let at = sh.at(i, ch, q);
                let xh = xhat[at];
                y[at] = match affine {
                    Affine::Off => xh,
                    Affine::Standard { .. } => p.gamma[a][ch] * xh + p.beta[a][ch],
                    Affine::ScaleOnly { .. } => p.gamma[a][ch] * xh,
                    Affine::A1 { .. } => p.gamma[a][ch] * (xh + p.beta[a][ch]),
                    Affine::A2 { .. } => p.gamma[a][ch] * (p.gamma0[a][ch] * xh + p.beta[a][ch]),
                    Affine::Rbn { .. } | Affine::Iebn { .. } => {
                        let g = if matches!(affine, Affine::Rbn { .. }) {
                            gap(xhat)
                        } else {
                            gap(x)
                        };
                        let s = sigmoid(p.gate_weight[a][ch] * g + p.gate_bias[a][ch]);
                        p.gamma[a][ch] * s * xh + p.beta[a][ch]
                    }
                    Affine::RbnMinus { .. } | Affine::IebnMinus { .. } => {
                        p.gamma[a][ch] * sigmoid(p.gate_bias[a][ch]) * xh + p.beta[a][ch]
                    }
                };
            }
        }
    }
    y
}

/// Every affine tail.
pub fn all_affines() -> Vec<Affine> {
    vec![
        Affine::Standard {
            gamma_init: 0.5,
            beta_init: 0.1,
        },
        Affine::Off,
        Affine::A1 { gamma_init: 0.5 },
        Affine::A2 { gamma_init: 0.5 },
        Affine::Rbn { gamma_init: 1.0 },
        Affine::Iebn { gamma_init: 1.0 },
        Affine::RbnMinus { gamma_init: 1.0 },
        Affine::IebnMinus { gamma_init: 1.0 },
        Affine::ScaleOnly { gamma_init: 0.58 },
    ]
}

/// Every statistic unit, sized for C = 4 and N = 4.
pub fn all_units() -> Vec<StatUnit> {
    vec![
        StatUnit::Batch,
        StatUnit::Group { groups: 2 },
        StatUnit::Layer,
        StatUnit::Instance,
        StatUnit::BatchGroup {
            channel_groups: 2,
            example_groups: 2,
        },
        StatUnit::None,
    ]
}

use bnlab_norm::Norm;
use burn::module::Param;

/// Gives every affine parameter of `norm` random values and returns them for the reference.
pub fn randomize_affine(norm: &mut Norm, rng: &mut Rng) -> RefAffine {
    let c = norm.config.num_features;
    let mut set = |slot: &mut Option<Param<Tensor<2>>>, lo: f64, hi: f64| -> Vec<Vec<f64>> {
        match slot {
            Some(p) => {
                let [a, _] = p.dims();
                let v = rng.vec(a * c, lo, hi);
                let t = tensor(&v, [a, c], &p.val().device());
                *slot = Some(Param::from_tensor(t));
                v.chunks(c).map(|r| r.to_vec()).collect()
            }
            None => Vec::new(),
        }
    };
    let mut r = RefAffine {
        gamma: set(&mut norm.affine.gamma, 0.5, 1.5),
        beta: set(&mut norm.affine.beta, -0.5, 0.5),
        gamma0: set(&mut norm.affine.gamma0, 0.5, 1.5),
        gate_weight: set(&mut norm.affine.gate_weight, -1.0, 1.0),
        gate_bias: set(&mut norm.affine.gate_bias, -1.0, 1.0),
    };
    if norm.affine.input_gamma.is_some() {
        r.gamma = set(&mut norm.affine.input_gamma, 0.5, 1.5);
    }
    r
}

/// Every mode.
pub fn all_modes() -> Vec<bnlab_norm::NormMode> {
    use bnlab_norm::{NormMode, StatsSource};
    vec![
        NormMode::Train,
        NormMode::Collect,
        NormMode::Eval(StatsSource::Population),
        NormMode::Eval(StatsSource::MiniBatch),
        NormMode::Eval(StatsSource::ExampleWeighed { alpha: 0.3 }),
        NormMode::Frozen,
    ]
}

/// The parameters of `norm` in a fixed order: γ, β, γ0, w_v, w_b, γ̂ (those it has).
pub fn param_tensors(norm: &Norm) -> Vec<Tensor<2>> {
    [
        &norm.affine.gamma,
        &norm.affine.beta,
        &norm.affine.gamma0,
        &norm.affine.gate_weight,
        &norm.affine.gate_bias,
        &norm.affine.input_gamma,
    ]
    .into_iter()
    .flatten()
    .map(|p| p.val())
    .collect()
}

/// How the batch is cut in the variant suites: whole, ghost batches of 2, or two domains.
#[derive(Clone, Copy, Debug)]
pub enum Variant {
    Plain,
    Ghost(GhostSplit),
    Domains,
}

/// The domain ids of the `Domains` variant, for a batch of 4.
pub const DOMAINS: [usize; 4] = [0, 1, 1, 0];

/// A layer of `c` channels with `unit`, `affine` and the batch of `variant` (per-domain train
/// statistics, population statistics and affine parameters for `Domains`).
pub fn variant_config(
    c: usize,
    unit: StatUnit,
    affine: Affine,
    variant: Variant,
) -> bnlab_norm::NormConfig {
    use bnlab_norm::{BatchPolicy, DomainChoice, DomainConfig, NormConfig};
    let config = NormConfig::new(c).with_unit(unit).with_affine(affine);
    match variant {
        Variant::Plain => config,
        Variant::Ghost(split) => config.with_batch(BatchPolicy::ghost(2, split)),
        Variant::Domains => config.with_domains(Some(DomainConfig {
            count: 2,
            train_stats: DomainChoice::PerDomain,
            population_stats: DomainChoice::PerDomain,
            affine: DomainChoice::PerDomain,
        })),
    }
}
