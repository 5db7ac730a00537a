//! Plain-Rust kernels of the fused layer over contiguous `[N, C, S]` f32 data, one plane
//! (one example and channel, S values) at a time.
//!
//! Every reduction runs over one plane in a fixed order (f32 lanes in blocks added to f64
//! lanes, then the tail), and planes are combined by the caller in a fixed order, so results
//! do not depend on the number of threads. Work is split over planes with rayon.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Per-plane values of one per-example unit, on the stack for units of up to 16 planes
/// (GroupNorm 32's channel groups up to 512 channels): a heap allocation per unit was a few
/// percent of a GroupNorm pass.
pub(crate) type UnitVec<T> = smallvec::SmallVec<[T; 16]>;

/// Values each rayon task handles at least, so small planes are batched together.
const MIN_TASK_VALUES: usize = 1 << 14;

/// Planes per rayon task for planes of `s` values.
fn min_planes(s: usize) -> usize {
    (MIN_TASK_VALUES / s.max(1)).max(1)
}

/// Per-plane coefficients of `out = (x − shift)·scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PlaneForward {
    /// Subtracted from x first (the mean).
    pub shift: f32,
    /// Multiplies x − shift.
    pub scale: f32,
    /// Added last.
    pub offset: f32,
}

impl PlaneForward {
    /// `(v − shift)·scale + offset`, in the order every pass computes it (no FMA), so that a
    /// backward recomputes the forward's values bit for bit.
    #[inline(always)]
    fn at(&self, v: f32) -> f32 {
        (v - self.shift) * self.scale + self.offset
    }

    /// Whether a ReLU after [`PlaneForward::at`] passes the gradient at v ([`relu_passes`]).
    #[inline(always)]
    fn passes(&self, v: f32) -> bool {
        relu_passes(self.at(v))
    }
}

/// Whether a ReLU passes z (and its gradient): z above 0 or NaN, as Burn's `relu` and
/// `relu_backward` on Flex keep NaN. The AVX2 sums test the same with `_CMP_NLE_UQ`.
#[inline(always)]
fn relu_passes(z: f32) -> bool {
    z.is_nan() || z > 0.0
}

/// relu(z), NaN kept ([`relu_passes`]).
#[inline(always)]
fn rectified(z: f32) -> f32 {
    if relu_passes(z) { z } else { 0.0 }
}

/// Per-plane coefficients of `dx = dy·dy_scale + (x − shift)·x_scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PlaneBackward {
    /// Subtracted from x first (the mean).
    pub shift: f32,
    /// Multiplies dy.
    pub dy_scale: f32,
    /// Multiplies x − shift.
    pub x_scale: f32,
    /// Added last.
    pub offset: f32,
}

/// Runs `$body` compiled for AVX2 where the CPU has it, else for the baseline target. The
/// arithmetic is the same in both (no FMA contraction), so both give the same bits.
macro_rules! with_avx2 {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU was just checked to have AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// Σx and Σx² of one plane or unit, in two passes over it (the second from cache): Σx gives a shift
/// K, then Σ(x − K) and Σ(x − K)² in compensated f32 ([`block_sums`]) give Σx and Σx² in
/// f64 without the cancellation of Σx² − (Σx)²/m on data far from zero.
fn plane_moments(x: &[f32]) -> [f64; 2] {
    if x.is_empty() {
        return [0.0, 0.0];
    }
    let m = x.len() as f64;
    let [sum, _] = block_sums::<SUM>(x, x, 0.0, &NO_GATE);
    let k = (sum / m) as f32;
    let [d1, d2] = block_sums::<CENTRED>(x, x, k, &NO_GATE);
    let k = f64::from(k);
    [d1 + m * k, d2 + 2.0 * k * d1 + m * k * k]
}

/// Σdy and Σdy·(x − shift) of one plane, in compensated f32 ([`block_sums`]); with a `gate`,
/// dy is taken as 0 where the ReLU after the gate's forward did not pass it.
fn plane_grad_moments(dy: &[f32], x: &[f32], shift: f32, gate: Option<&PlaneForward>) -> [f64; 2] {
    match gate {
        None => block_sums::<WEIGHTED>(dy, x, shift, &NO_GATE),
        Some(g) => block_sums::<GATED>(dy, x, shift, g),
    }
}

/// [`block_sums`] of [Σa, 0].
const SUM: u8 = 0;
/// [`block_sums`] of [Σ(a − k), Σ(a − k)²].
const CENTRED: u8 = 1;
/// [`block_sums`] of [Σa, Σa·(b − k)].
const WEIGHTED: u8 = 2;
/// [`block_sums`] of [Σa, Σa·(b − k)] with a taken as 0 where the gate does not pass b.
const GATED: u8 = 3;

/// The gate argument of the [`block_sums`] kinds that have none.
const NO_GATE: PlaneForward = PlaneForward {
    shift: 0.0,
    scale: 0.0,
    offset: 0.0,
};

/// The sums `KIND` names over the common length of `a` and `b` (explicit AVX2 and FMA where
/// the CPU has them; both bodies give the same bits).
///
/// Compensated f32: [`ACCS`] × 8 f32 lanes sum blocks of [`BLOCK`] values, so each lane adds
/// [`BLOCK`] / ([`ACCS`]·8) values in f32 (error ≤ 7 ulps of the block's Σ|v|) before the block
/// is added to f64 lanes; the tail's values (fewer than a step) go to f64 lanes 0, 1, … in f64,
/// and the lanes are added as a tree ([`lane_tree`]). Twice as many values per instruction as
/// widening every value to f64, at about the accuracy of the f32 inputs themselves, and no
/// serial chain over the lanes per call: planes of 4 × 4 and 8 × 8 pay little more than their
/// values.
fn block_sums<const KIND: u8>(a: &[f32], b: &[f32], k: f32, gate: &PlaneForward) -> [f64; 2] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU was just checked to have AVX2 and FMA.
        return unsafe { avx2::block_sums::<KIND>(a, b, k, gate) };
    }
    block_sums_body::<KIND>(a, b, k, gate)
}

