//! The fast kernels against a direct f64 convolution and its adjoint (plain loops), against
//! Burn's own convolution, and across thread counts; Winograd's passes on their own.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor, TensorData};
use proptest::prelude::*;

use super::direct;
use super::extension::on_flex_f32;
use super::geometry::Geometry;
#[cfg(target_arch = "x86_64")]
use super::winograd;
use super::*;

/// A convolution case: input [n, cin, h, w], `cout` outputs, kernel, stride, padding
/// (top, left, bottom, right), dilation, groups, bias.
#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    cin: usize,
    size: [usize; 2],
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
    bias: bool,
}

impl Case {
    fn new(n: usize, cin: usize, hw: usize, cout: usize, k: usize) -> Self {
        Self {
            n,
            cin,
            size: [hw, hw],
            cout,
            kernel: [k, k],
            stride: [1, 1],
            pad: [k / 2; 4],
            dilation: [1, 1],
            groups: 1,
            bias: false,
        }
    }

    fn stride(self, s: usize) -> Self {
        Self {
            stride: [s, s],
            ..self
        }
    }

    fn size(self, size: [usize; 2]) -> Self {
        Self { size, ..self }
    }

    fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    fn out(&self) -> [usize; 2] {
        let o = |a: usize| {
            (self.size[a] + self.pad[a] + self.pad[a + 2]
                - self.dilation[a] * (self.kernel[a] - 1)
                - 1)
                / self.stride[a]
                + 1
        };
        [o(0), o(1)]
    }

