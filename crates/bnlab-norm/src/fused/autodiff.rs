//! The fused path under autodiff: the statistics are not differentiated (the backward
//! accounts for them), and `fused_norm_apply` registers a hand-written backward.

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;

use super::{FusedNorm, FusedPlan, f32_values, flex_tensor};

/// Backward of `fused_norm_apply` over (x, scale, shift).
#[derive(Debug)]
struct FusedBackward;

impl Backward<Flex, 3> for FusedBackward {
    /// x, scale and the plan of the forward call.
    type State = (FlexTensor, FlexTensor, Arc<FusedPlan>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_scale, node_shift] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, scale, plan) = ops.state;
        let want_affine = node_scale.is_some() || node_shift.is_some();
        let scale_shape = burn::backend::TensorMetadata::shape(&scale).to_vec();
        let out = plan.backward(
            &f32_values(&dy),
            &f32_values(&x),
            &f32_values(&scale),
            node_x.is_some(),
            want_affine,
        );
        let to_f32 = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|g| g as f32).collect() };
        if let (Some(node), Some(dx)) = (node_x, out.dx) {
            grads.register::<Flex>(node.id, flex_tensor(dx, plan.shape.to_vec()));
        }
        if let Some(node) = node_scale {
            grads.register::<Flex>(
                node.id,
                flex_tensor(to_f32(out.dscale), scale_shape.clone()),
            );
        }
        if let Some(node) = node_shift {
            grads.register::<Flex>(node.id, flex_tensor(to_f32(out.dshift), scale_shape));
        }
    }
}

impl<C: CheckpointStrategy> FusedNorm for Autodiff<Flex, C> {
    fn fused_norm_sums(x: FloatTensor<Self>, cpg: usize) -> FloatTensor<Self> {
        let device = burn::backend::flex::FlexDevice;
        let sums = Flex::fused_norm_sums(x.into_primitive(), cpg).into_data();
        Self::float_from_data(sums, &device)
    }

    fn fused_norm_apply(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedPlan>,
    ) -> FloatTensor<Self> {
        match FusedBackward
            .prepare::<C>([x.node(), scale.node(), shift.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, sp) = (x.primitive().clone(), scale.primitive().clone());
                let y = Flex::fused_norm_apply(
                    xp.clone(),
                    sp.clone(),
                    shift.into_primitive(),
                    plan.clone(),
                );
                prep.finish((xp, sp, plan), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_norm_apply(
                x.into_primitive(),
                scale.into_primitive(),
                shift.into_primitive(),
                plan,
            )),
        }
    }

    fn fused_norm_units(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        plan: Arc<FusedPlan>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (xp, sp) = (x.primitive().clone(), scale.primitive().clone());
        let (y, sums) = Flex::fused_norm_units(
            xp.clone(),
            sp.clone(),
            shift.primitive().clone(),
            plan.clone(),
        );
        let sums = sums.into_data();
        let values = sums.try_to_vec::<f64>().unwrap_or_default();
        let sums = Self::float_from_data(sums, &burn::backend::flex::FlexDevice);
        let y = match FusedBackward
            .prepare::<C>([x.node(), scale.node(), shift.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let plan = Arc::new((*plan).clone().with_unit_stats(&values));
                prep.finish((xp, sp, plan), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, sums)
    }
}
