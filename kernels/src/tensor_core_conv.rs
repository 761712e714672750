//! Many-channel training convolutions to 32 output channels (VSRNet's conv2: 192 -> 32 channels,
//! 5x5) on LibTorch's CUDA f16 and f32 NCHW tensors as tensor-core kernels of our own
//! (`tensor_core_conv.cu`; compiled and launched as [`crate::nvrtc`] says): the weight gradient
//! (f16 and f32), and for f16 the forward and the input gradient too (one kernel, `tcc_conv_f16`:
//! the input gradient is the convolution of the output gradient by the transposed, flipped
//! weight). f32's forward and input gradient stay on LibTorch (cuDNN): the forward as its
//! convolution outside autograd, the input gradient as the transposed convolution of the output
//! gradient by the weight (what `aten::convolution_backward` runs for it).
//!
//! What runs when:
//! * f16: always (f16 operands, f32 accumulation on the tensor cores, an f16 result).
//! * f32 under [`crate::conv::ConvPrecision::Tf32`] (the default, PyTorch's `allow_tf32`): the
//!   operands rounded to TF32 (10-bit mantissas), f32 accumulation, an f32 result; cuDNN's forward
//!   and input gradient then run with TF32 allowed too, as its own f32 convolutions do.
//! * f32 under [`crate::conv::ConvPrecision::F32`]: LibTorch's convolution under its autograd, as
//!   for every other convolution, in f32 arithmetic (its autograd backward takes TF32 from
//!   LibTorch's process-wide setting, which [`crate::conv_grad`] sets to match).
//!
//! Why: cuDNN's weight gradient of conv2 (fp16, batch 3, 512x960, H100) took 2.57 ms plus a
//! 0.61 ms NCHW -> NHWC transpose of the input and 0.10 ms of the output gradient; these kernels
//! read NCHW directly. They are deterministic (no atomics: per-warp partial sums over pixel
//! ranges, added in f64 in a fixed order by a finish kernel). Timed alone on an H100 at that
//! size: f16 2.37 ms (Nsight Compute, the kernel without its finish; 2.95 ms before its image
//! tiles came by cp.async in 16-row items), against 3.65 ms for cuDNN's weight gradient with its
//! transposes (CUDA events).
//!
//! The f16 forward and input gradient: cuDNN's (Nsight Compute, one step) were 2.21 ms of
//! implicit GEMM plus 0.71 ms of layout transposes (forward) and 1.76 + 0.63 ms (input
//! gradient); ours read and write NCHW and accumulate in f32 like cuDNN's. Measured on an H100
//! through `conv2d` under autodiff (`own_tensor_core_conv_timing`: host clock between stream
//! synchronisations, 20 iterations): forward 3.20 ms (cuDNN, transposes included) -> 1.11 ms
//! (ours, the weight reordering included); input gradient (forward and both gradients, less
//! forward and weight gradient) 1.54 -> 1.38 ms. conv2's training forward + backward
//! (`vsr bench conv --backend tch --precision fp16 --batch 3 --skip-burn-wgrad`,
//! `VSR_TCH_KERNELS=libtorch` against `own`): 8.03 -> 5.94 ms, and 5.37 ms with the cp.async
//! weight gradient.
//!
//! f32 (TF32), same size and GPU: the weight gradient 4.74 ms, its finish included (host clock
//! between two stream synchronisations), against about 9.4 ms for cuDNN's TF32 weight gradient
//! with its transposes (its training forward + backward less forward and input gradient);
//! conv2's training forward + backward (`vsr bench conv --backend tch --batch 3 --precision
//! fp32`) 16.69 -> 12.54 ms (forward 4.86 ms and input gradient 2.44 ms on cuDNN, TF32).
//!
//! It takes: f16 or f32 input and weight (f32 under `ConvPrecision::Tf32` only), an NCHW (not
//! channels-last) input (N, CI, H, W) with CI a multiple of 16, a weight (32, CI, K, K) with K 3
//! or 5, stride 1, dilation 1, one group, "same" padding ((K - 1) / 2), a weight that needs a
//! gradient. Anything else, CPU tensors and `VSR_TCH_KERNELS=libtorch` go to LibTorch's
//! convolution under its autograd. The f16 forward and input gradient further need grids that
//! fit (ceil(H / 16) and N at most 65535), else cuDNN computes them as for f32.

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
#[cfg(feature = "tch")]
use crate::conv_shape::{ConvShape, add_bias, bias_fits, contiguous};
use crate::nvrtc::Program;
#[cfg(feature = "tch")]
use crate::nvrtc::{Arg, Kernels, aligned, ptr};

