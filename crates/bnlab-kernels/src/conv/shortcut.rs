//! ResNet's option-A shortcut (He et al. 2016, the CIFAR ResNets): x subsampled by the block's
//! stride, with zero channels split around it, in one pass each way on Flex. Elsewhere, and
//! under [`ConvKernel::Burn`], Burn's stepped slice and concatenation, which stay the
//! reference (on Flex they took 2–3 % of a ResNet-20 step: a copy for the slice, zeros and a
//! copy for the concatenation, and the same again backward).

use std::mem::MaybeUninit;

use super::FastConv;
use super::extension::{ConvKernel, on_flex_f32};
use crate::filled;
use burn::backend::Dispatch;
use burn::tensor::{Slice, Tensor, TensorCreationOptions};

/// The shape of one option-A shortcut: x [N, C, H, W], its stride, and the zero channels
/// before and after x's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZeroPad {
    /// x's shape.
    pub x: [usize; 4],
    /// Rows and columns 0, stride, 2·stride, … are kept.
    pub stride: usize,
    /// Zero channels before x's, and after.
    pub pad: [usize; 2],
}

impl ZeroPad {
    /// The output's height and width: ⌈H/stride⌉, ⌈W/stride⌉.
    fn out(&self) -> [usize; 2] {
        let [_, _, h, w] = self.x;
        [h.div_ceil(self.stride), w.div_ceil(self.stride)]
    }

    /// The output's shape [N, before + C + after, ⌈H/s⌉, ⌈W/s⌉].
    pub(crate) fn output_shape(&self) -> Vec<usize> {
        let [n, c, _, _] = self.x;
        let [oh, ow] = self.out();
        vec![n, self.pad[0] + c + self.pad[1], oh, ow]
    }

    /// The shortcut of `x`, examples in parallel.
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let [n, c, h, w] = self.x;
        let [oh, ow] = self.out();
        let s = self.stride;
        let plane = oh * ow;
        let example = (self.pad[0] + c + self.pad[1]) * plane;
        assert_eq!(
            x.len(),
            n * c * h * w,
            "an option-A shortcut of another shape"
        );
        filled(n * example, example, 1, |i, out| {
            let (before, rest) = out.split_at_mut(self.pad[0] * plane);
            let (kept, after) = rest.split_at_mut(c * plane);
            before.fill(MaybeUninit::new(0.0));
            after.fill(MaybeUninit::new(0.0));
            for (ch, out) in kept.chunks_mut(plane).enumerate() {
                let src = &x[(i * c + ch) * h * w..][..h * w];
                for (r, row) in out.chunks_mut(ow).enumerate() {
                    let src = &src[r * s * w..][..w];
                    for (o, v) in row.iter_mut().zip(src.iter().step_by(s)) {
                        o.write(*v);
                    }
                }
            }
        })
        .0
    }

    /// ∂L/∂x given ∂L/∂y: ∂L/∂y at the kept pixels, zero elsewhere; examples in parallel.
    pub(crate) fn backward(&self, dy: &[f32]) -> Vec<f32> {
        let [n, c, h, w] = self.x;
        let [oh, ow] = self.out();
        let s = self.stride;
        let example = c * h * w;
        assert_eq!(
            dy.len(),
            self.output_shape().iter().product::<usize>(),
            "an option-A shortcut's gradient of another shape"
        );
        let dy_example = (self.pad[0] + c + self.pad[1]) * oh * ow;
        filled(n * example, example, 1, |i, out| {
            for (ch, out) in out.chunks_mut(h * w).enumerate() {
                let src = &dy[i * dy_example + (self.pad[0] + ch) * oh * ow..][..oh * ow];
                for (y, row) in out.chunks_mut(w).enumerate() {
                    if y % s != 0 {
                        row.fill(MaybeUninit::new(0.0));
                        continue;
                    }
                    let src = &src[y / s * ow..][..ow];
                    for (x, o) in row.iter_mut().enumerate() {
                        o.write(if x % s == 0 { src[x / s] } else { 0.0 });
                    }
                }
            }
        })
        .0
    }
}