/// f32 vector accumulators of [`block_sums`] (8 lanes each).
const ACCS: usize = 4;

/// Values one f32 block of [`block_sums`] sums before it goes to f64.
const BLOCK: usize = 256;

/// The portable body of [`block_sums`], in the AVX2 body's order.
fn block_sums_body<const KIND: u8>(a: &[f32], b: &[f32], k: f32, gate: &PlaneForward) -> [f64; 2] {
    const STEP: usize = ACCS * 8;
    let len = a.len().min(b.len());
    let full = len / STEP * STEP;
    let mut s64 = [0.0f64; STEP];
    let mut q64 = [0.0f64; STEP];
    let mut i = 0;
    while i < full {
        let end = full.min(i + BLOCK);
        let mut s32 = [0.0f32; STEP];
        let mut q32 = [0.0f32; STEP];
        while i < end {
            for j in 0..STEP {
                let v = a[i + j];
                match KIND {
                    SUM => s32[j] += v,
                    CENTRED => {
                        let d = v - k;
                        s32[j] += d;
                        q32[j] = d.mul_add(d, q32[j]);
                    }
                    _ => {
                        let w = b[i + j];
                        let v = if KIND == GATED && !gate.passes(w) {
                            0.0
                        } else {
                            v
                        };
                        s32[j] += v;
                        q32[j] = v.mul_add(w - k, q32[j]);
                    }
                }
            }
            i += STEP;
        }
        for j in 0..STEP {
            s64[j] += f64::from(s32[j]);
            q64[j] += f64::from(q32[j]);
        }
    }
    finish_sums::<KIND>(&mut s64, &mut q64, &a[full..len], &b[full..len], k, gate)
}

/// The tail's values (fewer than a step) added to f64 lanes 0, 1, … in f64, then each set of
/// lanes summed by [`lane_tree`].
fn finish_sums<const KIND: u8>(
    s64: &mut [f64; ACCS * 8],
    q64: &mut [f64; ACCS * 8],
    a: &[f32],
    b: &[f32],
    k: f32,
    gate: &PlaneForward,
) -> [f64; 2] {
    for (t, (&v, &w)) in a.iter().zip(b).enumerate() {
        match KIND {
            SUM => s64[t] += f64::from(v),
            CENTRED => {
                let d = f64::from(v - k);
                s64[t] += d;
                q64[t] += d * d;
            }
            _ => {
                let v = if KIND == GATED && !gate.passes(w) {
                    0.0
                } else {
                    v
                };
                s64[t] += f64::from(v);
                q64[t] += f64::from(v) * f64::from(w - k);
            }
        }
    }
    [lane_tree(s64), lane_tree(q64)]
}

/// The sum of 32 f64 lanes ([`ACCS`] = 4) as a tree, in the order the AVX2 body adds its eight
/// 4-lane vectors: vectors pairwise (0 + 1, 2 + 3, …) three times, then lanes (0 + 2) + (1 + 3).
fn lane_tree(l: &[f64; ACCS * 8]) -> f64 {
    let vector = |m: usize| [l[4 * m], l[4 * m + 1], l[4 * m + 2], l[4 * m + 3]];
    let add = |x: [f64; 4], y: [f64; 4]| [x[0] + y[0], x[1] + y[1], x[2] + y[2], x[3] + y[3]];
    let b: [[f64; 4]; 4] = std::array::from_fn(|i| add(vector(2 * i), vector(2 * i + 1)));
    let d = add(add(b[0], b[1]), add(b[2], b[3]));
    (d[0] + d[2]) + (d[1] + d[3])
}

