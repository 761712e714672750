//! The training convolution: a `conv2d` under autodiff whose backward the backend may compute
//! itself, and the choice of the weight gradient.
//!
//! Burn 0.21's autodiff takes a convolution's weight gradient from
//! `ModuleOps::conv2d_weight_backward`. Its provided implementation, which burn-tch uses, is *a
//! convolution of the input by the output gradient*: for VSRNet's conv2 (192 -> 32 channels,
//! 5x5, batch 3 at 512x960) a convolution whose "kernel" is a whole 512x960 image, for which
//! cuDNN has no fast algorithm (measured on an H100: VSRNet's forward + backward took 524 ms on
//! LibTorch against 34 ms for its forward).
//!
//! Two remedies, chosen per backend:
//! * **The backend's own graph** ([`ConvBackend::conv2d_graph`]): LibTorch runs the forward
//!   under its autograd (leaf copies of input and weight, no data copied) and the backward is
//!   one `convolution_backward` call, cuDNN's data and filter gradients, as in PyTorch.
//! * **Tap products** ([`WeightGrad::Taps`], `VSR_WGRAD=taps`): `dW[:, :, i, j] = dY ·
//!   shift_ij(X)ᵀ`, one batched matrix product per group of taps, the reduction over batch and
//!   output pixels split into row blocks (split-K) so that the product has enough independent
//!   blocks to fill a GPU. Any backend; the default on CubeCL backends
//!   ([`ConvBackend::WEIGHT_GRAD`]): faster there than Burn's autotuned weight gradient, and
//!   no minute of tuning it at the first step (`VSR_WGRAD=burn` brings Burn's back; `vsr bench
//!   conv` compares them).
//!
//! Elsewhere the training convolution is Burn's own, forward and backward.

use std::any::Any;
use std::sync::Arc;

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive, backend::Backend};

use crate::conv::{BatchNormAct, ConvBackend, ConvPrecision, conv_precision};

/// How the weight gradient of a training convolution is computed where the backend has no
/// graph of its own ([`ConvBackend::CONV_GRAPH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightGrad {
    /// Burn's `conv2d_weight_backward` (CubeCL: autotuned implicit GEMM or the fallback).
    Burn,
    /// Batched matrix products over the kernel taps, split over row blocks.
    Taps,
}

impl std::str::FromStr for WeightGrad {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "burn" => Ok(Self::Burn),
            "taps" => Ok(Self::Taps),
            other => Err(format!("weight gradient `{other}`: expected `burn` or `taps`")),
        }
    }
}

/// The weight gradient chosen by the environment variable `VSR_WGRAD` (`burn` or `taps`), `None`
/// when unset.
///
/// # Panics
/// If `VSR_WGRAD` holds anything else (a typo must not silently change what is measured).
pub fn weight_grad_mode() -> Option<WeightGrad> {
    static MODE: std::sync::OnceLock<Option<WeightGrad>> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        std::env::var("VSR_WGRAD").ok().map(|v| v.parse().unwrap_or_else(|e| panic!("VSR_WGRAD: {e}")))
    })
}

/// The weight gradient of training convolutions on `B` (where it has no graph of its own):
/// `VSR_WGRAD` if set, else the backend's [`ConvBackend::WEIGHT_GRAD`].
pub fn weight_grad_for<B: ConvBackend>() -> WeightGrad {
    weight_grad_mode().unwrap_or(B::WEIGHT_GRAD)
}

/// A backend's saved forward of a training convolution, consumed by
/// [`ConvBackend::conv2d_graph_backward`] (LibTorch: its autograd graph).
#[derive(Clone)]
pub struct ConvGraph(pub Arc<dyn Any + Send + Sync>);

impl std::fmt::Debug for ConvGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConvGraph")
    }
}

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `conv2d` on a backend without autodiff, at the current precision: the backend's vendor
/// library where it has one, else Burn's.
pub(crate) fn conv2d_inner<B: ConvBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    if B::vendor_conv() {
        return B::vendor_conv2d(x, weight, bias, options);
    }
    match conv_precision() {
        ConvPrecision::Tf32 => <B as ModuleOps<B>>::conv2d(x, weight, bias, options),
        ConvPrecision::F32 => B::conv2d_f32(x, weight, bias, options),
    }
}

