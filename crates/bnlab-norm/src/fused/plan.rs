//! [`FusedStats`]: the statistics and per-plane coefficients of one fused call, planned on the
//! host for every kernel set; and how the kernels' sums come back as moments.

use std::sync::Arc;

use super::kernels::{self, PlaneBackward, PlaneForward, UnitVec};

/// The statistics and set indices of one fused call, all on the host.
///
/// Statistics rows are whatever the mode uses: example blocks (batch statistics), population
/// sets (running statistics) or examples (example weighing).
#[derive(Debug, Clone)]
pub(crate) struct FusedStats {
    /// Input shape [N, C, S].
    pub shape: [usize; 3],
    /// Channels per channel group.
    pub cpg: usize,
    /// Statistics row of each example.
    pub stat_row: Vec<usize>,
    /// Affine row (of `scale` and `shift`) of each example.
    pub affine_row: Vec<usize>,
    /// Mean per statistics row and channel group, [R, K].
    pub mean: Vec<f64>,
    /// 1/√(var + ε) per statistics row and channel group, [R, K].
    pub rstd: Vec<f64>,
    /// Values per statistics row.
    pub count: Vec<f64>,
    /// How much the statistics depend on x: 1 for batch statistics, 0 for constants, α for
    /// example weighing (mean = α·batch + (1 − α)·population).
    pub alpha: f64,
    /// Added to the variance before the square root.
    pub epsilon: f64,
    /// Combines the backward's per-unit gradient sums with other workers' (SyncBN).
    pub sync: Option<GradSync>,
    /// The output goes through a ReLU, fused into the normalize pass (Flex only). The backward
    /// recomputes which values it passed from x and the forward's coefficients, so the
    /// activation before the ReLU is never stored.
    pub relu: bool,
}

/// The passes of [`FusedStats::backward`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    /// Per-example units, one at a time ([`kernels::unit_backward`]).
    Units,
    /// Units spanning examples, one channel group at a time ([`kernels::group_backward`]).
    Groups,
    /// Every plane's sums, then every plane's dx ([`kernels::grad_moments`],
    /// [`kernels::affine2`]).
    Planes,
}

/// The reducer whose [`StatsReducer::reduce_grads`](crate::StatsReducer::reduce_grads) the
/// backward calls.
#[derive(Clone)]
pub(crate) struct GradSync(pub Arc<dyn crate::StatsReducer>);

impl std::fmt::Debug for GradSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GradSync")
    }
}

/// The gradients of one fused call, with ∂L/∂x as `T`.
pub(crate) struct FusedGrads<T> {
    /// ∂L/∂x, when asked for.
    pub(crate) dx: Option<T>,
    /// ∂L/∂scale and ∂L/∂shift per affine row and channel (zeros when not asked for).
    pub(crate) dscale: Vec<f64>,
    pub(crate) dshift: Vec<f64>,
}

impl FusedStats {
    pub(crate) fn groups(&self) -> usize {
        self.shape[1] / self.cpg
    }

    /// Statistics index (row·K + group) and affine index (row·C + channel) of plane (i, ch).
    pub(crate) fn indices(&self, i: usize, ch: usize) -> (usize, usize) {
        let c = self.shape[1];
        (
            self.stat_row[i] * self.groups() + ch / self.cpg,
            self.affine_row[i] * c + ch,
        )
    }

    /// Per-plane coefficients of y = (x − mean)·rstd·scale + shift.
    pub(crate) fn forward_coefficients(&self, scale: &[f32], shift: &[f32]) -> Vec<PlaneForward> {
        let [n, c, _] = self.shape;
        let mut coef = Vec::with_capacity(n * c);
        for i in 0..n {
            for ch in 0..c {
                let (u, a) = self.indices(i, ch);
                coef.push(PlaneForward {
                    shift: self.mean[u] as f32,
                    scale: (self.rstd[u] * f64::from(scale[a])) as f32,
                    offset: shift[a],
                });
            }
        }
        coef
    }

    /// Mean and 1/√(var + ε) of a per-example unit from its Σx and Σx².
    pub(crate) fn unit_stats(&self, sum: f64, sum_sq: f64) -> (f64, f64) {
        let m = (self.cpg * self.shape[2]) as f64;
        let mean = sum / m;
        let var = (sum_sq / m - mean * mean).max(0.0);
        (mean, 1.0 / (var + self.epsilon).sqrt())
    }

