//! Training BatchNorm + LeakyReLU on LibTorch's CUDA tensors as kernels of our own
//! (`batch_norm.cu`, compiled by NVRTC when first used and launched on LibTorch's current
//! stream); the CUDA (CubeCL) backend runs the same kernels on its buffers ([`cube`]).
//!
//! Why: VSRNet normalises conv1's output over all frames, 9 x 64 x 512 x 960 values at batch 3,
//! in NCHW (its frames become conv2's channels for free in that layout). cuDNN's NCHW BatchNorm
//! kernels are slow there: on an H100 in fp16, 1.9 ms forward and 4.1 ms backward for what
//! reading and writing the tensors allows in about 0.6 and 1 ms, and LeakyReLU is two more
//! passes (PReLU forward and backward). These kernels take three passes forward (statistics,
//! then normalise + activation) and three backward (gradient sums, then the input gradient),
//! with the activation folded in, and compute in f32 whatever the storage (f32 or f16), with
//! per-channel sums combined in f64.
//!
//! [`crate::nvrtc::TchKernels`] chooses (`VSR_TCH_KERNELS=own|libtorch`, default `own`);
//! LibTorch's `batch_norm` (cuDNN) remains the path for CPU tensors, other dtypes, inputs that
//! are not contiguous NCHW (channels-last ones keep their layout there), more than 65535 planes
//! (N x C), parameters of another size or device, and where NVRTC or the driver cannot load the
//! kernels (said once on stderr).
//! Memory: in f16 the backward reads the output y where it can instead of x (LeakyReLU with a
//! positive slope is invertible: x - mean = (z - beta) / a, z = y or y / slope), as InPlace-ABN
//! does (Rota Bulò et al. 2018). The next layer keeps y for its own backward anyway, so x can be
//! freed after the forward: at batch 3, 512x960, that is VSRNet's conv1 output, 0.53 GiB, and
//! the fp16 training step's peak fell from 2.56 to 2.03 GiB (H100). The recovered x - mean is as
//! precise as y's storage only where |beta| is small against |gamma|: the forward checks every
//! channel (|beta| <= 8 |gamma|, |gamma| >= 2^-6; x - mean is then within 9 half-precision
//! rounding steps of |x - mean| + 1 standard deviations) and keeps x where any fails, or where the
//! activation's slope is below 2^-10 (a negative z times a tinier slope would reach half
//! precision's subnormals). That check reads one value back, a synchronisation of LibTorch's stream.
//! In f32 x is kept: the fp32 step's peak lies elsewhere (5.03 GiB either way, measured), so the
//! synchronisation would cost time for nothing. The kernels read either (`_x`, `_y` entries).
//!
//! Results follow PyTorch's `batch_norm(training=True)` + `leaky_relu` to float tolerance
//! (kernels/tests/tch.rs compares them on a GPU); the running variance is updated from the
//! unbiased batch variance, as PyTorch does.

#[cfg(feature = "tch")]
use std::sync::Arc;

#[cfg(feature = "tch")]
use burn::backend::libtorch::TchTensor;
#[cfg(feature = "tch")]
use tch::{Device, Kind, Tensor};

#[cfg(feature = "tch")]
use crate::conv::BatchNormAct;
#[cfg(feature = "tch")]
use crate::conv_grad::ConvGraph;
use crate::nvrtc::Program;
#[cfg(feature = "tch")]
use crate::nvrtc::{Arg, Kernels, TchKernels, aligned, ptr, tch_kernels};

const SOURCE: &str = concat!(include_str!("storage.cuh"), include_str!("batch_norm.cu"));
/// `CHUNK` and `THREADS` of batch_norm.cu.
const CHUNK: i64 = 8192;
const THREADS: u32 = 256;

