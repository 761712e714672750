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

use crate::conv::{BatchNormAct, ConvBackend};
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
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
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

    fn vendor_conv() -> bool {
        #[cfg(feature = "cuda")]
        return cuda::is_cuda::<R>() && super::cudnn::available();
        #[cfg(not(feature = "cuda"))]
        false
    }

    fn vendor_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        #[cfg(feature = "cuda")]
        return vendor_forward::<R, F, I, BT>(x, weight, bias, &options);
        #[cfg(not(feature = "cuda"))]
        unreachable!("vendor_conv2d without the cuda feature: {x:?} {weight:?} {bias:?} {options:?}")
    }

    fn vendor_nhwc() -> bool {
        Self::vendor_conv()
    }

    fn vendor_net_nhwc(inputs: Vec<FloatTensor<Self>>, net: &crate::channels_last::Net) -> Vec<FloatTensor<Self>> {
        #[cfg(feature = "cuda")]
        if Self::vendor_nhwc() {
            let inputs = inputs.into_iter().map(cuda::to_cuda).collect();
            return super::net::run(inputs, net).into_iter().map(cuda::from_cuda).collect();
        }
        crate::channels_last::run_reference::<Self>(inputs, net)
    }

    fn vendor_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        #[cfg(feature = "cuda")]
        return vendor_transpose::<R, F, I, BT>(x, weight, bias, &options);
        #[cfg(not(feature = "cuda"))]
        unreachable!("vendor_conv_transpose2d without the cuda feature: {x:?} {weight:?} {bias:?} {options:?}")
    }

    fn vendor_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        need: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        #[cfg(feature = "cuda")]
        {
            use super::cudnn::Pass;
            let g = conv_geometry(x.meta.shape().dims(), weight.meta.shape().dims(), &options, false);
            let gx = need[0].then(|| cuda::convolve::<R>(Pass::Data, g, weight, output_grad.clone()));
            let gw = need[1].then(|| cuda::convolve::<R>(Pass::Filter, g, x, output_grad));
            [gx, gw]
        }
        #[cfg(not(feature = "cuda"))]
        unreachable!("vendor_conv2d_backward without the cuda feature: {x:?} {weight:?} {output_grad:?} {options:?} {need:?}")
    }

    fn own_batch_norm(shape: [usize; 4]) -> bool {
        #[cfg(feature = "cuda")]
        return cuda::is_cuda::<R>() && crate::batch_norm::cube::takes(shape);
        #[cfg(not(feature = "cuda"))]
        {
            let _ = shape;
            false
        }
    }

    fn own_batch_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running: [FloatTensor<Self>; 2],
        settings: BatchNormAct,
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2], [FloatTensor<Self>; 4]) {
        #[cfg(feature = "cuda")]
        {
            let (y, new, saved) = crate::batch_norm::cube::forward(
                cuda::to_cuda(x),
                cuda::to_cuda(gamma),
                cuda::to_cuda(beta),
                running.map(cuda::to_cuda),
                settings.momentum,
                settings.epsilon,
                settings.slope,
            );
            (cuda::from_cuda(y), new.map(cuda::from_cuda), saved.map(cuda::from_cuda))
        }
        #[cfg(not(feature = "cuda"))]
        unreachable!("own_batch_norm_forward without the cuda feature: {x:?} {gamma:?} {beta:?} {running:?} {settings:?}")
    }

    fn own_batch_norm_backward(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        saved: [FloatTensor<Self>; 4],
        settings: BatchNormAct,
    ) -> [FloatTensor<Self>; 3] {
        #[cfg(feature = "cuda")]
        {
            let gs = crate::batch_norm::cube::backward(
                cuda::to_cuda(x),
                cuda::to_cuda(output_grad),
                saved.map(cuda::to_cuda),
                settings.slope,
            );
            gs.map(cuda::from_cuda)
        }
        #[cfg(not(feature = "cuda"))]
        unreachable!("own_batch_norm_backward without the cuda feature: {x:?} {output_grad:?} {saved:?} {settings:?}")
    }
}

