//! `ConvBackend` for CubeCL backends: f32 convolutions through Burn's direct kernels
//! (`ConvStrategy::Direct`, `ConvTranspose2dStrategy::Direct`: one thread per output element,
//! f32 multiply-add), instead of autotune, whose tensor-core candidates compute in TF32.
//! `Fusion<B>` registers them as custom operations, like the warp (see `super::fusion`).
//!
//! Training convolutions take their weight gradient from the tap products
//! ([`WeightGrad::Taps`]: batched matrix products, split over row blocks) unless `VSR_WGRAD`
//! says otherwise. Burn 0.21's own (`conv2d_weight_backward`) is autotuned among implicit GEMMs
//! and a fallback that runs the *forward* convolution's autotune with the output gradient as the
//! kernel (512x960 taps at VSRNet's size; one of its candidates, an im2col, asks for a 28 GB
//! buffer and fails). Same build, same H100 (2026-11-27, `vsr bench step --backend cuda`, batch
//! 3, 512x960, fp32): 461.3 ms a step with Burn's, 359.4 with the tap products (VSRNet forward +
//! backward 427.7 -> 325.7 ms); first step with every other shape already tuned 99.8 s against
//! 47.3 s (Burn's weight-gradient candidates timed at conv1-3's shapes).

use crate::conv::ConvBackend;
use crate::conv_grad::WeightGrad;
use burn::tensor::ops::{
    ConvOptions, ConvTransposeOptions, FloatTensor,
    conv::{calculate_conv_output_size, calculate_conv_transpose_output_size},
};
use burn_cubecl::{
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement,
    kernel::conv::{ConvStrategy, ConvTranspose2dStrategy, conv_forward, conv_transpose2d},
};
use burn_fusion::{
    Fusion, FusionBackend, FusionRuntime,
    stream::{Operation, OperationStreams},
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use core::marker::PhantomData;

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> ConvBackend
    for CubeBackend<R, F, I, BT>
{
    const WEIGHT_GRAD: WeightGrad = WeightGrad::Taps;

    fn conv2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        // The direct kernel has no shape constraints; an error would be a Burn bug.
        conv_forward::<R, 2>(x, weight, bias, options, ConvStrategy::Direct)
            .unwrap_or_else(|e| panic!("direct conv2d: {e:?}"))
    }

    fn conv_transpose2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        conv_transpose2d(x, weight, bias, options, ConvTranspose2dStrategy::Direct)
            .unwrap_or_else(|e| panic!("direct conv_transpose2d: {e:?}"))
    }
}

/// Options of either convolution, carried by the custom operation.
#[derive(Clone, Debug)]
enum Kind {
    Conv(ConvOptions<2>),
    Transpose(ConvTransposeOptions<2>),
}

#[derive(Clone, Debug)]
struct ConvF32Op<B> {
    desc: CustomOpIr,
    kind: Kind,
    _b: PhantomData<B>,
}

impl<B: FusionBackend + ConvBackend> Operation<B::FusionRuntime> for ConvF32Op<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs: Vec<_> = self
            .desc
            .inputs
            .iter()
            .map(|t| handles.get_float_tensor::<B>(t))
            .collect();
        let mut inputs = inputs.into_iter();
        let (x, weight, bias) = (
            inputs.next().expect("x"),
            inputs.next().expect("weight"),
            inputs.next(),
        );
        let out = match &self.kind {
            Kind::Conv(options) => B::conv2d_f32(x, weight, bias, options.clone()),
            Kind::Transpose(options) => B::conv_transpose2d_f32(x, weight, bias, options.clone()),
        };
        handles.register_float_tensor::<B>(&self.desc.outputs[0].id, out);
    }
}

fn register<B: FusionBackend + ConvBackend>(
    name: &'static str,
    x: FloatTensor<Fusion<B>>,
    weight: FloatTensor<Fusion<B>>,
    bias: Option<FloatTensor<Fusion<B>>>,
    out_shape: burn::tensor::Shape,
    kind: Kind,
) -> FloatTensor<Fusion<B>> {
    let client = x.client.clone();
    let dtype = x.dtype;
    let streams = match &bias {
        Some(b) => OperationStreams::with_inputs([&x, &weight, b]),
        None => OperationStreams::with_inputs([&x, &weight]),
    };
    let out = TensorIr::uninit(client.create_empty_handle(), out_shape, dtype);
    let mut inputs = vec![x.into_ir(), weight.into_ir()];
    inputs.extend(bias.map(|b| b.into_ir()));
    let desc = CustomOpIr::new(name, &inputs, &[out]);
    client
        .register(
            streams,
            OperationIr::Custom(desc.clone()),
            ConvF32Op::<B> {
                desc,
                kind,
                _b: PhantomData,
            },
        )
        .output()
}

impl<B: FusionBackend + ConvBackend> ConvBackend for Fusion<B> {
    const WEIGHT_GRAD: WeightGrad = B::WEIGHT_GRAD;

    fn conv2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let [b, _, h, w] = x.shape.dims();
        let [cout, _, kh, kw] = weight.shape.dims();
        let size = |n: usize, k: usize, i: usize| {
            calculate_conv_output_size(
                k,
                options.stride[i],
                options.padding[i],
                options.dilation[i],
                n,
            )
        };
        let shape = burn::tensor::Shape::new([b, cout, size(h, kh, 0), size(w, kw, 1)]);
        register::<B>(
            "vsr_conv2d_f32",
            x,
            weight,
            bias,
            shape,
            Kind::Conv(options),
        )
    }

    fn conv_transpose2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        let [b, _, h, w] = x.shape.dims();
        let [_, cout_per_group, kh, kw] = weight.shape.dims();
        let size = |n: usize, k: usize, i: usize| {
            calculate_conv_transpose_output_size(
                k,
                options.stride[i],
                options.padding[i],
                options.padding_out[i],
                options.dilation[i],
                n,
            )
        };
        let shape = burn::tensor::Shape::new([
            b,
            cout_per_group * options.groups,
            size(h, kh, 0),
            size(w, kw, 1),
        ]);
        register::<B>(
            "vsr_conv_transpose2d_f32",
            x,
            weight,
            bias,
            shape,
            Kind::Transpose(options),
        )
    }
}
