//! The filters' transforms: `G·f·Gᵀ` for the forward and the input gradient, and `Gᵀ·D·G`
//! from the weight gradient's transformed sums.

use rayon::prelude::*;

use super::forward::PANEL;
use super::{POINTS, Plan};

/// `G·(a, b, c)`: one side of the filter transform, taken by rows and then by columns.
fn g_side(a: f32, b: f32, c: f32) -> [f32; 4] {
    [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
}

/// `Gᵀ·(a, b, c, e)`: one side of [`filter_grads`]' transform, by rows and then by columns.
fn gt_side(a: f32, b: f32, c: f32, e: f32) -> [f32; 3] {
    [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + e]
}

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
                    // G·g: 4 × 3, column by column
                    let mut t = [[0.0f32; 3]; 4];
                    for j in 0..3 {
                        for (r, v) in g_side(g[j], g[3 + j], g[6 + j]).into_iter().enumerate() {
                            t[r][j] = v;
                        }
                    }
                    for (r, &[a, b, c]) in t.iter().enumerate() {
                        for (s, val) in g_side(a, b, c).into_iter().enumerate() {
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
                // Gᵀ·D (3 × 4) as its four columns, then each of its rows ·G
                let cols: [[f32; 3]; 4] =
                    std::array::from_fn(|b| gt_side(d(0, b), d(1, b), d(2, b), d(3, b)));
                for (r, dw) in dw.chunks_exact_mut(3).enumerate() {
                    dw.copy_from_slice(&gt_side(cols[0][r], cols[1][r], cols[2][r], cols[3][r]));
                }
            }
        });
    dw
}
