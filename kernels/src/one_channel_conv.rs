//! Training convolutions to one output channel (VSRNet's conv3: 32 -> 1 channel, 5x5) on
//! LibTorch's CUDA tensors as kernels of our own (`one_channel_conv.cu`; compiled and launched as
//! [`crate::nvrtc`] says).
//!
//! Why: cuDNN has no good algorithm for one output channel. On an H200 in fp16, at batch 3 and
//! 512x960, its forward, input gradient and weight gradient of conv3 took 0.6, 1.6 and 1.5 ms
//! (Nsight Compute) for 2.4 GFLOP each, a fifth of VSRNet's step once its BatchNorm ran on
//! [`crate::batch_norm`]. These kernels stage image tiles and the weights in shared memory and
//! compute in f32 (the storage is f32 or f16; "TF32" does not apply: this is f32 arithmetic).
//!
//! They take: stride 1, dilation 1, one group, square kernels of 3, 5, 7 or 9 with "same" padding
//! ((K - 1) / 2), C K K <= 4096 weights, input and weight of one dtype (f32 or f16), at most
//! 65535 images. Anything else, CPU tensors, and `VSR_TCH_KERNELS=libtorch` go to LibTorch's
//! convolution. The weight gradient is deterministic (no atomics).

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
use crate::conv_shape::contiguous;
use crate::nvrtc::Program;
#[cfg(feature = "tch")]
use crate::nvrtc::{Arg, Kernels, ptr};

const SOURCE: &str = concat!(include_str!("storage.cuh"), include_str!("one_channel_conv.cu"));
/// `TX`, `TY`, `RPT`, `WMAX` and `ROWS` of one_channel_conv.cu.
const TX: u32 = 32;
const TY: u32 = 8;
const RPT: u32 = 4;
const WMAX: i64 = 4096;
const ROWS: u32 = 8;
/// The kernel sizes compiled.
const SIZES: [i64; 4] = [3, 5, 7, 9];

/// `ocv_<pass>_<f32|f16>_k<K>` for every pass, storage type and kernel size, and the finish.
const ENTRIES: [&str; 25] = [
    "ocv_grad_weight_finish",
    "ocv_forward_f32_k3", "ocv_grad_input_f32_k3", "ocv_grad_weight_f32_k3",
    "ocv_forward_f32_k5", "ocv_grad_input_f32_k5", "ocv_grad_weight_f32_k5",
    "ocv_forward_f32_k7", "ocv_grad_input_f32_k7", "ocv_grad_weight_f32_k7",
    "ocv_forward_f32_k9", "ocv_grad_input_f32_k9", "ocv_grad_weight_f32_k9",
    "ocv_forward_f16_k3", "ocv_grad_input_f16_k3", "ocv_grad_weight_f16_k3",
    "ocv_forward_f16_k5", "ocv_grad_input_f16_k5", "ocv_grad_weight_f16_k5",
    "ocv_forward_f16_k7", "ocv_grad_input_f16_k7", "ocv_grad_weight_f16_k7",
    "ocv_forward_f16_k9", "ocv_grad_input_f16_k9", "ocv_grad_weight_f16_k9",
];

static PROGRAM: Program =
    Program::new("one_channel_conv.cu", SOURCE, &ENTRIES, "one-output-channel convolution", "LibTorch's convolution (cuDNN)");

/// x (n, c, h, w), w (1, c, k, k).
#[derive(Clone, Copy)]
struct Shape {
    n: i64,
    c: i64,
    h: i64,
    w: i64,
    k: i64,
}

impl Shape {
    /// `g` where our kernels take it (see the module docs).
    fn of(g: &ConvShape) -> Option<Self> {
        let shape = Shape { n: g.n, c: g.ci, h: g.h, w: g.w, k: g.k };
        let fits = g.co == 1 && SIZES.contains(&g.k) && shape.c * shape.k * shape.k <= WMAX && shape.n <= 65535 && shape.grid().1 <= 65535;
        fits.then_some(shape)
    }

    fn args(&self) -> [crate::nvrtc::Arg; 3] {
        use crate::nvrtc::Arg;
        [Arg::I32(self.c as i32), Arg::I32(self.h as i32), Arg::I32(self.w as i32)]
    }