const ENTRIES: [&str; 26] = [
    "bn_stats_finish",
    "bn_grad_finish",
    "bn_stats_f32_v4",
    "bn_apply_f32_v4",
    "bn_grad_stats_f32_v4_x",
    "bn_grad_apply_f32_v4_x",
    "bn_grad_stats_f32_v4_y",
    "bn_grad_apply_f32_v4_y",
    "bn_stats_f32_v1",
    "bn_apply_f32_v1",
    "bn_grad_stats_f32_v1_x",
    "bn_grad_apply_f32_v1_x",
    "bn_grad_stats_f32_v1_y",
    "bn_grad_apply_f32_v1_y",
    "bn_stats_f16_v4",
    "bn_apply_f16_v4",
    "bn_grad_stats_f16_v4_x",
    "bn_grad_apply_f16_v4_x",
    "bn_grad_stats_f16_v4_y",
    "bn_grad_apply_f16_v4_y",
    "bn_stats_f16_v1",
    "bn_apply_f16_v1",
    "bn_grad_stats_f16_v1_x",
    "bn_grad_apply_f16_v1_x",
    "bn_grad_stats_f16_v1_y",
    "bn_grad_apply_f16_v1_y",
];

static PROGRAM: Program =
    Program::new("batch_norm.cu", SOURCE, &ENTRIES, "BatchNorm", "LibTorch's batch_norm (cuDNN) or Burn's tensor ops");

/// The geometry of one BatchNorm: x is (n, c, l) contiguous, read in chunks.
#[derive(Clone, Copy)]
struct Shape {
    n: i64,
    c: i64,
    l: i64,
    chunks: i64,
}

impl Shape {
    fn grid(&self) -> (u32, u32, u32) {
        (self.chunks as u32, (self.n * self.c) as u32, 1)
    }

    /// Partial sums per channel.
    fn count(&self) -> i64 {
        self.n * self.chunks
    }

    /// Values per channel.
    fn m(&self) -> f64 {
        (self.n * self.l) as f64
    }
}

/// What the backward needs of the forward.
#[cfg(feature = "tch")]
pub(crate) struct Saved {
    device: usize,
    kernels: Arc<Kernels>,
    shape: Shape,
    /// What the backward reads: Burn's handle of the contiguous input x, or of the output y
    /// (`from_output`); while held, Burn writes into it in place nowhere (and tch's tensors are
    /// not `Sync`: held as Burn's).
    saved: TchTensor,
    from_output: bool,
    /// f32, [c] each; `beta` is Burn's handle where the parameter is f32 and contiguous already.
    mean: TchTensor,
    invstd: TchTensor,
    scale: TchTensor,
    beta: TchTensor,
    slope: f32,
    need: [bool; 3],
    kinds: [Kind; 2],
}

/// Whether the four-value kernels apply: planes of `l` values, a multiple of 4, and every tensor
/// read four values at a time starting at an address aligned for that (a contiguous view into a
/// larger tensor need not be; the outputs are fresh allocations).
#[cfg(feature = "tch")]
fn vectorised(l: i64, tensors: &[&Tensor]) -> bool {
    l % 4 == 0 && tensors.iter().all(|t| aligned(t, 4 * t.kind().elt_size_in_bytes()))
}

/// `bn_<pass>_<f32|f16>_<v4|v1>`.
fn entry(pass: &str, half: bool, v4: bool) -> String {
    let k = if half { "f16" } else { "f32" };
    format!("bn_{pass}_{k}_{}", if v4 { "v4" } else { "v1" })
}

/// The backward's `bn_<pass>_<f32|f16>_<v4|v1>_<x|y>`: reading x or the output y.
fn grad_entry(pass: &str, half: bool, v4: bool, from_output: bool) -> String {
    format!("{}_{}", entry(pass, half, v4), if from_output { "y" } else { "x" })
}

/// The geometry of x (N, C, H, W) where the kernels take it: planes of at least one value, at
/// most 65535 of them (the grid's second axis).
fn shape_of([n, c, h, w]: [usize; 4]) -> Option<Shape> {
    let (n, c, l) = (n as i64, c as i64, (h * w) as i64);
    let shape = Shape { n, c, l, chunks: (l + CHUNK - 1) / CHUNK };
    (n * c > 0 && l > 0 && n * c <= 65535 && shape.chunks <= i32::MAX as i64).then_some(shape)
}

