//! A backward seeded with a given ∂L/∂y, as PyTorch's `y.backward(dy)`: the layer benchmarks
//! (`bench norm`, `bench conv`) time a layer's own backward, not a loss's. The caller's dy is
//! shared, never written: the layer's backward sees it with a second owner. (Burn's `y.backward()` seeds with a
//! tensor of ones filled on one thread, and `y.sum().backward()` fills ones and multiplies
//! them by the scalar's gradient: one to three passes over y that are not the layer's.)

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;

/// A scalar whose gradient with respect to y is a given tensor.
#[backend_extension(Flex, Cube: cfg(any(feature = "vulkan", feature = "cuda")), Autodiff)]
pub(crate) trait SeededLoss: Backend {
    /// A one-element tensor (0) whose backward gives y the gradient `dy` (y's shape), as is.
    fn seeded_loss(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The loss value: a zero on y's device (nothing of y is read).
fn zero<B: Backend>(y: &FloatTensor<B>) -> FloatTensor<B> {
    use burn::backend::TensorMetadata;
    B::float_zeros([1].into(), &y.device(), y.dtype().into())
}

impl SeededLoss for Flex {
    fn seeded_loss(y: FloatTensor<Self>, _dy: FloatTensor<Self>) -> FloatTensor<Self> {
        zero::<Self>(&y)
    }
}

#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl SeededLoss for burn::backend::Cube {
    fn seeded_loss(y: FloatTensor<Self>, _dy: FloatTensor<Self>) -> FloatTensor<Self> {
        zero::<Self>(&y)
    }
}

/// Backward of [`SeededLoss::seeded_loss`]: y's gradient is the stored dy.
#[derive(Debug)]
struct Seed;

impl<B: Backend> Backward<B, 1> for Seed {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        // the loss's own gradient (the one-element seed) is not needed
        let _ = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, ops.state);
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> SeededLoss for Autodiff<B, C> {
    fn seeded_loss(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let value = zero::<B>(y.primitive());
        let dy = dy.into_primitive();
        match Seed.prepare::<C>([y.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(dy, value),
            OpsKind::UnTracked(prep) => prep.finish(value),
        }
    }
}

/// Runs the backward of the graph behind `y` with ∂L/∂y = `dy` (y's shape, no gradient of its
/// own).
pub fn backward_with<const D: usize>(y: Tensor<D>, dy: &Tensor<D>) {
    let loss = <Dispatch as SeededLoss>::seeded_loss(y.into_dispatch(), dy.clone().into_dispatch());
    let _ = Tensor::<1>::from_dispatch(loss).backward();
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    /// The gradient that reaches x through y = 3·x² is dy·6x, for a dy that is not all ones.
    #[test]
    fn the_seed_reaches_the_graph_as_given() {
        let device = Device::default().autodiff();
        let x =
            Tensor::<1>::from_data(TensorData::from([1.0f32, -2.0, 0.5]), &device).require_grad();
        let y = x.clone().powf_scalar(2.0).mul_scalar(3.0);
        let dy = Tensor::<1>::from_data(TensorData::from([2.0f32, 0.5, -4.0]), &device);
        let loss = <burn::backend::Dispatch as super::SeededLoss>::seeded_loss(
            y.into_dispatch(),
            dy.into_dispatch(),
        );
        let grads = Tensor::<1>::from_dispatch(loss).backward();
        let got = x.grad(&grads).expect("x has a gradient");
        let got: Vec<f32> = got.into_data().try_to_vec().expect("f32 values");
        let want = [2.0 * 6.0 * 1.0, 0.5 * 6.0 * -2.0, -4.0 * 6.0 * 0.5];
        assert_eq!(got, want);
    }
}