const SOURCE: &str = concat!(include_str!("storage.cuh"), include_str!("partials.cuh"), include_str!("mma.cuh"), include_str!("tensor_core_conv.cu"));
/// `TCC_TC`, `TCC_RC` (f32), `TCC_RC16` (f16), `TCC_CIB` and `TCC_CO` of tensor_core_conv.cu.
const TC: i64 = 32;
const RC: i64 = 4;
const RC_F16: i64 = 16;
const CIB: i64 = 16;
const CO: i64 = 32;
/// Partial sets per block: `Tcw<K>::RG` (f16: row groups, each writing its own partial sums);
/// f32's warps split the output channels instead (`Tcw32`), one set per block.
const RG_F16: i64 = 2;
const RG_F32: i64 = 1;
/// Blocks over all input-channel groups, about: one per multiprocessor of an H100 (measured at
/// conv2's size with the previous f16 kernel: 2.93 ms with 132, 2.98 with 264; now one block of
/// 95 KB a multiprocessor). A constant: the sums do not depend on the GPU.
const WG_BLOCKS: i64 = 132;
/// The kernel sizes compiled.
const SIZES: [i64; 2] = [3, 5];

const ENTRIES: [&str; 9] = [
    "tcc_conv_weights",
    "tcc_conv_f16_k3",
    "tcc_conv_f16_k5",
    "tcc_grad_weight_finish",
    "tcc_grad_weight_finish_f32",
    "tcc_grad_weight_f16_k3",
    "tcc_grad_weight_f16_k5",
    "tcc_grad_weight_f32_k3",
    "tcc_grad_weight_f32_k5",
];

static PROGRAM: Program = Program::new(
    "tensor_core_conv.cu",
    SOURCE,
    &ENTRIES,
    "tensor-core convolution",
    "LibTorch's convolution (cuDNN)",
);

/// `TCC_FW`, `TCC_FH` of tensor_core_conv.cu: the convolution's tile (columns, rows); its block.
const FW: i64 = 32;
const FH: i64 = 16;
const CONV_THREADS: u32 = 256;

/// `Tcf<K>::SMEM`: the convolution's dynamic shared memory (bytes): two image tiles of 8 channel
/// pairs (pair stride >= rows x 44 words, = 8 mod 16) and two weight tiles (K K taps x 2 m-tiles
/// x 32 lanes x 16 bytes).
fn conv_shared(k: i64) -> u32 {
    let cs0 = ((FH + k - 1) * 44 + 7) / 8 * 8;
    let cs = if cs0 % 16 == 0 { cs0 + 8 } else { cs0 };
    (2 * (8 * cs * 4 + k * k * 2 * 32 * 16)) as u32
}

/// The launch of our f16 convolution (`tcc_conv_f16_k*`) of an input (n, ci, h, w) to `co`
/// channels with k x k taps: the reordered weight's 32-bit words and the grid, or `None` where
/// the kernel does not take it (ci not a multiple of 16) or the grid would not fit.
fn conv_f16_plan([n, ci, h, w]: [i64; 4], co: i64, k: i64) -> Option<(i64, (u32, u32, u32))> {
    let groups = (co + 31) / 32;
    let words = groups * (ci / 16) * k * k * 256;
    let grid = (groups * ((w + FW - 1) / FW), (h + FH - 1) / FH, n);
    if ci % 16 != 0 || words > i32::MAX as i64 || grid.0 > i32::MAX as i64 || grid.1 > 65535 || grid.2 > 65535 {
        return None;
    }
    Some((words, (grid.0 as u32, grid.1 as u32, grid.2 as u32)))
}