#[cfg(feature = "tch")]
fn half(kind: Kind) -> bool {
    kind == Kind::Half
}

#[cfg(feature = "tch")]
fn f32s(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float).contiguous()
}

/// `t` as f32 and contiguous, as Burn's own handle where it is already (so that Burn knows the
/// storage is shared), else a converted copy.
#[cfg(feature = "tch")]
fn f32_handle(t: &TchTensor) -> TchTensor {
    if t.tensor.kind() == Kind::Float && t.tensor.is_contiguous() { t.clone() } else { TchTensor::new(f32s(&t.tensor)) }
}

/// Whether the backward reads the output instead of x (see the module docs): f16 storage, a
/// slope of at least 2^-10 and, in every channel, |beta| <= 8 |gamma| and 2^-6 <= |gamma| <=
/// f32::MAX. Reads one value back (a synchronisation); false where gamma or beta is NaN.
#[cfg(feature = "tch")]
fn output_suffices(gamma: &Tensor, beta: &Tensor, kind: Kind, slope: f32) -> bool {
    if kind != Kind::Half || !(slope >= 1.0 / 1024.0) {
        return false;
    }
    let g = gamma.abs();
    let margin = (&g * 8.0 - beta.abs()).minimum(&(&g - 1.0 / 64.0)).minimum(&(-&g + f32::MAX as f64)).min();
    margin.double_value(&[]) >= 0.0
}

/// The forward of [`crate::conv::ConvBackend::batch_norm_graph`] with these kernels, or `None`
/// where they do not apply (see the module docs); the graph's backward is [`backward`].
#[cfg(feature = "tch")]
pub(crate) fn forward(
    x: &TchTensor,
    gamma: &TchTensor,
    beta: &TchTensor,
    [mean, var]: [&TchTensor; 2],
    settings: BatchNormAct,
    need: [bool; 3],
) -> Option<(TchTensor, [TchTensor; 2], ConvGraph)> {
    let t = &x.tensor;
    let (device, shape) = applies(t, [gamma, beta, mean, var])?;
    let (c, l, size) = (shape.c, shape.l, t.size());
    let kernels = PROGRAM.kernels(device).ok()?;
    let xc = t.shallow_clone();
    let v4 = vectorised(l, &[&xc]);
    let options = (Kind::Float, t.device());
    let stat = || Tensor::empty([c], options);
    let kinds = [gamma.tensor.kind(), beta.tensor.kind()];
    let (gamma32, beta) = (f32s(&gamma.tensor), f32_handle(beta));
    let beta32 = &beta.tensor;
    let (mean_in, var_in) = (f32s(&mean.tensor), f32s(&var.tensor));
    let part = Tensor::empty([2 * c * shape.count()], options);
    let shift = stat();
    kernels.launch(device, (THREADS, 1, 1), &entry("stats", half(t.kind()), v4), shape.grid(), &[
        ptr(&xc), Arg::I32(c as i32), Arg::I64(l), ptr(&part), ptr(&shift),
    ]);
    let (mu, invstd, scale, new_mean, new_var) = (stat(), stat(), stat(), stat(), stat());
    kernels.launch(device, (THREADS, 1, 1), "bn_stats_finish", (c as u32, 1, 1), &[
        ptr(&part), ptr(&shift), Arg::I32(shape.count() as i32), Arg::F64(shape.m()), ptr(&gamma32),
        ptr(&mean_in), ptr(&var_in), Arg::F64(settings.momentum), Arg::F64(settings.epsilon),
        ptr(&mu), ptr(&invstd), ptr(&scale), ptr(&new_mean), ptr(&new_var),
    ]);
    let slope = settings.slope.unwrap_or(1.0) as f32;
    let y = Tensor::empty(size.as_slice(), (t.kind(), t.device()));
    kernels.launch(device, (THREADS, 1, 1), &entry("apply", half(t.kind()), v4), shape.grid(), &[
        ptr(&xc), ptr(&y), Arg::I32(c as i32), Arg::I64(l), ptr(&mu), ptr(&scale), ptr(beta32), Arg::F32(slope),
    ]);
    let running = [new_mean.to_kind(mean.tensor.kind()), new_var.to_kind(var.tensor.kind())].map(TchTensor::new);
    let y = TchTensor::new(y);
    // (no backward, no check: it synchronises)
    let from_output = need.contains(&true) && output_suffices(&gamma32, beta32, t.kind(), slope);
    let saved = Saved {
        device,
        kernels,
        shape,
        saved: if from_output { y.clone() } else { x.clone() },
        from_output,
        mean: TchTensor::new(mu),
        invstd: TchTensor::new(invstd),
        scale: TchTensor::new(scale),
        beta,
        slope,
        need,
        kinds,
    };
    Some((y, running, ConvGraph(Arc::new(saved))))
}

