//! What the convolution kernels of our own share ([`crate::one_input_channel_conv`],
//! [`crate::one_channel_conv`], [`crate::tensor_core_conv`]), on LibTorch's CUDA tensors and on
//! the CUDA backend's (CubeCL) buffers: the geometry they all take, checked in one place, what
//! their LibTorch backward keeps of an input, and the bias their LibTorch inference paths add.

#[cfg(feature = "tch")]
use burn::backend::libtorch::TchTensor;
#[cfg(feature = "tch")]
use burn::tensor::ops::ConvOptions;
#[cfg(feature = "tch")]
use tch::{Device, Kind, Tensor};

#[cfg(feature = "tch")]
use crate::nvrtc::{TchKernels, tch_kernels};

/// A convolution of x (n, ci, h, w) by a weight (co, ci, k, k) on CUDA device `device`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    pub device: usize,
    pub n: i64,
    pub ci: i64,
    pub co: i64,
    pub h: i64,
    pub w: i64,
    pub k: i64,
}

impl ConvShape {
    /// The shape of the convolution of `x` by `w` where our kernels are chosen
    /// (`VSR_TCH_KERNELS`) and it is one that every kernel of ours takes ([`ConvShape::of`]), `x`
    /// on a CUDA device in one of `kinds` and `w` of its kind and on its device; `None` otherwise.
    #[cfg(feature = "tch")]
    pub(crate) fn same_padding(x: &Tensor, w: &Tensor, options: &ConvOptions<2>, kinds: &[Kind], sizes: &[i64]) -> Option<Self> {
        let Device::Cuda(device) = x.device() else { return None };
        let (xs, ws) = (x.size(), w.size());
        if tch_kernels() != TchKernels::Own
            || !kinds.contains(&x.kind())
            || w.kind() != x.kind()
            || w.device() != x.device()
            || xs.len() != 4
            || ws.len() != 4
        {
            return None;
        }
        let d = |s: &[i64]| [s[0], s[1], s[2], s[3]].map(|v| v as usize);
        Self::of(device, d(&xs), d(&ws), [options.stride, options.padding, options.dilation], options.groups, sizes)
    }

    /// The convolution of an input shaped `x` (n, ci, h, w) by a weight shaped `w` (co, ci, k, k)
    /// on CUDA device `device`, with `[stride, padding, dilation]` and `groups`, where every
    /// kernel of ours takes it: a square kernel of a size in `sizes`, stride 1, dilation 1, one
    /// group, "same" padding ((k - 1) / 2), at least one image of at least one pixel and one
    /// channel, and height and width that leave 32-bit indices room to pad; `None` otherwise.
    /// Each kernel checks its own further limits.
    pub(crate) fn of(device: usize, x: [usize; 4], w: [usize; 4], [stride, padding, dilation]: [[usize; 2]; 3], groups: usize, sizes: &[i64]) -> Option<Self> {
        let (xs, ws) = (x.map(|v| v as i64), w.map(|v| v as i64));
        let s = Self { device, n: xs[0], ci: xs[1], co: ws[0], h: xs[2], w: xs[3], k: ws[2] };
        let same = s.padding() as usize;
        let fits = |v: i64| v > 0 && v <= i32::MAX as i64 / 2;
        (ws[1] == s.ci
            && ws[3] == s.k
            && sizes.contains(&s.k)
            && stride == [1, 1]
            && dilation == [1, 1]
            && groups == 1
            && padding == [same, same]
            && s.n > 0
            && s.ci > 0
            && fits(s.h)
            && fits(s.w))
            .then_some(s)
    }

    /// The "same" padding, (k - 1) / 2.
    pub(crate) fn padding(&self) -> i64 {
        (self.k - 1) / 2
    }
}

/// What a backward keeps of an input `t` to read it as a contiguous tensor: Burn's handle where
/// `t` is contiguous (while it is held, Burn writes into the tensor in place nowhere), else a
/// contiguous copy (held as Burn's tensor too: tch's are not `Sync`).
#[cfg(feature = "tch")]
pub(crate) fn contiguous(t: &TchTensor) -> TchTensor {
    if t.tensor.is_contiguous() { t.clone() } else { TchTensor::new(t.tensor.contiguous()) }
}

/// Whether `bias` (if any) is one an inference path of ours adds after its kernel ([`add_bias`]):
/// `co` values on the device and of the kind of the input `x`.
#[cfg(feature = "tch")]
pub(crate) fn bias_fits(bias: Option<&TchTensor>, co: i64, x: &Tensor) -> bool {
    bias.is_none_or(|b| b.tensor.size() == [co] && b.tensor.device() == x.device() && b.tensor.kind() == x.kind())
}

/// `y` (N, C, H, W) plus the per-channel `bias`, in place, where there is one.
#[cfg(feature = "tch")]
pub(crate) fn add_bias(mut y: Tensor, bias: Option<&TchTensor>) -> TchTensor {
    if let Some(b) = bias {
        let _ = y.g_add_(&b.tensor.view([1, -1, 1, 1]));
    }
    TchTensor::new(y)
}