    /// Per-example units normalized one at a time while in cache (statistics from the unit's
    /// own values): y and the shifted sums per example and channel group ([`shifted_sums`]).
    pub(crate) fn unit_forward(
        &self,
        x: &[f32],
        scale: &[f32],
        shift: &[f32],
    ) -> (Vec<f32>, Vec<f64>) {
        let [_, c, s] = self.shape;
        let k = self.groups();
        let (y, units) = kernels::unit_forward(x, s, self.cpg, self.relu, |u, [s1, s2]| {
            let (i, g) = (u / k, u % k);
            let (mean, rstd) = self.unit_stats(s1, s2);
            (g * self.cpg..(g + 1) * self.cpg)
                .map(|ch| {
                    let a = self.affine_row[i] * c + ch;
                    PlaneForward {
                        shift: mean as f32,
                        scale: (rstd * f64::from(scale[a])) as f32,
                        offset: shift[a],
                    }
                })
                .collect()
        });
        (y, shifted_sums(&units))
    }

    /// Values per example and channel group.
    pub(crate) fn unit_values(&self) -> f64 {
        (self.cpg * self.shape[2]) as f64
    }

    /// This plan with the statistics of per-example units from their shifted sums ([3, N, K],
    /// see [`FusedNorm::fused_norm_sums`]), computed as the forward computed them.
    pub(crate) fn with_unit_stats(mut self, raw: &[f64]) -> Self {
        let (sums, sum_sq) = decode_sums(raw, self.unit_values());
        let (mean, rstd) = sums
            .iter()
            .zip(&sum_sq)
            .map(|(&s1, &s2)| self.unit_stats(s1, s2))
            .unzip();
        (self.mean, self.rstd) = (mean, rstd);
        self
    }

    /// The mean of every plane, in plane order.
    pub(crate) fn plane_means(&self) -> Vec<f32> {
        let [n, c, _] = self.shape;
        (0..n)
            .flat_map(|i| (0..c).map(move |ch| (i, ch)))
            .map(|(i, ch)| self.mean[self.indices(i, ch).0] as f32)
            .collect()
    }

    /// Whether every example has statistics rows of its own (GroupNorm, LayerNorm,
    /// InstanceNorm, example weighing): each unit is then `cpg` consecutive planes, and the
    /// kernels can finish a unit while it is in cache.
    pub(crate) fn per_example_units(&self) -> bool {
        let mut seen = vec![false; self.count.len()];
        self.stat_row
            .iter()
            .all(|&r| r < seen.len() && !std::mem::replace(&mut seen[r], true))
    }

    /// dx coefficients of plane (i, ch) given its unit's Σ scale·dy and Σ scale·dy·x̂.
    pub(crate) fn grad_coefficient(
        &self,
        i: usize,
        ch: usize,
        scale: &[f32],
        unit_dy: f64,
        unit_dy_xhat: f64,
    ) -> PlaneBackward {
        let (u, a) = self.indices(i, ch);
        let r = self.rstd[u];
        let f = if self.alpha == 0.0 {
            0.0
        } else {
            self.alpha / self.count[self.stat_row[i]]
        };
        PlaneBackward {
            shift: self.mean[u] as f32,
            dy_scale: (r * f64::from(scale[a])) as f32,
            x_scale: (-r * r * f * unit_dy_xhat) as f32,
            offset: (-r * f * unit_dy) as f32,
        }
    }

    /// The dx coefficients of `planes` ((example, channel) pairs in plane order, holding every
    /// plane of each of their units) from their [Σdy, Σdy·(x − mean)], each unit's
    /// Σ scale·dy and Σ scale·dy·x̂ added in the order [`Self::reduce_planes`] adds them.
    fn coefficients_of(
        &self,
        planes: impl Iterator<Item = (usize, usize)> + Clone,
        sums: &[[f64; 2]],
        scale: &[f32],
    ) -> UnitVec<PlaneBackward> {
        // (unit, Σ scale·dy, Σ scale·dy·x̂): one unit a call but for ghost batches; and each
        // plane's entry in it
        let mut units: UnitVec<(usize, f64, f64)> = UnitVec::new();
        let mut entry: UnitVec<usize> = UnitVec::new();
        for ((i, ch), &plane) in planes.clone().zip(sums) {
            let (u, a, sum_dy, sum_dy_xhat) = self.plane_terms(i, ch, plane);
            let w = f64::from(scale[a]);
            let at = match units.iter().position(|e| e.0 == u) {
                Some(at) => at,
                None => {
                    units.push((u, 0.0, 0.0));
                    units.len() - 1
                }
            };
            units[at].1 += w * sum_dy;
            units[at].2 += w * sum_dy_xhat;
            entry.push(at);
        }
        planes
            .zip(entry)
            .map(|((i, ch), at)| {
                let (_, unit_dy, unit_dy_xhat) = units[at];
                self.grad_coefficient(i, ch, scale, unit_dy, unit_dy_xhat)
            })
            .collect()
    }