/// [`ConvBackend::vendor_conv2d`].
#[cfg(feature = "cuda")]
fn vendor_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: FloatTensor<CubeBackend<R, F, I, BT>>,
    weight: FloatTensor<CubeBackend<R, F, I, BT>>,
    bias: Option<FloatTensor<CubeBackend<R, F, I, BT>>>,
    options: &ConvOptions<2>,
) -> FloatTensor<CubeBackend<R, F, I, BT>> {
    let weight = same_dtype::<R, F, I, BT>(weight, x.dtype);
    let g = conv_geometry(x.meta.shape().dims(), weight.meta.shape().dims(), options, false);
    convolve_with_bias::<R, F, I, BT>(super::cudnn::Pass::Forward, g, [x, weight], bias)
}

/// [`ConvBackend::vendor_conv_transpose2d`].
#[cfg(feature = "cuda")]
fn vendor_transpose<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: FloatTensor<CubeBackend<R, F, I, BT>>,
    weight: FloatTensor<CubeBackend<R, F, I, BT>>,
    bias: Option<FloatTensor<CubeBackend<R, F, I, BT>>>,
    options: &ConvTransposeOptions<2>,
) -> FloatTensor<CubeBackend<R, F, I, BT>> {
    let weight = same_dtype::<R, F, I, BT>(weight, x.dtype);
    let g = transpose_geometry(x.meta.shape().dims(), weight.meta.shape().dims(), options, false);
    convolve_with_bias::<R, F, I, BT>(super::cudnn::Pass::Data, g, [weight, x], bias)
}

/// The convolution of `x` (N, C, H, W) by `w` (K, C / groups, R, S) as cuDNN describes it, on
/// channels-last buffers with `nhwc`.
#[cfg(feature = "cuda")]
pub(super) fn conv_geometry(x: [usize; 4], w: [usize; 4], options: &ConvOptions<2>, nhwc: bool) -> super::cudnn::Geometry {
    super::cudnn::Geometry {
        x,
        w,
        y: conv_output_shape(x, w, options),
        padding: options.padding,
        stride: options.stride,
        dilation: options.dilation,
        groups: options.groups,
        nhwc,
    }
}

/// The transposed convolution of `x` (N, C, H, W) by `w` (C, K / groups, R, S): the input
/// gradient of the convolution of its output by the same weight, whose output gradient is `x`,
/// as cuDNN describes that convolution; on channels-last buffers with `nhwc`.
#[cfg(feature = "cuda")]
pub(super) fn transpose_geometry(x: [usize; 4], w: [usize; 4], options: &ConvTransposeOptions<2>, nhwc: bool) -> super::cudnn::Geometry {
    super::cudnn::Geometry {
        x: transpose_output_shape(x, w, options),
        w,
        y: x,
        padding: options.padding,
        stride: options.stride,
        dilation: options.dilation,
        groups: options.groups,
        nhwc,
    }
}

/// The output shape of the convolution of `x` by `w` (out, in / groups, kh, kw).
fn conv_output_shape(x: [usize; 4], w: [usize; 4], options: &ConvOptions<2>) -> [usize; 4] {
    let size = |n: usize, k: usize, i: usize| {
        calculate_conv_output_size(k, options.stride[i], options.padding[i], options.dilation[i], n)
    };
    [x[0], w[0], size(x[2], w[2], 0), size(x[3], w[3], 1)]
}

/// The output shape of the transposed convolution of `x` by `w` (Burn's layout: in, out / groups,
/// kh, kw).
fn transpose_output_shape(x: [usize; 4], w: [usize; 4], options: &ConvTransposeOptions<2>) -> [usize; 4] {
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
    [x[0], w[1] * options.groups, size(x[2], w[2], 0), size(x[3], w[3], 1)]
}

/// `t` in `dtype` (a cast only where it differs).
#[cfg(feature = "cuda")]
fn same_dtype<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    t: FloatTensor<CubeBackend<R, F, I, BT>>,
    dtype: burn::tensor::DType,
) -> FloatTensor<CubeBackend<R, F, I, BT>> {
    use burn::tensor::ops::FloatTensorOps;
    if t.dtype == dtype {
        return t;
    }
    CubeBackend::<R, F, I, BT>::float_cast(t, dtype.into())
}