/// Our f16 convolution (`tcc_conv_f16_k*`) of `input` (n, ci, h, w; contiguous, ci a multiple of
/// 16) to `co` channels, stride 1, "same" padding: by `weight` (co, ci, k, k), or with `flip` by
/// the transposed, flipped `weight` (ci, co, k, k): the input gradient of a convolution by it.
/// `None` where the grid would not fit.
#[cfg(feature = "tch")]
fn conv_f16(kernels: &Kernels, device: usize, input: &Tensor, weight: &Tensor, co: i64, k: i64, flip: bool) -> Option<Tensor> {
    let [n, ci, h, w] = input.size()[..] else { return None };
    let (words, grid) = conv_f16_plan([n, ci, h, w], co, k)?;
    let wf = Tensor::empty([words], (Kind::Int, input.device()));
    kernels.launch(device, (256, 1, 1), "tcc_conv_weights", ((words as u32).div_ceil(256), 1, 1), &[
        ptr(weight),
        ptr(&wf),
        Arg::I32(co as i32),
        Arg::I32(ci as i32),
        Arg::I32(k as i32),
        Arg::I32(flip as i32),
        Arg::I32(words as i32),
    ]);
    let out = Tensor::empty([n, co, h, w], (Kind::Half, input.device()));
    // (16-byte loads where rows start aligned)
    let vec = w % 8 == 0 && aligned(input, 16);
    kernels.launch_shared(device, (CONV_THREADS, 1, 1), &format!("tcc_conv_f16_k{k}"), grid, conv_shared(k), &[
        ptr(input),
        ptr(&wf),
        ptr(&out),
        Arg::I32(ci as i32),
        Arg::I32(co as i32),
        Arg::I32(h as i32),
        Arg::I32(w as i32),
        Arg::I32(vec as i32),
    ]);
    Some(out)
}

/// x (n, ci, h, w), w (32, ci, k, k), in f32 (`f32`) or f16.
#[derive(Clone, Copy)]
struct Shape {
    f32: bool,
    n: i64,
    ci: i64,
    h: i64,
    w: i64,
    k: i64,
}

impl Shape {
    /// The weight gradient's work items (TC x RC or RC_F16 pixels of one image).
    fn items(&self) -> i64 {
        let rc = if self.f32() { RC } else { RC_F16 };
        self.n * ((self.w + TC - 1) / TC) * ((self.h + rc - 1) / rc)
    }

    /// `Tcw<K>::SMEM`: the f16 weight gradient's dynamic shared memory (bytes): 3 stages of 16
    /// channels x (RC_F16 + k - 1) rows x 24 words (channel stride = 16 mod 32 words); f32's is
    /// static (0).
    fn wg_shared(&self) -> u32 {
        if self.f32() {
            return 0;
        }
        let cs = ((RC_F16 + self.k - 1) * 24 + 15) / 32 * 32 + 16;
        (3 * CIB * cs * 4) as u32
    }

    /// The weight gradient's grid: (item ranges, input-channel groups).
    fn grid(&self) -> (u32, u32, u32) {
        let groups = self.ci / CIB;
        let ranges = (WG_BLOCKS / groups).max(1).min(self.items());
        (ranges as u32, groups as u32, 1)
    }

    /// `Tcw<K>::THREADS`, `Tcw32<K>::THREADS`.
    fn threads(&self) -> u32 {
        if self.k == 5 { 320 } else { 192 }
    }

    fn f32(&self) -> bool {
        self.f32
    }

    /// The storage kind.
    #[cfg(feature = "tch")]
    fn kind(&self) -> Kind {
        if self.f32 { Kind::Float } else { Kind::Half }
    }

    /// Whether our weight-gradient kernel takes it (with `CO` output channels).
    fn weight_grad_fits(&self) -> bool {
        self.ci % CIB == 0
            && self.ci / CIB <= 65535
            && self.items() <= i32::MAX as i64 / 2
            && CO * self.ci * self.k * self.k <= i32::MAX as i64
    }

    /// The weight gradient's finish kernel, its partial sets' count and the values of the
    /// gradient.
    fn finish(&self) -> (&'static str, i64, i64) {
        let finish = if self.f32() { "tcc_grad_weight_finish_f32" } else { "tcc_grad_weight_finish" };
        let sets = self.grid().0 as i64 * if self.f32() { RG_F32 } else { RG_F16 };
        (finish, sets, CO * self.ci * self.k * self.k)
    }

