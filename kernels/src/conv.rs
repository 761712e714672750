//! Convolutions with a chosen arithmetic precision.
//!
//! On CUDA, Burn 0.21 (burn-cubecl) autotunes every f32 convolution among a direct kernel (f32
//! multiply-add), an im2col + matmul path and six implicit-GEMM kernels on tensor cores; the
//! tensor-core ones (`simple_{sync,async,tma}_{cmma,mma}`) stage f32 inputs as **TF32** (10-bit
//! mantissa, f32 accumulation) on every GPU CubeCL registers TF32 for (sm_80 and later), and the
//! fastest usually wins. That is PyTorch's default too (`torch.backends.cudnn.allow_tf32 = True`),
//! but it moves results by ~1e-3 relative, which is the whole tolerance of the FlowNetSD parity
//! tests (`docs/conv_precision.md` has the details and source references).
//!
//! [`ConvPrecision`] chooses, process-wide, like PyTorch's `allow_tf32`:
//! * [`ConvPrecision::Tf32`] (default): Burn's autotuned convolutions (LibTorch: cuDNN's), TF32
//!   allowed.
//! * [`ConvPrecision::F32`]: convolutions through [`conv2d`] / [`conv_transpose2d`] (and the
//!   module helpers [`conv2d_module`], [`conv_transpose2d_module`]) use Burn's direct kernels on
//!   CubeCL backends, which multiply and accumulate in f32 (slower).
//!
//! Scope: the choice applies to backends without autodiff (inference, evaluation, frozen
//! networks, parity tests) and to LibTorch under autodiff. Otherwise under `Autodiff<B>` these
//! functions are Burn's own (autotuned, TF32 allowed on CUDA), and [`conv2d`]'s backward is
//! [`crate::conv_grad`]'s. CPU backends compute in f32 either way.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor, ModuleOps};
use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};
use crate::setting::Setting;

/// Arithmetic of f32 convolutions on GPU backends; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPrecision {
    /// Fastest kernel autotune finds, TF32 tensor cores allowed (like PyTorch's default).
    Tf32,
    /// f32 multiply-add only (like `torch.backends.cudnn.allow_tf32 = False`).
    F32,
}

impl std::str::FromStr for ConvPrecision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tf32" => Ok(Self::Tf32),
            "f32" | "fp32" => Ok(Self::F32),
            other => Err(format!(
                "conv precision `{other}`: expected `tf32` or `f32`"
            )),
        }
    }
}

static PRECISION: Setting<ConvPrecision> = Setting::new("VSR_CONV_PRECISION", ConvPrecision::Tf32);

/// Sets the precision of f32 convolutions for the whole process (see the module docs).
pub fn set_conv_precision(precision: ConvPrecision) {
    PRECISION.set(precision);
}

/// The current precision: what [`set_conv_precision`] set, else the environment variable
/// `VSR_CONV_PRECISION` (`tf32` or `f32`), else [`ConvPrecision::Tf32`].
///
/// # Panics
/// If `VSR_CONV_PRECISION` holds anything else (a typo must not silently change the numbers).
pub fn conv_precision() -> ConvPrecision {
    PRECISION.get()
}

/// Settings of a training BatchNorm followed by an optional LeakyReLU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormAct {
    /// Weight of the batch statistic in the running statistics' update (PyTorch's `momentum`).
    pub momentum: f64,
    /// Added to the variance before its square root.
    pub epsilon: f64,
    /// LeakyReLU's negative slope, or no activation.
    pub slope: Option<f64>,
}