/// ResNet's option-A shortcut of x [N, C, H, W]: rows and columns 0, stride, 2·stride, … of
/// each channel, with `pad` zero channels split around them (⌊pad/2⌋ before); through one pass
/// each way where `kernel` and the backend allow (f32 on Flex), else through Burn's operations,
/// with the same values and gradients.
pub fn zero_pad_shortcut(x: Tensor<4>, stride: usize, pad: usize, kernel: ConvKernel) -> Tensor<4> {
    let stride = stride.max(1);
    if stride == 1 && pad == 0 {
        return x;
    }
    let before = pad / 2;
    if kernel == ConvKernel::Auto && on_flex_f32(&x) {
        let shape = ZeroPad {
            x: x.dims(),
            stride,
            pad: [before, pad - before],
        };
        let out = <Dispatch as FastConv>::fast_zero_pad_shortcut(x.into_dispatch(), shape);
        return Tensor::from_dispatch(out);
    }
    let x = if stride > 1 {
        let every = Slice::new(0, None, stride as isize);
        x.slice([Slice::full(), Slice::full(), every, every])
    } else {
        x
    };
    if pad == 0 {
        return x;
    }
    let [n, _, h, w] = x.dims();
    let options = TensorCreationOptions::new(x.device()).with_dtype(x.dtype());
    let zeros = |c: usize| Tensor::<4>::zeros([n, c, h, w], options.clone());
    Tensor::cat(vec![zeros(before), x, zeros(pad - before)], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Values and the gradient of Σ y·k (k varying per output element), on `kernel`.
    fn run(shape: [usize; 4], stride: usize, pad: usize, kernel: ConvKernel) -> [Vec<f32>; 2] {
        let ad = Device::flex().autodiff();
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len).map(|i| (i % 97) as f32 * 0.25 - 7.0).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, shape), &ad).require_grad();
        let y = zero_pad_shortcut(x.clone(), stride, pad, kernel);
        let dims = y.dims();
        let k: Vec<f32> = (0..dims.iter().product())
            .map(|i| 1.0 + (i % 13) as f32)
            .collect();
        let k = Tensor::<4>::from_data(TensorData::new(k, dims), &ad);
        let out: Vec<f32> = y.to_data().try_to_vec().expect("f32 values");
        let grads = (y * k).sum().backward();
        let dx = x.grad(&grads).expect("x's gradient");
        [out, dx.to_data().try_to_vec().expect("f32 values")]
    }

    /// The one-pass shortcut gives the bits of Burn's slice and concatenation, values and
    /// gradient, on odd planes, strides 1 to 3 and any split of the zero channels.
    #[test]
    fn one_pass_shortcut_matches_burns_operations() {
        for shape in [[2, 3, 5, 7], [1, 4, 8, 8], [3, 1, 1, 2]] {
            for stride in 1..=3 {
                for pad in 0..=3 {
                    let ours = run(shape, stride, pad, ConvKernel::Auto);
                    let burn = run(shape, stride, pad, ConvKernel::Burn);
                    assert_eq!(ours, burn, "{shape:?} stride {stride} pad {pad}");
                    assert!(!ours[0].is_empty() && ours[1].iter().any(|&g| g != 0.0));
                }
            }
        }
    }

    /// Option A's shortcut against plain loops: rows and columns 0, 2, 4, … of each channel,
    /// zero channels split around them (1 before, 2 after), on odd planes; its gradient is the
    /// output gradient at those pixels and zero elsewhere.
    #[test]
    fn zero_pad_shortcut_subsamples_and_pads() {
        for kernel in [ConvKernel::Auto, ConvKernel::Burn] {
            subsamples_and_pads(kernel);
        }
    }

    fn subsamples_and_pads(kernel: ConvKernel) {
        let [n, c, h, w] = [2usize, 3, 5, 7];
        let values: Vec<f32> = (0..n * c * h * w).map(|i| i as f32 * 0.5 - 3.0).collect();
        let ad = Device::flex().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new(values.clone(), [n, c, h, w]), &ad)
            .require_grad();
        let y = zero_pad_shortcut(x.clone(), 2, 3, kernel);
        let [oh, ow] = [h.div_ceil(2), w.div_ceil(2)];
        assert_eq!(y.dims(), [n, c + 3, oh, ow]);
        let got: Vec<f32> = y.to_data().try_to_vec().expect("f32 values");
        for (i, &v) in got.iter().enumerate() {
            let (b, ch, r, col) = (
                i / ((c + 3) * oh * ow),
                i / (oh * ow) % (c + 3),
                i / ow % oh,
                i % ow,
            );
            let want = if (1..=c).contains(&ch) {
                values[((b * c + ch - 1) * h + 2 * r) * w + 2 * col]
            } else {
                0.0
            };
            assert_eq!(v, want, "{kernel:?} output {i}");
        }
        // ∂(Σ y·k)/∂x with k = 1 + the output index: k at the kept pixels, 0 elsewhere
        let k: Vec<f32> = (0..got.len()).map(|i| 1.0 + i as f32).collect();
        let k = Tensor::<4>::from_data(TensorData::new(k, y.dims()), &ad);
        let grads = (y * k).sum().backward();
        let dx: Vec<f32> = x
            .grad(&grads)
            .expect("x's gradient")
            .to_data()
            .try_to_vec()
            .expect("f32");
        for (i, &g) in dx.iter().enumerate() {
            let (b, ch, r, col) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
            let want = if r % 2 == 0 && col % 2 == 0 {
                1.0 + ((((b * (c + 3) + ch + 1) * oh + r / 2) * ow) + col / 2) as f32
            } else {
                0.0
            };
            assert_eq!(g, want, "{kernel:?} gradient {i}");
        }
    }
}
