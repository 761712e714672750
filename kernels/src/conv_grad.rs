//! The training convolution: Burn's forward (at the current [`ConvPrecision`]) with a weight
//! gradient computed as matrix products over the kernel taps.
//!
//! Burn 0.21's autodiff takes a convolution's weight gradient from
//! `ModuleOps::conv2d_weight_backward`, whose provided implementation (used by burn-cubecl and
//! burn-tch) is *a convolution of the input by the output gradient*: for VSRNet's conv2
//! (192 -> 32 channels, 5x5, batch 3 at 512x960) a convolution whose "kernel" is a whole
//! 512x960 image. Neither cuDNN nor CubeCL has a fast algorithm for that shape (measured on an
//! H100: VSRNet's forward + backward took 438 ms on CUDA and 524 ms on LibTorch against 34 ms
//! for its forward), and CubeCL's im2col candidate asks for a 28 GB buffer.
//!
//! Here the weight gradient is `dW[:, :, i, j] = dY · shift_ij(X)ᵀ`, one matrix product per tap
//! (`Co x N` by `N x Ci`, N = batch x output pixels) — the same arithmetic as the forward, on the
//! backend's matmul (tensor cores on GPUs). Taps are grouped so that the shifted copies of the
//! input they need stay under [`TAP_CHUNK_BYTES`]: conv1 (1 channel, 9x9) is one product over all
//! 81 taps, conv2 one product per tap. The input gradient stays Burn's (a transposed
//! convolution, fast everywhere).

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps, PadMode};
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive, backend::Backend};

use crate::conv::{ConvBackend, ConvPrecision, conv_precision};

/// Largest shifted-input block one matrix product of the weight gradient reads (bytes).
pub const TAP_CHUNK_BYTES: usize = 1 << 30;

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Burn's `conv2d` on a backend without autodiff, at the current precision.
pub(crate) fn conv2d_inner<B: ConvBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    match conv_precision() {
        ConvPrecision::Tf32 => <B as ModuleOps<B>>::conv2d(x, weight, bias, options),
        ConvPrecision::F32 => B::conv2d_f32(x, weight, bias, options),
    }
}

/// Gradient of `sum(conv2d(x, w) * output_grad)` with respect to `w` (shape `weight_shape`),
/// by matrix products over the taps; Burn's own for grouped or strided convolutions.
pub fn conv2d_weight_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    if options.groups != 1 || options.stride != [1, 1] {
        return B::conv2d_weight_backward(x, weight, output_grad, options);
    }
    weight_grad_taps::<B>(x, weight.shape().dims(), output_grad, options, TAP_CHUNK_BYTES)
}

fn weight_grad_taps<B: Backend>(
    x: FloatTensor<B>,
    [co, ci, kh, kw]: [usize; 4],
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
    chunk_bytes: usize,
) -> FloatTensor<B> {
    let x: Tensor<B, 4> = tensor(x);
    let dy: Tensor<B, 4> = tensor(output_grad);
    let [b, _, _, _] = x.dims();
    let [_, _, ho, wo] = dy.dims();
    let [ph, pw] = options.padding;
    let [dh, dw] = options.dilation;
    let n = b * ho * wo;
    let x = if ph > 0 || pw > 0 {
        x.pad((pw, pw, ph, ph), PadMode::Constant(0.0))
    } else {
        x
    };
    // dY as Co x N, N ordered (sample, row, column) like the shifted inputs below.
    let dy = dy.swap_dims(0, 1).reshape([co, n]);
    let taps: Vec<(usize, usize)> = (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))).collect();
    let elem = x.dtype().size();
    let per_chunk = (chunk_bytes / (ci * n * elem).max(1)).clamp(1, taps.len());
    let mut parts = Vec::with_capacity(taps.len().div_ceil(per_chunk));
    for chunk in taps.chunks(per_chunk) {
        let cols: Vec<Tensor<B, 2>> = chunk
            .iter()
            .map(|&(i, j)| {
                let (r, c) = (i * dh, j * dw);
                x.clone()
                    .slice([0..b, 0..ci, r..r + ho, c..c + wo])
                    .swap_dims(0, 1)
                    .reshape([ci, n])
            })
            .collect();
        let cols = Tensor::cat(cols, 0); // (taps in chunk * Ci) x N
        parts.push(dy.clone().matmul(cols.transpose())); // Co x (taps * Ci)
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

impl<B: ConvBackend> Backward<B, 2> for Conv2dBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_id, w_id, options) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_id);
        let w: FloatTensor<B> = checkpointer.retrieve_node_output(w_id);
        if let Some(node) = node_x {
            let gx = B::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), options.clone());
            grads.register::<B>(node.id, gx);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, conv2d_weight_grad::<B>(x, w, dy, options));
        }
    }
}