    /// Whether [`kernels::group_backward`] pays: one channel group's dy and x over the whole
    /// batch fit [`kernels::GROUP_BACKWARD_BYTES`], so that it reads them from memory once, and
    /// its planes have [`kernels::GROUP_BACKWARD_PLANE`] values or more.
    pub(crate) fn groups_pay(&self) -> bool {
        let [n, _, s] = self.shape;
        s >= kernels::GROUP_BACKWARD_PLANE
            && 2 * 4 * n * self.cpg * s <= kernels::GROUP_BACKWARD_BYTES
    }

    /// Σ scale·dy and Σ scale·dy·x̂ per statistics unit, and ∂L/∂scale, ∂L/∂shift, from the
    /// per-plane [Σdy, Σdy·(x − mean)] in plane order.
    pub(crate) fn reduce_planes(&self, planes: &[[f64; 2]], scale: &[f32]) -> [Vec<f64>; 4] {
        let c = self.shape[1];
        let mut unit_dy = vec![0.0f64; self.rstd.len()];
        let mut unit_dy_xhat = vec![0.0f64; self.rstd.len()];
        let mut dscale = vec![0.0f64; scale.len()];
        let mut dshift = vec![0.0f64; scale.len()];
        for (p, &sums) in planes.iter().enumerate() {
            let (u, a, sum_dy, sum_dy_xhat) = self.plane_terms(p / c, p % c, sums);
            dshift[a] += sum_dy;
            dscale[a] += sum_dy_xhat;
            let g = f64::from(scale[a]);
            unit_dy[u] += g * sum_dy;
            unit_dy_xhat[u] += g * sum_dy_xhat;
        }
        [unit_dy, unit_dy_xhat, dscale, dshift]
    }

    /// Statistics index, affine index, Σdy and Σdy·x̂ of plane (i, ch) from its
    /// [Σdy, Σdy·(x − mean)].
    pub(crate) fn plane_terms(
        &self,
        i: usize,
        ch: usize,
        [sum_dy, centred]: [f64; 2],
    ) -> (usize, usize, f64, f64) {
        let (u, a) = self.indices(i, ch);
        (u, a, sum_dy, centred * self.rstd[u])
    }

    /// The backward in two passes over the activations: per-plane Σdy and Σdy·x̂, then
    /// dx = rstd·(scale·dy − α/m·(Σ_unit scale·dy + x̂·Σ_unit scale·dy·x̂)). Where it can
    /// ([`Route`]), both passes run unit by unit or channel group by channel group, so that the
    /// second reads from cache. `shift` (the forward's) is read only under a fused ReLU, whose
    /// gradient mask both passes recompute.
    pub(crate) fn backward(
        &self,
        dy: &[f32],
        x: &[f32],
        scale: &[f32],
        shift: &[f32],
        want_dx: bool,
        want_affine: bool,
    ) -> FusedGrads<Vec<f32>> {
        let route = self.route(want_dx);
        self.backward_by(route, dy, x, [scale, shift], want_dx, want_affine)
    }

    /// How [`Self::backward`] runs its two passes: by units or channel groups where dx needs
    /// batch statistics no other worker adds to and the pieces fit the cache, else over all
    /// planes twice. Every route gives the same bits.
    fn route(&self, want_dx: bool) -> Route {
        let cached = want_dx && self.alpha != 0.0 && !self.syncs_grads(want_dx);
        if cached && self.per_example_units() {
            Route::Units
        } else if cached && self.groups_pay() {
            Route::Groups
        } else {
            Route::Planes
        }
    }

