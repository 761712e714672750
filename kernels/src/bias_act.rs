//! `LeakyReLU(x + bias)` (bias per channel) in one pass on LibTorch's CUDA tensors
//! (`bias_act.cu`; compiled and launched as [`crate::nvrtc`] says): FlowNetSD's convolutions and
//! deconvolutions each add a bias and apply LeakyReLU(0.1), which LibTorch runs as two passes
//! (its convolution's bias add, then PReLU). `None` (LibTorch's two passes then) for CPU tensors,
//! dtypes other than f32 and f16, layouts other than dense NCHW or channels-last, and
//! `VSR_TCH_KERNELS=libtorch`.

use burn::backend::libtorch::TchTensor;
use tch::{Device, Kind};

use crate::nvrtc::{Arg, Program, TchKernels, aligned, ptr, tch_kernels};

const SOURCE: &str = concat!(include_str!("storage.cuh"), include_str!("bias_act.cu"));
const THREADS: u32 = 256;
const ENTRIES: [&str; 4] = ["ba_f32_v4", "ba_f32_v1", "ba_f16_v4", "ba_f16_v1"];

static PROGRAM: Program = Program::new("bias_act.cu", SOURCE, &ENTRIES, "bias + LeakyReLU", "LibTorch's add and PReLU");

/// `LeakyReLU(slope)(x + bias)` for `x` (N, C, H, W) and `bias` (C), in the dtype and layout of
/// `x`, or `None` where the kernel does not apply.
pub(crate) fn forward(x: &TchTensor, bias: &TchTensor, slope: f64) -> Option<TchTensor> {
    let t = &x.tensor;
    let Device::Cuda(device) = t.device() else { return None };
    let size = t.size();
    if tch_kernels() != TchKernels::Own || !matches!(t.kind(), Kind::Float | Kind::Half) || size.len() != 4 {
        return None;
    }
    let (c, hw) = (size[1], size[2] * size[3]);
    let n = t.numel() as i64;
    if bias.tensor.size() != [c] || bias.tensor.device() != t.device() || n == 0 || c > i32::MAX as i64 {
        return None;
    }
    // The channel of the i-th value in memory: NCHW or channels-last.
    let hw_arg = if t.is_contiguous() {
        hw
    } else if crate::conv::tch_is_channels_last(t) {
        0
    } else {
        return None;
    };
    let kernels = PROGRAM.kernels(device).ok()?;
    // (the bias in the dtype of x: a no-op for a module cast to it, no per-call f32 copy)
    let b = bias.tensor.to_kind(t.kind()).contiguous();
    // (the same strides as x: NCHW or channels-last)
    let y = t.empty_like();
    // (four values at a time: a whole number of them, from an aligned start; y is a fresh allocation)
    let v4 = n % 4 == 0 && aligned(t, 4 * t.kind().elt_size_in_bytes());
    let name = format!("ba_{}_{}", if t.kind() == Kind::Half { "f16" } else { "f32" }, if v4 { "v4" } else { "v1" });
    let work = if v4 { n / 4 } else { n };
    let blocks = ((work + THREADS as i64 - 1) / THREADS as i64).min(65535 * 8) as u32;
    kernels.launch(device, (THREADS, 1, 1), &name, (blocks, 1, 1), &[
        ptr(t),
        ptr(&b),
        ptr(&y),
        Arg::I64(n),
        Arg::I64(hw_arg),
        Arg::I32(c as i32),
        Arg::F32(slope as f32),
    ]);
    Some(TchTensor::new(y))
}