/// A backend that can run convolutions in full f32. The provided methods are Burn's own
/// convolutions (right for CPU backends, which have no TF32, and for `Autodiff<B>`); CubeCL
/// backends override them with Burn's direct kernels.
pub trait ConvBackend: Backend {
    /// `conv2d` with f32 multiply-add only.
    fn conv2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::conv2d(x, weight, bias, options)
    }

    /// `conv_transpose2d` with f32 multiply-add only.
    fn conv_transpose2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::conv_transpose2d(x, weight, bias, options)
    }

    /// The weight gradient of training convolutions where `VSR_WGRAD` does not choose one and the
    /// backend has no graph of its own ([`crate::conv_grad::weight_grad_for`]): Burn's
    /// `conv2d_weight_backward` (CPU); CubeCL backends override it with the tap products (see
    /// `crate::cube`'s `ConvBackend` for the measurements).
    const WEIGHT_GRAD: crate::conv_grad::WeightGrad = crate::conv_grad::WeightGrad::Burn;

    /// Whether the backend runs training layers under its own autograd ([`ConvBackend::conv2d_graph`],
    /// [`ConvBackend::batch_norm_graph`], [`ConvBackend::graph_backward`]): training convolutions
    /// and BatchNorm then take their backward from it (see [`crate::conv_grad`]).
    const CONV_GRAPH: bool = false;

    /// Forward of a training convolution (no bias) at the current [`conv_precision`] under the
    /// backend's autograd; leaves `[input, weight]`, gradients where `need` says.
    fn conv2d_graph(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _need: [bool; 2],
        _options: ConvOptions<2>,
    ) -> (FloatTensor<Self>, crate::conv_grad::ConvGraph) {
        unreachable!("conv2d_graph called on a backend without CONV_GRAPH")
    }

    /// Training-mode BatchNorm of `x` (N, C, H, W; batch statistics, in the dtype of `x`, affine
    /// parameters and statistics in f32), then LeakyReLU(`slope`) if given, under the backend's
    /// autograd; leaves `[x, gamma, beta]`, gradients where `need` says. Returns the output and the
    /// running mean and variance updated as PyTorch does (momentum; unbiased variance).
    fn batch_norm_graph(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _running: [FloatTensor<Self>; 2],
        _settings: BatchNormAct,
        _need: [bool; 3],
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2], crate::conv_grad::ConvGraph) {
        unreachable!("batch_norm_graph called on a backend without CONV_GRAPH")
    }

    /// Gradients of `sum(output * output_grad)` for the leaves of a graph, in their order (`None`
    /// for a leaf that needs none).
    fn graph_backward(
        _graph: crate::conv_grad::ConvGraph,
        _output_grad: FloatTensor<Self>,
    ) -> Vec<Option<FloatTensor<Self>>> {
        unreachable!("graph_backward called on a backend without CONV_GRAPH")
    }

    /// Whether [`ConvBackend::batch_norm_train`] is implemented for an input of `shape` (autodiff
    /// over a backend with [`ConvBackend::CONV_GRAPH`] or [`ConvBackend::own_batch_norm`]).
    fn fused_batch_norm(_shape: [usize; 4]) -> bool {
        false
    }

    /// Training-mode BatchNorm + LeakyReLU under autodiff (see [`batch_norm_act`]): output and
    /// updated running statistics.
    fn batch_norm_train(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _running: [FloatTensor<Self>; 2],
        _settings: BatchNormAct,
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2]) {
        unreachable!("batch_norm_train called where fused_batch_norm() is false")
    }

    /// Whether training BatchNorm + LeakyReLU of an input of `shape` runs on kernels of the
    /// backend's own beside Burn's (vsr's CUDA C BatchNorm on the CUDA backend, see `crate::cube`):
    /// then `Autodiff<B>` takes [`ConvBackend::own_batch_norm_forward`] and
    /// [`ConvBackend::own_batch_norm_backward`] for [`batch_norm_act`].
    fn own_batch_norm(_shape: [usize; 4]) -> bool {
        false
    }

    /// Training BatchNorm's forward: `x` (N, C, H, W) normalised with its batch statistics,
    /// scaled and shifted by `gamma`, `beta` (f32, C), then LeakyReLU(`settings.slope`) if given,
    /// in the dtype of `x` with f32 statistics; the running `[mean, var]` updated (momentum;
    /// unbiased variance; new tensors); four f32 (C) tensors for the backward. Called only where
    /// [`ConvBackend::own_batch_norm`].
    fn own_batch_norm_forward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _running: [FloatTensor<Self>; 2],
        _settings: BatchNormAct,
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2], [FloatTensor<Self>; 4]) {
        unreachable!("own_batch_norm_forward called on a backend without its own BatchNorm")
    }

    /// Training BatchNorm + LeakyReLU's `[dx, dgamma, dbeta]` from `x`, the output gradient and
    /// the forward's saved tensors. Called only where [`ConvBackend::own_batch_norm`].
    fn own_batch_norm_backward(
        _x: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
        _saved: [FloatTensor<Self>; 4],
        _settings: BatchNormAct,
    ) -> [FloatTensor<Self>; 3] {
        unreachable!("own_batch_norm_backward called on a backend without its own BatchNorm")
    }

    /// LeakyReLU(`slope`) of `x` ([`leaky_relu`]): Burn's, which is three passes over `x` (a
    /// mask, a product, a select; CubeCL's fusion makes them one); LibTorch overrides it with
    /// one kernel.
    fn leaky_relu_one_pass(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        <Self as burn::tensor::ops::ActivationOps<Self>>::leaky_relu(x, slope.into())
    }

    /// Whether [`ConvBackend::batch_norm_eval`] may return a result (it still says `None` where
    /// an input does not suit it): callers skip gathering its arguments where not.
    const BATCH_NORM_EVAL: bool = false;

    /// Inference-mode BatchNorm of `x` (N, C, H, W) with the running statistics `[mean, var]`,
    /// then LeakyReLU(`slope`) if given, in one pass in the dtype of `x`; `None` where the backend
    /// has no such kernel (the callers then run Burn's `BatchNorm`): all but LibTorch's CUDA.
    fn batch_norm_eval(
        _x: &FloatTensor<Self>,
        _gamma: &FloatTensor<Self>,
        _beta: &FloatTensor<Self>,
        _running: [&FloatTensor<Self>; 2],
        _settings: BatchNormAct,
    ) -> Option<FloatTensor<Self>> {
        None
    }

    /// LeakyReLU(`slope`) of `x` (N, C, H, W) plus `bias` (C) per channel: [`bias_leaky_relu_ops`]
    /// (two passes); LibTorch on CUDA overrides it with one kernel, `Autodiff<B>` runs its inner
    /// backend's where nothing needs a gradient.
    fn bias_leaky_relu(x: FloatTensor<Self>, bias: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        float(bias_leaky_relu_ops::<Self>(tensor(x), tensor(bias), slope))
    }

    /// `LeakyReLU(slope)(conv2d(x, weight, options) + bias)` in one kernel, outside autodiff,
    /// where the backend has one for this convolution (LibTorch's CUDA: FlowNetSD's first layer,
    /// [`crate::few_input_channel_conv`]); `None` elsewhere (the callers then run the convolution
    /// and [`ConvBackend::bias_leaky_relu`]).
    fn conv2d_bias_leaky(
        _x: &FloatTensor<Self>,
        _weight: &FloatTensor<Self>,
        _bias: &FloatTensor<Self>,
        _options: &ConvOptions<2>,
        _slope: f64,
    ) -> Option<FloatTensor<Self>> {
        None
    }

    /// `x` (N, C, H, W) in the memory layout the backend's convolutions run fastest in
    /// ([`to_conv_layout`]): unchanged, except on LibTorch ([`TchLayout`]).
    fn conv_layout(x: FloatTensor<Self>) -> FloatTensor<Self> {
        x
    }

    /// Whether this backend's convolutions run on a vendor library on its own buffers (cuDNN
    /// on the CUDA backend, see `crate::cube`): then [`ConvBackend::vendor_conv2d`],
    /// [`ConvBackend::vendor_conv_transpose2d`] and [`ConvBackend::vendor_conv2d_backward`]
    /// compute every convolution, its gradients included.
    fn vendor_conv() -> bool {
        false
    }

    /// `conv2d` (plus `bias`) by the vendor library at the current [`conv_precision`]; called
    /// only where [`ConvBackend::vendor_conv`].
    fn vendor_conv2d(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _bias: Option<FloatTensor<Self>>,
        _options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        unreachable!("vendor_conv2d called on a backend without vendor convolutions")
    }

    /// `conv_transpose2d` (plus `bias`) by the vendor library at the current [`conv_precision`];
    /// called only where [`ConvBackend::vendor_conv`].
    fn vendor_conv_transpose2d(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _bias: Option<FloatTensor<Self>>,
        _options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        unreachable!("vendor_conv_transpose2d called on a backend without vendor convolutions")
    }

    /// Gradients of `sum(conv2d(x, weight) * output_grad)` with respect to `x` and `weight`, where
    /// `need` says, by the vendor library; called only where [`ConvBackend::vendor_conv`].
    fn vendor_conv2d_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
        _options: ConvOptions<2>,
        _need: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        unreachable!("vendor_conv2d_backward called on a backend without vendor convolutions")
    }

    /// Whether the vendor library also runs convolutions on channels-last operands, and a
    /// frozen channels-last network as one operation ([`ConvBackend::vendor_net_nhwc`]): cuDNN on
    /// the CUDA backend, whose tensor-core kernels read and write NHWC and convert NCHW operands
    /// to it and back on every call.
    fn vendor_nhwc() -> bool {
        false
    }

    /// Runs the frozen channels-last network `net` ([`crate::channels_last`]) on `inputs`: as one
    /// operation where the backend can (the CUDA backend, in one call on its device thread). The
    /// provided method runs it layer by layer on Burn's convolutions.
    fn vendor_net_nhwc(inputs: Vec<FloatTensor<Self>>, net: &crate::channels_last::Net) -> Vec<FloatTensor<Self>> {
        crate::channels_last::run_reference::<Self>(inputs, net)
    }

    /// The transposed convolution of [`conv_transpose2d`]: at the current [`conv_precision`], by
    /// the vendor library where there is one.
    fn conv_transpose2d_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        if Self::vendor_conv() {
            return Self::vendor_conv_transpose2d(x, weight, bias, options);
        }
        match conv_precision() {
            ConvPrecision::Tf32 => <Self as ModuleOps<Self>>::conv_transpose2d(x, weight, bias, options),
            ConvPrecision::F32 => Self::conv_transpose2d_f32(x, weight, bias, options),
        }
    }

    /// The convolution of training code ([`conv2d`]): at the current [`conv_precision`]; under
    /// `Autodiff<B>` with the backward of [`crate::conv_grad`].
    fn conv2d_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        crate::conv_grad::conv2d_inner::<Self>(x, weight, bias, options)
    }
}