    /// [`Self::backward`] along `route`.
    fn backward_by(
        &self,
        route: Route,
        dy: &[f32],
        x: &[f32],
        [scale, shift]: [&[f32]; 2],
        want_dx: bool,
        want_affine: bool,
    ) -> FusedGrads<Vec<f32>> {
        let [_, _, s] = self.shape;
        let (k, cpg) = (self.groups(), self.cpg);
        let synced = self.syncs_grads(want_dx);
        let gates = self.relu.then(|| self.forward_coefficients(scale, shift));
        let gates = gates.as_deref();
        let means = self.plane_means();
        let (dx, planes) = match route {
            Route::Units => {
                let (dx, planes) =
                    kernels::unit_backward(dy, x, &means, s, cpg, gates, |u, sums| {
                        let (i, g) = (u / k, u % k);
                        let planes = (g * cpg..(g + 1) * cpg).map(|ch| (i, ch));
                        self.coefficients_of(planes, sums, scale)
                    });
                (Some(dx), planes)
            }
            Route::Groups => {
                let (dx, planes) =
                    kernels::group_backward(dy, x, &means, self.shape, cpg, gates, |g, sums| {
                        let planes = (0..sums.len()).map(|q| (q / cpg, g * cpg + q % cpg));
                        self.coefficients_of(planes, sums, scale)
                    });
                (Some(dx), planes)
            }
            Route::Planes if self.needs_grad_sums(want_dx, want_affine) => {
                (None, kernels::grad_moments(dy, x, &means, s, gates))
            }
            Route::Planes => (None, Vec::new()),
        };
        let [unit_dy, unit_dy_xhat, dscale, dshift] = self.unit_grads(&planes, scale, synced);
        let dx = match dx {
            Some(dx) => Some(dx),
            None if want_dx => {
                let coef = self.grad_coefficients(scale, &unit_dy, &unit_dy_xhat);
                Some(kernels::affine2(dy, x, &coef, s, gates))
            }
            None => None,
        };
        FusedGrads { dx, dscale, dshift }
    }

    /// Σ scale·dy and Σ scale·dy·x̂ per unit (combined with other workers' when `synced`), and
    /// ∂L/∂scale, ∂L/∂shift, from the per-plane [Σdy, Σdy·(x − mean)].
    pub(crate) fn unit_grads(
        &self,
        planes: &[[f64; 2]],
        scale: &[f32],
        synced: bool,
    ) -> [Vec<f64>; 4] {
        let [mut unit_dy, mut unit_dy_xhat, dscale, dshift] = self.reduce_planes(planes, scale);
        if let (true, Some(GradSync(reducer))) = (synced, &self.sync) {
            let mut both = std::mem::take(&mut unit_dy);
            both.append(&mut unit_dy_xhat);
            reducer.reduce_grads(&mut both);
            unit_dy_xhat = both.split_off(both.len() / 2);
            unit_dy = both;
        }
        [unit_dy, unit_dy_xhat, dscale, dshift]
    }

    /// The dx coefficients of every plane, in plane order, from the per-unit sums.
    pub(crate) fn grad_coefficients(
        &self,
        scale: &[f32],
        unit_dy: &[f64],
        unit_dy_xhat: &[f64],
    ) -> Vec<PlaneBackward> {
        let c = self.shape[1];
        (0..self.shape[0] * c)
            .map(|p| {
                let (i, ch) = (p / c, p % c);
                let (u, _) = self.indices(i, ch);
                self.grad_coefficient(i, ch, scale, unit_dy[u], unit_dy_xhat[u])
            })
            .collect()
    }

    /// Whether the backward needs the per-plane gradient sums.
    pub(crate) fn needs_grad_sums(&self, want_dx: bool, want_affine: bool) -> bool {
        want_affine || (want_dx && self.alpha != 0.0)
    }

    /// Whether the backward combines its unit sums with other workers'.
    pub(crate) fn syncs_grads(&self, want_dx: bool) -> bool {
        want_dx && self.alpha != 0.0 && self.sync.is_some()
    }
}

/// The shifted sums of [`FusedNorm::fused_norm_sums`] ([3, N, K] row-major, shift 0) from
/// the [Σx, Σx²] of each example and channel group, in that order.
pub(crate) fn shifted_sums(units: &[[f64; 2]]) -> Vec<f64> {
    let mut out = Vec::with_capacity(3 * units.len());
    out.resize(units.len(), 0.0);
    out.extend(units.iter().map(|u| u[0]));
    out.extend(units.iter().map(|u| u[1]));
    out
}

