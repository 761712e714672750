//! Training convolutions from one input channel (VSRNet's conv1: 1 -> 64 channels, 9x9) on
//! LibTorch's CUDA f16 and f32 tensors as tensor-core kernels of our own
//! (`one_input_channel_conv.cu`; compiled and launched as [`crate::nvrtc`] says): the forward and
//! the weight gradient. There is no input gradient: they serve an input that needs none (VSRNet's
//! frames). The forward also serves convolutions outside autodiff (inference: `vsr upscale`,
//! validation), bias added after.
//!
//! Why: cuDNN runs this convolution with a generic kernel that does not use the tensor cores. On
//! an H100 in fp16, at batch 9 and 512x960, its forward took 2.5 ms and its weight gradient 2.0
//! ms (plus a 0.5 ms transpose) in vsr's training step, where reading and writing the tensors
//! allows about 0.2 to 0.3 ms each. These kernels are matrix products on the tensor cores
//! (`mma.sync` m16n8k16, f16 operands, f32 accumulation) whose image operand comes from a
//! shared-memory tile of pairs of adjacent pixels (see the `.cu` file). Timed alone on an H100 at
//! that size (CUDA events, PyTorch 2.11's cuDNN, benchmark mode off): forward 0.28 ms against
//! cuDNN's 1.8 ms, weight gradient (its finish included) 0.27 ms against 2.6 ms.
//!
//! In f32 cuDNN is slower still. Where [`crate::conv::conv_precision`] allows TF32
//! ([`ConvPrecision::Tf32`], the default, as PyTorch's `allow_tf32`), f32 runs the same products
//! on TF32 tensor cores (`mma.sync` m16n8k8, operands rounded to TF32 with `cvt.rna`, f32 storage
//! and accumulation; results within 5e-4 of the largest magnitude of the f64 definition, as
//! cuDNN's TF32). On an H100 at batch 9, 512x960 (wall clock over 20 calls): forward 0.50 ms
//! against cuDNN's 3.18 ms (TF32 allowed); the training convolution's forward + backward in
//! `vsr bench conv --precision fp32 --batch 3` 4.87 ms against 8.82 ms (fp16: 2.87 against
//! 6.72). Under [`ConvPrecision::F32`] f32 stays on LibTorch's convolution (TF32 off), in training
//! and inference alike.
//!
//! They take: f16 input and weight, or f32 ones where TF32 is allowed, an NCHW input (N, 1, H,
//! W) that needs no gradient, a weight (C, 1, K, K) of the input's kind with C a multiple of 16
//! up to 128 and K 3, 5, 7 or 9, stride 1, dilation 1, one group, "same" padding ((K - 1) / 2),
//! at most 65535 images. Anything else, CPU tensors, channels-last inputs and
//! `VSR_TCH_KERNELS=libtorch` go to LibTorch's convolution. The weight gradient is deterministic
//! (no atomics: per-block partial sums, added in f64 in a fixed order).
//!
//! [`ConvPrecision::Tf32`]: crate::conv::ConvPrecision::Tf32
//! [`ConvPrecision::F32`]: crate::conv::ConvPrecision::F32

#[cfg(feature = "tch")]
use std::sync::Arc;

#[cfg(feature = "tch")]
use burn::backend::libtorch::TchTensor;
#[cfg(feature = "tch")]
use burn::tensor::ops::ConvOptions;
#[cfg(feature = "tch")]
use tch::{Kind, Tensor};

#[cfg(feature = "tch")]
use crate::conv_grad::ConvGraph;
use crate::conv_shape::ConvShape;
#[cfg(feature = "tch")]
use crate::conv_shape::{add_bias, bias_fits, contiguous};
use crate::nvrtc::Program;
#[cfg(feature = "tch")]
use crate::nvrtc::{Arg, Kernels, ptr};

const SOURCE: &str = concat!(include_str!("storage.cuh"), include_str!("partials.cuh"), include_str!("mma.cuh"), include_str!("one_input_channel_conv.cu"));
/// `OI_TC`, `OI_TR`, `OI_TPB`, `OI_RC`, `OI_THREADS` and `OI_CMAX` of one_input_channel_conv.cu.
const TC: u32 = 64;
const TR: u32 = 8;
const TPB: u32 = 4;
const RC: u32 = 8;
const THREADS: u32 = 256;
const CMAX: i64 = 128;
/// The weight gradient's blocks, at most (each writes C K K partial sums): two per multiprocessor
/// of an H100 or H200 (132), one wave there (measured on an H100 at batch 9, 512x960: 0.27 ms
/// against 0.30 with 512 blocks and 0.32 with 1024). A constant, so that the sums do not depend
/// on the GPU.
const WG_BLOCKS: i64 = 264;
/// The kernel sizes compiled.
const SIZES: [i64; 4] = [3, 5, 7, 9];