with_avx2!(plane_affine1, plane_affine1_body, (out: &mut [MaybeUninit<f32>], x: &[f32], k: &PlaneForward, relu: bool) -> ());
with_avx2!(plane_affine_add_relu, plane_affine_add_relu_body, (out: &mut [MaybeUninit<f32>], x: &[f32], r: &[f32], k: &PlaneForward) -> ());
with_avx2!(plane_affine2, plane_affine2_body, (out: &mut [MaybeUninit<f32>], dy: &[f32], x: &[f32], k: &PlaneBackward, gate: Option<&PlaneForward>) -> ());

/// [Σx, Σx²] of every unit of `x` (consecutive units of `s` values: planes, or the channel
/// groups of one example), in order.
pub(crate) fn moments(x: &[f32], s: usize) -> Vec<[f64; 2]> {
    if s == 0 {
        return Vec::new();
    }
    x.par_chunks(s)
        .with_min_len(min_planes(s))
        .map(plane_moments)
        .collect()
}

/// [Σdy, Σdy·(x − shift)] of every plane, with one shift per plane; with `gates` (one per
/// plane), dy is taken as 0 where the ReLU after the plane's forward did not pass it.
pub(crate) fn grad_moments(
    dy: &[f32],
    x: &[f32],
    shifts: &[f32],
    s: usize,
    gates: Option<&[PlaneForward]>,
) -> Vec<[f64; 2]> {
    if s == 0 {
        return Vec::new();
    }
    dy.par_chunks(s)
        .zip(x.par_chunks(s))
        .zip(shifts.par_iter())
        .enumerate()
        .with_min_len(min_planes(s))
        .map(|(p, ((dy, x), &shift))| plane_grad_moments(dy, x, shift, gates.map(|g| &g[p])))
        .collect()
}

/// out = (x − shift)·scale + offset over one plane, through a ReLU when `relu`.
#[inline(always)]
fn plane_affine1_body(out: &mut [MaybeUninit<f32>], x: &[f32], k: &PlaneForward, relu: bool) {
    if relu {
        for (o, &v) in out.iter_mut().zip(x) {
            o.write(rectified(k.at(v)));
        }
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            o.write(k.at(v));
        }
    }
}

/// out = relu((x − shift)·scale + offset + r) over one plane.
#[inline(always)]
fn plane_affine_add_relu_body(
    out: &mut [MaybeUninit<f32>],
    x: &[f32],
    r: &[f32],
    k: &PlaneForward,
) {
    for ((o, &v), &r) in out.iter_mut().zip(x).zip(r) {
        o.write(rectified(k.at(v) + r));
    }
}

/// out = dy·dy_scale + (x − shift)·x_scale + offset over one plane; with a `gate`, dy is taken
/// as 0 where the ReLU after the gate's forward did not pass it.
#[inline(always)]
fn plane_affine2_body(
    out: &mut [MaybeUninit<f32>],
    dy: &[f32],
    x: &[f32],
    k: &PlaneBackward,
    gate: Option<&PlaneForward>,
) {
    match gate {
        None => {
            for ((o, &g), &v) in out.iter_mut().zip(dy).zip(x) {
                o.write(g * k.dy_scale + (v - k.shift) * k.x_scale + k.offset);
            }
        }
        Some(gate) => {
            for ((o, &g), &v) in out.iter_mut().zip(dy).zip(x) {
                let g = if gate.passes(v) { g } else { 0.0 };
                o.write(g * k.dy_scale + (v - k.shift) * k.x_scale + k.offset);
            }
        }
    }
}

/// [`bnlab_kernels::filled`] with small planes batched into tasks of [`MIN_TASK_VALUES`].
fn filled<R: Send>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) -> R + Sync + Send,
) -> (Vec<f32>, Vec<R>) {
    bnlab_kernels::filled(len, chunk, min_planes(chunk), fill)
}

/// `(x − shift)·scale + offset` per plane, through a ReLU when `relu`.
pub(crate) fn affine1(x: &[f32], coef: &[PlaneForward], s: usize, relu: bool) -> Vec<f32> {
    filled(x.len(), s, |p, out| {
        plane_affine1(out, &x[p * s..(p + 1) * s], &coef[p], relu)
    })
    .0
}

/// `relu((x − shift)·scale + offset + r)` per plane.
pub(crate) fn affine_add_relu(x: &[f32], r: &[f32], coef: &[PlaneForward], s: usize) -> Vec<f32> {
    assert_eq!(x.len(), r.len(), "a residual of another size");
    filled(x.len(), s, |p, out| {
        let plane = p * s..(p + 1) * s;
        plane_affine_add_relu(out, &x[plane.clone()], &r[plane], &coef[p])
    })
    .0
}