impl ConvBackend for burn::backend::Flex {}

/// LibTorch: cuDNN's convolutions through `torch._convolution`, whose `allow_tf32` follows
/// [`conv_precision`] per call (what `torch.backends.cudnn.allow_tf32` sets globally); on CPU
/// LibTorch's own. They run in the memory layout of their input (PyTorch's rule, [`TchLayout`]).
#[cfg(feature = "tch")]
impl<E> ConvBackend for burn::backend::LibTorch<E>
where
    burn::backend::LibTorch<E>: Backend<FloatTensorPrimitive = burn::backend::libtorch::TchTensor>,
{
    fn conv2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        tch_conv2d(x, weight, bias, options, false)
    }

    fn conv_transpose2d_f32(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        tch_conv_transpose2d(x, weight, bias, options, false)
    }

    /// cuDNN's convolution (TF32 as [`conv_precision`] says), in the layout of its input.
    fn conv2d_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        tch_conv2d(x, weight, bias, options, conv_precision() == ConvPrecision::Tf32)
    }

    fn conv_transpose2d_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        tch_conv_transpose2d(x, weight, bias, options, conv_precision() == ConvPrecision::Tf32)
    }

    /// Channels-last where [`tch_layout`] says (CUDA devices by default).
    fn conv_layout(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let t = &x.tensor;
        let on = match tch_layout() {
            TchLayout::Auto => t.device().is_cuda(),
            TchLayout::ChannelsLast => true,
            TchLayout::Nchw => false,
        };
        if on && t.dim() == 4 { burn::backend::libtorch::TchTensor::new(tch_channels_last(t)) } else { x }
    }

    /// LibTorch's PReLU with the constant weight `slope` (tch's `leaky_relu` has no slope
    /// argument): one pass instead of Burn's three. FlowNetSD's 20 activations run on this.
    fn leaky_relu_one_pass(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        let t = &x.tensor;
        burn::backend::libtorch::TchTensor::new(t.prelu(&tch::Tensor::full([1], slope, (t.kind(), t.device()))))
    }

    /// One kernel of our own on CUDA ([`crate::batch_norm`]).
    const BATCH_NORM_EVAL: bool = true;

    fn batch_norm_eval(
        x: &FloatTensor<Self>,
        gamma: &FloatTensor<Self>,
        beta: &FloatTensor<Self>,
        running: [&FloatTensor<Self>; 2],
        settings: BatchNormAct,
    ) -> Option<FloatTensor<Self>> {
        crate::batch_norm::inference(x, gamma, beta, running, settings.epsilon, settings.slope)
    }

    /// One kernel of our own on CUDA ([`crate::bias_act`]), else the two passes.
    fn bias_leaky_relu(x: FloatTensor<Self>, bias: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        match crate::bias_act::forward(&x, &bias, slope) {
            Some(y) => y,
            None => float(bias_leaky_relu_ops::<Self>(tensor(x), tensor(bias), slope)),
        }
    }

    /// One kernel of our own for FlowNetSD's first layer on CUDA ([`crate::few_input_channel_conv`]).
    fn conv2d_bias_leaky(
        x: &FloatTensor<Self>,
        weight: &FloatTensor<Self>,
        bias: &FloatTensor<Self>,
        options: &ConvOptions<2>,
        slope: f64,
    ) -> Option<FloatTensor<Self>> {
        crate::few_input_channel_conv::forward(x, weight, bias, options, slope)
    }

    const CONV_GRAPH: bool = true;

    fn conv2d_graph(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        need: [bool; 2],
        options: ConvOptions<2>,
    ) -> (FloatTensor<Self>, crate::conv_grad::ConvGraph) {
        let tf32 = conv_precision() == ConvPrecision::Tf32;
        crate::conv_grad::libtorch::conv2d(x, weight, need, options, tf32)
    }

    fn batch_norm_graph(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running: [FloatTensor<Self>; 2],
        settings: BatchNormAct,
        need: [bool; 3],
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2], crate::conv_grad::ConvGraph) {
        crate::conv_grad::libtorch::batch_norm(x, gamma, beta, running, settings, need)
    }

    fn graph_backward(
        graph: crate::conv_grad::ConvGraph,
        output_grad: FloatTensor<Self>,
    ) -> Vec<Option<FloatTensor<Self>>> {
        crate::conv_grad::libtorch::backward(graph, output_grad)
    }
}