    /// The weight gradient's entry, and the values per row its 16-byte loads need.
    fn weight_grad_entry(&self) -> (String, i64) {
        let (name, per_row) = if self.f32() { ("f32", 4) } else { ("f16", 8) };
        (format!("tcc_grad_weight_{name}_k{}", self.k), per_row)
    }

    #[cfg(feature = "tch")]
    fn padding(&self) -> i64 {
        (self.k - 1) / 2
    }
}

/// What the backward needs of the forward.
#[cfg(feature = "tch")]
pub(crate) struct Saved {
    device: usize,
    kernels: Arc<Kernels>,
    shape: Shape,
    /// The input and weight, contiguous ([`contiguous`]).
    x: TchTensor,
    weight: TchTensor,
    need: [bool; 2],
}

/// The forward of [`crate::conv::ConvBackend::conv2d_graph`] (LibTorch's convolution, outside
/// autograd) for a backward with our weight-gradient kernel, or `None` where it does not apply
/// (see the module docs); the graph's backward is [`backward`]. `allow_tf32`: the precision is
/// [`crate::conv::ConvPrecision::Tf32`] (f32 runs here only then).
#[cfg(feature = "tch")]
pub(crate) fn forward(
    x: &TchTensor,
    weight: &TchTensor,
    need: [bool; 2],
    options: &ConvOptions<2>,
    allow_tf32: bool,
) -> Option<(TchTensor, ConvGraph)> {
    let (t, wt) = (&x.tensor, &weight.tensor);
    if !need[1] {
        return None;
    }
    let kinds: &[Kind] = if allow_tf32 { &[Kind::Half, Kind::Float] } else { &[Kind::Half] };
    let g = ConvShape::same_padding(t, wt, options, kinds, &SIZES)?;
    let (device, shape) = (g.device, Shape { f32: t.kind() == Kind::Float, n: g.n, ci: g.ci, h: g.h, w: g.w, k: g.k });
    if g.co != CO || !shape.weight_grad_fits() || crate::conv::tch_is_channels_last(t)
    {
        return None;
    }
    let kernels = PROGRAM.kernels(device).ok()?;
    let (x, weight) = (contiguous(x), contiguous(weight));
    let ours = (!shape.f32()).then(|| conv_f16(&kernels, device, &x.tensor, &weight.tensor, CO, shape.k, false)).flatten();
    let y = ours.unwrap_or_else(|| tch::no_grad(|| convolution(&x.tensor, &weight.tensor, shape.padding(), false, shape.f32())));
    let saved = Saved { device, kernels, shape, x, weight, need };
    Some((TchTensor::new(y), ConvGraph(Arc::new(saved))))
}

/// The convolution of `x` by `weight` outside autodiff (inference: `vsr upscale`, evaluation)
/// on our f16 kernel, plus `bias` (C, of the input's kind) if given, or `None` where it does not
/// apply: f16 only, 32 output channels, the input as the training forward takes it (see the
/// module docs). VSRNet's conv2 in an fp16 inference: 3.20 -> 1.11 ms, as in training.
#[cfg(feature = "tch")]
pub(crate) fn inference(x: &TchTensor, weight: &TchTensor, bias: Option<&TchTensor>, options: &ConvOptions<2>) -> Option<TchTensor> {
    let (t, wt) = (&x.tensor, &weight.tensor);
    let g = ConvShape::same_padding(t, wt, options, &[Kind::Half], &SIZES)?;
    if g.co != CO
        || g.ci % CIB != 0
        || crate::conv::tch_is_channels_last(t)
        || !bias_fits(bias, CO, t)
    {
        return None;
    }
    let kernels = PROGRAM.kernels(g.device).ok()?;
    let (x, weight) = (contiguous(x), contiguous(weight));
    let y = conv_f16(&kernels, g.device, &x.tensor, &weight.tensor, CO, g.k, false)?;
    Some(add_bias(y, bias))
}