/// `conv2d` under autodiff with the tap-product weight gradient; the bias (if any) is added
/// with tensor ops, so its gradient is autodiff's sum.
pub(crate) fn conv2d_autodiff<B: ConvBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
    let out = match Conv2dBackward
        .prepare::<C>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let w_id = prep.checkpoint(&weight);
            let out = conv2d_inner::<B>(x.primitive, weight.primitive, None, options.clone());
            prep.finish((x_id, w_id, options), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(conv2d_inner::<B>(x.primitive, weight.primitive, None, options)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<burn::backend::Flex>;

    /// Gradients of the training convolution equal Burn's own (its conv2d under autodiff) for
    /// input, weight and bias: padding, dilation, one and many channels, 1x1 and 9x9 kernels, a
    /// chunk limit small enough to split the taps, and the strided fallback.
    #[test]
    fn gradients_match_burn() {
        let device = Default::default();
        // (batch, cin, cout, h, w, kernel, padding, dilation, stride)
        let cases = [
            (2, 3, 4, 9, 11, 3, 1, 1, 1),
            (3, 1, 5, 12, 10, 9, 4, 1, 1),
            (1, 6, 2, 8, 8, 5, 2, 1, 1),
            (2, 2, 3, 10, 9, 3, 2, 2, 1),
            (2, 4, 3, 7, 6, 1, 0, 1, 1),
            (2, 3, 4, 9, 11, 3, 1, 1, 2),
        ];
        for (b, ci, co, h, w, k, p, d, s) in cases {
            let x = Tensor::<A, 4>::random([b, ci, h, w], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
            let wt = Tensor::<A, 4>::random([co, ci, k, k], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
            let bias = Tensor::<A, 1>::random([co], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
            let options = ConvOptions::new([s, s], [p, p], [d, d], 1);
            let weights_out = |y: Tensor<A, 4>| {
                let r = Tensor::<A, 4>::random(y.dims(), Distribution::Uniform(-1.0, 1.0), &device);
                (y, r)
            };
            let ours = crate::conv::conv2d(x.clone(), wt.clone(), Some(bias.clone()), options.clone());
            let (ours, r) = weights_out(ours);
            let burns = burn::tensor::module::conv2d(x.clone(), wt.clone(), Some(bias.clone()), options);
            ours.clone().into_data().assert_approx_eq::<f32>(&burns.clone().into_data(), Tolerance::default());
            let g1 = (ours * r.clone()).sum().backward();
            let g2 = (burns * r).sum().backward();
            for (name, a, bb) in [
                ("x", x.grad(&g1).unwrap(), x.grad(&g2).unwrap()),
                ("weight", wt.grad(&g1).unwrap(), wt.grad(&g2).unwrap()),
            ] {
                let (a, bb) = (a.into_data(), bb.into_data());
                assert!(a.shape == bb.shape, "{name}: shape");
                a.assert_approx_eq::<f32>(&bb, Tolerance::rel_abs(1e-4, 1e-4));
            }
            bias.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(&bias.grad(&g2).unwrap().into_data(), Tolerance::rel_abs(1e-4, 1e-4));
        }
    }

    /// Splitting the taps into chunks gives the same weight gradient as one product.
    #[test]
    fn chunked_taps_equal_one_product() {
        type F = burn::backend::Flex;
        let device = Default::default();
        let x = Tensor::<F, 4>::random([2, 3, 10, 12], Distribution::Uniform(-1.0, 1.0), &device);
        let w = Tensor::<F, 4>::random([4, 3, 5, 5], Distribution::Uniform(-1.0, 1.0), &device);
        let dy = Tensor::<F, 4>::random([2, 4, 10, 12], Distribution::Uniform(-1.0, 1.0), &device);
        let options = ConvOptions::new([1, 1], [2, 2], [1, 1], 1);
        // 3 channels x 240 positions x 4 bytes per tap: 7 taps per product, 4 products.
        let ours: Tensor<F, 4> = tensor(weight_grad_taps::<F>(
            x.clone().into_primitive().tensor(),
            [4, 3, 5, 5],
            dy.clone().into_primitive().tensor(),
            options.clone(),
            7 * 3 * 240 * 4,
        ));
        let burns: Tensor<F, 4> = tensor(<F as ModuleOps<F>>::conv2d_weight_backward(
            x.into_primitive().tensor(),
            w.into_primitive().tensor(),
            dy.into_primitive().tensor(),
            options,
        ));
        ours.into_data().assert_approx_eq::<f32>(&burns.into_data(), Tolerance::rel_abs(1e-4, 1e-4));
    }
}