    fn weight_shape(&self) -> [usize; 4] {
        [
            self.cout,
            self.cin / self.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    fn conv(&self, w: &[f32], b: &[f32], device: &Device) -> Conv2d {
        let [t, l, bo, r] = self.pad;
        let mut conv = Conv2dConfig::new([self.cin, self.cout], self.kernel)
            .with_stride(self.stride)
            .with_padding(PaddingConfig2d::Explicit(t, l, bo, r))
            .with_dilation(self.dilation)
            .with_groups(self.groups)
            .with_bias(self.bias)
            .init(device);
        conv.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(w.to_vec(), self.weight_shape()),
            device,
        ));
        if self.bias {
            conv.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b.to_vec(), [self.cout]),
                device,
            )));
        }
        conv
    }

    /// The kernels' geometry of this case (which must be one they can run).
    fn geometry(&self) -> Geometry {
        let w = values(self.weight_shape().iter().product(), 0);
        let conv = self.conv(&w, &values(self.cout, 0), &Device::flex());
        let dims = [self.n, self.cin, self.size[0], self.size[1]];
        Geometry::of_conv(&conv, dims).expect("a fast shape")
    }

    /// Calls `f(i, o, oy, ox, c, iy, ix, weight index)` for every product of the convolution.
    fn for_each_term(&self, mut f: impl FnMut([usize; 4], usize, [usize; 2], usize)) {
        let [oh, ow] = self.out();
        let [kh, kw] = self.kernel;
        let (cg, og) = (self.cin / self.groups, self.cout / self.groups);
        for i in 0..self.n {
            for o in 0..self.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for cl in 0..cg {
                            let c = (o / og) * cg + cl;
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let iy = (oy * self.stride[0] + ki * self.dilation[0]) as isize
                                        - self.pad[0] as isize;
                                    let ix = (ox * self.stride[1] + kj * self.dilation[1]) as isize
                                        - self.pad[1] as isize;
                                    let inside = (0..self.size[0] as isize).contains(&iy)
                                        && (0..self.size[1] as isize).contains(&ix);
                                    if inside {
                                        let wi = ((o * cg + cl) * kh + ki) * kw + kj;
                                        f([i, o, oy, ox], c, [iy as usize, ix as usize], wi);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Direct f64 convolution and the f64 gradients for output gradient `dy`: (y, dx, dw, db).
    fn reference(&self, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> [Vec<f64>; 4] {
        let [oh, ow] = self.out();
        let [h, wd] = self.size;
        let mut y = vec![0.0f64; self.n * self.cout * oh * ow];
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        let mut db = vec![0.0f64; if self.bias { self.cout } else { 0 }];
        for (yi, v) in y.iter_mut().enumerate() {
            if self.bias {
                *v = f64::from(b[(yi / (oh * ow)) % self.cout]);
                db[(yi / (oh * ow)) % self.cout] += f64::from(dy[yi]);
            }
        }
        self.for_each_term(|[i, o, oy, ox], c, [iy, ix], wi| {
            let yi = ((i * self.cout + o) * oh + oy) * ow + ox;
            let xi = ((i * self.cin + c) * h + iy) * wd + ix;
            y[yi] += f64::from(x[xi]) * f64::from(w[wi]);
            dx[xi] += f64::from(dy[yi]) * f64::from(w[wi]);
            dw[wi] += f64::from(dy[yi]) * f64::from(x[xi]);
        });
        [y, dx, dw, db]
    }
}

/// Deterministic values in [−1, 1) from `seed` (a 64-bit LCG), independent of Burn's RNG.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn to_vec(t: Tensor<4>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// max |a − r| / max(1, max |r|).
fn rel_err(a: &[f32], r: &[f64]) -> f64 {
    assert_eq!(a.len(), r.len());
    let scale = r.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(r)
        .map(|(&a, &r)| (f64::from(a) - r).abs())
        // (`total_cmp` keeps a NaN error, failing every bound; `f64::max` drops it)
        .max_by(f64::total_cmp)
        .unwrap_or(0.0)
        / scale
}

/// The layer's output and gradients under autodiff on Flex with `kernel`: (y, dx, dw, db).
fn run(case: &Case, kernel: ConvKernel, seed: u64) -> [Vec<f32>; 4] {
    let device = Device::flex().autodiff();
    let [oh, ow] = case.out();
    let x = values(case.n * case.cin * case.size[0] * case.size[1], seed);
    let w = values(case.weight_shape().iter().product(), seed + 1);
    let b = values(case.cout, seed + 2);
    let dy = values(case.n * case.cout * oh * ow, seed + 3);
    let conv = case.conv(&w, &b, &device);
    let xt = Tensor::<4>::from_data(
        TensorData::new(x, [case.n, case.cin, case.size[0], case.size[1]]),
        &device,
    )
    .require_grad();
    let y = conv2d(&conv, xt.clone(), kernel);
    let r = Tensor::<4>::from_data(TensorData::new(dy, [case.n, case.cout, oh, ow]), &device);
    let grads = (y.clone() * r).sum().backward();
    let dx = to_vec(xt.grad(&grads).unwrap());
    let dw = to_vec(conv.weight.val().grad(&grads).unwrap());
    let db = conv.bias.as_ref().map_or(vec![], |b| {
        b.val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    });
    [to_vec(y), dx, dw, db]
}

/// Checks the fast path against the f64 reference within 1e-4 relative error, and that it
/// took the fast path (its result differs from nothing but rounding from Burn's).
fn check(case: Case) {
    let seed = 7;
    let [oh, ow] = case.out();
    let x = values(case.n * case.cin * case.size[0] * case.size[1], seed);
    let w = values(case.weight_shape().iter().product(), seed + 1);
    let b = values(case.cout, seed + 2);
    let dy = values(case.n * case.cout * oh * ow, seed + 3);
    let reference = case.reference(&x, &w, &b, &dy);
    let probe = Tensor::<4>::zeros(
        [case.n, case.cin, case.size[0], case.size[1]],
        &Device::flex(),
    );
    let conv = case.conv(&w, &b, &Device::flex());
    assert!(
        on_flex_f32(&probe) && Geometry::of_conv(&conv, probe.dims()).is_some(),
        "{case:?}: not fast"
    );
    let fast = run(&case, ConvKernel::Auto, seed);
    for (name, (got, want)) in ["y", "dx", "dw", "db"]
        .iter()
        .zip(fast.iter().zip(&reference))
    {
        let err = rel_err(got, want);
        assert!(err <= 1e-4, "{case:?}: {name} relative error {err}");
    }
    let burn = run(&case, ConvKernel::Burn, seed);
    for (name, (a, b)) in ["y", "dx", "dw"].iter().zip(fast.iter().zip(&burn)) {
        let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
        let err = rel_err(a, &b64);
        assert!(err <= 1e-4, "{case:?}: {name} differs from Burn's by {err}");
    }
}

#[test]
fn the_networks_shapes_match_the_reference() {
    // 3×3 stride 1 and 2, 1×1 stride 1 and 2, 7×7 stride 2, grouped, depthwise
    check(Case::new(3, 5, 9, 7, 3));
    check(Case::new(3, 5, 9, 7, 3).stride(2));
    check(Case::new(2, 6, 7, 5, 1));
    check(Case::new(2, 6, 7, 5, 1).stride(2));
    check(Case::new(2, 3, 15, 4, 7).stride(2));
    check(Case::new(2, 8, 6, 12, 3).groups(4));
    check(Case::new(2, 6, 6, 6, 3).groups(6));
    check(Case::new(2, 6, 6, 12, 3).groups(6).stride(2));
}

#[test]
fn odd_shapes_match_the_reference() {
    // batch 1, 1×1 spatial, C not a multiple of the SIMD width, many small images per block
    check(Case::new(1, 3, 5, 17, 3));
    check(Case::new(2, 9, 1, 11, 3));
    check(Case::new(2, 9, 1, 11, 1));
    check(Case::new(40, 4, 4, 6, 3));
    check(Case::new(37, 3, 2, 5, 1));
    check(Case {
        kernel: [1, 7],
        pad: [0, 3, 0, 3],
        ..Case::new(2, 4, 7, 5, 1)
    });
    check(Case {
        pad: [0, 1, 2, 0],
        ..Case::new(2, 3, 6, 4, 3)
    });
    check(Case {
        dilation: [2, 3],
        pad: [2, 3, 2, 3],
        ..Case::new(2, 3, 8, 4, 3)
    });
    check(Case {
        bias: true,
        ..Case::new(2, 3, 5, 4, 3)
    });
    // a kernel wider than the padded image reads only padding in some rows
    check(Case {
        pad: [3, 3, 3, 3],
        ..Case::new(1, 2, 2, 3, 7)
    });
}

/// Checks `case` and that it ran through the direct 3×3 kernels (where the CPU has them).
fn check_direct(case: Case) {
    let g = case.geometry();
    assert_eq!(direct::applies(&g), direct::has_avx2_fma(), "{case:?}");
    check(case);
}

#[test]
fn direct_kernels_match_the_reference_on_odd_shapes() {
    // widths of 1, 2 and 5 vectors (both tile shapes), channel counts leaving short tiles,
    // the largest channel product taken, batch 1
    check_direct(Case::new(3, 16, 17, 13, 3));
    check_direct(Case::new(1, 7, 33, 19, 3));
    check_direct(Case::new(2, 64, 5, 64, 3));
    check_direct(Case::new(1, 1, 8, 1, 3));
    // the flat 16-lane tiles (on AVX-512): planes of 2, 4 and 1 vectors per row group
    check_direct(Case::new(2, 7, 16, 13, 3));
    check_direct(Case::new(5, 9, 4, 7, 3));
    check_direct(Case::new(1, 5, 32, 6, 3));
    check_direct(Case {
        pad: [2, 0, 0, 2],
        ..Case::new(2, 5, 9, 7, 3)
    });
    check_direct(Case {
        pad: [0, 0, 0, 0],
        ..Case::new(2, 3, 3, 2, 3)
    });
}

/// Checks `case` and that it ran through the flat 16-lane kernels (where the CPU has them).
fn check_flat(case: Case) {
    let g = case.geometry();
    assert!(super::flat::fits(&g), "{case:?}");
    assert_eq!(
        direct::applies(&g),
        direct::Tiles::best() == direct::Tiles::Avx512,
        "{case:?}"
    );
    check(case);
}

#[test]
fn flat_kernels_match_the_reference() {
    // stride 2 onto 4 × 4 (one vector a plane: tiles across images), 8 × 8, 4 × 8 and
    // 16 × 16 (the input gradient's rows a quarter, half and whole vector of pairs); more
    // channels than the 8-lane tiles take; a plane of 9 vectors (rows across vectors)
    check_flat(Case::new(5, 5, 8, 7, 3).stride(2));
    check_flat(Case::new(1, 3, 16, 13, 3).stride(2));
    check_flat(Case::new(2, 4, 8, 6, 3).stride(2).size([8, 16]));
    check_flat(Case::new(1, 4, 32, 5, 3).stride(2));
    // 4 × 12 outputs: the input gradient's rows do not fit its tiles, so it runs on GEMM
    check_flat(Case::new(2, 3, 8, 4, 3).stride(2).size([8, 24]));
    check_flat(Case::new(2, 70, 4, 66, 3));
    check_flat(Case::new(1, 3, 12, 5, 3));
}

/// Whether this CPU runs the Winograd kernels.
fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs Winograd's three passes on `case` directly (whatever [`winograd::chosen`] says) and
/// checks them against the f64 reference within 1e-4 relative error.
#[cfg(target_arch = "x86_64")]
fn check_winograd_kernels(case: Case) {
    let g = case.geometry();
    let Some(plan) = winograd::plan_of(&g) else {
        assert!(!has_avx512f(), "{case:?}: Winograd cannot run it");
        return;
    };
    let [oh, ow] = case.out();
    let x = values(case.n * case.cin * case.size[0] * case.size[1], 3);
    let w = values(case.weight_shape().iter().product(), 4);
    let dy = values(case.n * case.cout * oh * ow, 5);
    let [y, dx, dw, _] = case.reference(&x, &w, &[], &dy);
    let got = [
        winograd::forward(&plan, &x, &w),
        winograd::input_grad(&plan, &dy, &w),
        winograd::weight_grad(&plan, &x, &dy),
    ];
    for (name, (got, want)) in ["y", "dx", "dw"].iter().zip(got.iter().zip([&y, &dx, &dw])) {
        let err = rel_err(got, want);
        assert!(
            err <= 1e-4,
            "{case:?}: Winograd {name} relative error {err}"
        );
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn winograd_matches_the_reference_on_odd_shapes() {
    // odd planes (tiles half outside), channel counts that leave partial filter panels and
    // gradient tiles; a plane of one pixel; rows of more than 16 tiles and 32 columns (two
    // vectors of tiles, two deinterleaved chunks) with more than 64 outputs (two gradient
    // panels); many images of 4 × 4 in a block; tiles over several blocks (and segments)
    check_winograd_kernels(Case::new(3, 5, 1, 13, 3).size([5, 9]));
    check_winograd_kernels(Case::new(2, 7, 1, 3, 3));
    check_winograd_kernels(Case::new(1, 3, 1, 70, 3).size([6, 35]));
    check_winograd_kernels(Case::new(9, 8, 4, 8, 3));
    check_winograd_kernels(Case::new(40, 2, 6, 3, 3));
    // small planes read 16 tiles across tile rows (8 × 15: two rows of 8 tiles) and images
    // (8 × 8: a plane; 3 × 3 and 4 × 4: four images, the last group short)
    check_winograd_kernels(Case::new(3, 4, 1, 5, 3).size([8, 15]));
    check_winograd_kernels(Case::new(3, 4, 8, 5, 3));
    // 20 outputs: the weight gradient's tiles 32 channels wide (13 and 3: 16; 70: 64)
    check_winograd_kernels(Case::new(2, 9, 6, 20, 3));
    // weight-gradient sums too large for L2: its tasks split the points, not the blocks
    check_winograd_kernels(Case::new(2, 130, 3, 260, 3));
}

#[test]
fn winograd_runs_the_shapes_it_measured_faster_on() {
    // 64 and 16 → 32 channels with enough work
    for case in [Case::new(16, 64, 16, 64, 3), Case::new(32, 16, 32, 32, 3)] {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(winograd::chosen(&case.geometry()).is_some(), has_avx512f());
        check(case);
    }
    // not on less work, fewer tiles, fewer channels, planes smaller than 4 × 4, nor at stride 2
    #[cfg(target_arch = "x86_64")]
    for case in [
        Case::new(2, 64, 8, 64, 3),
        Case::new(8, 512, 4, 512, 3),
        Case::new(256, 8, 32, 8, 3),
        Case::new(256, 128, 3, 128, 3),
        Case::new(64, 128, 8, 128, 3).stride(2),
    ] {
        assert!(winograd::chosen(&case.geometry()).is_none(), "{case:?}");
    }
}

#[test]
fn the_reference_gradients_match_finite_differences() {
    let case = Case::new(2, 3, 4, 2, 3).stride(2);
    let [oh, ow] = case.out();
    let x = values(2 * 3 * 16, 1);
    let w = values(2 * 3 * 9, 2);
    let dy = values(2 * 2 * oh * ow, 3);
    let loss = |x: &[f32], w: &[f32]| -> f64 {
        let [y, ..] = case.reference(x, w, &[], &dy);
        y.iter().zip(&dy).map(|(y, &d)| y * f64::from(d)).sum()
    };
    let [_, dx, dw, _] = case.reference(&x, &w, &[], &dy);
    let h = 1e-2f32;
    for (which, grad) in [(0, &dx), (1, &dw)] {
        for (j, &want) in grad.iter().enumerate() {
            let (mut up, mut down) = ((x.clone(), w.clone()), (x.clone(), w.clone()));
            let (u, d) = if which == 0 {
                (&mut up.0[j], &mut down.0[j])
            } else {
                (&mut up.1[j], &mut down.1[j])
            };
            *u += h;
            *d -= h;
            let fd = (loss(&up.0, &up.1) - loss(&down.0, &down.1)) / f64::from(2.0 * h);
            assert!((fd - want).abs() < 1e-3, "{which} {j}: {fd} vs {want}");
        }
    }
}

/// `f` on a rayon pool of `threads` threads.
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // the direct kernels, and Winograd (on AVX-512) over three blocks of 24 images
    for case in [Case::new(40, 6, 5, 8, 3), Case::new(64, 128, 4, 128, 3)] {
        let on = |threads: usize| on_threads(threads, || run(&case, ConvKernel::Auto, 11));
        let one = on(1);
        for threads in [2, 3] {
            for (a, b) in one.iter().zip(&on(threads)) {
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b), "{case:?} on {threads} threads");
            }
        }
    }
}

#[test]
fn small_batches_split_by_channels_give_the_bits_of_one_thread() {
    // fewer blocks than threads: the direct kernels cut channels into parts (8 × 8 planes
    // take 4 images per block, so one block here; 13 and 9 channels leave uneven parts)
    for case in [
        Case::new(1, 9, 8, 13, 3),
        Case::new(2, 16, 8, 16, 3),
        Case::new(1, 8, 16, 4, 3),
    ] {
        check_direct(case);
        let on = |threads: usize| on_threads(threads, || run(&case, ConvKernel::Auto, 5));
        let bits = |v: &[Vec<f32>; 4]| -> Vec<Vec<u32>> {
            v.iter()
                .map(|t| t.iter().map(|f| f.to_bits()).collect())
                .collect()
        };
        let one = bits(&on(1));
        for threads in [2, 3, 5] {
            assert_eq!(one, bits(&on(threads)), "{case:?} on {threads} threads");
        }
    }
}

#[test]
fn the_burn_kernel_and_inconsistent_shapes_take_burns_convolution() {
    let case = Case::new(1, 2, 3, 2, 3);
    let device = Device::flex();
    let conv = case.conv(&values(36, 1), &[], &device);
    let x = Tensor::<4>::from_data(TensorData::new(values(18, 2), [1, 2, 3, 3]), &device);
    let y = conv2d(&conv, x.clone(), ConvKernel::Burn);
    assert_eq!(to_vec(y), to_vec(conv.forward(x.clone())));
    assert!(
        Geometry::of_conv(&conv, [1, 3, 3, 3]).is_none(),
        "channel mismatch"
    );
    assert!(Geometry::of_conv(&conv, [1, 2, 3, 3]).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_shapes_match_the_reference(
        n in 1usize..4, cg in 1usize..4, og in 1usize..4, groups in 1usize..3,
        h in 1usize..7, w in 1usize..7, kh in 1usize..4, kw in 1usize..4,
        sh in 1usize..3, sw in 1usize..3, ph in 0usize..2, pw in 0usize..2,
    ) {
        let case = Case {
            n, cin: cg * groups, size: [h, w], cout: og * groups, kernel: [kh, kw],
            stride: [sh, sw], pad: [ph, pw, ph, pw], dilation: [1, 1], groups, bias: false,
        };
        prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
        check(case);
    }

    #[test]
    fn random_3x3_shapes_match_the_reference_on_the_direct_kernels(
        n in 1usize..4, cin in 1usize..10, cout in 1usize..20, h in 1usize..12,
        w in 1usize..20, pad in proptest::array::uniform4(0usize..3),
    ) {
        prop_assume!(h + pad[0] + pad[2] >= 3 && w + pad[1] + pad[3] >= 3);
        check_direct(Case { pad, ..Case::new(n, cin, 1, cout, 3) }.size([h, w]));
    }
}