/// `conv2d` through [`tch_convolution`].
#[cfg(feature = "tch")]
fn tch_conv2d(
    x: burn::backend::libtorch::TchTensor,
    weight: burn::backend::libtorch::TchTensor,
    bias: Option<burn::backend::libtorch::TchTensor>,
    o: ConvOptions<2>,
    allow_tf32: bool,
) -> burn::backend::libtorch::TchTensor {
    // VSRNet's conv1 (one input channel, CUDA; f16, or f32 where TF32 is allowed) on a kernel of
    // our own
    if let Some(y) = crate::one_input_channel_conv::inference(&x, &weight, bias.as_ref(), &o, allow_tf32) {
        return y;
    }
    // VSRNet's conv2 (many channels to 32; f16) on our tensor-core kernel
    if let Some(y) = crate::tensor_core_conv::inference(&x, &weight, bias.as_ref(), &o) {
        return y;
    }
    let b = bias.as_ref().map(|b| &b.tensor);
    let y = tch_convolution(&x.tensor, &weight.tensor, b, &o.stride, &o.padding, &o.dilation, false, &[0, 0], o.groups, allow_tf32);
    burn::backend::libtorch::TchTensor::new(y)
}

/// `conv_transpose2d` through [`tch_convolution`].
#[cfg(feature = "tch")]
fn tch_conv_transpose2d(
    x: burn::backend::libtorch::TchTensor,
    weight: burn::backend::libtorch::TchTensor,
    bias: Option<burn::backend::libtorch::TchTensor>,
    o: ConvTransposeOptions<2>,
    allow_tf32: bool,
) -> burn::backend::libtorch::TchTensor {
    let b = bias.as_ref().map(|b| &b.tensor);
    let y = tch_convolution(&x.tensor, &weight.tensor, b, &o.stride, &o.padding, &o.dilation, true, &o.padding_out, o.groups, allow_tf32);
    burn::backend::libtorch::TchTensor::new(y)
}