/// `pass` of `g` on the operands `[a, b]` (see [`super::cudnn::convolve`]; a kernel of vsr's own
/// or cuDNN, [`super::own_conv`]) plus `bias` per channel, if any.
#[cfg(feature = "cuda")]
fn convolve_with_bias<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    pass: super::cudnn::Pass,
    g: super::cudnn::Geometry,
    [a, b]: [FloatTensor<CubeBackend<R, F, I, BT>>; 2],
    bias: Option<FloatTensor<CubeBackend<R, F, I, BT>>>,
) -> FloatTensor<CubeBackend<R, F, I, BT>> {
    use burn::tensor::ops::FloatTensorOps;
    type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let y = cuda::convolve::<R>(pass, g, a, b);
    let Some(bias) = bias else { return y };
    let c = bias.meta.shape()[0];
    let bias = same_dtype::<R, F, I, BT>(bias, y.dtype);
    B::<R, F, I, BT>::float_add(y, B::<R, F, I, BT>::float_reshape(bias, [1, c, 1, 1].into()))
}

/// The generic CubeCL runtime seen as CUDA's (the same type, checked at run time).
#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    use std::any::Any;

    use burn_cubecl::{CubeRuntime, tensor::CubeTensor};
    use cubecl::cuda::CudaRuntime;

    use crate::cube::cudnn::{Geometry, Pass};
    use crate::cube::own_conv::convolve as own_or_cudnn;

    pub(crate) fn is_cuda<R: CubeRuntime>() -> bool {
        std::any::TypeId::of::<R>() == std::any::TypeId::of::<CudaRuntime>()
    }

    fn cast<A: 'static, B: 'static>(t: A) -> B {
        *(Box::new(t) as Box<dyn Any>).downcast::<B>().unwrap_or_else(|_| {
            panic!("cuDNN convolution on a runtime other than CUDA's")
        })
    }

    /// [`own_or_cudnn`] on `R`'s tensors, `R` being CUDA's runtime.
    pub(super) fn convolve<R: CubeRuntime>(pass: Pass, g: Geometry, a: CubeTensor<R>, b: CubeTensor<R>) -> CubeTensor<R> {
        let out = own_or_cudnn(pass, g, cast::<_, CubeTensor<CudaRuntime>>(a), cast(b));
        cast(out)
    }

    /// `R`'s tensor as CUDA's (`R` being CUDA's runtime).
    pub(crate) fn to_cuda<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<CudaRuntime> {
        cast(t)
    }

    /// CUDA's tensor as `R`'s (`R` being CUDA's runtime).
    pub(crate) fn from_cuda<R: CubeRuntime>(t: CubeTensor<CudaRuntime>) -> CubeTensor<R> {
        cast(t)
    }
}

/// What a custom operation computes, with its options.
#[derive(Clone, Debug)]
enum Kind {
    /// [`ConvBackend::conv2d_f32`].
    Conv(ConvOptions<2>),
    /// [`ConvBackend::conv_transpose2d_f32`].
    Transpose(ConvTransposeOptions<2>),
    /// [`ConvBackend::vendor_conv2d`].
    VendorConv(ConvOptions<2>),
    /// [`ConvBackend::vendor_conv_transpose2d`].
    VendorTranspose(ConvTransposeOptions<2>),
    /// [`ConvBackend::vendor_net_nhwc`] (inputs the net's; one output per net output).
    VendorNet(std::sync::Arc<crate::channels_last::Net>),
    /// [`ConvBackend::vendor_conv2d_backward`] (inputs x, weight, output gradient; one output per
    /// gradient needed).
    VendorBackward(ConvOptions<2>, [bool; 2]),
    /// [`ConvBackend::own_batch_norm_forward`] (inputs x, gamma, beta, running mean and
    /// variance; outputs y, the running statistics, the four saved tensors).
    OwnBatchNorm(BatchNormAct),
    /// [`ConvBackend::own_batch_norm_backward`] (inputs x, output gradient, the four saved
    /// tensors; outputs dx, dgamma, dbeta).
    OwnBatchNormBackward(BatchNormAct),
}

#[derive(Clone, Debug)]
struct ConvOp<B> {
    desc: CustomOpIr,
    kind: Kind,
    _b: PhantomData<B>,
}

