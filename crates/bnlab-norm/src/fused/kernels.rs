//! Plain-Rust kernels of the fused layer over contiguous `[N, C, S]` f32 data, one plane
//! (one example and channel, S values) at a time.
//!
//! Every reduction runs over one plane in a fixed order (16 f64 lanes, then the tail), and
//! planes are combined by the caller in a fixed order, so results do not depend on the number
//! of threads. Work is split over planes with rayon.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Accumulator lanes per plane reduction.
const LANES: usize = 16;

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

/// Σx and Σx² of one plane in f64 (explicit AVX2 where the CPU has it: LLVM does not
/// vectorize the f32 → f64 widening of the portable body).
fn plane_moments(x: &[f32]) -> [f64; 2] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just checked to have AVX2.
        return unsafe { avx2::moments(x, None) };
    }
    plane_moments_body(x)
}

/// Σdy and Σdy·(x − shift) of one plane in f64 (explicit AVX2 where the CPU has it).
fn plane_grad_moments(dy: &[f32], x: &[f32], shift: f32) -> [f64; 2] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just checked to have AVX2.
        return unsafe { avx2::moments(dy, Some((x, shift))) };
    }
    plane_grad_moments_body(dy, x, shift)
}
with_avx2!(plane_affine1, plane_affine1_body, (out: &mut [MaybeUninit<f32>], x: &[f32], k: &PlaneForward) -> ());
with_avx2!(plane_affine2, plane_affine2_body, (out: &mut [MaybeUninit<f32>], dy: &[f32], x: &[f32], k: &PlaneBackward) -> ());

/// Σx and Σx² of one plane, accumulated in f64.
#[inline(always)]
fn plane_moments_body(x: &[f32]) -> [f64; 2] {
    let mut s = [0.0f64; LANES];
    let mut q = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        let v: [f64; LANES] = std::array::from_fn(|j| f64::from(chunk[j]));
        s = std::array::from_fn(|j| s[j] + v[j]);
        q = std::array::from_fn(|j| q[j] + v[j] * v[j]);
    }
    let (mut s0, mut q0) = (0.0, 0.0);
    for j in 0..LANES {
        s0 += s[j];
        q0 += q[j];
    }
    for &v in tail {
        let v = f64::from(v);
        s0 += v;
        q0 += v * v;
    }
    [s0, q0]
}

/// Σdy and Σdy·(x − shift) of one plane, accumulated in f64.
#[inline(always)]
fn plane_grad_moments_body(dy: &[f32], x: &[f32], shift: f32) -> [f64; 2] {
    let shift = f64::from(shift);
    let mut s = [0.0f64; LANES];
    let mut q = [0.0f64; LANES];
    let dy_chunks = dy.chunks_exact(LANES);
    let x_chunks = x.chunks_exact(LANES);
    let (dy_tail, x_tail) = (dy_chunks.remainder(), x_chunks.remainder());
    for (g, v) in dy_chunks.zip(x_chunks) {
        for j in 0..LANES {
            let g = f64::from(g[j]);
            s[j] += g;
            q[j] += g * (f64::from(v[j]) - shift);
        }
    }
    let (mut s0, mut q0) = (0.0, 0.0);
    for j in 0..LANES {
        s0 += s[j];
        q0 += q[j];
    }
    for (&g, &v) in dy_tail.iter().zip(x_tail) {
        let g = f64::from(g);
        s0 += g;
        q0 += g * (f64::from(v) - shift);
    }
    [s0, q0]
}

/// [Σx, Σx²] of every plane of `x` (planes of `s` values), in plane order.
pub(crate) fn moments(x: &[f32], s: usize) -> Vec<[f64; 2]> {
    if s == 0 {
        return Vec::new();
    }
    x.par_chunks(s)
        .with_min_len(min_planes(s))
        .map(plane_moments)
        .collect()
}

/// [Σdy, Σdy·(x − shift)] of every plane, with one shift per plane.
pub(crate) fn grad_moments(dy: &[f32], x: &[f32], shifts: &[f32], s: usize) -> Vec<[f64; 2]> {
    if s == 0 {
        return Vec::new();
    }
    dy.par_chunks(s)
        .zip(x.par_chunks(s))
        .zip(shifts.par_iter())
        .with_min_len(min_planes(s))
        .map(|((dy, x), &shift)| plane_grad_moments(dy, x, shift))
        .collect()
}

/// out = (x − shift)·scale + offset over one plane.
#[inline(always)]
fn plane_affine1_body(out: &mut [MaybeUninit<f32>], x: &[f32], k: &PlaneForward) {
    for (o, &v) in out.iter_mut().zip(x) {
        o.write((v - k.shift) * k.scale + k.offset);
    }
}