/// Inference-mode BatchNorm (the running statistics) + LeakyReLU(`slope`, if given) of `x`, in
/// one pass (the forward's output kernel with the running mean and `gamma / sqrt(var + eps)`),
/// or `None` where the kernels do not apply.
#[cfg(feature = "tch")]
pub(crate) fn inference(
    x: &TchTensor,
    gamma: &TchTensor,
    beta: &TchTensor,
    [mean, var]: [&TchTensor; 2],
    epsilon: f64,
    slope: Option<f64>,
) -> Option<TchTensor> {
    let t = &x.tensor;
    let (device, shape) = applies(t, [gamma, beta, mean, var])?;
    let kernels = PROGRAM.kernels(device).ok()?;
    let xc = t.shallow_clone();
    let (mu, beta32) = (f32s(&mean.tensor), f32s(&beta.tensor));
    let scale = (f32s(&gamma.tensor) / (f32s(&var.tensor) + epsilon).sqrt()).contiguous();
    let y = Tensor::empty(t.size().as_slice(), (t.kind(), t.device()));
    let slope = slope.unwrap_or(1.0) as f32;
    kernels.launch(device, (THREADS, 1, 1), &entry("apply", half(t.kind()), vectorised(shape.l, &[&xc])), shape.grid(), &[
        ptr(&xc), ptr(&y), Arg::I32(shape.c as i32), Arg::I64(shape.l), ptr(&mu), ptr(&scale), ptr(&beta32), Arg::F32(slope),
    ]);
    Some(TchTensor::new(y))
}

/// The CUDA device and geometry of `x` where these kernels take it (see the module docs): x
/// contiguous NCHW (a channels-last x keeps LibTorch's path and its layout), every per-channel
/// tensor of `params` (C) values on x's device.
#[cfg(feature = "tch")]
fn applies(t: &Tensor, params: [&TchTensor; 4]) -> Option<(usize, Shape)> {
    let Device::Cuda(device) = t.device() else { return None };
    let size = t.size();
    if tch_kernels() != TchKernels::Own || !matches!(t.kind(), Kind::Float | Kind::Half) || size.len() != 4 || !t.is_contiguous() {
        return None;
    }
    let c = size[1];
    if params.iter().any(|p| p.tensor.size() != [c] || p.tensor.device() != t.device()) {
        return None;
    }
    let shape = shape_of([0, 1, 2, 3].map(|i| size[i] as usize))?;
    Some((device, shape))
}