/// LibTorch's (transposed, for the input gradient) convolution of `x` by `w` with stride 1 and
/// padding `p`, as the other training convolutions run ([`crate::conv::tch_convolution`]); TF32
/// allowed for f32 (which runs here only under [`crate::conv::ConvPrecision::Tf32`]), moot for f16.
#[cfg(feature = "tch")]
fn convolution(x: &Tensor, w: &Tensor, p: i64, transposed: bool, allow_tf32: bool) -> Tensor {
    crate::conv::tch_convolution(x, w, None, &[1, 1], &[p as usize; 2], &[1, 1], transposed, &[0, 0], 1, allow_tf32)
}

/// Gradients for `[x, weight]` (where the forward's `need` says) of `sum(y * dy)`: the input
/// gradient by LibTorch (the transposed convolution), the weight gradient by our kernel.
#[cfg(feature = "tch")]
pub(crate) fn backward(s: &Saved, dy: &TchTensor) -> Vec<Option<TchTensor>> {
    let (x, w) = (&s.x.tensor, &s.weight.tensor);
    let sh = s.shape;
    let dy = dy.tensor.to_kind(sh.kind()).contiguous();
    assert_eq!(dy.size(), [sh.n, CO, sh.h, sh.w], "convolution backward: the output gradient is shaped unlike the output");
    let p = sh.padding();
    let dx = s.need[0].then(|| {
        let ours = (!sh.f32()).then(|| conv_f16(&s.kernels, s.device, &dy, w, sh.ci, sh.k, true)).flatten();
        TchTensor::new(ours.unwrap_or_else(|| tch::no_grad(|| convolution(&dy, w, p, true, sh.f32()))))
    });
    let dw = s.need[1].then(|| {
        let grid = sh.grid();
        let (finish, sets, count) = sh.finish();
        let (name, per_row) = sh.weight_grad_entry();
        let part = Tensor::empty([sets * count], (Kind::Float, x.device()));
        // (16-byte loads where rows start aligned)
        let vec = sh.w % per_row == 0 && aligned(x, 16) && aligned(&dy, 16);
        s.kernels.launch_shared(s.device, (sh.threads(), 1, 1), &name, grid, sh.wg_shared(), &[
            ptr(x),
            ptr(&dy),
            ptr(&part),
            Arg::I32(sh.n as i32),
            Arg::I32(sh.ci as i32),
            Arg::I32(sh.h as i32),
            Arg::I32(sh.w as i32),
            Arg::I32(vec as i32),
        ]);
        let dw = Tensor::empty([CO, sh.ci, sh.k, sh.k], (sh.kind(), x.device()));
        s.kernels.launch(s.device, (32, 8, 1), finish, ((count as u32).div_ceil(32), 1, 1), &[
            ptr(&part),
            Arg::I32(sets as i32),
            Arg::I32(count as i32),
            ptr(&dw),
        ]);
        TchTensor::new(dw)
    });
    vec![dx, dw]
}

/// The same kernels on the CUDA (CubeCL) backend's dense buffers, launched on the stream of
/// CubeCL's queue from its device thread (see `crate::cube::own_conv`): the f16 forward and input
/// gradient, and the weight gradient in f16 and (TF32 allowed) f32. The f32 forward and input
/// gradient stay on cuDNN, as on LibTorch.
#[cfg(feature = "cuda")]
pub(crate) mod cube {
    use burn::tensor::DType;

    use super::{CO, CONV_THREADS, PROGRAM, SIZES, Shape, conv_f16_plan, conv_shared};
    use crate::conv_shape::ConvShape;
    use crate::cube::cudnn::{channels, dims, empty};
    use crate::cube::own_conv::{Tensor, pointers};
    use crate::nvrtc::Arg;

    /// `g` as our kernels take it (32 output channels, a kernel of 3 or 5), in f32 (`f32`) or f16.
    fn shape(g: &ConvShape, f32: bool) -> Option<Shape> {
        let s = Shape { f32, n: g.n, ci: g.ci, h: g.h, w: g.w, k: g.k };
        (g.co == CO && SIZES.contains(&g.k) && s.weight_grad_fits()).then_some(s)
    }