/// out = dy·dy_scale + (x − shift)·x_scale + offset over one plane.
#[inline(always)]
fn plane_affine2_body(out: &mut [MaybeUninit<f32>], dy: &[f32], x: &[f32], k: &PlaneBackward) {
    for ((o, &g), &v) in out.iter_mut().zip(dy).zip(x) {
        o.write(g * k.dy_scale + (v - k.shift) * k.x_scale + k.offset);
    }
}

/// A vector of `len` values, every one written by `fill` over chunks of `chunk` values (`len` a
/// multiple of `chunk`), without zeroing the memory first; with what `fill` returned per chunk.
fn filled<R: Send>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) -> R + Sync + Send,
) -> (Vec<f32>, Vec<R>) {
    let mut out = Vec::with_capacity(len);
    if chunk == 0 {
        return (out, Vec::new());
    }
    let results = out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .with_min_len(min_planes(chunk))
        .enumerate()
        .map(|(p, part)| fill(p, part))
        .collect();
    // SAFETY: the chunks cover the first `len` slots (len is a multiple of chunk) and `fill`
    // writes every slot of its chunk.
    unsafe { out.set_len(len) };
    (out, results)
}

/// `(x − shift)·scale + offset` per plane.
pub(crate) fn affine1(x: &[f32], coef: &[PlaneForward], s: usize) -> Vec<f32> {
    filled(x.len(), s, |p, out| {
        plane_affine1(out, &x[p * s..(p + 1) * s], &coef[p])
    })
    .0
}

/// `dy·dy_scale + (x − shift)·x_scale + offset` per plane.
pub(crate) fn affine2(dy: &[f32], x: &[f32], coef: &[PlaneBackward], s: usize) -> Vec<f32> {
    filled(x.len(), s, |p, out| {
        let plane = p * s..(p + 1) * s;
        plane_affine2(out, &dy[plane.clone()], &x[plane], &coef[p])
    })
    .0
}

/// The forward of units made of `planes` consecutive planes (per-example units), one unit at a
/// time while it is in cache: the units' [Σx, Σx²] per plane, then `coef(unit, plane sums)`
/// gives the unit's per-plane coefficients and its output is written.
pub(crate) fn unit_forward(
    x: &[f32],
    s: usize,
    planes: usize,
    coef: impl Fn(usize, &[[f64; 2]]) -> Vec<PlaneForward> + Sync + Send,
) -> (Vec<f32>, Vec<[f64; 2]>) {
    let unit = planes * s;
    let (y, sums) = filled(x.len(), unit, |u, out| {
        let x = &x[u * unit..(u + 1) * unit];
        let sums: Vec<[f64; 2]> = x.chunks(s).map(plane_moments).collect();
        for ((out, x), k) in out.chunks_mut(s).zip(x.chunks(s)).zip(coef(u, &sums)) {
            plane_affine1(out, x, &k);
        }
        sums
    });
    (y, sums.into_iter().flatten().collect())
}

