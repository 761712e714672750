//! `WarpBackend` for `Autodiff<B, C>`: the forward is `B::warp`, the backward `B::warp_backward`
//! (the kernels on CubeCL backends, the tensor-op reference elsewhere).

use crate::WarpBackend;
use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::tensor::ops::FloatTensor;

#[derive(Debug)]
struct WarpBackward;

impl<B: WarpBackend> Backward<B, 2> for WarpBackward {
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_img, node_flow] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (img_id, flow_id) = ops.state;
        let img: FloatTensor<B> = checkpointer.retrieve_node_output(img_id);
        let flow: FloatTensor<B> = checkpointer.retrieve_node_output(flow_id);
        let (grad_img, grad_flow) = B::warp_backward(img, flow, grad);
        if let Some(node) = node_img {
            grads.register::<B>(node.id, grad_img);
        }
        if let Some(node) = node_flow {
            grads.register::<B>(node.id, grad_flow);
        }
    }
}

impl<B: WarpBackend, C: CheckpointStrategy> WarpBackend for Autodiff<B, C> {
    fn warp(img: FloatTensor<Self>, flow: FloatTensor<Self>) -> FloatTensor<Self> {
        match WarpBackward
            .prepare::<C>([img.node.clone(), flow.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let img_id = prep.checkpoint(&img);
                let flow_id = prep.checkpoint(&flow);
                let out = B::warp(img.primitive, flow.primitive);
                prep.finish((img_id, flow_id), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::warp(img.primitive, flow.primitive)),
        }
    }
}
