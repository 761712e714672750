//! The weight gradient of many-channel training convolutions to 32 output channels (VSRNet's
//! conv2: 192 -> 32 channels, 5x5) on LibTorch's CUDA f16 NCHW tensors as a tensor-core kernel of
//! our own (`tensor_core_conv.cu`; compiled and launched as [`crate::nvrtc`] says). The forward
//! and the input gradient stay on LibTorch (cuDNN): the forward as its convolution outside
//! autograd, the input gradient as the transposed convolution of the output gradient by the
//! weight (what `aten::convolution_backward` runs for it).
//!
//! Why: cuDNN's weight gradient of conv2 (fp16, batch 3, 512x960, H100) took 2.57 ms plus a
//! 0.61 ms NCHW -> NHWC transpose of the input and 0.10 ms of the output gradient; this kernel
//! reads NCHW directly. It is deterministic (no atomics: per-warp partial sums over pixel ranges,
//! added in f64 in a fixed order by a finish kernel). Timed alone on an H100 at that size (CUDA
//! events): 2.93 ms, its finish included, against 3.65 ms for cuDNN's weight gradient with its
//! transposes; the input gradient (1.50 ms) and forward (3.19 ms) are LibTorch's as before.
//!
//! It takes: f16 input and weight, an NCHW (not channels-last) input (N, CI, H, W) with CI a
//! multiple of 16, a weight (32, CI, K, K) with K 3 or 5, stride 1, dilation 1, one group, "same"
//! padding ((K - 1) / 2), a weight that needs a gradient. Anything else, CPU tensors and
//! `VSR_TCH_KERNELS=libtorch` go to LibTorch's convolution under its autograd.

use std::sync::Arc;

use burn::backend::libtorch::TchTensor;
use burn::tensor::ops::ConvOptions;
use tch::{Device, Kind, Tensor};

use crate::conv_grad::ConvGraph;
use crate::nvrtc::{Arg, Kernels, Program, TchKernels, aligned, ptr, tch_kernels};

const SOURCE: &str = concat!(include_str!("storage.cuh"), include_str!("partials.cuh"), include_str!("tensor_core_conv.cu"));
/// `TCC_TC`, `TCC_RC`, `TCC_CIB` and `TCC_CO` of tensor_core_conv.cu.
const TC: i64 = 32;
const RC: i64 = 4;
const CIB: i64 = 16;
const CO: i64 = 32;
/// `Tcw<K>::RG` (row groups, each writing its own partial sums).
const RG: i64 = 2;
/// Blocks over all input-channel groups, about: one per multiprocessor of an H100 (measured at
/// conv2's size: 2.93 ms with 132, 2.98 with 264). A constant: the sums do not depend on the GPU.
const WG_BLOCKS: i64 = 132;
/// The kernel sizes compiled.
const SIZES: [i64; 2] = [3, 5];

const ENTRIES: [&str; 3] = ["tcc_grad_weight_finish", "tcc_grad_weight_f16_k3", "tcc_grad_weight_f16_k5"];

static PROGRAM: Program = Program::new(
    "tensor_core_conv.cu",
    SOURCE,
    &ENTRIES,
    "tensor-core convolution weight gradient",
    "LibTorch's convolution (cuDNN)",
);

/// x (n, ci, h, w), w (32, ci, k, k).
#[derive(Clone, Copy)]
struct Shape {
    n: i64,
    ci: i64,
    h: i64,
    w: i64,
    k: i64,
}

impl Shape {
    /// The weight gradient's work items (TC x RC pixels of one image).
    fn items(&self) -> i64 {
        self.n * ((self.w + TC - 1) / TC) * ((self.h + RC - 1) / RC)
    }

    /// The weight gradient's grid: (item ranges, input-channel groups).
    fn grid(&self) -> (u32, u32, u32) {
        let groups = self.ci / CIB;
        let ranges = (WG_BLOCKS / groups).max(1).min(self.items());
        (ranges as u32, groups as u32, 1)
    }

    fn threads(&self) -> u32 {
        if self.k == 5 { 320 } else { 192 }
    }

    fn padding(&self) -> i64 {
        (self.k - 1) / 2
    }
}

/// What the backward needs of the forward.
pub(crate) struct Saved {
    device: usize,
    kernels: Arc<Kernels>,
    shape: Shape,
    /// Contiguous input and weight (held as Burn's tensors: tch's are not `Sync`).
    x: TchTensor,
    weight: TchTensor,
    need: [bool; 2],
    /// Burn's handles of the input and weight: while held, Burn writes into neither in place.
    _burn: [TchTensor; 2],
}