/// `oicv_<pass>_<f16|f32>_k<K>` for both passes, both storage types and every kernel size, and
/// the finishes.
const ENTRIES: [&str; 18] = [
    "oicv_grad_weight_finish_f16", "oicv_grad_weight_finish_f32",
    "oicv_forward_f16_k3", "oicv_grad_weight_f16_k3", "oicv_forward_f32_k3", "oicv_grad_weight_f32_k3",
    "oicv_forward_f16_k5", "oicv_grad_weight_f16_k5", "oicv_forward_f32_k5", "oicv_grad_weight_f32_k5",
    "oicv_forward_f16_k7", "oicv_grad_weight_f16_k7", "oicv_forward_f32_k7", "oicv_grad_weight_f32_k7",
    "oicv_forward_f16_k9", "oicv_grad_weight_f16_k9", "oicv_forward_f32_k9", "oicv_grad_weight_f32_k9",
];

static PROGRAM: Program = Program::new(
    "one_input_channel_conv.cu",
    SOURCE,
    &ENTRIES,
    "one-input-channel convolution",
    "LibTorch's convolution (cuDNN)",
);

/// x (n, 1, h, w), w (c, 1, k, k), both f16 (`half`) or f32.
#[derive(Clone, Copy)]
struct Shape {
    half: bool,
    n: i64,
    c: i64,
    h: i64,
    w: i64,
    k: i64,
}

impl Shape {
    /// `g` in f16 (`half`) or f32 where our kernels take it (see the module docs).
    fn of(g: &ConvShape, half: bool) -> Option<Self> {
        let shape = Shape { half, n: g.n, c: g.co, h: g.h, w: g.w, k: g.k };
        let fits = g.ci == 1
            && SIZES.contains(&g.k)
            && shape.c % 16 == 0
            && shape.c >= 16
            && shape.c <= CMAX
            && shape.n <= 65535
            && shape.grid().1 <= 65535
            && shape.items() <= i32::MAX as i64;
        fits.then_some(shape)
    }

    /// The forward's: tiles of TC x TR, TPB of them stacked per block.
    fn grid(&self) -> (u32, u32, u32) {
        (ceil(self.w, TC), ceil(self.h, TR * TPB), self.n as u32)
    }

    /// The weight gradient's work items (TC x RC pixels of one image).
    fn items(&self) -> i64 {
        self.n * ceil(self.w, TC) as i64 * ceil(self.h, RC) as i64
    }

    /// The weight gradient's blocks (a contiguous range of items each).
    fn weight_blocks(&self) -> i64 {
        self.items().min(WG_BLOCKS)
    }

    /// `f16` or `f32`: the entries' storage suffix.
    fn storage(&self) -> &'static str {
        if self.half { "f16" } else { "f32" }
    }

    /// `oicv_<pass>_<f16|f32>_k<K>`.
    fn entry(&self, pass: &str) -> String {
        format!("oicv_{pass}_{}_k{}", self.storage(), self.k)
    }

    /// Whether the weight gradient's 16-byte loads of dy's rows apply (rows start aligned).
    fn vectorised(&self, dy_ptr: u64) -> bool {
        let per_row = if self.half { 8 } else { 4 };
        self.w % per_row == 0 && dy_ptr % 16 == 0
    }

    /// The storage kind.
    #[cfg(feature = "tch")]
    fn kind(&self) -> Kind {
        if self.half { Kind::Half } else { Kind::Float }
    }
}

fn ceil(v: i64, by: u32) -> u32 {
    (v as u32).div_ceil(by)
}

/// What the backward needs of the forward.
#[cfg(feature = "tch")]
pub(crate) struct Saved {
    device: usize,
    kernels: Arc<Kernels>,
    shape: Shape,
    /// The input, contiguous ([`contiguous`]).
    x: TchTensor,
    need: [bool; 2],
}