/// Gradients for `[x, gamma, beta]` (where the forward's `need` says) of `sum(y * dy)`.
#[cfg(feature = "tch")]
pub(crate) fn backward(s: &Saved, dy: &TchTensor) -> Vec<Option<TchTensor>> {
    // x or y (both shaped as x; `from_output` says which the kernels read)
    let x = &s.saved.tensor;
    let (mean, invstd, scale, beta) = (&s.mean.tensor, &s.invstd.tensor, &s.scale.tensor, &s.beta.tensor);
    let dy = dy.tensor.to_kind(x.kind()).contiguous();
    assert_eq!(dy.size(), x.size(), "BatchNorm backward: the output gradient is shaped unlike the output");
    let Shape { c, l, .. } = s.shape;
    let v4 = vectorised(l, &[x, &dy]);
    let options = (Kind::Float, x.device());
    let part = Tensor::empty([2 * c * s.shape.count()], options);
    let (slope, k) = (Arg::F32(s.slope), &s.kernels);
    k.launch(s.device, (THREADS, 1, 1), &grad_entry("grad_stats", half(x.kind()), v4, s.from_output), s.shape.grid(), &[
        ptr(x), ptr(&dy), Arg::I32(c as i32), Arg::I64(l), ptr(mean), ptr(scale), ptr(beta), slope, ptr(&part),
    ]);
    let stat = || Tensor::empty([c], options);
    let (dgamma, dbeta, k2, k3) = (stat(), stat(), stat(), stat());
    k.launch(s.device, (THREADS, 1, 1), "bn_grad_finish", (c as u32, 1, 1), &[
        ptr(&part), Arg::I32(s.shape.count() as i32), Arg::F64(s.shape.m()), ptr(invstd), ptr(scale),
        ptr(&dgamma), ptr(&dbeta), ptr(&k2), ptr(&k3),
    ]);
    let dx = s.need[0].then(|| {
        let dx = Tensor::empty(x.size().as_slice(), (x.kind(), x.device()));
        k.launch(s.device, (THREADS, 1, 1), &grad_entry("grad_apply", half(x.kind()), v4, s.from_output), s.shape.grid(), &[
            ptr(x), ptr(&dy), ptr(&dx), Arg::I32(c as i32), Arg::I64(l), ptr(mean), ptr(scale), ptr(beta),
            Arg::F32(s.slope), ptr(&k2), ptr(&k3),
        ]);
        TchTensor::new(dx)
    });
    vec![
        dx,
        s.need[1].then(|| TchTensor::new(dgamma.to_kind(s.kinds[0]))),
        s.need[2].then(|| TchTensor::new(dbeta.to_kind(s.kinds[1]))),
    ]
}

/// The same kernels on the CUDA (CubeCL) backend's buffers, launched on the stream of CubeCL's
/// queue (see `crate::cube::cudnn`: ordered with CubeCL's kernels, no host synchronisation). The
/// backward reads x: the variant that reads the output instead needs a check read back to the host
/// (see the module docs), a synchronisation the CubeCL path does without.
///
/// Measured on an H100 (fp16 training step, batch 3, 512x960, Nsight Compute): cuDNN's NCHW
/// BatchNorm took 3.8 ms forward and 8.2 ms backward for VSRNet's two BatchNorms, plus the
/// LeakyReLU passes; Burn's tensor ops before that, 18 ms of element-wise kernels and 3 ms of
/// reductions.
#[cfg(feature = "cuda")]
pub(crate) mod cube {
    use burn::tensor::DType;
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::cuda::CudaRuntime;

    use super::{PROGRAM, THREADS, entry, grad_entry, shape_of};
    use crate::cube::cudnn::{channels, dense, dims, empty, on_device_thread, ptr};
    use crate::nvrtc::{Arg, Kernels};

    type Tensor = CubeTensor<CudaRuntime>;

    /// Whether the kernels take an input of `shape` (see [`shape_of`]).
    pub(crate) fn takes(shape: [usize; 4]) -> bool {
        shape_of(shape).is_some()
    }

    fn half(t: &Tensor) -> bool {
        match t.dtype {
            DType::F16 => true,
            DType::F32 => false,
            other => panic!("BatchNorm kernels: f32 or f16 input, got {other:?}"),
        }
    }

    fn kernels(t: &Tensor) -> std::sync::Arc<Kernels> {
        PROGRAM.kernels(t.device.index).unwrap_or_else(|e| panic!("BatchNorm kernels on cuda:{}: {e}", t.device.index))
    }

