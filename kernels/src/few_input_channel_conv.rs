//! A 3x3 convolution from a few input channels to 64, its bias and LeakyReLU in one kernel of our
//! own on LibTorch's CUDA f16 tensors (`few_input_channel_conv.cu`; compiled and launched as
//! [`crate::nvrtc`] says): FlowNetSD's first layer (conv0: the two RGB frames of a pair, 6
//! channels, to 64 at full resolution), outside autodiff (FlowNetSD is frozen in training and
//! runs without autodiff in inference).
//!
//! Why: cuDNN's tensor-core kernels want a multiple of 8 input channels, so LibTorch pads the 6
//! channels to 8 in a copy first, and the bias and LeakyReLU are a second pass over the 64-channel
//! output ([`crate::bias_act`]). In vsr's fp16 training step (H100, batch 3, two pairs of 512x960
//! frames each) those took 0.62 ms (the convolution with its padding) plus 0.33 ms (bias +
//! LeakyReLU) of FlowNetSD's 4.3 ms (Nsight Compute, session 9). Ours is one matrix product on the
//! tensor cores (`mma.sync` m16n8k16, f16 operands, f32 accumulation) that reads the input in its
//! own layout, adds the bias and applies the activation to the f32 sums (one rounding to f16,
//! where LibTorch's two passes round twice) and writes the channels-last output FlowNetSD's next
//! layers read.
//!
//! It takes: f16 input and weight, a channels-last input (the layout FlowNetSD runs in on CUDA,
//! [`crate::conv::TchLayout`]; the output follows it, as PyTorch's convolutions do) with at most
//! 8 channels, a weight (64, CI, 3, 3) in any strides, a bias (64), stride 1, dilation 1, one group, padding 1,
//! at most 65535 images. Anything else, CPU tensors and `VSR_TCH_KERNELS=libtorch` go to
//! LibTorch's convolution and [`crate::bias_act`].

use burn::backend::libtorch::TchTensor;
use burn::tensor::ops::ConvOptions;
use tch::{Kind, Tensor};

use crate::conv_shape::ConvShape;
use crate::nvrtc::{Arg, Program, ptr};

const SOURCE: &str = concat!(include_str!("storage.cuh"), include_str!("mma.cuh"), include_str!("few_input_channel_conv.cu"));
/// `FI_CO`, `FI_CI`, `FI_TC`, `FI_TR` and `FI_THREADS` of few_input_channel_conv.cu.
const CO: i64 = 64;
const CI_MAX: i64 = 8;
const TC: i64 = 64;
const TR: i64 = 8;
const THREADS: u32 = 256;

const ENTRIES: [&str; 1] = ["ficv_forward_bias_leaky_f16_k3"];

static PROGRAM: Program = Program::new(
    "few_input_channel_conv.cu",
    SOURCE,
    &ENTRIES,
    "few-input-channel convolution + bias + LeakyReLU",
    "LibTorch's convolution (cuDNN) and the bias + LeakyReLU kernel",
);

/// `LeakyReLU(slope)(conv2d(x, weight, options) + bias)`, channels-last like `x`, or `None` where
/// the kernel does not apply (see the module docs).
pub(crate) fn forward(x: &TchTensor, weight: &TchTensor, bias: &TchTensor, options: &ConvOptions<2>, slope: f64) -> Option<TchTensor> {
    let (t, wt, b) = (&x.tensor, &weight.tensor, &bias.tensor);
    let g = ConvShape::same_padding(t, wt, options, &[Kind::Half], &[3])?;
    let rows = (g.h + TR - 1) / TR;
    if g.ci > CI_MAX
        || g.co != CO
        || g.n > 65535
        || rows > 65535
        || b.size() != [CO]
        || b.device() != t.device()
        || !crate::conv::tch_is_channels_last(t)
    {
        return None;
    }
    let kernels = PROGRAM.kernels(g.device).ok()?;
    // (the weight in any strides: FlowNetSD's frozen weights are channels-last)
    let bf = b.to_kind(Kind::Half).contiguous();
    let y = Tensor::empty([g.n, g.h, g.w, CO], (Kind::Half, t.device())).permute([0, 3, 1, 2]);
    let (s, ws) = (t.stride(), wt.stride());
    let grid = (((g.w + TC - 1) / TC) as u32, rows as u32, g.n as u32);
    kernels.launch(g.device, (THREADS, 1, 1), ENTRIES[0], grid, &[
        ptr(t),
        ptr(wt),
        ptr(&bf),
        ptr(&y),
        Arg::I32(g.ci as i32),
        Arg::I32(g.h as i32),
        Arg::I32(g.w as i32),
        Arg::I64(s[0]),
        Arg::I64(s[1]),
        Arg::I64(s[2]),
        Arg::I64(s[3]),
        Arg::I64(ws[0]),
        Arg::I64(ws[1]),
        Arg::I64(ws[2]),
        Arg::I64(ws[3]),
        Arg::F32(slope as f32),
    ]);
    Some(TchTensor::new(y))
}