/// Gradient of `sum(conv2d(x, w) * output_grad)` with respect to `w` by [`WeightGrad::Taps`];
/// Burn's own for grouped or strided convolutions.
pub fn conv2d_weight_grad_taps<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    if options.groups != 1 || options.stride != [1, 1] {
        return B::conv2d_weight_backward(x, weight, output_grad, options);
    }
    weight_grad_taps::<B>(x, weight.shape().dims(), output_grad, options, TAP_CHUNK_BYTES, TARGET_BLOCKS)
}

/// Largest block of shifted input one group of taps copies (bytes).
pub const TAP_CHUNK_BYTES: usize = 1 << 30;
/// Independent (sample, row block) products the reduction is split into, at least.
pub const TARGET_BLOCKS: usize = 256;

/// Row-block height: the largest divisor of `ho` giving at least `target` blocks over `b`
/// samples (1 row per block if even that is not enough).
fn row_block(b: usize, ho: usize, target: usize) -> usize {
    let want = target.div_ceil(b.max(1)); // blocks per sample
    (1..=ho).rev().find(|r| ho % r == 0 && ho / r >= want).unwrap_or(1)
}

fn weight_grad_taps<B: Backend>(
    x: FloatTensor<B>,
    [co, ci, kh, kw]: [usize; 4],
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
    chunk_bytes: usize,
    target_blocks: usize,
) -> FloatTensor<B> {
    let x: Tensor<B, 4> = tensor(x);
    let dy: Tensor<B, 4> = tensor(output_grad);
    let [b, _, _, _] = x.dims();
    let [_, _, ho, wo] = dy.dims();
    let [ph, pw] = options.padding;
    let [dh, dw] = options.dilation;
    let x = crate::conv::pad_zeros(x, [ph, ph], [pw, pw]);
    // Split the reduction (sample, row, column) into b * s blocks of r rows: batch dims.
    let r = row_block(b, ho, target_blocks);
    let s = ho / r;
    let blocks = |t: Tensor<B, 4>, c: usize| -> Tensor<B, 3> {
        // (b, c, ho, wo) -> (b * s, c, r * wo)
        t.reshape([b, c, s, r * wo]).swap_dims(1, 2).reshape([b * s, c, r * wo])
    };
    let dy = blocks(dy, co);
    let taps: Vec<(usize, usize)> = (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))).collect();
    let elem = x.dtype().size();
    let per_chunk = (chunk_bytes / (ci * b * ho * wo * elem).max(1)).clamp(1, taps.len());
    let mut parts = Vec::with_capacity(taps.len().div_ceil(per_chunk));
    for chunk in taps.chunks(per_chunk) {
        let cols: Vec<Tensor<B, 4>> = chunk
            .iter()
            .map(|&(i, j)| {
                let (r0, c0) = (i * dh, j * dw);
                x.clone().slice([0..b, 0..ci, r0..r0 + ho, c0..c0 + wo])
            })
            .collect();
        let n = chunk.len() * ci;
        let cols = blocks(Tensor::cat(cols, 1), n); // (b s, taps * ci, r wo)
        // (b s, co, r wo) x (b s, r wo, taps * ci), summed over the blocks.
        let part = dy.clone().matmul(cols.swap_dims(1, 2)).sum_dim(0).reshape([co, n]);
        parts.push(part);
    }
    Tensor::cat(parts, 1)
        .reshape([co, kh * kw, ci])
        .swap_dims(1, 2)
        .reshape([co, ci, kh, kw])
        .into_primitive()
        .tensor()
}

#[derive(Debug)]
struct Conv2dBackward;

/// Input and weight checkpoints, for Burn's input gradient and the tap-product weight gradient.
#[derive(Debug, Clone)]
struct ConvState(NodeId, NodeId, ConvOptions<2>);

impl<B: ConvBackend> Backward<B, 2> for Conv2dBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let ConvState(x_id, w_id, options) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_id);
        let w: FloatTensor<B> = checkpointer.retrieve_node_output(w_id);
        if B::vendor_conv() {
            let need = [node_x.is_some(), node_w.is_some()];
            let [gx, gw] = B::vendor_conv2d_backward(x, w, dy, options, need);
            for (node, g) in [node_x, node_w].into_iter().zip([gx, gw]) {
                if let (Some(node), Some(g)) = (node, g) {
                    grads.register::<B>(node.id, g);
                }
            }
            return;
        }
        if let Some(node) = node_x {
            let gx = B::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), options.clone());
            grads.register::<B>(node.id, gx);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, conv2d_weight_grad_taps::<B>(x, w, dy, options));
        }
    }
}

/// An operation the backend differentiates itself: its graph hands back one gradient per parent.
#[derive(Debug)]
struct GraphBackward;