/// `torch._convolution` (cuDNN enabled, benchmark mode as set, TF32 if `allow_tf32`), in the
/// layout of the input (PyTorch converts the weight to it).
#[cfg(feature = "tch")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tch_convolution(
    x: &tch::Tensor,
    weight: &tch::Tensor,
    bias: Option<&tch::Tensor>,
    stride: &[usize; 2],
    padding: &[usize; 2],
    dilation: &[usize; 2],
    transposed: bool,
    padding_out: &[usize; 2],
    groups: usize,
    allow_tf32: bool,
) -> tch::Tensor {
    let i64s = |v: &[usize; 2]| v.map(|i| i as i64);
    x.internal_convolution(
        weight,
        bias,
        i64s(stride),
        i64s(padding),
        i64s(dilation),
        transposed,
        i64s(padding_out),
        groups as i64,
        tch_cudnn_benchmark(),
        false,
        true,
        allow_tf32,
    )
}

/// Memory layout of FlowNetSD on LibTorch (training and inference), process-wide
/// (`VSR_TCH_LAYOUT`).
///
/// cuDNN's convolution kernels on tensor cores read and write channels-last (NHWC) data: given
/// NCHW tensors, every convolution transposes its input and output. PyTorch's convolutions follow
/// their input's layout: a channels-last input (exact NHWC strides) makes PyTorch convert the
/// weight and return an NHWC output, and element-wise ops, concatenation and interpolation keep
/// the layout, so a network whose input is put in channels-last once ([`to_conv_layout`]) stays
/// in it. FlowNetSD does that (H100, batch 3, 512x960, two pairs: 10.4 -> 8.3 ms fp32, 7.7 ->
/// 5.9 ms fp16). VSRNet does not: its frames go
/// into channels between conv1 and conv2, a copy in NHWC that the NCHW layout gets for free,
/// and its forward and backward measured slower in NHWC (PyTorch, same GPU: 37.9 -> 45.6 ms
/// fp32, 30.8 -> 34.5 ms fp16, docs/benchmarks.md). Values do not depend on the layout beyond
/// the algorithms cuDNN picks.
#[cfg(feature = "tch")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TchLayout {
    /// [`to_conv_layout`] gives channels-last on CUDA devices, leaves CPU tensors (the default).
    Auto,
    /// [`to_conv_layout`] gives channels-last on every device.
    ChannelsLast,
    /// [`to_conv_layout`] leaves every tensor as it is (NCHW: LibTorch's default layout).
    Nchw,
}

#[cfg(feature = "tch")]
impl std::str::FromStr for TchLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "nhwc" | "channels-last" | "channels_last" => Ok(Self::ChannelsLast),
            "nchw" => Ok(Self::Nchw),
            other => Err(format!("LibTorch layout `{other}`: expected `auto`, `nhwc` or `nchw`")),
        }
    }
}

#[cfg(feature = "tch")]
static TCH_LAYOUT: Setting<TchLayout> = Setting::new("VSR_TCH_LAYOUT", TchLayout::Auto);

/// Sets the layout [`to_conv_layout`] gives on LibTorch, for the whole process ([`TchLayout`]).
#[cfg(feature = "tch")]
pub fn set_tch_layout(layout: TchLayout) {
    TCH_LAYOUT.set(layout);
}

/// The current layout: what [`set_tch_layout`] set, else `VSR_TCH_LAYOUT` (`auto`, `nhwc` or
/// `nchw`), else [`TchLayout::Auto`].
///
/// # Panics
/// If `VSR_TCH_LAYOUT` holds anything else.
#[cfg(feature = "tch")]
pub fn tch_layout() -> TchLayout {
    TCH_LAYOUT.get()
}

/// `t` (N, C, H, W) in channels-last strides `[C H W, 1, W C, C]`: itself if it has them, else a
/// copy. Strides are set explicitly: for one channel the packed NHWC copy is also contiguous
/// NCHW, which PyTorch reads as NCHW.
#[cfg(feature = "tch")]
fn tch_channels_last(t: &tch::Tensor) -> tch::Tensor {
    if tch_is_channels_last(t) {
        return t.shallow_clone();
    }
    let size = t.size();
    let (c, h, w) = (size[1], size[2], size[3]);
    t.permute([0, 2, 3, 1]).contiguous().as_strided(size.as_slice(), [c * h * w, 1, w * c, c], None::<i64>)
}