impl<B: FusionBackend + ConvBackend> Operation<B::FusionRuntime> for ConvOp<B> {
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
        let outs: Vec<_> = match (&self.kind, inputs.len()) {
            (Kind::OwnBatchNorm(settings), 5) => {
                let [x, gamma, beta, rm, rv] = <[_; 5]>::try_from(inputs).unwrap_or_else(|_| unreachable!());
                let (y, [m, v], saved) = B::own_batch_norm_forward(x, gamma, beta, [rm, rv], *settings);
                [y, m, v].into_iter().chain(saved).collect()
            }
            (Kind::OwnBatchNormBackward(settings), 6) => {
                let [x, dy, s0, s1, s2, s3] = <[_; 6]>::try_from(inputs).unwrap_or_else(|_| unreachable!());
                B::own_batch_norm_backward(x, dy, [s0, s1, s2, s3], *settings).into()
            }
            (Kind::VendorNet(net), _) => B::vendor_net_nhwc(inputs, net),
            (kind, _) => self.execute_conv(kind, inputs),
        };
        for (desc, out) in self.desc.outputs.iter().zip(outs) {
            handles.register_float_tensor::<B>(&desc.id, out);
        }
    }
}

impl<B: FusionBackend + ConvBackend> ConvOp<B> {
    /// The convolution kinds' outputs from `inputs` (x, weight, then the bias or the output
    /// gradient).
    fn execute_conv(&self, kind: &Kind, inputs: Vec<FloatTensor<B>>) -> Vec<FloatTensor<B>> {
        let mut inputs = inputs.into_iter();
        let (x, weight, third) = (
            inputs.next().expect("x"),
            inputs.next().expect("weight"),
            inputs.next(),
        );
        match kind {
            Kind::Conv(options) => vec![B::conv2d_f32(x, weight, third, options.clone())],
            Kind::Transpose(options) => vec![B::conv_transpose2d_f32(x, weight, third, options.clone())],
            Kind::VendorConv(options) => vec![B::vendor_conv2d(x, weight, third, options.clone())],
            Kind::VendorTranspose(options) => vec![B::vendor_conv_transpose2d(x, weight, third, options.clone())],
            Kind::VendorBackward(options, need) => {
                let dy = third.expect("output gradient");
                B::vendor_conv2d_backward(x, weight, dy, options.clone(), *need).into_iter().flatten().collect()
            }
            Kind::OwnBatchNorm(..) | Kind::OwnBatchNormBackward(..) | Kind::VendorNet(..) => {
                unreachable!("{kind:?} with {} inputs", 2 + third.is_some() as usize + inputs.len())
            }
        }
    }
}

/// Registers `kind` on `inputs` (x, weight, then the bias or the output gradient) with outputs of
/// `shapes`, in the dtype of x.
fn register<B: FusionBackend + ConvBackend>(
    name: &'static str,
    inputs: Vec<FloatTensor<Fusion<B>>>,
    shapes: Vec<[usize; 4]>,
    kind: Kind,
) -> Vec<FloatTensor<Fusion<B>>> {
    let dtype = inputs[0].dtype;
    let outs = shapes.into_iter().map(|s| (burn::tensor::Shape::new(s), dtype)).collect();
    register_typed::<B>(name, inputs, outs, kind)
}

/// Registers `kind` on `inputs` with outputs of these shapes and dtypes.
fn register_typed<B: FusionBackend + ConvBackend>(
    name: &'static str,
    inputs: Vec<FloatTensor<Fusion<B>>>,
    outs: Vec<(burn::tensor::Shape, burn::tensor::DType)>,
    kind: Kind,
) -> Vec<FloatTensor<Fusion<B>>> {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let outs: Vec<_> = outs
        .into_iter()
        .map(|(s, dtype)| TensorIr::uninit(client.create_empty_handle(), s, dtype))
        .collect();
    let inputs: Vec<_> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new(name, &inputs, &outs);
    client
        .register(streams, OperationIr::Custom(desc.clone()), ConvOp::<B> { desc, kind, _b: PhantomData })
}

/// `[x, weight]` and the bias, if any.
fn operands<T>(x: T, weight: T, third: Option<T>) -> Vec<T> {
    let mut v = vec![x, weight];
    v.extend(third);
    v
}

