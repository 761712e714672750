//! The convolution kernels of vsr's own on the CUDA backend's (CubeCL) buffers, beside cuDNN:
//! which pass of which convolution runs on which kernel. They are the LibTorch build's kernels
//! (compiled by NVRTC, [`crate::nvrtc`]), launched on the stream of CubeCL's queue from its device
//! thread, as cuDNN is called ([`super::cudnn`]): ordered with CubeCL's kernels, no host
//! synchronisation.
//!
//! | convolution (VSRNet's) | forward | input gradient | weight gradient |
//! |---|---|---|---|
//! | 1 -> 16..128 channels, 9x9 (conv1, [`crate::one_input_channel_conv`]) | f16, TF32 | (none needed) | f16, TF32 |
//! | many -> 32 channels, 3x3 / 5x5 (conv2, [`crate::tensor_core_conv`]) | f16 | f16 | f16, TF32 |
//! | many -> 1 channel (conv3, [`crate::one_channel_conv`]) | f32 arithmetic | f32 arithmetic | f32 arithmetic |
//!
//! Everything else, channels-last operands, f32 where [`ConvPrecision::F32`] forbids TF32, and every convolution under
//! `VSR_CUDA_KERNELS=cudnn` run on cuDNN. Why: cuDNN runs conv1 on a generic kernel without the
//! tensor cores, converts conv2's NCHW operands to NHWC and back around its tensor-core kernels,
//! and has no fast algorithm for one output channel (the modules' docs have the measurements on
//! LibTorch); all three weight gradients here are deterministic.

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cudarc::driver::sys::CUstream;

use super::cudnn::{Geometry, Pass, dense, on_device_thread, ptr};
use crate::conv::{ConvPrecision, conv_precision};
use crate::conv_shape::ConvShape;
use crate::setting::Setting;

pub(crate) type Tensor = CubeTensor<CudaRuntime>;

/// Which kernels the CUDA backend's convolutions run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaKernels {
    /// vsr's own where they take the convolution (the table in the module docs), else cuDNN
    /// (the default).
    Own,
    /// cuDNN for every convolution.
    Cudnn,
}

impl std::str::FromStr for CudaKernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "own" => Ok(Self::Own),
            "cudnn" => Ok(Self::Cudnn),
            other => Err(format!("CUDA kernels `{other}`: expected `own` or `cudnn`")),
        }
    }
}

static CHOICE: Setting<CudaKernels> = Setting::new("VSR_CUDA_KERNELS", CudaKernels::Own);

/// Sets [`CudaKernels`] for the whole process.
pub fn set_cuda_kernels(choice: CudaKernels) {
    CHOICE.set(choice);
}

/// What [`set_cuda_kernels`] set, else `VSR_CUDA_KERNELS` (`own` or `cudnn`), else
/// [`CudaKernels::Own`].
///
/// # Panics
/// If `VSR_CUDA_KERNELS` holds anything else.
pub fn cuda_kernels() -> CudaKernels {
    CHOICE.get()
}

/// Runs `pass` of the convolution `geometry` (operands as [`super::cudnn::convolve`] takes them)
/// on CubeCL's device thread: on a kernel of ours where one takes it, else on cuDNN.
pub fn convolve(pass: Pass, geometry: Geometry, a: Tensor, b: Tensor) -> Tensor {
    let client = a.client.clone();
    on_device_thread(&client, move || {
        let (a, b) = (dense(a), dense(b));
        match own(pass, &geometry, &a, &b) {
            Some(out) => out,
            None => super::cudnn::convolve_here(pass, geometry, a, b),
        }
    })
}

/// `pass` on a kernel of ours, or `None` where none takes it (see the module docs). `a`, `b`
/// dense.
fn own(pass: Pass, g: &Geometry, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    use crate::{one_channel_conv as one_out, one_input_channel_conv as one_in, tensor_core_conv as tc};
    if cuda_kernels() != CudaKernels::Own || g.nhwc || a.dtype != b.dtype || !matches!(a.dtype, DType::F16 | DType::F32) {
        return None;
    }
    let tf32 = conv_precision() == ConvPrecision::Tf32;
    let s = ConvShape::of(a.device.index, g.x, g.w, [g.stride, g.padding, g.dilation], g.groups, &[3, 5, 7, 9])?;
    match pass {
        Pass::Forward => one_in::cube::forward(a, b, &s, tf32)
            .or_else(|| one_out::cube::forward(a, b, &s))
            .or_else(|| tc::cube::forward(a, b, &s)),
        Pass::Data => one_out::cube::input_grad(a, b, &s).or_else(|| tc::cube::input_grad(a, b, &s)),
        Pass::Filter => one_in::cube::weight_grad(a, b, &s, tf32)
            .or_else(|| one_out::cube::weight_grad(a, b, &s))
            .or_else(|| tc::cube::weight_grad(a, b, &s, tf32)),
    }
}

/// The device pointers of `tensors`, the stream on which CubeCL queues their work (their
/// producers ordered before it), and guards that keep the buffers while they live.
pub(crate) fn pointers<const N: usize>(tensors: [&Tensor; N]) -> ([u64; N], CUstream, impl Sized + use<N>) {
    let got = tensors.map(ptr);
    let stream = got.first().map_or(std::ptr::null_mut(), |g| g.1);
    (std::array::from_fn(|i| got[i].0), stream, got)
}