/// Whether `t` (N, C, H, W) has channels-last strides.
#[cfg(feature = "tch")]
pub fn tch_is_channels_last(t: &tch::Tensor) -> bool {
    let s = t.size();
    s.len() == 4 && t.stride() == [s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]]
}

#[cfg(feature = "tch")]
static TCH_CUDNN_BENCHMARK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Turns cuDNN's benchmark mode (`torch.backends.cudnn.benchmark`: time the algorithms for each
/// new convolution shape, keep the fastest) on or off, for every LibTorch convolution of the
/// process.
#[cfg(feature = "tch")]
pub fn set_tch_cudnn_benchmark(on: bool) {
    TCH_CUDNN_BENCHMARK.store(on, std::sync::atomic::Ordering::Relaxed);
    tch::Cuda::cudnn_set_benchmark(on);
}

/// Whether [`set_tch_cudnn_benchmark`] turned benchmark mode on.
#[cfg(feature = "tch")]
pub fn tch_cudnn_benchmark() -> bool {
    TCH_CUDNN_BENCHMARK.load(std::sync::atomic::Ordering::Relaxed)
}

impl<B: ConvBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    ConvBackend for burn::backend::Autodiff<B, C>
{
    fn conv2d_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        crate::conv_grad::conv2d_autodiff::<B, C>(x, weight, bias, options)
    }

    fn fused_batch_norm(shape: [usize; 4]) -> bool {
        B::CONV_GRAPH || B::own_batch_norm(shape)
    }

    fn bias_leaky_relu(x: FloatTensor<Self>, bias: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        if x.node.requirement.is_none() && bias.node.requirement.is_none() {
            let y = B::bias_leaky_relu(x.primitive, bias.primitive, slope);
            return float(Tensor::<Self, 4>::from_inner(tensor(y)));
        }
        float(bias_leaky_relu_ops::<Self>(tensor(x), tensor(bias), slope))
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running: [FloatTensor<Self>; 2],
        settings: BatchNormAct,
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2]) {
        crate::conv_grad::batch_norm_autodiff::<B, C>(x, gamma, beta, running, settings)
    }
}

/// `x` in the memory layout the backend's convolutions run fastest in, for a network that keeps
/// it from layer to layer: LibTorch's channels-last on CUDA ([`TchLayout`]); elsewhere `x`
/// itself. Values are unchanged.
pub fn to_conv_layout<B: ConvBackend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(B::conv_layout(float(x))))
}

/// LeakyReLU(`slope`) in one pass where the backend has it ([`ConvBackend::leaky_relu_one_pass`]),
/// differentiable under `Autodiff<B>` (Burn's own there).
pub fn leaky_relu<B: ConvBackend, const D: usize>(x: Tensor<B, D>, slope: f64) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::leaky_relu_one_pass(x.into_primitive().tensor(), slope)))
}

/// LeakyReLU(`slope`) of `x` (N, C, H, W) plus `bias` (C, cast to the dtype of `x`) per channel,
/// in two passes: Burn's add, then [`leaky_relu`].
pub fn bias_leaky_relu_ops<B: ConvBackend>(x: Tensor<B, 4>, bias: Tensor<B, 1>, slope: f64) -> Tensor<B, 4> {
    let c = bias.dims()[0];
    let bias = bias.cast(x.dtype()).reshape([1, c, 1, 1]);
    leaky_relu(x + bias, slope)
}

/// LeakyReLU(`slope`) of `x` (N, C, H, W) plus `bias` (C) per channel, in one pass where the
/// backend has it ([`ConvBackend::bias_leaky_relu`]); differentiable under `Autodiff<B>`.
pub fn bias_leaky_relu<B: ConvBackend>(x: Tensor<B, 4>, bias: Tensor<B, 1>, slope: f64) -> Tensor<B, 4> {
    tensor(B::bias_leaky_relu(float(x), float(bias), slope))
}

/// Training-mode `bn` (batch statistics) then LeakyReLU(`slope`) if given, in tensor ops for any
/// backend, in the dtype of `x`: what Burn's `BatchNorm::forward` computes in training, without its
/// two transposed copies of the whole input (the statistics reduce the contiguous axes first),
/// and with the running variance updated from the *unbiased* batch variance, as PyTorch does.
pub fn batch_norm_act_ops<B: Backend>(
    bn: &burn::nn::BatchNorm<B>,
    x: Tensor<B, 4>,
    slope: Option<f64>,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let stat = |t: Tensor<B, 4>| t.mean_dim(3).mean_dim(2).mean_dim(0); // [1, c, 1, 1]
    let mean = stat(x.clone());
    let centred = x - mean.clone();
    let var = stat(centred.clone().square()); // biased, for the normalisation
    let scale = bn.gamma.val().reshape([1, c, 1, 1]) / (var.clone() + bn.epsilon).sqrt();
    let y = centred * scale + bn.beta.val().reshape([1, c, 1, 1]);
    let count = (n * h * w) as f64;
    let m = bn.momentum;
    let update = |running: &burn::module::RunningState<Tensor<B, 1>>, batch: Tensor<B, 4>| {
        // (data-parallel workers share the state across devices: bring it here, as Burn does)
        let old = running.value_sync().to_device(&device);
        running.update((old * (1.0 - m) + batch.detach().reshape([c]) * m).detach());
    };
    update(&bn.running_mean, mean);
    update(&bn.running_var, var * (count / (count - 1.0).max(1.0)));
    match slope {
        Some(s) => burn::tensor::activation::leaky_relu(y, s),
        None => y,
    }
}