    /// The forward's and the input gradient's: tiles of TX x (TY RPT).
    fn grid(&self) -> (u32, u32, u32) {
        (ceil(self.w, TX), ceil(self.h, TY * RPT), self.n as u32)
    }

    /// The weight gradient's: regions of TX x (TY ROWS).
    fn weight_grid(&self) -> (u32, u32, u32) {
        (ceil(self.w, TX), ceil(self.h, TY * ROWS), self.n as u32)
    }

    /// `ocv_<pass>_<f32|f16>_k<K>`.
    fn entry(&self, pass: &str, half: bool) -> String {
        format!("ocv_{pass}_{}_k{}", if half { "f16" } else { "f32" }, self.k)
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
    /// The input and weight, contiguous ([`contiguous`]).
    x: TchTensor,
    weight: TchTensor,
    need: [bool; 2],
}

/// The forward of [`crate::conv::ConvBackend::conv2d_graph`] with these kernels, or `None` where
/// they do not apply (see the module docs); the graph's backward is [`backward`].
#[cfg(feature = "tch")]
pub(crate) fn forward(x: &TchTensor, weight: &TchTensor, need: [bool; 2], options: &ConvOptions<2>) -> Option<(TchTensor, ConvGraph)> {
    let (t, wt) = (&x.tensor, &weight.tensor);
    let g = ConvShape::same_padding(t, wt, options, &[Kind::Float, Kind::Half], &SIZES)?;
    let (device, shape) = (g.device, Shape::of(&g)?);
    let kernels = PROGRAM.kernels(device).ok()?;
    let (x, weight) = (contiguous(x), contiguous(weight));
    let y = Tensor::empty([shape.n, 1, shape.h, shape.w], (t.kind(), t.device()));
    let mut args = vec![ptr(&x.tensor), ptr(&weight.tensor), ptr(&y)];
    args.extend(shape.args());
    kernels.launch(device, (TX, TY, 1), &shape.entry("forward", t.kind() == Kind::Half), shape.grid(), &args);
    let saved = Saved { device, kernels, shape, x, weight, need };
    Some((TchTensor::new(y), ConvGraph(Arc::new(saved))))
}

/// Gradients for `[x, weight]` (where the forward's `need` says) of `sum(y * dy)`.
#[cfg(feature = "tch")]
pub(crate) fn backward(s: &Saved, dy: &TchTensor) -> Vec<Option<TchTensor>> {
    let (x, w) = (&s.x.tensor, &s.weight.tensor);
    let sh = s.shape;
    let dy = dy.tensor.to_kind(x.kind()).contiguous();
    assert_eq!(dy.size(), [sh.n, 1, sh.h, sh.w], "convolution backward: the output gradient is shaped unlike the output");
    let dx = s.need[0].then(|| {
        let dx = Tensor::empty(x.size().as_slice(), (x.kind(), x.device()));
        let mut args = vec![ptr(&dy), ptr(w), ptr(&dx)];
        args.extend(sh.args());
        s.kernels.launch(s.device, (TX, TY, 1), &sh.entry("grad_input", x.kind() == Kind::Half), sh.grid(), &args);
        TchTensor::new(dx)
    });
    let dw = s.need[1].then(|| {
        let grid = sh.weight_grid();
        let blocks = grid.0 as i64 * grid.1 as i64 * grid.2 as i64;
        let count = sh.c * sh.k * sh.k;
        let part = Tensor::empty([blocks * count], (Kind::Float, x.device()));
        let mut args = vec![ptr(x), ptr(&dy), ptr(&part)];
        args.extend(sh.args());
        s.kernels.launch(s.device, (TX, TY, 1), &sh.entry("grad_weight", x.kind() == Kind::Half), grid, &args);
        let dw = Tensor::empty([1, sh.c, sh.k, sh.k], (Kind::Float, x.device()));
        s.kernels.launch(s.device, (256, 1, 1), "ocv_grad_weight_finish", ((count as u32).div_ceil(256), 1, 1), &[
            ptr(&part),
            Arg::I32(blocks as i32),
            Arg::I32(count as i32),
            ptr(&dw),
        ]);
        TchTensor::new(dw.to_kind(w.kind()))
    });
    vec![dx, dw]
}

/// The same kernels on the CUDA (CubeCL) backend's dense buffers, launched on the stream of
/// CubeCL's queue from its device thread (see `crate::cube::own_conv`): all three passes, f32 or
/// f16 storage, f32 arithmetic.
#[cfg(feature = "cuda")]
pub(crate) mod cube {
    use burn::tensor::DType;