impl<B: ConvBackend, const N: usize> Backward<B, N> for GraphBackward {
    type State = ConvGraph;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let gs = B::graph_backward(ops.state, dy);
        for (node, g) in ops.parents.into_iter().zip(gs) {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// `conv2d` under autodiff: the backend's own graph where it has one, else its vendor library's
/// three passes where it has one, else the tap-product weight gradient if chosen
/// ([`weight_grad_for`]), else Burn's convolution. The bias (if any) is added
/// with tensor ops in the first two cases, so its gradient is autodiff's sum.
pub(crate) fn conv2d_autodiff<B: ConvBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
    conv2d_autodiff_with::<B, C>(x, weight, bias, options, weight_grad_for::<B>())
}

fn conv2d_autodiff_with<B: ConvBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    options: ConvOptions<2>,
    mode: WeightGrad,
) -> FloatTensor<Autodiff<B, C>> {
    if !B::CONV_GRAPH && !B::vendor_conv() && mode == WeightGrad::Burn {
        return conv2d_inner::<Autodiff<B, C>>(x, weight, bias, options);
    }
    let out = if B::CONV_GRAPH {
        let need = [&x, &weight].map(|t| !t.node.requirement.is_none());
        match GraphBackward.prepare::<C>([x.node.clone(), weight.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, graph) = B::conv2d_graph(x.primitive, weight.primitive, need, options);
                prep.finish(graph, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(conv2d_inner::<B>(x.primitive, weight.primitive, None, options)),
        }
    } else {
        match Conv2dBackward.prepare::<C>([x.node.clone(), weight.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let w_id = prep.checkpoint(&weight);
                let out = conv2d_inner::<B>(x.primitive, weight.primitive, None, options.clone());
                prep.finish(ConvState(x_id, w_id, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(conv2d_inner::<B>(x.primitive, weight.primitive, None, options)),
        }
    };
    match bias {
        None => out,
        Some(bias) => {
            let out: Tensor<Autodiff<B, C>, 4> = tensor(out);
            let bias: Tensor<Autodiff<B, C>, 1> = tensor(bias);
            let c = bias.dims()[0];
            (out + bias.reshape([1, c, 1, 1])).into_primitive().tensor()
        }
    }
}

#[derive(Debug)]
struct OwnBatchNormBackward;

/// What [`OwnBatchNormBackward`] keeps: the input, the forward's saved tensors, the settings.
#[derive(Debug, Clone)]
struct OwnBatchNormState<B: Backend> {
    x: FloatTensor<B>,
    saved: [FloatTensor<B>; 4],
    settings: BatchNormAct,
}

impl<B: ConvBackend> Backward<B, 3> for OwnBatchNormBackward {
    type State = OwnBatchNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let gs = B::own_batch_norm_backward(s.x, dy, s.saved, s.settings);
        for (node, g) in ops.parents.into_iter().zip(gs) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Training-mode BatchNorm + LeakyReLU under autodiff on a backend with its own graph
/// ([`ConvBackend::batch_norm_graph`]) or with kernels of its own
/// ([`ConvBackend::own_batch_norm`]); see [`crate::conv::batch_norm_act`].
pub(crate) fn batch_norm_autodiff<B: ConvBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    beta: FloatTensor<Autodiff<B, C>>,
    [mean, var]: [FloatTensor<Autodiff<B, C>>; 2],
    settings: BatchNormAct,
) -> (FloatTensor<Autodiff<B, C>>, [FloatTensor<Autodiff<B, C>>; 2]) {
    let running = [mean.primitive, var.primitive];
    let constant = |t: FloatTensor<B>| -> FloatTensor<Autodiff<B, C>> {
        Tensor::<Autodiff<B, C>, 1>::from_inner(tensor(t)).into_primitive().tensor()
    };
    if !B::CONV_GRAPH {
        let prep = OwnBatchNormBackward
            .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful();
        let x = x.primitive;
        let (y, [mean, var], saved) =
            B::own_batch_norm_forward(x.clone(), gamma.primitive, beta.primitive, running, settings);
        let out = match prep {
            OpsKind::Tracked(prep) => prep.finish(OwnBatchNormState { x, saved, settings }, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        return (out, [constant(mean), constant(var)]);
    }
    let need = [&x, &gamma, &beta].map(|t| !t.node.requirement.is_none());
    let prep = GraphBackward.prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()]).compute_bound().stateful();
    let (out, [mean, var], graph) =
        B::batch_norm_graph(x.primitive, gamma.primitive, beta.primitive, running, settings, need);
    let out = match prep {
        OpsKind::Tracked(prep) => prep.finish(graph, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    (out, [constant(mean), constant(var)])
}

/// LibTorch's graphs: forwards under its autograd, backwards through `run_backward` (cuDNN's
/// convolution and BatchNorm backward kernels, as in PyTorch); on CUDA, BatchNorm + LeakyReLU,
/// one-output-channel convolutions and one-input-channel convolutions of an input that needs no
/// gradient (f16, and f32 where TF32 is allowed) run vsr's own kernels instead, with their own
/// saved state ([`crate::batch_norm`], [`crate::one_channel_conv`],
/// [`crate::one_input_channel_conv`]), and so does the weight gradient of f16 convolutions to 32
/// channels, and of f32 ones where TF32 is allowed ([`crate::tensor_core_conv`]).
#[cfg(feature = "tch")]
pub(crate) mod libtorch {
    use super::ConvGraph;
    use burn::backend::libtorch::TchTensor;
    use burn::tensor::ops::ConvOptions;
    use std::sync::Arc;

    struct Saved {
        /// Autograd leaves sharing the storage of Burn's tensors, and whether each needs a gradient.
        leaves: Vec<(TchTensor, bool)>,
        /// The output with its autograd history.
        y: TchTensor,
        /// Burn's own handles of the leaves: while held, Burn writes into none of them in place.
        _burn: Vec<TchTensor>,
    }

    /// Runs `f` on autograd leaves of `inputs` (gradients where `need` says) with grad mode on,
    /// returning the detached output for Burn and the graph.
    fn record(inputs: Vec<TchTensor>, need: &[bool], f: impl FnOnce(&[tch::Tensor]) -> tch::Tensor) -> (TchTensor, ConvGraph) {
        let leaves: Vec<tch::Tensor> =
            inputs.iter().zip(need).map(|(t, &n)| t.tensor.detach().set_requires_grad(n)).collect();
        let y = tch::with_grad(|| f(&leaves));
        let out = TchTensor::new(y.detach());
        let leaves = leaves.into_iter().zip(need.iter().copied()).map(|(t, n)| (TchTensor::new(t), n)).collect();
        (out, ConvGraph(Arc::new(Saved { leaves, y: TchTensor::new(y), _burn: inputs })))
    }

    pub(crate) fn conv2d(x: TchTensor, w: TchTensor, need: [bool; 2], options: ConvOptions<2>, allow_tf32: bool) -> (TchTensor, ConvGraph) {
        if let Some(out) = crate::one_input_channel_conv::forward(&x, &w, need, &options, allow_tf32) {
            return out;
        }
        if let Some(out) = crate::one_channel_conv::forward(&x, &w, need, &options) {
            return out;
        }
        if let Some(out) = crate::tensor_core_conv::forward(&x, &w, need, &options, allow_tf32) {
            return out;
        }
        let i64s = |v: [usize; 2]| v.map(|i| i as i64);
        record(vec![x, w], &need, |l| {
            l[0].internal_convolution(
                &l[1],
                None::<&tch::Tensor>,
                i64s(options.stride),
                i64s(options.padding),
                i64s(options.dilation),
                false,
                [0i64, 0],
                options.groups as i64,
                crate::conv::tch_cudnn_benchmark(),
                false,
                true,
                allow_tf32,
            )
        })
    }

    pub(crate) fn batch_norm(
        x: TchTensor,
        gamma: TchTensor,
        beta: TchTensor,
        [mean, var]: [TchTensor; 2],
        settings: crate::conv::BatchNormAct,
        need: [bool; 3],
    ) -> (TchTensor, [TchTensor; 2], ConvGraph) {
        if let Some(out) = crate::batch_norm::forward(&x, &gamma, &beta, [&mean, &var], settings, need) {
            return out;
        }
        // LibTorch updates the running statistics in place: give it copies.
        let (mean, var) = (mean.tensor.copy(), var.tensor.copy());
        let (out, graph) = record(vec![x, gamma, beta], &need, |l| {
            let y = l[0].batch_norm(Some(&l[1]), Some(&l[2]), Some(&mean), Some(&var), true, settings.momentum, settings.epsilon, true);
            match settings.slope {
                // LeakyReLU(s) = PReLU with the fixed weight s (tch has no leaky_relu with a slope).
                // (made on the device: a host-to-device copy would synchronise the stream)
                Some(s) => y.prelu(&tch::Tensor::full([1], s, (y.kind(), y.device()))),
                None => y,
            }
        });
        // LibTorch's BatchNorm backward keeps the running statistics it was given, and Burn's
        // RunningState writes into the tensors it holds in place: hand Burn its own copies.
        (out, [TchTensor::new(mean.copy()), TchTensor::new(var.copy())], graph)
    }

    unsafe extern "C" {
        /// csrc/backward.cpp: gradients of `roots` seeded with `grads` for `inputs` (new handles
        /// into `outputs`; an undefined tensor for an input the roots do not depend on); non-zero
        /// with a message in `error` on failure.
        fn vsr_tch_backward(
            roots: *const *mut std::ffi::c_void,
            grads: *const *mut std::ffi::c_void,
            nroots: i32,
            inputs: *const *mut std::ffi::c_void,
            ninputs: i32,
            outputs: *mut *mut std::ffi::c_void,
            allow_tf32: i32,
            error: *mut std::ffi::c_char,
            error_len: i32,
        ) -> i32;
    }

    /// LibTorch's `torch.autograd.grad(roots, inputs, grads)`: the backward of the graphs behind
    /// `roots` for output gradients `grads`, freeing them, its f32 convolutions at the current
    /// [`crate::conv::conv_precision`] (cuDNN's backward takes TF32 from LibTorch's process-wide
    /// setting, which this sets, not from the forward's `allow_tf32`). Panics with LibTorch's
    /// message on failure (as tch's infallible calls do).
    fn autograd_grad(roots: &[&tch::Tensor], grads: &[&tch::Tensor], inputs: &[&tch::Tensor]) -> Vec<tch::Tensor> {
        assert_eq!(roots.len(), grads.len());
        let allow_tf32 = crate::conv::conv_precision() == crate::conv::ConvPrecision::Tf32;
        let ptr = |t: &&tch::Tensor| t.as_ptr() as *mut std::ffi::c_void;
        let (r, g, i): (Vec<_>, Vec<_>, Vec<_>) =
            (roots.iter().map(ptr).collect(), grads.iter().map(ptr).collect(), inputs.iter().map(ptr).collect());
        let mut out = vec![std::ptr::null_mut(); inputs.len()];
        let mut error = [0 as std::ffi::c_char; 1024];
        // SAFETY: live tch handles (torch::Tensor*), counts matching the slices; `out` receives
        // `inputs.len()` new handles, each owned once by the tch::Tensor made from it.
        let rc = unsafe {
            vsr_tch_backward(r.as_ptr(), g.as_ptr(), r.len() as i32, i.as_ptr(), i.len() as i32, out.as_mut_ptr(), allow_tf32 as i32, error.as_mut_ptr(), error.len() as i32)
        };
        if rc != 0 {
            // SAFETY: NUL-terminated by the C++ side.
            let msg = unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) };
            panic!("LibTorch backward failed: {}", msg.to_string_lossy());
        }
        // SAFETY: new handles from the C++ side, each wrapped once.
        out.into_iter().map(|p| unsafe { tch::Tensor::from_ptr(p.cast()) }).collect()
    }

    pub(crate) fn backward(graph: ConvGraph, dy: TchTensor) -> Vec<Option<TchTensor>> {
        if let Some(bn) = graph.0.downcast_ref::<crate::batch_norm::Saved>() {
            return crate::batch_norm::backward(bn, &dy);
        }
        if let Some(conv) = graph.0.downcast_ref::<crate::one_channel_conv::Saved>() {
            return crate::one_channel_conv::backward(conv, &dy);
        }
        if let Some(conv) = graph.0.downcast_ref::<crate::one_input_channel_conv::Saved>() {
            return crate::one_input_channel_conv::backward(conv, &dy);
        }
        if let Some(conv) = graph.0.downcast_ref::<crate::tensor_core_conv::Saved>() {
            return crate::tensor_core_conv::backward(conv, &dy);
        }
        let saved = graph.0.downcast_ref::<Saved>().expect("a LibTorch graph");
        let wanted: Vec<&tch::Tensor> = saved.leaves.iter().filter(|(_, n)| *n).map(|(t, _)| &t.tensor).collect();
        let y = &saved.y.tensor;
        // Seeded with Burn's gradient as it is (autograd checks its shape; the dtype must be the
        // output's).
        let dy = if dy.tensor.kind() == y.kind() { dy.tensor.shallow_clone() } else { dy.tensor.to_kind(y.kind()) };
        let mut grads = autograd_grad(&[y], &[&dy], &wanted).into_iter();
        saved.leaves.iter().map(|(_, n)| n.then(|| TchTensor::new(grads.next().expect("one gradient per leaf")))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::tensor::{Distribution, Tolerance};

    /// The tap products equal Burn's weight gradient: padding, dilation, one and many channels,
    /// 1x1 to 9x9 kernels, tap groups split by a small chunk limit, row blocks of 1 to all rows.
    #[test]
    fn taps_equal_burn_weight_grad() {
        type F = burn::backend::Flex;
        let device = Default::default();
        // (batch, cin, cout, h, w, kernel, padding, dilation, chunk bytes, target blocks)
        let cases = [
            (2, 3, 4, 9, 11, 3, 1, 1, 1 << 30, 1),
            (3, 1, 5, 12, 10, 9, 4, 1, 1 << 30, 256),
            (1, 6, 2, 8, 8, 5, 2, 1, 7 * 6 * 64 * 4, 4),
            (2, 2, 3, 10, 9, 3, 2, 2, 1 << 30, 6),
            (2, 4, 3, 7, 6, 1, 0, 1, 1 << 30, 3),
        ];
        for (b, ci, co, h, w, k, p, d, chunk, target) in cases {
            let x = Tensor::<F, 4>::random([b, ci, h, w], Distribution::Uniform(-1.0, 1.0), &device);
            let wt = Tensor::<F, 4>::random([co, ci, k, k], Distribution::Uniform(-1.0, 1.0), &device);
            let options = ConvOptions::new([1, 1], [p, p], [d, d], 1);
            let y = burn::tensor::module::conv2d(x.clone(), wt.clone(), None, options.clone());
            let dy = Tensor::<F, 4>::random(y.dims(), Distribution::Uniform(-1.0, 1.0), &device);
            let ours: Tensor<F, 4> = tensor(weight_grad_taps::<F>(
                x.clone().into_primitive().tensor(),
                [co, ci, k, k],
                dy.clone().into_primitive().tensor(),
                options.clone(),
                chunk,
                target,
            ));
            let burns: Tensor<F, 4> = tensor(<F as ModuleOps<F>>::conv2d_weight_backward(
                x.into_primitive().tensor(),
                wt.into_primitive().tensor(),
                dy.into_primitive().tensor(),
                options,
            ));
            ours.into_data().assert_approx_eq::<f32>(&burns.into_data(), Tolerance::rel_abs(1e-4, 1e-4));
        }
    }

    #[test]
    fn row_blocks_divide_the_rows() {
        assert_eq!(row_block(3, 512, 256), 4); // 128 blocks per sample, 384 in all
        assert_eq!(row_block(1, 7, 256), 1);
        assert_eq!(row_block(8, 12, 4), 12);
        assert_eq!(row_block(2, 12, 6), 4);
    }

    /// Under autodiff, the training convolution (tap products for the weight) gives Burn's
    /// gradients for input, weight and bias, and the strided case falls back to Burn's.
    #[test]
    fn autodiff_gradients_match_burn() {
        type A = Autodiff<burn::backend::Flex>;
        let device = Default::default();
        for (s, p) in [(1, 2), (2, 1)] {
            let x = Tensor::<A, 4>::random([2, 3, 9, 11], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
            let wt = Tensor::<A, 4>::random([4, 3, 5, 5], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
            let bias = Tensor::<A, 1>::random([4], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
            let options = ConvOptions::new([s, s], [p, p], [1, 1], 1);
            let ours: Tensor<A, 4> = tensor(conv2d_autodiff_with::<burn::backend::Flex, NoCheckpointing>(
                x.clone().into_primitive().tensor(),
                wt.clone().into_primitive().tensor(),
                Some(bias.clone().into_primitive().tensor()),
                options.clone(),
                WeightGrad::Taps,
            ));
            let burns = burn::tensor::module::conv2d(x.clone(), wt.clone(), Some(bias.clone()), options);
            ours.clone().into_data().assert_approx_eq::<f32>(&burns.clone().into_data(), Tolerance::default());
            let r = Tensor::<A, 4>::random(ours.dims(), Distribution::Uniform(-1.0, 1.0), &device);
            let g1 = (ours * r.clone()).sum().backward();
            let g2 = (burns * r).sum().backward();
            let tol = Tolerance::rel_abs(1e-4, 1e-4);
            x.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), tol);
            wt.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(&wt.grad(&g2).unwrap().into_data(), tol);
            bias.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(&bias.grad(&g2).unwrap().into_data(), tol);
        }
    }
}