/// Training-mode `bn` (batch statistics) then LeakyReLU(`slope`) if given, through the backend's
/// fused path (LibTorch: its `batch_norm` and `prelu` under its autograd, cuDNN's kernels), which
/// also updates `bn`'s running statistics; `Err(x)` (untouched) where the backend has none.
/// Computes in the dtype of `x` with f32 statistics, like PyTorch's autocast.
pub fn batch_norm_act<B: ConvBackend>(
    bn: &burn::nn::BatchNorm<B>,
    x: Tensor<B, 4>,
    slope: Option<f64>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if !B::fused_batch_norm(x.dims()) {
        return Err(x);
    }
    // (data-parallel workers share the running state across devices: bring it here, as Burn does)
    let device = x.device();
    let running = |r: &burn::module::RunningState<Tensor<B, 1>>| float(r.value_sync().to_device(&device));
    let (y, [mean, var]) = B::batch_norm_train(
        float(x),
        float(bn.gamma.val()),
        float(bn.beta.val()),
        [running(&bn.running_mean), running(&bn.running_var)],
        BatchNormAct { momentum: bn.momentum, epsilon: bn.epsilon, slope },
    );
    bn.running_mean.update(Tensor::from_primitive(TensorPrimitive::Float(mean)));
    bn.running_var.update(Tensor::from_primitive(TensorPrimitive::Float(var)));
    Ok(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// Inference-mode `bn` (its running statistics) then LeakyReLU(`slope`) if given, in one pass in
/// the dtype of `x` where the backend has it ([`ConvBackend::batch_norm_eval`]: LibTorch's CUDA);
/// `Err(x)` (untouched) elsewhere. What Burn's `BatchNorm::forward` computes outside autodiff.
pub fn batch_norm_act_eval<B: ConvBackend>(
    bn: &burn::nn::BatchNorm<B>,
    x: Tensor<B, 4>,
    slope: Option<f64>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if !B::BATCH_NORM_EVAL {
        return Err(x);
    }
    let xp = float(x.clone());
    let device = x.device();
    let running = |r: &burn::module::RunningState<Tensor<B, 1>>| float(r.value_sync().to_device(&device));
    let (mean, var) = (running(&bn.running_mean), running(&bn.running_var));
    let settings = BatchNormAct { momentum: bn.momentum, epsilon: bn.epsilon, slope };
    match B::batch_norm_eval(&xp, &float(bn.gamma.val()), &float(bn.beta.val()), [&mean, &var], settings) {
        Some(y) => Ok(tensor(y)),
        None => Err(x),
    }
}

fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Burn's `conv2d` (same arguments, symmetric padding in `options`), computed at the current
/// [`conv_precision`]; under autodiff with the backward of [`crate::conv_grad`].
pub fn conv2d<B: ConvBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(B::conv2d_train(
        float(x),
        float(weight),
        bias.map(float),
        options,
    )))
}

/// Burn's `conv_transpose2d`, computed at the current [`conv_precision`] (on LibTorch in its
/// input's memory layout, [`TchLayout`]).
pub fn conv_transpose2d<B: ConvBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvTransposeOptions<2>,
) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(B::conv_transpose2d_train(
        float(x),
        float(weight),
        bias.map(float),
        options,
    )))
}


/// `(start, end)` padding of one axis for `PaddingConfig2d::Same`, as Burn computes it.
fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}

/// `conv.forward(x)` through [`conv2d`] (current [`conv_precision`], training backward).
pub fn conv2d_module<B: ConvBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    conv2d_module_with(conv, x, true)
}

/// `leaky_relu(conv.forward(x), slope)`: the convolution, bias and activation in one kernel where
/// the backend has one ([`ConvBackend::conv2d_bias_leaky`]), else the bias and the activation in
/// one pass where the backend has it ([`bias_leaky_relu`]).
pub fn conv2d_module_leaky<B: ConvBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>, slope: f64) -> Tensor<B, 4> {
    if let (Some(b), PaddingConfig2d::Explicit(top, left, bottom, right)) = (&conv.bias, &conv.padding) {
        if top == bottom && left == right {
            let options = ConvOptions::new(conv.stride, [*top, *left], conv.dilation, conv.groups);
            let (xp, wp, bp) = (float(x.clone()), float(conv.weight.val()), float(b.val()));
            if let Some(y) = B::conv2d_bias_leaky(&xp, &wp, &bp, &options, slope) {
                return tensor(y);
            }
        }
    }
    match &conv.bias {
        Some(b) => bias_leaky_relu(conv2d_module_with(conv, x, false), b.val(), slope),
        None => leaky_relu(conv2d_module(conv, x), slope),
    }
}

