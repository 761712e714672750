//! `LeakyReLU(x + bias)` (bias per channel) in one pass on LibTorch's CUDA tensors
//! (`bias_act.cu`; compiled and launched as [`crate::nvrtc`] says): FlowNetSD's convolutions and
//! deconvolutions each add a bias and apply LeakyReLU(0.1), which LibTorch runs as two passes
//! (its convolution's bias add, then PReLU). `None` (LibTorch's two passes then) for CPU tensors,
//! dtypes other than f32 and f16, layouts other than dense NCHW or channels-last, and
//! `VSR_TCH_KERNELS=libtorch`.
//!
//! On the CUDA backend ([`cube`]) the same pass, channels-last, writes a frozen channels-last
//! network's bias + LeakyReLU in place and its concatenations' parts
//! ([`crate::channels_last`]).

#[cfg(feature = "tch")]
use burn::backend::libtorch::TchTensor;
#[cfg(feature = "tch")]
use tch::{Device, Kind};

use crate::nvrtc::Program;
#[cfg(feature = "tch")]
use crate::nvrtc::{Arg, TchKernels, aligned, ptr, tch_kernels};

const SOURCE: &str = concat!(include_str!("storage.cuh"), include_str!("bias_act.cu"));
const THREADS: u32 = 256;
const ENTRIES: [&str; 8] =
    ["ba_f32_v4", "ba_f32_v1", "ba_f16_v4", "ba_f16_v1", "bas_f32_v4", "bas_f32_v1", "bas_f16_v4", "bas_f16_v1"];

static PROGRAM: Program = Program::new("bias_act.cu", SOURCE, &ENTRIES, "bias + LeakyReLU", "LibTorch's add and PReLU");

/// `LeakyReLU(slope)(x + bias)` for `x` (N, C, H, W) and `bias` (C), in the dtype and layout of
/// `x`, or `None` where the kernel does not apply.
#[cfg(feature = "tch")]
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

#[cfg(feature = "cuda")]
pub(crate) mod cube {
    use burn::tensor::DType;

    use super::{PROGRAM, THREADS};
    use crate::cube::own_conv::{Tensor, pointers};
    use crate::nvrtc::Arg;

    /// Writes `LeakyReLU(slope)(x + bias)` (a missing bias adds nothing, slope 1 is no activation)
    /// of the dense channels-last `x` (.., C) into channels `[offset, offset + C)` of the dense
    /// channels-last `y` (.., Cy) of the same pixels; `y` may be `x` itself (`offset` 0). On
    /// CubeCL's stream, from its device thread.
    ///
    /// # Panics
    /// Where the kernels do not load (they did for the convolutions before: same NVRTC), on a
    /// dtype other than f32 and f16, or where the shapes disagree.
    pub(crate) fn write(x: &Tensor, bias: Option<&Tensor>, y: &Tensor, offset: usize, slope: f32) {
        let (xs, ys) = (x.meta.shape(), y.meta.shape());
        let (c, cy) = (xs[xs.num_dims() - 1], ys[ys.num_dims() - 1]);
        let n = xs.num_elements();
        assert_eq!(n / c, ys.num_elements() / cy, "bias_act: {xs:?} into {ys:?}: not the same pixels");
        assert!(offset + c <= cy && x.dtype == y.dtype, "bias_act: {xs:?} into channels {offset}.. of {ys:?}");
        if let Some(b) = bias {
            assert!(b.meta.shape().num_elements() == c && b.dtype == x.dtype, "bias_act: bias {:?} for {c} channels", b.meta.shape());
        }
        let half = match x.dtype {
            DType::F16 => true,
            DType::F32 => false,
            other => panic!("bias_act: {other:?} (f32 and f16 only)"),
        };
        if n == 0 {
            return;
        }
        let kernels = PROGRAM.kernels(x.device.index).unwrap_or_else(|e| panic!("bias_act kernels: {e}"));
        let v4 = c % 4 == 0 && cy % 4 == 0 && offset % 4 == 0;
        let name = format!("bas_{}_{}", if half { "f16" } else { "f32" }, if v4 { "v4" } else { "v1" });
        let work = if v4 { n / 4 } else { n } as u64;
        let blocks = work.div_ceil(THREADS as u64).min(65535 * 8) as u32;
        let (pb, _gb) = match bias {
            Some(b) => {
                let ([pb], _, g) = pointers([b]);
                (pb, Some(g))
            }
            None => (0, None),
        };
        let ([px, py], stream, _guards) = pointers([x, y]);
        let args = [
            Arg::Ptr(px),
            Arg::Ptr(pb),
            Arg::Ptr(py),
            Arg::I64(n as i64),
            Arg::I32(c as i32),
            Arg::I32(cy as i32),
            Arg::I32(offset as i32),
            Arg::F32(slope),
        ];
        // SAFETY: dense buffers of CubeCL's stream (CubeCL allocates with at least 16-byte
        // alignment, so the four-value accesses are aligned), kept until the launch is queued;
        // the kernel indexes x below n and y below n / C * Cy.
        unsafe { kernels.launch_on(stream, (THREADS, 1, 1), &name, (blocks, 1, 1), 0, &args) };
    }
}