    use super::{PROGRAM, Shape, TX, TY};
    use crate::conv_shape::ConvShape;
    use crate::cube::cudnn::{channels, empty};
    use crate::cube::own_conv::{Tensor, pointers};
    use crate::nvrtc::Arg;

    /// `g` where our kernels take it, and whether `t` is f16 (f32 or f16 only).
    fn shape(g: &ConvShape, t: &Tensor) -> Option<(Shape, bool)> {
        let half = match t.dtype {
            DType::F16 => true,
            DType::F32 => false,
            _ => return None,
        };
        Some((Shape::of(g)?, half))
    }

    /// `entry` of `sh` from the operands `[a, b]` into `out`, on the forward's grid.
    fn run(sh: &Shape, half: bool, entry: &str, [a, b]: [&Tensor; 2], out: &Tensor) -> Option<()> {
        let kernels = PROGRAM.kernels(a.device.index).ok()?;
        let ([pa, pb, po], stream, _guards) = pointers([a, b, out]);
        let mut args = vec![Arg::Ptr(pa), Arg::Ptr(pb), Arg::Ptr(po)];
        args.extend(sh.args());
        // SAFETY: CubeCL's stream of these dense buffers, kept (guards) until the launch is
        // queued; the arguments as the LibTorch path passes them.
        unsafe { kernels.launch_on(stream, (TX, TY, 1), &sh.entry(entry, half), sh.grid(), 0, &args) };
        Some(())
    }

    /// The forward of `x` by `weight`, or `None` where our kernels do not take it.
    pub(crate) fn forward(x: &Tensor, weight: &Tensor, g: &ConvShape) -> Option<Tensor> {
        let (sh, half) = shape(g, x)?;
        let y = empty(x, [sh.n, 1, sh.h, sh.w].map(|v| v as usize), x.dtype);
        run(&sh, half, "forward", [x, weight], &y)?;
        Some(y)
    }

    /// The input gradient of the convolution by `weight` from the output gradient `dy`, or
    /// `None` where our kernels do not take it.
    pub(crate) fn input_grad(weight: &Tensor, dy: &Tensor, g: &ConvShape) -> Option<Tensor> {
        let (sh, half) = shape(g, dy)?;
        let dx = empty(dy, [sh.n, sh.c, sh.h, sh.w].map(|v| v as usize), dy.dtype);
        run(&sh, half, "grad_input", [dy, weight], &dx)?;
        Some(dx)
    }

    /// The weight gradient from `x` and the output gradient `dy` (in the dtype of `x`), or `None`
    /// where our kernels do not take it.
    pub(crate) fn weight_grad(x: &Tensor, dy: &Tensor, g: &ConvShape) -> Option<Tensor> {
        let (sh, half) = shape(g, x)?;
        let kernels = PROGRAM.kernels(g.device).ok()?;
        let grid = sh.weight_grid();
        let blocks = grid.0 as i64 * grid.1 as i64 * grid.2 as i64;
        let count = sh.c * sh.k * sh.k;
        let part = channels(x, (blocks * count) as usize);
        let dw = empty(x, [1, sh.c, sh.k, sh.k].map(|v| v as usize), DType::F32);
        let ([px, pdy, ppart, pdw], stream, _guards) = pointers([x, dy, &part, &dw]);
        let mut args = vec![Arg::Ptr(px), Arg::Ptr(pdy), Arg::Ptr(ppart)];
        args.extend(sh.args());
        // SAFETY: as in `run`.
        unsafe {
            kernels.launch_on(stream, (TX, TY, 1), &sh.entry("grad_weight", half), grid, 0, &args);
            kernels.launch_on(stream, (256, 1, 1), "ocv_grad_weight_finish", ((count as u32).div_ceil(256), 1, 1), 0, &[
                Arg::Ptr(ppart), Arg::I32(blocks as i32), Arg::I32(count as i32), Arg::Ptr(pdw),
            ]);
        }
        Some(if half { burn_cubecl::kernel::cast(dw, DType::F16) } else { dw })
    }
}
