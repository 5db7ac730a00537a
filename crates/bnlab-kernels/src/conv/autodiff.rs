//! The fast convolution under autodiff: `fast_conv2d` registers a hand-written backward that
//! computes the input and weight gradients in one pass over the blocks.

use burn::backend::Flex;
use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;

use crate::{f32_values, flex_tensor};

use super::FastConv;
use super::geometry::Geometry;
use super::passes;
use super::shortcut::ZeroPad;

/// Backward of `fast_conv2d` over (x, weight).
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    /// x, weight and the geometry of the forward call.
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, geometry) = ops.state;
        let w_shape = burn::backend::TensorMetadata::shape(&weight).to_vec();
        let x_shape = burn::backend::TensorMetadata::shape(&x).to_vec();
        let (dx, dw) = passes::backward(
            &geometry,
            &f32_values(&x),
            &f32_values(&weight),
            &f32_values(&dy),
            node_x.is_some(),
            node_w.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, flex_tensor(dx, x_shape));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, flex_tensor(dw, w_shape));
        }
    }
}

/// Backward of `fast_zero_pad_shortcut` over x.
#[derive(Debug)]
struct ZeroPadBackward;

impl Backward<Flex, 1> for ZeroPadBackward {
    /// The shortcut's shape.
    type State = ZeroPad;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<Flex>(&ops.node);
        if let [Some(node)] = ops.parents {
            let shape = ops.state;
            let dx = shape.backward(&f32_values(&dy));
            grads.register::<Flex>(node.id, flex_tensor(dx, shape.x.to_vec()));
        }
    }
}

impl<C: CheckpointStrategy> FastConv for Autodiff<Flex, C> {
    fn fast_zero_pad_shortcut(x: FloatTensor<Self>, shape: ZeroPad) -> FloatTensor<Self> {
        match ZeroPadBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                shape,
                Flex::fast_zero_pad_shortcut(x.into_primitive(), shape),
            ),
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::fast_zero_pad_shortcut(x.into_primitive(), shape))
            }
        }
    }

    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self> {
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
                let y = Flex::fast_conv2d(xp.clone(), wp.clone(), geometry);
                prep.finish((xp, wp, geometry), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fast_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                geometry,
            )),
        }
    }
}
