//! `WarpBackend` for `Fusion<B>` (what `burn::backend::Cuda` / `Wgpu` are with Burn's `fusion`
//! feature): the warp is registered as a fusion *custom operation* (`OperationIr::Custom`), the way
//! burn-vision 0.21 registers its CubeCL kernels. The fusion stream treats it as an opaque op: it
//! is not fused with neighbours (element-wise chains before and after it still fuse among
//! themselves), it is ordered correctly with the other queued ops, and at execution time it calls
//! `B::warp` / `B::warp_backward` on the inner backend's tensors, i.e. the CubeCL kernels.
//! (The alternative, reading the inner tensors out of the fusion client outside of the stream, would
//! force a sync of the queue on every call.)

use crate::WarpBackend;
use burn::tensor::ops::FloatTensor;
use burn_fusion::{
    Fusion, FusionBackend, FusionRuntime,
    stream::{Operation, OperationStreams},
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use core::marker::PhantomData;

#[derive(Clone, Debug)]
struct WarpOp<B> {
    desc: CustomOpIr,
    _b: PhantomData<B>,
}

impl<B: FusionBackend + WarpBackend> Operation<B::FusionRuntime> for WarpOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([img, flow], [out]) = self.desc.as_fixed();
        let img = handles.get_float_tensor::<B>(img);
        let flow = handles.get_float_tensor::<B>(flow);
        let output = B::warp(img, flow);
        handles.register_float_tensor::<B>(&out.id, output);
    }
}

#[derive(Clone, Debug)]
struct WarpBackwardOp<B> {
    desc: CustomOpIr,
    _b: PhantomData<B>,
}

impl<B: FusionBackend + WarpBackend> Operation<B::FusionRuntime> for WarpBackwardOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([img, flow, grad_out], [grad_img, grad_flow]) = self.desc.as_fixed();
        let img = handles.get_float_tensor::<B>(img);
        let flow = handles.get_float_tensor::<B>(flow);
        let grad_out = handles.get_float_tensor::<B>(grad_out);
        let (gi, gf) = B::warp_backward(img, flow, grad_out);
        handles.register_float_tensor::<B>(&grad_img.id, gi);
        handles.register_float_tensor::<B>(&grad_flow.id, gf);
    }
}

impl<B: FusionBackend + WarpBackend> WarpBackend for Fusion<B> {
    fn warp(img: FloatTensor<Self>, flow: FloatTensor<Self>) -> FloatTensor<Self> {
        let client = img.client.clone();
        let streams = OperationStreams::with_inputs([&img, &flow]);
        let out = TensorIr::uninit(client.create_empty_handle(), img.shape.clone(), img.dtype);
        let desc = CustomOpIr::new("vsr_warp", &[img.into_ir(), flow.into_ir()], &[out]);
        client
            .register(
                streams,
                OperationIr::Custom(desc.clone()),
                WarpOp::<B> {
                    desc,
                    _b: PhantomData,
                },
            )
            .output()
    }

    fn warp_backward(
        img: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = img.client.clone();
        let streams = OperationStreams::with_inputs([&img, &flow, &grad_out]);
        let grad_img = TensorIr::uninit(client.create_empty_handle(), img.shape.clone(), img.dtype);
        let grad_flow =
            TensorIr::uninit(client.create_empty_handle(), flow.shape.clone(), flow.dtype);
        let desc = CustomOpIr::new(
            "vsr_warp_backward",
            &[img.into_ir(), flow.into_ir(), grad_out.into_ir()],
            &[grad_img, grad_flow],
        );
        let [grad_img, grad_flow] = client
            .register(
                streams,
                OperationIr::Custom(desc.clone()),
                WarpBackwardOp::<B> {
                    desc,
                    _b: PhantomData,
                },
            )
            .outputs();
        (grad_img, grad_flow)
    }
}