    fn check_vector(t: &Tensor, c: usize, what: &str) {
        assert!(
            t.dtype == DType::F32 && t.meta.shape().dims::<1>() == [c],
            "BatchNorm: {what} must be f32 of {c} channels, got {:?} {:?}",
            t.dtype,
            t.meta.shape()
        );
    }

    /// Whether the four-value kernels apply: planes of a multiple of 4 values and every pointer
    /// aligned for four values.
    fn vectorised(l: i64, elem: usize, ptrs: &[u64]) -> bool {
        l % 4 == 0 && ptrs.iter().all(|p| p % (4 * elem as u64) == 0)
    }

    /// Training forward: `x` (N, C, H, W; f32 or f16) normalised with its batch statistics,
    /// scaled and shifted by `gamma`, `beta` (f32, C), then LeakyReLU(`slope`) if given, in the
    /// dtype of `x`; the running `[mean, var]` updated (momentum; unbiased variance; new
    /// buffers); and what [`backward`] takes: the batch mean, the inverse standard deviation,
    /// `gamma` times it, and `beta`.
    pub(crate) fn forward(
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        running: [Tensor; 2],
        momentum: f64,
        epsilon: f64,
        slope: Option<f64>,
    ) -> (Tensor, [Tensor; 2], [Tensor; 4]) {
        let client = x.client.clone();
        on_device_thread(&client, move || forward_here(x, gamma, beta, running, momentum, epsilon, slope))
    }

    /// [`forward`] on the calling thread (CubeCL's device thread: see [`on_device_thread`]).
    fn forward_here(
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        [mean, var]: [Tensor; 2],
        momentum: f64,
        epsilon: f64,
        slope: Option<f64>,
    ) -> (Tensor, [Tensor; 2], [Tensor; 4]) {
        let x = dense(x);
        let d = dims(&x);
        let shape = shape_of(d).unwrap_or_else(|| panic!("BatchNorm kernels: input of shape {d:?}"));
        let c = d[1];
        for (t, what) in [(&gamma, "gamma"), (&beta, "beta"), (&mean, "the running mean"), (&var, "the running variance")] {
            check_vector(t, c, what);
        }
        let (kernels, half) = (kernels(&x), half(&x));
        let part = channels(&x, 2 * c * shape.count() as usize);
        let stat = || channels(&x, c);
        let (shift, mu, invstd, scale, new_mean, new_var) = (stat(), stat(), stat(), stat(), stat(), stat());
        let y = empty(&x, d, x.dtype);
        let (px, stream, _gx) = ptr(&x);
        let p = |t: &Tensor| {
            let (p, _, guard) = ptr(t);
            (Arg::Ptr(p), guard)
        };
        let [(py, _gy), (part, _g0), (shift, _g1), (gamma, _g2), (beta_p, _g3), (mean, _g4), (var, _g5)] =
            [&y, &part, &shift, &gamma, &beta, &mean, &var].map(p);
        let [(mu_p, _g6), (invstd_p, _g7), (scale_p, _g8), (new_mean_p, _g9), (new_var_p, _g10)] =
            [&mu, &invstd, &scale, &new_mean, &new_var].map(p);
        let v4 = vectorised(shape.l, x.dtype.size(), &[px]);
        let (cc, l) = (Arg::I32(c as i32), Arg::I64(shape.l));
        let slope = Arg::F32(slope.unwrap_or(1.0) as f32);
        // SAFETY: CubeCL's stream of these buffers, which live (guards) until the launches are
        // queued; later work on the buffers is queued after them on the same stream. Arguments
        // as batch_norm.cu's entries take them (the LibTorch path's launches, above).
        unsafe {
            kernels.launch_on(stream, (THREADS, 1, 1), &entry("stats", half, v4), shape.grid(), 0, &[
                Arg::Ptr(px), cc.clone(), l.clone(), part.clone(), shift.clone(),
            ]);
            kernels.launch_on(stream, (THREADS, 1, 1), "bn_stats_finish", (c as u32, 1, 1), 0, &[
                part, shift, Arg::I32(shape.count() as i32), Arg::F64(shape.m()), gamma, mean, var,
                Arg::F64(momentum), Arg::F64(epsilon), mu_p.clone(), invstd_p, scale_p.clone(), new_mean_p, new_var_p,
            ]);
            kernels.launch_on(stream, (THREADS, 1, 1), &entry("apply", half, v4), shape.grid(), 0, &[
                Arg::Ptr(px), py, cc, l, mu_p, scale_p, beta_p, slope,
            ]);
        }
        (y, [new_mean, new_var], [mu, invstd, scale, beta])
    }