/// Σx and Σx² per unit from the shifted sums [shift | Σ(x − shift) | Σ(x − shift)²] of units
/// of `m` values: Σx = Σd + m·shift, Σx² = Σd² + 2·shift·Σd + m·shift².
pub(crate) fn decode_sums(raw: &[f64], m: f64) -> (Vec<f64>, Vec<f64>) {
    let units = raw.len() / 3;
    let (shift, rest) = raw.split_at(units);
    let (d1, d2) = rest.split_at(units);
    let sums = (0..units).map(|u| d1[u] + m * shift[u]).collect();
    let sum_sq = (0..units)
        .map(|u| d2[u] + 2.0 * shift[u] * d1[u] + m * shift[u] * shift[u])
        .collect();
    (sums, sum_sq)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values over many magnitudes, so that sums added in another order give other bits.
    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32;
                (v - 0.4) * 2f32.powi((i * 7 % 23) as i32 - 11)
            })
            .collect()
    }

    /// A plan over [n, c, s] with channel groups of `cpg` and example i in statistics row
    /// `rows(i)`; means and 1/σ differ per unit.
    fn plan(
        shape: [usize; 3],
        cpg: usize,
        rows: impl Fn(usize) -> usize,
        relu: bool,
    ) -> FusedStats {
        let [n, c, s] = shape;
        let stat_row: Vec<usize> = (0..n).map(rows).collect();
        let r = stat_row.iter().max().map_or(0, |m| m + 1);
        let units = r * (c / cpg);
        let count = (0..r)
            .map(|row| (stat_row.iter().filter(|&&x| x == row).count() * cpg * s) as f64)
            .collect();
        FusedStats {
            shape,
            cpg,
            stat_row,
            affine_row: vec![0; n],
            mean: (0..units).map(|u| 0.01 * u as f64 - 0.02).collect(),
            rstd: (0..units).map(|u| 0.5 + 0.125 * u as f64).collect(),
            count,
            alpha: 1.0,
            epsilon: 1e-5,
            sync: None,
            relu,
        }
    }

    /// dx, ∂L/∂scale and ∂L/∂shift as bits.
    fn bits(g: &FusedGrads<Vec<f32>>) -> (Vec<u32>, Vec<u64>, Vec<u64>) {
        let dx =
            g.dx.as_ref()
                .map_or(Vec::new(), |d| d.iter().map(|v| v.to_bits()).collect());
        let wide = |v: &[f64]| v.iter().map(|v| v.to_bits()).collect();
        (dx, wide(&g.dscale), wide(&g.dshift))
    }

    #[test]
    fn every_backward_route_gives_the_same_bits() {
        // (shape, channels a group, statistics row of example i, route chosen)
        type Rows = fn(usize) -> usize;
        let cases: [([usize; 3], usize, Rows, Route); 6] = [
            ([5, 4, 1031], 1, |_| 0, Route::Groups),     // BatchNorm
            ([6, 3, 1025], 1, |i| i / 2, Route::Groups), // Ghost BN, ghost batches of 2
            ([6, 4, 1027], 2, |i| i / 3, Route::Groups), // Batch-Group Norm
            ([4, 6, 29], 3, |i| i, Route::Units),        // GroupNorm
            ([5, 4, 37], 1, |_| 0, Route::Planes),       // planes too small for groups
            ([300, 2, 1024], 1, |_| 0, Route::Planes),   // groups too large for the cache
        ];
        for (shape, cpg, rows, chosen) in cases {
            let [n, c, s] = shape;
            let (dy, x) = (data(n * c * s, 1), data(n * c * s, 2));
            let (scale, shift) = (data(c, 3), data(c, 4));
            for relu in [false, true] {
                let p = plan(shape, cpg, rows, relu);
                assert_eq!(p.route(true), chosen, "{shape:?}");
                let run = |route| p.backward_by(route, &dy, &x, [&scale, &shift], true, true);
                let planes = bits(&run(Route::Planes));
                assert_eq!(planes.0.len(), n * c * s);
                assert_eq!(bits(&run(Route::Groups)), planes, "{shape:?} relu {relu}");
                if chosen == Route::Units {
                    assert_eq!(bits(&run(Route::Units)), planes, "{shape:?} relu {relu}");
                }
            }
        }
    }

    proptest::proptest! {
        /// On any shape, statistics rows (one block, ghost blocks of `ghost` examples, or one
        /// per example) and ReLU gate, the backward by channel group and (for per-example
        /// units) by unit gives the bits of the two passes over all planes.
        #[test]
        fn backward_routes_agree_on_any_shape(
            n in 1usize..6,
            groups in 1usize..4,
            cpg in 1usize..4,
            s in 1usize..70,
            ghost in 0usize..4,
            relu: bool,
            seed: u32,
        ) {
            let c = groups * cpg;
            // ghost 0: one row per example; else rows of `ghost` examples
            let rows = move |i: usize| i.checked_div(ghost).unwrap_or(i);
            let p = plan([n, c, s], cpg, rows, relu);
            let (dy, x) = (data(n * c * s, seed), data(n * c * s, seed ^ 0x5555));
            let (scale, shift) = (data(c, seed ^ 3), data(c, seed ^ 4));
            let run = |route| p.backward_by(route, &dy, &x, [&scale, &shift], true, true);
            let planes = bits(&run(Route::Planes));
            proptest::prop_assert_eq!(bits(&run(Route::Groups)), planes.clone());
            if p.per_example_units() {
                proptest::prop_assert_eq!(bits(&run(Route::Units)), planes);
            }
        }
    }
}