    /// Our f16 convolution of `input` to `co` channels by `weight`, or by its transposed and
    /// flipped self with `flip` (see the LibTorch path's `conv_f16`).
    fn conv_f16(input: &Tensor, weight: &Tensor, co: i64, k: i64, flip: bool) -> Option<Tensor> {
        let d = dims(input).map(|v| v as i64);
        let (words, grid) = conv_f16_plan(d, co, k)?;
        let kernels = PROGRAM.kernels(input.device.index).ok()?;
        let wf = channels(input, words as usize);
        let out = empty(input, [d[0], co, d[2], d[3]].map(|v| v as usize), DType::F16);
        let ([pin, pw, pwf, pout], stream, _guards) = pointers([input, weight, &wf, &out]);
        let vec = d[3] % 8 == 0 && pin % 16 == 0;
        let [ci, h, w] = [d[1], d[2], d[3]].map(|v| Arg::I32(v as i32));
        // SAFETY: CubeCL's stream of these dense buffers, kept (guards) until the launches are
        // queued; the arguments as the LibTorch path passes them.
        unsafe {
            kernels.launch_on(stream, (256, 1, 1), "tcc_conv_weights", ((words as u32).div_ceil(256), 1, 1), 0, &[
                Arg::Ptr(pw), Arg::Ptr(pwf), Arg::I32(co as i32), ci, Arg::I32(k as i32), Arg::I32(flip as i32), Arg::I32(words as i32),
            ]);
            kernels.launch_on(stream, (CONV_THREADS, 1, 1), &format!("tcc_conv_f16_k{k}"), grid, conv_shared(k), &[
                Arg::Ptr(pin), Arg::Ptr(pwf), Arg::Ptr(pout), ci, Arg::I32(co as i32), h, w, Arg::I32(vec as i32),
            ]);
        }
        Some(out)
    }

    /// The f16 forward of `x` by `weight`, or `None` where our kernel does not take it.
    pub(crate) fn forward(x: &Tensor, weight: &Tensor, g: &ConvShape) -> Option<Tensor> {
        shape(g, false).filter(|_| x.dtype == DType::F16)?;
        conv_f16(x, weight, CO, g.k, false)
    }

    /// The f16 input gradient of the convolution by `weight` from the output gradient `dy`, or
    /// `None` where our kernel does not take it.
    pub(crate) fn input_grad(weight: &Tensor, dy: &Tensor, g: &ConvShape) -> Option<Tensor> {
        shape(g, false).filter(|_| dy.dtype == DType::F16)?;
        conv_f16(dy, weight, g.ci, g.k, true)
    }

    /// The weight gradient from `x` and the output gradient `dy`, f16 or (`tf32`: TF32 allowed)
    /// f32, or `None` where our kernel does not take it.
    pub(crate) fn weight_grad(x: &Tensor, dy: &Tensor, g: &ConvShape, tf32: bool) -> Option<Tensor> {
        let f32 = match x.dtype {
            DType::F16 => false,
            DType::F32 if tf32 => true,
            _ => return None,
        };
        let sh = shape(g, f32)?;
        let kernels = PROGRAM.kernels(g.device).ok()?;
        let grid = sh.grid();
        let (finish, sets, count) = sh.finish();
        let (name, per_row) = sh.weight_grad_entry();
        let part = channels(x, (sets * count) as usize);
        let dw = empty(x, [CO, sh.ci, sh.k, sh.k].map(|v| v as usize), x.dtype);
        let ([px, pdy, ppart, pdw], stream, _guards) = pointers([x, dy, &part, &dw]);
        let vec = sh.w % per_row == 0 && px % 16 == 0 && pdy % 16 == 0;
        // SAFETY: as in `conv_f16`.
        unsafe {
            kernels.launch_on(stream, (sh.threads(), 1, 1), &name, grid, sh.wg_shared(), &[
                Arg::Ptr(px), Arg::Ptr(pdy), Arg::Ptr(ppart), Arg::I32(sh.n as i32), Arg::I32(sh.ci as i32),
                Arg::I32(sh.h as i32), Arg::I32(sh.w as i32), Arg::I32(vec as i32),
            ]);
            kernels.launch_on(stream, (32, 8, 1), finish, ((count as u32).div_ceil(32), 1, 1), 0, &[
                Arg::Ptr(ppart), Arg::I32(sets as i32), Arg::I32(count as i32), Arg::Ptr(pdw),
            ]);
        }
        Some(dw)
    }
}
