//! Gradients against central finite differences of the f64 reference, for every unit × affine,
//! plain, with ghost batches and with domains, in Train and Frozen modes.

mod common;

use bnlab_norm::{Affine, GhostSplit, NormConfig, NormMode, StatUnit};
use common::*;

const EPS: f64 = 1e-5;
const H: f64 = 1e-5;

struct Case {
    unit: StatUnit,
    affine: Affine,
    variant: Variant,
    mode: NormMode,
}

impl Case {
    fn config(&self, c: usize) -> NormConfig {
        variant_config(c, self.unit, self.affine, self.variant).with_epsilon(EPS)
    }

    fn domains(&self) -> Option<&'static [usize]> {
        matches!(self.variant, Variant::Domains).then_some(&DOMAINS[..])
    }

    /// Σ w·y of the f64 reference.
    fn reference_loss(
        &self,
        x: &[f64],
        sh: Shape,
        p: &RefAffine,
        pop: &(Vec<Vec<f64>>, Vec<Vec<f64>>),
        w: &[f64],
    ) -> f64 {
        let sets: Vec<usize> = match self.domains() {
            Some(d) => d.to_vec(),
            None => vec![0; sh.n],
        };
        let xhat = if self.unit == StatUnit::None {
            x.to_vec()
        } else if self.mode == NormMode::Frozen {
            ref_xhat_population(x, sh, self.unit, &sets, &pop.0, &pop.1, EPS)
        } else {
            let ghost = match self.variant {
                Variant::Ghost(split) => Some((2, split)),
                _ => None,
            };
            let blocks = ref_blocks(self.unit, ghost, sh.n, self.domains());
            ref_xhat_batch(x, sh, self.unit, &blocks, EPS)
        };
        let y = ref_affine(x, &xhat, sh, self.affine, p, &sets);
        y.iter().zip(w).map(|(a, b)| a * b).sum()
    }
}

/// The reference parameter vectors in the same order as `param_tensors`.
fn ref_slots(p: &mut RefAffine, has_input_gamma: bool) -> Vec<&mut Vec<Vec<f64>>> {
    if has_input_gamma {
        return vec![&mut p.gamma];
    }
    [
        &mut p.gamma,
        &mut p.beta,
        &mut p.gamma0,
        &mut p.gate_weight,
        &mut p.gate_bias,
    ]
    .into_iter()
    .filter(|v| !v.is_empty())
    .collect()
}

fn check(case: &Case, rng: &mut Rng) {
    let sh = Shape { n: 4, c: 4, s: 3 };
    let device = device().autodiff();
    let mut norm = case.config(sh.c).init(&device).expect("config");
    let mut p = randomize_affine(&mut norm, rng);
    let k = ref_channel_groups(case.unit, sh.c).len();
    let sets = if matches!(case.variant, Variant::Domains) {
        2
    } else {
        1
    };
    let pop: (Vec<Vec<f64>>, Vec<Vec<f64>>) = (
        (0..sets).map(|_| rng.vec(k, -0.5, 0.5)).collect(),
        (0..sets).map(|_| rng.vec(k, 0.5, 2.0)).collect(),
    );
    let flat = |v: &Vec<Vec<f64>>| v.concat();
    norm.state.set_running(
        tensor(&flat(&pop.0), [sets, k], &device),
        tensor(&flat(&pop.1), [sets, k], &device),
    );
    let norm = norm.with_mode(case.mode);
    let x = rng.vec(sh.len(), -2.0, 2.0);
    let w = rng.vec(sh.len(), -1.0, 1.0);

    let xt = tensor(&x, [sh.n, sh.c, sh.s], &device).require_grad();
    let y = norm
        .forward_domains(xt.clone(), case.domains())
        .expect("forward");
    let loss = total(y * tensor(&w, [sh.n, sh.c, sh.s], &device));
    let grads = loss.backward();
    let name = format!(
        "{:?} {:?} {:?} {:?}",
        case.unit, case.affine, case.variant, case.mode
    );

    // input gradient
    let got = values(xt.grad(&grads).expect("x grad"));
    let mut fd = vec![0.0; x.len()];
    for j in 0..x.len() {
        let mut xp = x.clone();
        xp[j] += H;
        let mut xm = x.clone();
        xm[j] -= H;
        fd[j] = (case.reference_loss(&xp, sh, &p, &pop, &w)
            - case.reference_loss(&xm, sh, &p, &pop, &w))
            / (2.0 * H);
    }
    let e = rel_err(&got, &fd);
    assert!(e <= 1e-3, "{name}: input gradient relative error {e}");

    // parameter gradients
    let tensors = param_tensors(&norm);
    let has_input_gamma = norm.affine.input_gamma.is_some();
    let count = tensors.len();
    for (slot, t) in (0..count).zip(tensors) {
        let got = values(t.grad(&grads).expect("param grad"));
        let mut fd = Vec::new();
        let rows = ref_slots(&mut p, has_input_gamma)[slot].len();
        for a in 0..rows {
            for ch in 0..sh.c {
                let mut plus = p.clone();
                ref_slots(&mut plus, has_input_gamma)[slot][a][ch] += H;
                let mut minus = p.clone();
                ref_slots(&mut minus, has_input_gamma)[slot][a][ch] -= H;
                fd.push(
                    (case.reference_loss(&x, sh, &plus, &pop, &w)
                        - case.reference_loss(&x, sh, &minus, &pop, &w))
                        / (2.0 * H),
                );
            }
        }
        let e = rel_err(&got, &fd);
        assert!(
            e <= 1e-3,
            "{name}: gradient of parameter slot {slot}: relative error {e}"
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng(99);
    let mut checked = 0;
    for unit in all_units() {
        let mut variants = vec![Variant::Plain, Variant::Domains];
        if unit == StatUnit::Batch {
            variants.push(Variant::Ghost(GhostSplit::Contiguous));
            variants.push(Variant::Ghost(GhostSplit::Strided));
        }
        for affine in all_affines() {
            for &variant in &variants {
                for mode in [NormMode::Train, NormMode::Frozen] {
                    check(
                        &Case {
                            unit,
                            affine,
                            variant,
                            mode,
                        },
                        &mut rng,
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 9 * 2 * (6 * 2 + 2));
}