    /// Training backward: `[dx, dgamma, dbeta]` of `sum(y * dy)` from `x`, the output gradient
    /// and [`forward`]'s saved tensors (dx in the dtype of `x`, the others f32).
    pub(crate) fn backward(x: Tensor, dy: Tensor, saved: [Tensor; 4], slope: Option<f64>) -> [Tensor; 3] {
        let client = x.client.clone();
        on_device_thread(&client, move || backward_here(x, dy, saved, slope))
    }

    /// [`backward`] on the calling thread (CubeCL's device thread).
    fn backward_here(x: Tensor, dy: Tensor, saved: [Tensor; 4], slope: Option<f64>) -> [Tensor; 3] {
        let x = dense(x);
        let d = dims(&x);
        let dy = dense(if dy.dtype == x.dtype { dy } else { burn_cubecl::kernel::cast(dy, x.dtype) });
        assert_eq!(dims(&dy), d, "BatchNorm backward: the output gradient's shape");
        let shape = shape_of(d).unwrap_or_else(|| panic!("BatchNorm kernels: input of shape {d:?}"));
        let c = d[1];
        let (kernels, half) = (kernels(&x), half(&x));
        let part = channels(&x, 2 * c * shape.count() as usize);
        let stat = || channels(&x, c);
        let (dgamma, dbeta, k2, k3) = (stat(), stat(), stat(), stat());
        let dx = empty(&x, d, x.dtype);
        let (px, stream, _gx) = ptr(&x);
        let (pdy, _, _gdy) = ptr(&dy);
        let p = |t: &Tensor| {
            let (p, _, guard) = ptr(t);
            (Arg::Ptr(p), guard)
        };
        let [(mu, _g0), (invstd, _g1), (scale, _g2), (beta, _g3)] = [&saved[0], &saved[1], &saved[2], &saved[3]].map(p);
        let [(part_p, _g4), (dgamma_p, _g5), (dbeta_p, _g6), (k2_p, _g7), (k3_p, _g8), (dx_p, _g9)] =
            [&part, &dgamma, &dbeta, &k2, &k3, &dx].map(p);
        let v4 = vectorised(shape.l, x.dtype.size(), &[px, pdy]);
        let (cc, l) = (Arg::I32(c as i32), Arg::I64(shape.l));
        let slope = Arg::F32(slope.unwrap_or(1.0) as f32);
        // SAFETY: as in `forward`.
        unsafe {
            kernels.launch_on(stream, (THREADS, 1, 1), &grad_entry("grad_stats", half, v4, false), shape.grid(), 0, &[
                Arg::Ptr(px), Arg::Ptr(pdy), cc.clone(), l.clone(), mu.clone(), scale.clone(), beta.clone(), slope.clone(),
                part_p.clone(),
            ]);
            kernels.launch_on(stream, (THREADS, 1, 1), "bn_grad_finish", (c as u32, 1, 1), 0, &[
                part_p, Arg::I32(shape.count() as i32), Arg::F64(shape.m()), invstd, scale.clone(), dgamma_p, dbeta_p,
                k2_p.clone(), k3_p.clone(),
            ]);
            kernels.launch_on(stream, (THREADS, 1, 1), &grad_entry("grad_apply", half, v4, false), shape.grid(), 0, &[
                Arg::Ptr(px), Arg::Ptr(pdy), dx_p, cc, l, mu, scale, beta, slope, k2_p, k3_p,
            ]);
        }
        [dx, dgamma, dbeta]
    }
}