impl<B: FusionBackend + ConvBackend> ConvBackend for Fusion<B> {
    const WEIGHT_GRAD: WeightGrad = B::WEIGHT_GRAD;

    fn conv2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let shape = conv_output_shape(x.shape.dims(), weight.shape.dims(), &options);
        let mut out = register::<B>("vsr_conv2d_f32", operands(x, weight, bias), vec![shape], Kind::Conv(options));
        out.remove(0)
    }

    fn conv_transpose2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        let shape = transpose_output_shape(x.shape.dims(), weight.shape.dims(), &options);
        let mut out =
            register::<B>("vsr_conv_transpose2d_f32", operands(x, weight, bias), vec![shape], Kind::Transpose(options));
        out.remove(0)
    }

    fn vendor_conv() -> bool {
        B::vendor_conv()
    }

    fn vendor_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let shape = conv_output_shape(x.shape.dims(), weight.shape.dims(), &options);
        let mut out =
            register::<B>("vsr_vendor_conv2d", operands(x, weight, bias), vec![shape], Kind::VendorConv(options));
        out.remove(0)
    }

    fn vendor_nhwc() -> bool {
        B::vendor_nhwc()
    }

    fn vendor_net_nhwc(inputs: Vec<FloatTensor<Self>>, net: &crate::channels_last::Net) -> Vec<FloatTensor<Self>> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.to_vec()).collect();
        let outs = net.output_shapes(&shapes);
        let dtype = inputs[0].dtype;
        let outs = outs.into_iter().map(|s| (burn::tensor::Shape::from(s), dtype)).collect();
        register_typed::<B>("vsr_vendor_net_nhwc", inputs, outs, Kind::VendorNet(std::sync::Arc::new(net.clone())))
    }

    fn vendor_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        let shape = transpose_output_shape(x.shape.dims(), weight.shape.dims(), &options);
        let mut out = register::<B>(
            "vsr_vendor_conv_transpose2d",
            operands(x, weight, bias),
            vec![shape],
            Kind::VendorTranspose(options),
        );
        out.remove(0)
    }

    fn vendor_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        need: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        if need == [false, false] {
            return [None, None];
        }
        let (xs, ws) = (x.shape.dims(), weight.shape.dims());
        let shapes = [xs, ws].into_iter().zip(need).filter(|(_, n)| *n).map(|(s, _)| s).collect();
        let mut outs = register::<B>(
            "vsr_vendor_conv2d_backward",
            vec![x, weight, output_grad],
            shapes,
            Kind::VendorBackward(options, need),
        )
        .into_iter();
        need.map(|n| if n { outs.next() } else { None })
    }

    fn own_batch_norm(shape: [usize; 4]) -> bool {
        B::own_batch_norm(shape)
    }

    fn own_batch_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        [rm, rv]: [FloatTensor<Self>; 2],
        settings: BatchNormAct,
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2], [FloatTensor<Self>; 4]) {
        use burn::tensor::{DType, Shape};
        let c = Shape::new([x.shape.dims::<4>()[1]]);
        let mut outs = vec![(x.shape.clone(), x.dtype)];
        outs.extend(std::iter::repeat_n((c, DType::F32), 6));
        let out =
            register_typed::<B>("vsr_batch_norm", vec![x, gamma, beta, rm, rv], outs, Kind::OwnBatchNorm(settings));
        let [y, m, v, s0, s1, s2, s3] = <[_; 7]>::try_from(out).unwrap_or_else(|_| unreachable!("seven outputs"));
        (y, [m, v], [s0, s1, s2, s3])
    }

    fn own_batch_norm_backward(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        [s0, s1, s2, s3]: [FloatTensor<Self>; 4],
        settings: BatchNormAct,
    ) -> [FloatTensor<Self>; 3] {
        let c = s0.shape.clone();
        let outs = vec![(x.shape.clone(), x.dtype), (c.clone(), s0.dtype), (c, s0.dtype)];
        let out = register_typed::<B>(
            "vsr_batch_norm_backward",
            vec![x, output_grad, s0, s1, s2, s3],
            outs,
            Kind::OwnBatchNormBackward(settings),
        );
        <[_; 3]>::try_from(out).unwrap_or_else(|_| unreachable!("three outputs"))
    }
}