/// The forward of [`crate::conv::ConvBackend::conv2d_graph`] (LibTorch's convolution, outside
/// autograd) for a backward with our weight-gradient kernel, or `None` where it does not apply
/// (see the module docs); the graph's backward is [`backward`].
pub(crate) fn forward(x: &TchTensor, weight: &TchTensor, need: [bool; 2], options: &ConvOptions<2>) -> Option<(TchTensor, ConvGraph)> {
    let (t, wt) = (&x.tensor, &weight.tensor);
    let Device::Cuda(device) = t.device() else { return None };
    let (xs, ws) = (t.size(), wt.size());
    if !need[1]
        || tch_kernels() != TchKernels::Own
        || t.kind() != Kind::Half
        || wt.kind() != Kind::Half
        || wt.device() != t.device()
        || xs.len() != 4
        || ws.len() != 4
    {
        return None;
    }
    let shape = Shape { n: xs[0], ci: xs[1], h: xs[2], w: xs[3], k: ws[2] };
    let same = shape.padding() as usize;
    if ws[0] != CO
        || ws[1] != shape.ci
        || ws[3] != shape.k
        || !SIZES.contains(&shape.k)
        || shape.ci % CIB != 0
        || shape.ci == 0
        || shape.ci / CIB > 65535
        || options.stride != [1, 1]
        || options.dilation != [1, 1]
        || options.groups != 1
        || options.padding != [same, same]
        || shape.n == 0
        || shape.h * shape.w == 0
        || shape.h > i32::MAX as i64 / 2
        || shape.w > i32::MAX as i64 / 2
        || shape.items() > i32::MAX as i64 / 2
        || CO * shape.ci * shape.k * shape.k > i32::MAX as i64
        || crate::conv::tch_is_channels_last(t)
    {
        return None;
    }
    let kernels = PROGRAM.kernels(device).ok()?;
    let (xc, wc) = (t.contiguous(), wt.contiguous());
    let p = shape.padding();
    let y = tch::no_grad(|| convolution(&xc, &wc, p, false));
    let saved = Saved {
        device,
        kernels,
        shape,
        x: TchTensor::new(xc),
        weight: TchTensor::new(wc),
        need,
        _burn: [x.clone(), weight.clone()],
    };
    Some((TchTensor::new(y), ConvGraph(Arc::new(saved))))
}

/// LibTorch's (transposed, for the input gradient) convolution of `x` by `w` with stride 1 and
/// padding `p`, with the settings of the other training convolutions (cuDNN's benchmark mode as
/// [`crate::conv::tch_cudnn_benchmark`] says; f16, so TF32 does not arise).
fn convolution(x: &Tensor, w: &Tensor, p: i64, transposed: bool) -> Tensor {
    x.internal_convolution(w, None::<&Tensor>, [1, 1], [p, p], [1, 1], transposed, [0, 0], 1, crate::conv::tch_cudnn_benchmark(), false, true, false)
}

/// Gradients for `[x, weight]` (where the forward's `need` says) of `sum(y * dy)`: the input
/// gradient by LibTorch (the transposed convolution), the weight gradient by our kernel.
pub(crate) fn backward(s: &Saved, dy: &TchTensor) -> Vec<Option<TchTensor>> {
    let (x, w) = (&s.x.tensor, &s.weight.tensor);
    let sh = s.shape;
    let dy = dy.tensor.to_kind(Kind::Half).contiguous();
    assert_eq!(dy.size(), [sh.n, CO, sh.h, sh.w], "convolution backward: the output gradient is shaped unlike the output");
    let p = sh.padding();
    let dx = s.need[0].then(|| {
        TchTensor::new(tch::no_grad(|| convolution(&dy, w, p, true)))
    });
    let dw = s.need[1].then(|| {
        let grid = sh.grid();
        let sets = grid.0 as i64 * RG;
        let count = CO * sh.ci * sh.k * sh.k;
        let part = Tensor::empty([sets * count], (Kind::Float, x.device()));
        // (16-byte loads where rows start aligned)
        let vec = sh.w % 8 == 0 && aligned(x, 16) && aligned(&dy, 16);
        s.kernels.launch(s.device, (sh.threads(), 1, 1), &format!("tcc_grad_weight_f16_k{}", sh.k), grid, &[
            ptr(x),
            ptr(&dy),
            ptr(&part),
            Arg::I32(sh.n as i32),
            Arg::I32(sh.ci as i32),
            Arg::I32(sh.h as i32),
            Arg::I32(sh.w as i32),
            Arg::I32(vec as i32),
        ]);
        let dw = Tensor::empty([CO, sh.ci, sh.k, sh.k], (Kind::Half, x.device()));
        s.kernels.launch(s.device, (32, 8, 1), "tcc_grad_weight_finish", ((count as u32).div_ceil(32), 1, 1), &[
            ptr(&part),
            Arg::I32(sets as i32),
            Arg::I32(count as i32),
            ptr(&dw),
        ]);
        TchTensor::new(dw)
    });
    vec![dx, dw]
}
