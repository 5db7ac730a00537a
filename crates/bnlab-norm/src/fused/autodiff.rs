//! The fused path under autodiff, for any backend with the fused kernels: the statistics are
//! not differentiated (the backward accounts for them), and `fused_norm_apply` and
//! `fused_norm_units` register a hand-written backward.

use std::marker::PhantomData;
use std::sync::Arc;

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, TensorMetadata};
use burn::tensor::TensorData;

use super::{FusedNorm, FusedNormBackward, FusedStats, host_values};

/// Backward of `fused_norm_apply` (and `fused_norm_units`) over (x, scale, shift).
#[derive(Debug)]
struct FusedBackward<B>(PhantomData<B>);

impl<B: FusedNormBackward> Backward<B, 3> for FusedBackward<B> {
    /// x, scale, shift and the plan of the forward call.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        Arc<FusedStats>,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, scale, shift, plan) = ops.state;
        let parents = ops.parents.map(|p| p.map(|node| node.id));
        register_grads::<B>(grads, parents, dy, [x, scale, shift], &plan);
    }
}

/// Backward of `fused_norm_apply_add_relu` over (x, scale, shift, residual).
#[derive(Debug)]
struct FusedAddReluBackward<B>(PhantomData<B>);

impl<B: FusedNormBackward> Backward<B, 4> for FusedAddReluBackward<B> {
    /// x, scale, shift, the output and the plan of the forward call.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        Arc<FusedStats>,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_scale, node_shift, node_residual] =
            ops.parents.map(|p| p.map(|node| node.id));
        let dy = grads.consume::<B>(&ops.node);
        let (x, scale, shift, y, plan) = ops.state;
        // the ReLU's gradient (what passed it: y > 0 or NaN), the residual's and the layer's
        let dz = B::relu_backward(y, dy);
        if let Some(node) = node_residual {
            grads.register::<B>(node, dz.clone());
        }
        let parents = [node_x, node_scale, node_shift];
        register_grads::<B>(grads, parents, dz, [x, scale, shift], &plan);
    }
}

/// Registers the gradients of the fused normalization's parents (x, scale, shift) given ∂L/∂y.
fn register_grads<B: FusedNormBackward>(
    grads: &mut Gradients,
    [node_x, node_scale, node_shift]: [Option<NodeId>; 3],
    dy: FloatTensor<B>,
    [x, scale, shift]: [FloatTensor<B>; 3],
    plan: &FusedStats,
) {
    let want_affine = node_scale.is_some() || node_shift.is_some();
    let scale_shape = scale.shape();
    let device = scale.device();
    let out = B::fused_norm_backward(dy, x, scale, shift, plan, node_x.is_some(), want_affine);
    let affine_grad = |v: Vec<f64>| {
        let v: Vec<f32> = v.into_iter().map(|g| g as f32).collect();
        B::float_from_data(TensorData::new(v, scale_shape.clone()), &device)
    };
    if let (Some(node), Some(dx)) = (node_x, out.dx) {
        grads.register::<B>(node, dx);
    }
    if let Some(node) = node_scale {
        grads.register::<B>(node, affine_grad(out.dscale));
    }
    if let Some(node) = node_shift {
        grads.register::<B>(node, affine_grad(out.dshift));
    }
}

impl<B: FusedNormBackward, C: CheckpointStrategy> FusedNorm for Autodiff<B, C> {
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::fused_norm_sums(x.into_primitive(), cpg))
    }

    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self> {
        match FusedBackward::<B>(PhantomData)
            .prepare::<C>([x.node(), scale.node(), shift.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, sp) = (x.primitive().clone(), scale.primitive().clone());
                let bp = shift.into_primitive();
                let y = B::fused_norm_apply(xp.clone(), sp.clone(), bp.clone(), plan.clone());
                prep.finish((xp, sp, bp, plan), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_norm_apply(
                x.into_primitive(),
                scale.into_primitive(),
                shift.into_primitive(),
                plan,
            )),
        }
    }

    fn fused_norm_apply_add_relu(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), scale.node(), shift.node(), residual.node()];
        match FusedAddReluBackward::<B>(PhantomData)
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, sp) = (x.primitive().clone(), scale.primitive().clone());
                let bp = shift.into_primitive();
                let y = B::fused_norm_apply_add_relu(
                    xp.clone(),
                    sp.clone(),
                    bp.clone(),
                    residual.into_primitive(),
                    plan.clone(),
                );
                prep.finish((xp, sp, bp, y.clone(), plan), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_norm_apply_add_relu(
                x.into_primitive(),
                scale.into_primitive(),
                shift.into_primitive(),
                residual.into_primitive(),
                plan,
            )),
        }
    }

    fn fused_norm_units(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedStats>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (xp, sp) = (x.primitive().clone(), scale.primitive().clone());
        let bp = shift.primitive().clone();
        let (y, sums) = B::fused_norm_units(xp.clone(), sp.clone(), bp.clone(), plan.clone());
        let y = match FusedBackward::<B>(PhantomData)
            .prepare::<C>([x.node(), scale.node(), shift.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let values = host_values::<B>(vec![sums.clone()]);
                let plan = Arc::new((*plan).clone().with_unit_stats(&values[0]));
                prep.finish((xp, sp, bp, plan), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, <Self as AutodiffBackend>::from_inner(sums))
    }
}