/// `dy·dy_scale + (x − shift)·x_scale + offset` per plane; with `gates` as in
/// [`grad_moments`].
pub(crate) fn affine2(
    dy: &[f32],
    x: &[f32],
    coef: &[PlaneBackward],
    s: usize,
    gates: Option<&[PlaneForward]>,
) -> Vec<f32> {
    filled(x.len(), s, |p, out| {
        let plane = p * s..(p + 1) * s;
        plane_affine2(
            out,
            &dy[plane.clone()],
            &x[plane],
            &coef[p],
            gates.map(|g| &g[p]),
        )
    })
    .0
}

/// The forward of units made of `planes` consecutive planes (per-example units), one unit at a
/// time while it is in cache: the unit's [Σx, Σx²] over all its values (as [`moments`] of
/// units gives them), then `coef(unit, sums)` gives its per-plane coefficients and its output
/// is written (through a ReLU when `relu`). Returns y and the sums per unit.
pub(crate) fn unit_forward(
    x: &[f32],
    s: usize,
    planes: usize,
    relu: bool,
    coef: impl Fn(usize, [f64; 2]) -> UnitVec<PlaneForward> + Sync + Send,
) -> (Vec<f32>, Vec<[f64; 2]>) {
    let unit = planes * s;
    filled(x.len(), unit, |u, out| {
        prefetch(x.get((u + 1) * unit..(u + 2) * unit).unwrap_or_default());
        let x = &x[u * unit..(u + 1) * unit];
        let sums = plane_moments(x);
        for ((out, x), k) in out.chunks_mut(s).zip(x.chunks(s)).zip(coef(u, sums)) {
            plane_affine1(out, x, &k, relu);
        }
        sums
    })
}

/// The backward of units made of `planes` consecutive planes, one unit at a time while it is in
/// cache: [Σdy, Σdy·(x − shift)] per plane, then `coef(unit, plane sums)` gives the unit's
/// per-plane coefficients and its dx is written. Returns dx and the per-plane sums. `gates` as
/// in [`grad_moments`].
pub(crate) fn unit_backward(
    dy: &[f32],
    x: &[f32],
    shifts: &[f32],
    s: usize,
    planes: usize,
    gates: Option<&[PlaneForward]>,
    coef: impl Fn(usize, &[[f64; 2]]) -> UnitVec<PlaneBackward> + Sync + Send,
) -> (Vec<f32>, Vec<[f64; 2]>) {
    let unit = planes * s;
    let (dx, sums) = filled(x.len(), unit, |u, out| {
        let next = (u + 1) * unit..(u + 2) * unit;
        prefetch(dy.get(next.clone()).unwrap_or_default());
        prefetch(x.get(next).unwrap_or_default());
        let span = u * unit..(u + 1) * unit;
        let (dy, x) = (&dy[span.clone()], &x[span]);
        let gate = |j: usize| gates.map(|g| &g[u * planes + j]);
        let sums: UnitVec<[f64; 2]> = dy
            .chunks(s)
            .zip(x.chunks(s))
            .zip(&shifts[u * planes..(u + 1) * planes])
            .enumerate()
            .map(|(j, ((dy, x), &shift))| plane_grad_moments(dy, x, shift, gate(j)))
            .collect();
        let planes_out = out.chunks_mut(s).zip(dy.chunks(s).zip(x.chunks(s)));
        for (j, ((out, (dy, x)), k)) in planes_out.zip(coef(u, &sums)).enumerate() {
            plane_affine2(out, dy, x, &k, gate(j));
        }
        sums
    });
    (dx, sums.into_iter().flatten().collect())
}

/// Bytes of dy and x one channel group may span for [`group_backward`]: its second pass reads
/// them again from the core's L2 (2 MiB on the machines measured), instead of from memory.
/// (BatchNorm at (128, 64, 32, 32), 1 MiB a channel: the backward 4–18 % faster than two
/// passes over all planes in a timed loop, caches flushed or not; within the noise of the
/// layer's whole forward + backward.)
pub(crate) const GROUP_BACKWARD_BYTES: usize = 3 << 19;

/// Values a plane needs for [`group_backward`]: smaller planes, read a page or less apart, lose
/// the hardware prefetchers' streams (BatchNorm forward + backward, 3 alternated pairs: 8 × 8
/// planes 17 % slower by channel group, 16 × 16 even, 32 × 32 3 % faster, 56 × 56 10 %).
pub(crate) const GROUP_BACKWARD_PLANE: usize = 1024;

/// A pointer to the output of [`group_backward`], shared by its tasks, each of which writes
/// planes no other task writes.
#[derive(Clone, Copy)]
struct Planes(*mut MaybeUninit<f32>);

// SAFETY: the tasks sharing a `Planes` write disjoint ranges (see `group_backward`).
unsafe impl Send for Planes {}
unsafe impl Sync for Planes {}

/// Asks the CPU to bring `v` into the caches ahead of its use. The passes that read the next
/// unit or example while finishing one call it: a channel group's planes lie in strides of C
/// planes, where the hardware prefetchers stop at each page, and a per-example unit is a few
/// pages. (GroupNorm 32 at (128, 64, 32, 32): forward + backward 8 % faster over 8 alternated
/// pairs; the plane-order passes, already sequential, were 4 % slower with it.)
#[inline(always)]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: a prefetch reads nothing and cannot fault; the address is inside `v`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
}