/// The forward of [`crate::conv::ConvBackend::conv2d_graph`] with these kernels, or `None` where
/// they do not apply (see the module docs: f32 only where `allow_tf32`); the graph's backward is
/// [`backward`].
#[cfg(feature = "tch")]
pub(crate) fn forward(
    x: &TchTensor,
    weight: &TchTensor,
    need: [bool; 2],
    options: &ConvOptions<2>,
    allow_tf32: bool,
) -> Option<(TchTensor, ConvGraph)> {
    if need[0] {
        return None;
    }
    let (device, kernels, shape, x, y) = launch_forward(x, &weight.tensor, options, allow_tf32)?;
    let saved = Saved { device, kernels, shape, x, need };
    Some((TchTensor::new(y), ConvGraph(Arc::new(saved))))
}

/// The convolution of `x` by `weight` outside autodiff (inference, frozen layers) with the
/// forward kernel, plus `bias` (C, of the input's kind) if given, or `None` where the kernels do
/// not apply (f32 only where `allow_tf32`).
#[cfg(feature = "tch")]
pub(crate) fn inference(
    x: &TchTensor,
    weight: &TchTensor,
    bias: Option<&TchTensor>,
    options: &ConvOptions<2>,
    allow_tf32: bool,
) -> Option<TchTensor> {
    if !bias_fits(bias, weight.tensor.size()[0], &x.tensor) {
        return None;
    }
    let (.., y) = launch_forward(x, &weight.tensor, options, allow_tf32)?;
    Some(add_bias(y, bias))
}

/// Checks that the kernels take `x` and `w` (see the module docs; f32 only where `allow_tf32`)
/// and launches the forward: the device, kernels, shape, the input as the backward keeps it
/// ([`contiguous`]) and the output.
#[cfg(feature = "tch")]
fn launch_forward(x: &TchTensor, wt: &Tensor, options: &ConvOptions<2>, allow_tf32: bool) -> Option<(usize, Arc<Kernels>, Shape, TchTensor, Tensor)> {
    let t = &x.tensor;
    let kinds: &[Kind] = if allow_tf32 { &[Kind::Half, Kind::Float] } else { &[Kind::Half] };
    let g = ConvShape::same_padding(t, wt, options, kinds, &SIZES)?;
    let (device, shape) = (g.device, Shape::of(&g, t.kind() == Kind::Half)?);
    // (a channels-last input keeps LibTorch's path, whose output follows its layout)
    if crate::conv::tch_is_channels_last(t) {
        return None;
    }
    let kernels = PROGRAM.kernels(device).ok()?;
    let (xc, wc) = (contiguous(x), wt.contiguous());
    let y = Tensor::empty([shape.n, shape.c, shape.h, shape.w], (shape.kind(), t.device()));
    let args = [ptr(&xc.tensor), ptr(&wc), ptr(&y), Arg::I32(shape.c as i32), Arg::I32(shape.h as i32), Arg::I32(shape.w as i32)];
    kernels.launch(device, (THREADS, 1, 1), &shape.entry("forward"), shape.grid(), &args);
    Some((device, kernels, shape, xc, y))
}

/// Gradients for `[x, weight]` of `sum(y * dy)`: no input gradient (the forward runs only where
/// none is needed), the weight gradient where the forward's `need` says.
#[cfg(feature = "tch")]
pub(crate) fn backward(s: &Saved, dy: &TchTensor) -> Vec<Option<TchTensor>> {
    let x = &s.x.tensor;
    let sh = s.shape;
    let dy = dy.tensor.to_kind(sh.kind()).contiguous();
    assert_eq!(dy.size(), [sh.n, sh.c, sh.h, sh.w], "convolution backward: the output gradient is shaped unlike the output");
    let dw = s.need[1].then(|| {
        let blocks = sh.weight_blocks();
        let count = sh.c * sh.k * sh.k;
        let part = Tensor::empty([blocks * count], (Kind::Float, x.device()));
        // (16-byte loads of dy's rows where they start aligned)
        let vec = sh.vectorised(dy.data_ptr() as u64);
        s.kernels.launch(s.device, (THREADS, 1, 1), &sh.entry("grad_weight"), (blocks as u32, 1, 1), &[
            ptr(x),
            ptr(&dy),
            ptr(&part),
            Arg::I32(sh.n as i32),
            Arg::I32(sh.c as i32),
            Arg::I32(sh.h as i32),
            Arg::I32(sh.w as i32),
            Arg::I32(vec as i32),
        ]);
        let dw = Tensor::empty([sh.c, 1, sh.k, sh.k], (sh.kind(), x.device()));
        let finish = format!("oicv_grad_weight_finish_{}", sh.storage());
        s.kernels.launch(s.device, (32, 8, 1), &finish, ((count as u32).div_ceil(32), 1, 1), &[
            ptr(&part),
            Arg::I32(blocks as i32),
            Arg::I32(count as i32),
            ptr(&dw),
        ]);
        TchTensor::new(dw)
    });
    vec![None, dw]
}