fn conv2d_module_with<B: ConvBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>, with_bias: bool) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let ((top, bottom), (left, right)) = match conv.padding {
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Same => (
            same_padding(conv.kernel_size[0], conv.stride[0], h),
            same_padding(conv.kernel_size[1], conv.stride[1], w),
        ),
        PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
    };
    // Asymmetric padding: pad explicitly, as Burn does.
    let (x, padding) = if top == bottom && left == right {
        (x, [top, left])
    } else {
        (pad_zeros(x, [top, bottom], [left, right]), [0, 0])
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let bias = conv.bias.as_ref().filter(|_| with_bias).map(|b| b.val());
    conv2d(x, conv.weight.val(), bias, options)
}

/// `x` (N, C, H, W) with `rows` (top, bottom) and `cols` (left, right) zeros around each image, in
/// the dtype of `x`. Burn's `pad` fills a tensor of the *default* float dtype and assigns `x` into
/// it: with an f16 `x` that is a dtype mismatch, which Burn's fusion rejects (`DTypeMismatch`, a
/// panic: the fp16 training step on CUDA with the tap-product weight gradient died of it) and
/// LibTorch silently promotes to f32.
pub fn pad_zeros<B: Backend>(x: Tensor<B, 4>, rows: [usize; 2], cols: [usize; 2]) -> Tensor<B, 4> {
    if rows == [0, 0] && cols == [0, 0] {
        return x;
    }
    let [n, c, h, w] = x.dims();
    let (device, dtype) = (x.device(), x.dtype());
    Tensor::zeros([n, c, h + rows[0] + rows[1], w + cols[0] + cols[1]], (&device, dtype))
        .slice_assign([0..n, 0..c, rows[0]..rows[0] + h, cols[0]..cols[0] + w], x)
}

/// `conv.forward(x)` at the current [`conv_precision`].
pub fn conv_transpose2d_module<B: ConvBackend>(
    conv: &ConvTranspose2d<B>,
    x: Tensor<B, 4>,
) -> Tensor<B, 4> {
    conv_transpose2d_module_with(conv, x, true)
}

/// `leaky_relu(conv.forward(x), slope)`, the bias and the activation in one pass where the
/// backend has it ([`bias_leaky_relu`]).
pub fn conv_transpose2d_module_leaky<B: ConvBackend>(conv: &ConvTranspose2d<B>, x: Tensor<B, 4>, slope: f64) -> Tensor<B, 4> {
    match &conv.bias {
        Some(b) => bias_leaky_relu(conv_transpose2d_module_with(conv, x, false), b.val(), slope),
        None => leaky_relu(conv_transpose2d_module(conv, x), slope),
    }
}

fn conv_transpose2d_module_with<B: ConvBackend>(conv: &ConvTranspose2d<B>, x: Tensor<B, 4>, with_bias: bool) -> Tensor<B, 4> {
    let options = ConvTransposeOptions::new(conv.stride, conv.padding, conv.padding_out, conv.dilation, conv.groups);
    let bias = conv.bias.as_ref().filter(|_| with_bias).map(|b| b.val());
    conv_transpose2d(x, conv.weight.val(), bias, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
    use burn::tensor::Distribution;

    type B = burn::backend::Flex;

    /// The module helpers in f32 mode equal the modules' own forward (Flex: same kernels), for
    /// symmetric, asymmetric (`Same` with an even kernel) and transposed convolutions.
    #[test]
    fn module_helpers_match_burn() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([2, 3, 9, 12], Distribution::Uniform(-1.0, 1.0), &device);
        let convs = [
            Conv2dConfig::new([3, 4], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_stride([2, 2])
                .init::<B>(&device),
            Conv2dConfig::new([3, 4], [4, 4])
                .with_padding(PaddingConfig2d::Same)
                .init::<B>(&device),
            Conv2dConfig::new([3, 4], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(0, 1, 2, 0))
                .init::<B>(&device),
        ];
        let deconv = ConvTranspose2dConfig::new([3, 2], [4, 4])
            .with_stride([2, 2])
            .with_padding([1, 1])
            .init::<B>(&device);
        set_conv_precision(ConvPrecision::F32);
        for conv in &convs {
            let got = conv2d_module(conv, x.clone());
            got.into_data()
                .assert_eq(&conv.forward(x.clone()).into_data(), true);
        }
        conv_transpose2d_module(&deconv, x.clone())
            .into_data()
            .assert_eq(&deconv.forward(x).into_data(), true);
        set_conv_precision(ConvPrecision::Tf32);
    }

    #[test]
    fn parses() {
        assert_eq!("F32".parse::<ConvPrecision>(), Ok(ConvPrecision::F32));
        assert_eq!("tf32".parse::<ConvPrecision>(), Ok(ConvPrecision::Tf32));
        assert!("half".parse::<ConvPrecision>().is_err());
    }
}