/// The backward of units that span examples (BatchNorm's: a channel group over the batch),
/// one channel group at a time while its planes are in cache: [Σdy, Σdy·(x − shift)] of the
/// group's `n·cpg` planes (example-major), then `coef(group, those sums)` gives their
/// coefficients in the same order and the group's dx is written, reading dy and x from cache
/// when they fit [`GROUP_BACKWARD_BYTES`]. Returns dx and the per-plane sums in plane order,
/// the same bits as [`grad_moments`] and [`affine2`]. `gates` as in [`grad_moments`].
pub(crate) fn group_backward(
    dy: &[f32],
    x: &[f32],
    shifts: &[f32],
    [n, c, s]: [usize; 3],
    cpg: usize,
    gates: Option<&[PlaneForward]>,
    coef: impl Fn(usize, &[[f64; 2]]) -> UnitVec<PlaneBackward> + Sync + Send,
) -> (Vec<f32>, Vec<[f64; 2]>) {
    let len = n * c * s;
    assert!(
        dy.len() == len && x.len() == len && shifts.len() == n * c && cpg > 0 && c % cpg == 0,
        "group_backward: shapes do not match [{n}, {c}, {s}] in groups of {cpg}"
    );
    let mut dx: Vec<f32> = Vec::with_capacity(len);
    let out = Planes(dx.spare_capacity_mut().as_mut_ptr());
    let span = cpg * s;
    let groups: Vec<Vec<[f64; 2]>> = (0..c / cpg)
        .into_par_iter()
        .map(|g| {
            // the group's planes of example i: planes i·c + g·cpg .. + cpg, one span of x
            let at = |i: usize| (i * c + g * cpg) * s;
            let plane = |i: usize, j: usize| i * c + g * cpg + j;
            let mut sums = Vec::with_capacity(n * cpg);
            for i in 0..n {
                if i + 1 < n {
                    prefetch(&dy[at(i + 1)..at(i + 1) + span]);
                    prefetch(&x[at(i + 1)..at(i + 1) + span]);
                }
                let (dy, x) = (&dy[at(i)..at(i) + span], &x[at(i)..at(i) + span]);
                for (j, (dy, x)) in dy.chunks(s).zip(x.chunks(s)).enumerate() {
                    let p = plane(i, j);
                    sums.push(plane_grad_moments(dy, x, shifts[p], gates.map(|g| &g[p])));
                }
            }
            let k = coef(g, &sums);
            for i in 0..n {
                // SAFETY: this span (example i, group g) lies inside dx's capacity and no other
                // task writes it: the groups partition the channels.
                let out = unsafe { std::slice::from_raw_parts_mut({ out }.0.add(at(i)), span) };
                let (dy, x) = (&dy[at(i)..at(i) + span], &x[at(i)..at(i) + span]);
                let planes = out.chunks_mut(s).zip(dy.chunks(s).zip(x.chunks(s)));
                for (j, (out, (dy, x))) in planes.enumerate() {
                    let p = plane(i, j);
                    plane_affine2(out, dy, x, &k[i * cpg + j], gates.map(|g| &g[p]));
                }
            }
            sums
        })
        .collect();
    // SAFETY: the groups partition the channels, so their spans cover all n·c·s slots, each
    // written by `plane_affine2`.
    unsafe { dx.set_len(len) };
    let mut planes = vec![[0.0f64; 2]; n * c];
    for (g, sums) in groups.iter().enumerate() {
        for (q, &v) in sums.iter().enumerate() {
            planes[(q / cpg) * c + g * cpg + q % cpg] = v;
        }
    }
    (dx, planes)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{ACCS, BLOCK, CENTRED, GATED, PlaneForward, SUM};

    /// See [`super::block_sums`]; same order as [`super::block_sums_body`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn block_sums<const KIND: u8>(
        a: &[f32],
        b: &[f32],
        k: f32,
        gate: &PlaneForward,
    ) -> [f64; 2] {
        const STEP: usize = ACCS * 8;
        let len = a.len().min(b.len());
        let full = len / STEP * STEP;
        let kv = _mm256_set1_ps(k);
        let gate = Gate::new(gate);
        let mut s64 = [_mm256_setzero_pd(); 2 * ACCS];
        let mut q64 = [_mm256_setzero_pd(); 2 * ACCS];
        let mut i = 0;
        while i < full {
            let end = full.min(i + BLOCK);
            let mut s32 = [_mm256_setzero_ps(); ACCS];
            let mut q32 = [_mm256_setzero_ps(); ACCS];
            while i < end {
                for v in 0..ACCS {
                    let at = i + 8 * v;
                    // SAFETY: at + 8 ≤ full ≤ the length of both slices; unaligned loads.
                    let av = unsafe { _mm256_loadu_ps(a.as_ptr().add(at)) };
                    match KIND {
                        SUM => s32[v] = _mm256_add_ps(s32[v], av),
                        CENTRED => {
                            let d = _mm256_sub_ps(av, kv);
                            s32[v] = _mm256_add_ps(s32[v], d);
                            q32[v] = _mm256_fmadd_ps(d, d, q32[v]);
                        }
                        _ => {
                            // SAFETY: as above.
                            let bv = unsafe { _mm256_loadu_ps(b.as_ptr().add(at)) };
                            let av = gate.apply::<KIND>(av, bv);
                            s32[v] = _mm256_add_ps(s32[v], av);
                            q32[v] = _mm256_fmadd_ps(av, _mm256_sub_ps(bv, kv), q32[v]);
                        }
                    }
                }
                i += STEP;
            }
            for v in 0..ACCS {
                let (lo, hi) = halves(s32[v]);
                s64[2 * v] = _mm256_add_pd(s64[2 * v], lo);
                s64[2 * v + 1] = _mm256_add_pd(s64[2 * v + 1], hi);
                let (lo, hi) = halves(q32[v]);
                q64[2 * v] = _mm256_add_pd(q64[2 * v], lo);
                q64[2 * v + 1] = _mm256_add_pd(q64[2 * v + 1], hi);
            }
        }
        let rem = len - full;
        if rem > 0 {
            // the tail, 8 values a chunk by masked loads: its terms go to f64 lanes 0..rem, and
            // the factors past its end are masked to +0 (the lanes are never −0, so adding +0
            // leaves them as the portable body leaves them)
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for c in 0..rem.div_ceil(8) {
                let live = _mm256_cmpgt_epi32(_mm256_set1_epi32((rem - 8 * c) as i32), lane);
                // SAFETY: full + 8·c < len, and the masked loads read only the lanes below the
                // tail's end (the others are neither read nor faulted on).
                let (av, bv) = unsafe {
                    (
                        _mm256_maskload_ps(a.as_ptr().add(full + 8 * c), live),
                        _mm256_maskload_ps(b.as_ptr().add(full + 8 * c), live),
                    )
                };
                let live = _mm256_castsi256_ps(live);
                let (s, q) = match KIND {
                    SUM => (_mm256_and_ps(av, live), None),
                    CENTRED => {
                        let d = _mm256_and_ps(_mm256_sub_ps(av, kv), live);
                        (d, Some(d))
                    }
                    _ => (
                        _mm256_and_ps(gate.apply::<KIND>(av, bv), live),
                        Some(_mm256_and_ps(_mm256_sub_ps(bv, kv), live)),
                    ),
                };
                let (sl, sh) = halves(s);
                s64[2 * c] = _mm256_add_pd(s64[2 * c], sl);
                s64[2 * c + 1] = _mm256_add_pd(s64[2 * c + 1], sh);
                if let Some(w) = q {
                    let (wl, wh) = halves(w);
                    q64[2 * c] = _mm256_add_pd(q64[2 * c], _mm256_mul_pd(sl, wl));
                    q64[2 * c + 1] = _mm256_add_pd(q64[2 * c + 1], _mm256_mul_pd(sh, wh));
                }
            }
        }
        [lane_tree(&s64), lane_tree(&q64)]
    }

    /// A [`PlaneForward`] gate's coefficients, broadcast once per call.
    #[derive(Clone, Copy)]
    struct Gate {
        shift: __m256,
        scale: __m256,
        offset: __m256,
    }

    impl Gate {
        #[target_feature(enable = "avx2")]
        #[inline]
        fn new(g: &PlaneForward) -> Gate {
            Gate {
                shift: _mm256_set1_ps(g.shift),
                scale: _mm256_set1_ps(g.scale),
                offset: _mm256_set1_ps(g.offset),
            }
        }

        /// `a` where the gate passes `b` (all of `a` unless `KIND` is [`GATED`]): the ReLU
        /// test of [`super::relu_passes`], not (z ≤ 0), true for NaN.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn apply<const KIND: u8>(self, a: __m256, b: __m256) -> __m256 {
            if KIND != GATED {
                return a;
            }
            let z = _mm256_add_ps(
                _mm256_mul_ps(_mm256_sub_ps(b, self.shift), self.scale),
                self.offset,
            );
            _mm256_and_ps(a, _mm256_cmp_ps::<_CMP_NLE_UQ>(z, _mm256_setzero_ps()))
        }
    }

    /// [`super::lane_tree`] of the eight 4-lane vectors.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn lane_tree(v: &[__m256d; 2 * ACCS]) -> f64 {
        // (no closure: one would be compiled without AVX2)
        let b0 = _mm256_add_pd(v[0], v[1]);
        let b1 = _mm256_add_pd(v[2], v[3]);
        let b2 = _mm256_add_pd(v[4], v[5]);
        let b3 = _mm256_add_pd(v[6], v[7]);
        let d = _mm256_add_pd(_mm256_add_pd(b0, b1), _mm256_add_pd(b2, b3));
        let e = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd::<1>(d));
        _mm_cvtsd_f64(e) + _mm_cvtsd_f64(_mm_unpackhi_pd(e, e))
    }

    /// The low and high four lanes of `v`, widened to f64.
    #[target_feature(enable = "avx2")]
    fn halves(v: __m256) -> (__m256d, __m256d) {
        (
            _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.3)
            .collect()
    }

    /// Relative bound of the compensated sums against exact f64 loops: the f32 inputs of a
    /// block (at most 8 per lane) and the block's lane sums round at 2⁻²⁴ each, so 16 ulps of
    /// Σ|term| bounds the error; the old f64 accumulation met 1e-12, which f32 terms cannot.
    const SUM_TOL: f64 = 16.0 * f32::EPSILON as f64 / 2.0;

    #[test]
    fn plane_sums_match_f64_loops_for_odd_plane_sizes() {
        for s in [1, 3, 7, 8, 9, 17, 31, 32, 33, 100, 257, 1000, 4099] {
            let x = data(5 * s, 7);
            let dy = data(5 * s, 11);
            let shifts = [0.1f32, -0.2, 0.0, 0.3, 1.0];
            let m = moments(&x, s);
            let g = grad_moments(&dy, &x, &shifts, s, None);
            // the gates of a ReLU after x·(1 − p/2) + 0.1: planes 0 and 1 pass x > −0.1 and
            // x > −0.2, plane 2 passes everything, planes 3 and 4 pass x < 0.2 and x < 0.1
            let gates: Vec<PlaneForward> = (0..5)
                .map(|p| PlaneForward {
                    shift: 0.0,
                    scale: 1.0 - p as f32 / 2.0,
                    offset: 0.1,
                })
                .collect();
            let gated = grad_moments(&dy, &x, &shifts, s, Some(&gates));
            for p in 0..5 {
                let plane = &x[p * s..(p + 1) * s];
                let grad = &dy[p * s..(p + 1) * s];
                let f = |v: &f32| f64::from(*v);
                let sum: f64 = plane.iter().map(f).sum();
                let sq: f64 = plane.iter().map(|v| f(v).powi(2)).sum();
                let gs: f64 = grad.iter().map(f).sum();
                let shift = f64::from(shifts[p]);
                let gx: f64 = grad
                    .iter()
                    .zip(plane)
                    .map(|(g, v)| f(g) * (f(v) - shift))
                    .sum();
                // the scale each sum's error is bounded by: Σ|term|
                let abs_x: f64 = plane.iter().map(|v| f(v).abs()).sum();
                let abs_gx: f64 = grad
                    .iter()
                    .zip(plane)
                    .map(|(g, v)| (f(g) * (f(v) - shift)).abs())
                    .sum();
                let abs_g: f64 = grad.iter().map(|v| f(v).abs()).sum();
                // the gated sums: dy where the plane's gate is above 0, from an f64 gate
                let k = gates[p];
                let open = |v: &f32| {
                    (f(v) - f64::from(k.shift)) * f64::from(k.scale) + f64::from(k.offset) > 0.0
                };
                let pass = |(g, v): (&f32, &f32)| if open(v) { f(g) } else { 0.0 };
                let gated_s: f64 = grad.iter().zip(plane).map(pass).sum();
                let gated_x: f64 = grad
                    .iter()
                    .zip(plane)
                    .map(|(g, v)| pass((g, v)) * (f(v) - shift))
                    .sum();
                for (got, want, scale) in [
                    (m[p][0], sum, abs_x),
                    (m[p][1], sq, sq),
                    (g[p][0], gs, abs_g),
                    (g[p][1], gx, abs_gx),
                    (gated[p][0], gated_s, abs_g),
                    (gated[p][1], gated_x, abs_gx),
                ] {
                    assert!(
                        (got - want).abs() <= SUM_TOL * scale,
                        "s={s}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// `data` scaled over 2^-30..2^30, so that f64 sums round and a different order of
    /// additions gives other bits (sums of `data` alone are exact in f64, so every order gives
    /// the same bits and a comparison of bits could not fail).
    fn wide_data(len: usize, seed: u32) -> Vec<f32> {
        data(len, seed)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v * 2f32.powi((i * 7 % 61) as i32 - 30))
            .collect()
    }

    #[test]
    fn variance_of_data_far_from_zero_keeps_its_digits() {
        // mean 1000, standard deviation about 0.29: Σx² − (Σx)²/m cancels 7 digits, which the
        // shifted second pass keeps (a one-pass f32 Σx² would lose all of them)
        let x: Vec<f32> = data(4099, 5).iter().map(|v| 1000.0 + v).collect();
        let m = x.len() as f64;
        let [s1, s2] = moments(&x, x.len())[0];
        let mean: f64 = x.iter().map(|&v| f64::from(v)).sum::<f64>() / m;
        let var: f64 = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / m;
        let got = s2 / m - (s1 / m).powi(2);
        assert!((got - var).abs() <= 1e-6 * var, "{got} vs {var}");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_and_portable_reductions_give_the_same_bits() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let bits = |v: [f64; 2]| v.map(f64::to_bits);
        for s in [
            1, 7, 8, 9, 16, 31, 32, 33, 49, 64, 100, 256, 257, 1027, 4099,
        ] {
            let (x, dy) = (wide_data(s, 3), wide_data(s, 4));
            // SAFETY: AVX2 and FMA were checked above.
            let gate = PlaneForward {
                shift: 0.01,
                scale: -1.5,
                offset: 0.002,
            };
            let (a, b, c, d) = unsafe {
                (
                    avx2::block_sums::<SUM>(&x, &x, 0.0, &NO_GATE),
                    avx2::block_sums::<CENTRED>(&x, &x, 0.5, &NO_GATE),
                    avx2::block_sums::<WEIGHTED>(&dy, &x, 0.25, &NO_GATE),
                    avx2::block_sums::<GATED>(&dy, &x, 0.25, &gate),
                )
            };
            let body = |kind| match kind {
                SUM => block_sums_body::<SUM>(&x, &x, 0.0, &NO_GATE),
                CENTRED => block_sums_body::<CENTRED>(&x, &x, 0.5, &NO_GATE),
                WEIGHTED => block_sums_body::<WEIGHTED>(&dy, &x, 0.25, &NO_GATE),
                _ => block_sums_body::<GATED>(&dy, &x, 0.25, &gate),
            };
            for (kind, got) in [(SUM, a), (CENTRED, b), (WEIGHTED, c), (GATED, d)] {
                assert_eq!(bits(got), bits(body(kind)), "s={s} kind={kind}");
            }
            // the gate cut some of the terms, not all
            if s > 8 {
                assert_ne!(bits(d), bits(c), "s={s}");
            }
        }
    }

    #[test]
    fn elementwise_passes_match_their_formulas() {
        let s = 13;
        let (x, dy) = (data(3 * s, 3), data(3 * s, 5));
        let c1: Vec<PlaneForward> = (0..3)
            .map(|p| PlaneForward {
                shift: p as f32 * 0.1,
                scale: 1.5 - p as f32,
                offset: 0.25 * p as f32,
            })
            .collect();
        let c2: Vec<PlaneBackward> = (0..3)
            .map(|p| PlaneBackward {
                shift: p as f32 * 0.1,
                dy_scale: 2.0,
                x_scale: -0.5 * p as f32,
                offset: 0.01,
            })
            .collect();
        let (y, dx) = (affine1(&x, &c1, s, false), affine2(&dy, &x, &c2, s, None));
        let (y_relu, dx_gated) = (
            affine1(&x, &c1, s, true),
            affine2(&dy, &x, &c2, s, Some(&c1)),
        );
        let mut cut = 0;
        for i in 0..3 * s {
            let (a, b) = (c1[i / s], c2[i / s]);
            let z = (x[i] - a.shift) * a.scale + a.offset;
            assert_eq!(y[i], z);
            let dx_of = |g: f32| g * b.dy_scale + (x[i] - b.shift) * b.x_scale + b.offset;
            assert_eq!(dx[i], dx_of(dy[i]));
            // the ReLU and its gradient mask
            let open = z > 0.0;
            cut += usize::from(!open);
            assert_eq!(y_relu[i], if open { z } else { 0.0 });
            assert_eq!(dx_gated[i], dx_of(if open { dy[i] } else { 0.0 }));
        }
        assert!(cut > 0 && cut < 3 * s, "{cut} values cut");
        let r = data(3 * s, 9);
        let y_add = affine_add_relu(&x, &r, &c1, s);
        for i in 0..3 * s {
            let a = c1[i / s];
            let z = (x[i] - a.shift) * a.scale + a.offset + r[i];
            assert_eq!(y_add[i], if z > 0.0 { z } else { 0.0 });
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let s = 37;
        let x = data(300 * s, 1);
        let dy = data(300 * s, 2);
        let shifts: Vec<f32> = (0..300).map(|p| p as f32 * 1e-3).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            pool.install(|| (moments(&x, s), grad_moments(&dy, &x, &shifts, s, None)))
        };
        let (a, b) = (run(1), run(3));
        let bits =
            |v: &[[f64; 2]]| -> Vec<u64> { v.iter().flat_map(|p| p.map(f64::to_bits)).collect() };
        assert_eq!(bits(&a.0), bits(&b.0));
        assert_eq!(bits(&a.1), bits(&b.1));
    }
}