/// The same kernels on the CUDA (CubeCL) backend's dense buffers, launched on the stream of
/// CubeCL's queue from its device thread (see `crate::cube::own_conv`): the forward and the weight
/// gradient, f16, or f32 where TF32 is allowed.
#[cfg(feature = "cuda")]
pub(crate) mod cube {
    use burn::tensor::DType;

    use super::{PROGRAM, Shape, THREADS};
    use crate::conv_shape::ConvShape;
    use crate::cube::cudnn::{channels, empty};
    use crate::cube::own_conv::{Tensor, pointers};
    use crate::nvrtc::Arg;

    /// `g` in the dtype of `t` where our kernels take it (f32 only with `tf32`).
    fn shape(g: &ConvShape, t: &Tensor, tf32: bool) -> Option<Shape> {
        match t.dtype {
            DType::F16 => Shape::of(g, true),
            DType::F32 if tf32 => Shape::of(g, false),
            _ => None,
        }
    }

    /// The forward of `x` by `weight`, or `None` where our kernels do not take it.
    pub(crate) fn forward(x: &Tensor, weight: &Tensor, g: &ConvShape, tf32: bool) -> Option<Tensor> {
        let sh = shape(g, x, tf32)?;
        let kernels = PROGRAM.kernels(g.device).ok()?;
        let y = empty(x, [sh.n, sh.c, sh.h, sh.w].map(|v| v as usize), x.dtype);
        let ([px, pw, py], stream, _guards) = pointers([x, weight, &y]);
        // SAFETY: CubeCL's stream of these dense buffers, kept (guards) until the launch is
        // queued; the arguments as the LibTorch path passes them.
        unsafe {
            kernels.launch_on(stream, (THREADS, 1, 1), &sh.entry("forward"), sh.grid(), 0, &[
                Arg::Ptr(px), Arg::Ptr(pw), Arg::Ptr(py), Arg::I32(sh.c as i32), Arg::I32(sh.h as i32), Arg::I32(sh.w as i32),
            ]);
        }
        Some(y)
    }

    /// The weight gradient from `x` and the output gradient `dy`, or `None` where our kernels do
    /// not take it.
    pub(crate) fn weight_grad(x: &Tensor, dy: &Tensor, g: &ConvShape, tf32: bool) -> Option<Tensor> {
        let sh = shape(g, x, tf32)?;
        let kernels = PROGRAM.kernels(g.device).ok()?;
        let blocks = sh.weight_blocks();
        let count = sh.c * sh.k * sh.k;
        let part = channels(x, (blocks * count) as usize);
        let dw = empty(x, [sh.c, 1, sh.k, sh.k].map(|v| v as usize), x.dtype);
        let ([px, pdy, ppart, pdw], stream, _guards) = pointers([x, dy, &part, &dw]);
        let finish = format!("oicv_grad_weight_finish_{}", sh.storage());
        // SAFETY: as in `forward`.
        unsafe {
            kernels.launch_on(stream, (THREADS, 1, 1), &sh.entry("grad_weight"), (blocks as u32, 1, 1), 0, &[
                Arg::Ptr(px), Arg::Ptr(pdy), Arg::Ptr(ppart), Arg::I32(sh.n as i32), Arg::I32(sh.c as i32),
                Arg::I32(sh.h as i32), Arg::I32(sh.w as i32), Arg::I32(sh.vectorised(pdy) as i32),
            ]);
            kernels.launch_on(stream, (32, 8, 1), &finish, ((count as u32).div_ceil(32), 1, 1), 0, &[
                Arg::Ptr(ppart), Arg::I32(blocks as i32), Arg::I32(count as i32), Arg::Ptr(pdw),
            ]);
        }
        Some(dw)
    }
}
