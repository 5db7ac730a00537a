//! The filters' transforms: `G·f·Gᵀ` for the forward and the input gradient, and `Gᵀ·D·G`
//! from the weight gradient's transformed sums.

use rayon::prelude::*;

use super::forward::PANEL;
use super::{POINTS, Plan};

/// The filters transformed, `G·f·Gᵀ` for each (output, input) channel pair, in panels of
/// [`PANEL`] output channels (padded with zeros to whole panels): panel-major, then
/// point-major, then input channel by input channel. The panels are made in parallel.
/// `f(o, i, k)` is tap `k` (row-major 3 × 3) of the filter from input `i` to output `o`.
pub(super) fn transform_filters(
    cin: usize,
    cout: usize,
    f: impl Fn(usize, usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    let panel_len = POINTS * cin * PANEL;
    let mut u = vec![0.0f32; cout.div_ceil(PANEL) * panel_len];
    u.par_chunks_mut(panel_len)
        .enumerate()
        .for_each(|(panel, u)| {
            for o in panel * PANEL..((panel + 1) * PANEL).min(cout) {
                for i in 0..cin {
                    let g: [f32; 9] = std::array::from_fn(|k| f(o, i, k));
                    // G·g: 4 × 3
                    let mut t = [[0.0f32; 3]; 4];
                    for j in 0..3 {
                        let (a, b, c) = (g[j], g[3 + j], g[6 + j]);
                        t[0][j] = a;
                        t[1][j] = 0.5 * (a + b + c);
                        t[2][j] = 0.5 * (a - b + c);
                        t[3][j] = c;
                    }
                    for (r, &[a, b, c]) in t.iter().enumerate() {
                        let row = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                        for (s, val) in row.into_iter().enumerate() {
                            u[((r * 4 + s) * cin + i) * PANEL + o % PANEL] = val;
                        }
                    }
                }
            }
        });
    u
}

/// The forward's transformed filters, from `w` laid out `[cout][cin][3][3]`.
pub(super) fn forward_filters(p: &Plan, w: &[f32]) -> Vec<f32> {
    transform_filters(p.cin, p.cout, |o, i, k| w[(o * p.cin + i) * 9 + k])
}

/// The input gradient's transformed filters: the filter flipped and its channels swapped, so
/// that ∂L/∂x is the forward of ∂L/∂y from `cout` into `cin` channels.
pub(super) fn input_grad_filters(p: &Plan, w: &[f32]) -> Vec<f32> {
    transform_filters(p.cout, p.cin, |i, o, k| w[(o * p.cin + i) * 9 + 8 - k])
}

/// ∂L/∂w laid out `[cout][cin][3][3]` from the sums `du` of the 16 points (point-major, each
/// `rows` input channels × `columns` output channels, row-major): `Gᵀ·D·G` for each channel
/// pair, the pairs in parallel.
pub(super) fn filter_grads(p: &Plan, du: &[f32], [rows, columns]: [usize; 2]) -> Vec<f32> {
    // D: the 4 × 4 of a pair's sums
    let mut dw = vec![0.0f32; p.cout * p.cin * 9];
    dw.par_chunks_mut(p.cin * 9)
        .enumerate()
        .for_each(|(o, dw)| {
            for (i, dw) in dw.chunks_exact_mut(9).enumerate() {
                let d = |a: usize, b: usize| du[(4 * a + b) * rows * columns + i * columns + o];
                // Gᵀ·D: 3 × 4
                let t: [[f32; 4]; 3] = [
                    std::array::from_fn(|b| d(0, b) + 0.5 * (d(1, b) + d(2, b))),
                    std::array::from_fn(|b| 0.5 * (d(1, b) - d(2, b))),
                    std::array::from_fn(|b| 0.5 * (d(1, b) + d(2, b)) + d(3, b)),
                ];
                for (r, [a, b, c, e]) in t.into_iter().enumerate() {
                    dw[3 * r] = a + 0.5 * (b + c);
                    dw[3 * r + 1] = 0.5 * (b - c);
                    dw[3 * r + 2] = 0.5 * (b + c) + e;
                }
            }
        });
    dw
}