/// The backward of units made of `planes` consecutive planes, one unit at a time while it is in
/// cache: [Σdy, Σdy·(x − shift)] per plane, then `coef(unit, plane sums)` gives the unit's
/// per-plane coefficients and its dx is written. Returns dx and the per-plane sums.
pub(crate) fn unit_backward(
    dy: &[f32],
    x: &[f32],
    shifts: &[f32],
    s: usize,
    planes: usize,
    coef: impl Fn(usize, &[[f64; 2]]) -> Vec<PlaneBackward> + Sync + Send,
) -> (Vec<f32>, Vec<[f64; 2]>) {
    let unit = planes * s;
    let (dx, sums) = filled(x.len(), unit, |u, out| {
        let span = u * unit..(u + 1) * unit;
        let (dy, x) = (&dy[span.clone()], &x[span]);
        let sums: Vec<[f64; 2]> = dy
            .chunks(s)
            .zip(x.chunks(s))
            .zip(&shifts[u * planes..(u + 1) * planes])
            .map(|((dy, x), &shift)| plane_grad_moments(dy, x, shift))
            .collect();
        let planes_out = out.chunks_mut(s).zip(dy.chunks(s).zip(x.chunks(s)));
        for ((out, (dy, x)), k) in planes_out.zip(coef(u, &sums)) {
            plane_affine2(out, dy, x, &k);
        }
        sums
    });
    (dx, sums.into_iter().flatten().collect())
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [Σa, Σa²] for `weights = None`; [Σa, Σa·(x − shift)] for `Some((x, shift))`.
    #[target_feature(enable = "avx2")]
    pub(super) fn moments(a: &[f32], weights: Option<(&[f32], f32)>) -> [f64; 2] {
        const VECS: usize = super::LANES / 4;
        let len = match weights {
            Some((x, _)) => a.len().min(x.len()),
            None => a.len(),
        };
        let full = len / super::LANES * super::LANES;
        let shift = weights.map_or(0.0, |(_, s)| f64::from(s));
        let shift_v = _mm256_set1_pd(shift);
        let mut sums = [_mm256_setzero_pd(); VECS];
        let mut squares = [_mm256_setzero_pd(); VECS];
        let mut i = 0;
        while i < full {
            for v in 0..VECS {
                let at = i + 4 * v;
                // SAFETY: at + 4 ≤ full ≤ len of both slices; unaligned loads.
                let av = unsafe { _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr().add(at))) };
                let mv = match weights {
                    None => av,
                    // SAFETY: as above.
                    Some((x, _)) => unsafe {
                        _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x.as_ptr().add(at))), shift_v)
                    },
                };
                sums[v] = _mm256_add_pd(sums[v], av);
                squares[v] = _mm256_add_pd(squares[v], _mm256_mul_pd(av, mv));
            }
            i += super::LANES;
        }
        let mut lanes = [[0.0f64; 4]; 2 * VECS];
        for (out, v) in lanes.iter_mut().zip(sums.into_iter().chain(squares)) {
            // SAFETY: `out` holds four f64.
            unsafe { _mm256_storeu_pd(out.as_mut_ptr(), v) };
        }
        let (mut s0, mut q0) = (0.0, 0.0);
        for j in 0..super::LANES {
            s0 += lanes[j / 4][j % 4];
            q0 += lanes[VECS + j / 4][j % 4];
        }
        for j in full..len {
            let v = f64::from(a[j]);
            s0 += v;
            q0 += v * weights.map_or(v, |(x, _)| f64::from(x[j]) - shift);
        }
        [s0, q0]
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

    #[test]
    fn plane_sums_match_f64_loops_for_odd_plane_sizes() {
        for s in [1, 3, 7, 8, 9, 17, 100] {
            let x = data(5 * s, 7);
            let dy = data(5 * s, 11);
            let shifts = [0.1f32, -0.2, 0.0, 0.3, 1.0];
            let m = moments(&x, s);
            let g = grad_moments(&dy, &x, &shifts, s);
            for p in 0..5 {
                let plane = &x[p * s..(p + 1) * s];
                let grad = &dy[p * s..(p + 1) * s];
                let sum: f64 = plane.iter().map(|&v| f64::from(v)).sum();
                let sq: f64 = plane.iter().map(|&v| f64::from(v).powi(2)).sum();
                let gs: f64 = grad.iter().map(|&v| f64::from(v)).sum();
                let gx: f64 = grad
                    .iter()
                    .zip(plane)
                    .map(|(&g, &v)| f64::from(g) * (f64::from(v) - f64::from(shifts[p])))
                    .sum();
                for (got, want) in [(m[p][0], sum), (m[p][1], sq), (g[p][0], gs), (g[p][1], gx)] {
                    assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()), "s={s}");
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
    #[cfg(target_arch = "x86_64")]
    fn avx2_and_portable_reductions_give_the_same_bits() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let bits = |v: [f64; 2]| v.map(f64::to_bits);
        for s in [1, 7, 8, 9, 100, 1027] {
            let (x, dy) = (wide_data(s, 3), wide_data(s, 4));
            // SAFETY: AVX2 was checked above.
            let (a, b) = unsafe {
                (
                    avx2::moments(&x, None),
                    avx2::moments(&dy, Some((&x, 0.25))),
                )
            };
            assert_eq!(bits(a), bits(plane_moments_body(&x)), "s={s}");
            assert_eq!(
                bits(b),
                bits(plane_grad_moments_body(&dy, &x, 0.25)),
                "s={s}"
            );
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
        let (y, dx) = (affine1(&x, &c1, s), affine2(&dy, &x, &c2, s));
        for i in 0..3 * s {
            let (a, b) = (c1[i / s], c2[i / s]);
            assert_eq!(y[i], (x[i] - a.shift) * a.scale + a.offset);
            assert_eq!(
                dx[i],
                dy[i] * b.dy_scale + (x[i] - b.shift) * b.x_scale + b.offset
            );
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
            pool.install(|| (moments(&x, s), grad_moments(&dy, &x, &shifts, s)))
        };
        let (a, b) = (run(1), run(3));
        let bits =
            |v: &[[f64; 2]]| -> Vec<u64> { v.iter().flat_map(|p| p.map(f64::to_bits)).collect() };
        assert_eq!(bits(&a.0), bits(&b.0));
        assert_eq!(bits(&a.1), bits(&b.1));
    }
}
