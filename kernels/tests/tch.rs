//! The LibTorch warp (PyTorch's `grid_sample`, gradients from LibTorch's autograd) and its f32
//! convolutions, through the same checks as the other backends: on LibTorch's CPU in any `tch`
//! build, on its CUDA device 0 with `--ignored` on a GPU machine (where a missing GPU fails them).
//! LibTorch's CUDA `grid_sample` backward adds with atomics, so its image gradient is not
//! bit-for-bit deterministic there: the determinism check runs on the CPU only. Two checks of the
//! other backends do not apply: `grid_sample` takes sample coordinates through the [-1, 1]
//! normalisation and back in f32, so a zero flow is not an exact identity (last-bit differences)
//! and it differs from the tensor-op definition by a few 1e-5 relative on wide images with large
//! flows (measured: 3.1e-5 at 240 px, ±20 px); its agreement with PyTorch is `golden_parity`.
#![cfg(feature = "tch")]

mod common;

use burn::backend::LibTorch;
use burn::backend::libtorch::LibTorchDevice;

type B = LibTorch<f32>;

macro_rules! checks {
    ($($name:ident => $check:path;)*) => {
        mod cpu {
            use super::*;
            $(#[test] fn $name() { $check(&LibTorchDevice::Cpu); })*
            #[test]
            fn determinism() {
                common::check_determinism::<B>(&LibTorchDevice::Cpu);
            }
        }
        mod cuda {
            use super::*;
            fn device() -> LibTorchDevice {
                assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
                LibTorchDevice::Cuda(0)
            }
            $(#[test] #[ignore = "needs a CUDA GPU"] fn $name() { $check(&device()); })*
        }
    };
}

checks! {
    golden_parity => common::check_golden::<B>;
    far_outside => common::check_far_outside::<B>;
    finite_differences => common::check_finite_differences::<B>;
    shapes => common::check_shapes::<B>;
    composition => common::check_composition::<B>;
    conv_f32 => common::check_conv_f32::<B>;
    conv_train => common::check_conv_train::<B>;
    batch_norm_train => common::check_batch_norm_train::<B>;
    batch_norm_ops => common::check_batch_norm_ops::<B>;
    leaky_relu => common::check_leaky_relu::<B>;
    bias_leaky_relu => common::check_bias_leaky_relu::<B>;
}

/// fp16 on the GPU only: LibTorch's CPU has no half-precision `grid_sample`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_f16() {
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    common::check_f16::<B>(&LibTorchDevice::Cuda(0));
}

/// LibTorch's channels-last layout (the default for FlowNetSD on CUDA), forced here on the CPU:
/// convolutions follow their input's layout (an NHWC input gives an NHWC output, one channel
/// included, and an NCHW one stays NCHW: FlowNetSD relies on it to stay channels-last), and a
/// small FlowNetSD-like chain (convolution, LeakyReLU, concatenation, transposed convolution)
/// gives the same values from a channels-last input as from an NCHW one. The layout is process-wide: the
/// other tests of this binary may run in either, and pass in both.
mod channels_last {
    use super::*;
    use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
    use burn::tensor::{Distribution, Tensor, TensorPrimitive};
    use vsr_kernels::conv::{self, TchLayout, set_tch_layout, tch_is_channels_last, to_conv_layout};

    fn nhwc(t: &Tensor<B, 4>) -> bool {
        let TensorPrimitive::Float(p) = t.clone().into_primitive() else { unreachable!() };
        tch_is_channels_last(&p.tensor)
    }

    #[test]
    fn convolutions_follow_the_input_layout() {
        set_tch_layout(TchLayout::ChannelsLast);
        let device = LibTorchDevice::Cpu;
        let x = Tensor::<B, 4>::random([2, 3, 8, 10], Distribution::Uniform(-1.0, 1.0), &device);
        for cin in [3, 1] {
            let x = x.clone().narrow(1, 0, cin);
            let w = Tensor::<B, 4>::random([4, cin, 3, 3], Distribution::Uniform(-1.0, 1.0), &device);
            let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let x_cl = to_conv_layout(x.clone());
            assert!(nhwc(&x_cl), "to_conv_layout: {cin} channels");
            assert!(nhwc(&conv::conv2d(x_cl, w.clone(), None, options.clone())), "{cin} input channels: NHWC in, NHWC out");
            assert!(!nhwc(&conv::conv2d(x, w, None, options)), "{cin} input channels: NCHW in, NCHW out");
        }
    }

    #[test]
    fn values_do_not_depend_on_the_layout() {
        set_tch_layout(TchLayout::ChannelsLast);
        let device = LibTorchDevice::Cpu;
        let r = |s: [usize; 4]| Tensor::<B, 4>::random(s, Distribution::Uniform(-1.0, 1.0), &device);
        let (x, w1, w2, w3) = (r([2, 6, 16, 12]), r([8, 6, 3, 3]), r([12, 2, 4, 4]), r([4, 8, 3, 3]));
        let chain = |x: Tensor<B, 4>| {
            let a = conv::leaky_relu(conv::conv2d(x, w1.clone(), None, ConvOptions::new([2, 2], [1, 1], [1, 1], 1)), 0.1);
            let b = conv::conv2d(a.clone(), w3.clone(), None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
            let cat = Tensor::cat(vec![a, b], 1);
            conv::conv_transpose2d(cat, w2.clone(), None, ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1))
        };
        let want = chain(x.clone());
        let got = chain(to_conv_layout(x));
        assert!(nhwc(&got), "the chain left channels-last");
        assert_eq!(got.dims(), want.dims());
        let scale = want.clone().abs().max().into_scalar();
        let d = (got - want).abs().max().into_scalar();
        assert!(d <= 1e-5 * scale, "NHWC and NCHW differ by {d} (largest value {scale})");
    }
}

/// The BatchNorm + LeakyReLU kernels of our own (`VSR_TCH_KERNELS=own`, the default on CUDA)
/// against LibTorch's `batch_norm` (cuDNN) + `prelu` under its autograd, on the same inputs:
/// output, running statistics and the gradients of x, gamma and beta; f32 and f16 (f32
/// parameters, as vsr's fp16 training has them); planes whose length is a multiple of 4 (the
/// vectorised kernels) and not, several chunks per plane, a mean far from 0 against the spread
/// (the shifted sums), no activation, and parameters that let the backward read the output and
/// that keep x (checked through `nvrtc::launches`). Output and gradients are held against the definition
/// computed in f64 on the host (LibTorch's distance to it is printed; values at LeakyReLU's kink
/// left out of the input gradient's check: see there), the running statistics against
/// LibTorch's. The choice is process-wide: the other tests of this binary may run on
/// either path and pass on both.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_batch_norm_matches_cudnn() {
    use burn::backend::Autodiff;
    use burn::module::{Param, RunningState};
    use burn::nn::BatchNormConfig;
    use burn::tensor::{DType, Distribution, Tensor};
    use vsr_kernels::nvrtc::{TchKernels, launches, set_tch_kernels};
    type A = Autodiff<B>;
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    // (shape, mean of x, dtype, slope, beta's range, whether the backward reads the output): in
    // f16, beta small against gamma (0.5..1.5) lets it read the output, a large one keeps x; f32
    // keeps x.
    let cases: [([usize; 4], f32, DType, Option<f64>, f64, bool); 8] = [
        ([9, 64, 96, 160], 0.0, DType::F32, Some(0.1), 0.5, false),
        ([9, 64, 96, 160], 0.0, DType::F16, Some(0.1), 0.5, true),
        ([3, 5, 7, 9], 3.0, DType::F32, Some(0.1), 0.5, false),
        ([2, 8, 130, 131], 50.0, DType::F32, Some(0.1), 0.5, false),
        ([2, 8, 130, 131], 0.5, DType::F16, None, 0.5, true),
        ([3, 32, 64, 64], 0.0, DType::F16, Some(0.1), 0.5, true),
        ([3, 32, 64, 64], 0.0, DType::F16, Some(0.1), 20.0, false),
        ([3, 5, 7, 9], 0.0, DType::F16, Some(0.1), 0.5, true),
    ];
    let vec = |t: Tensor<B, 1>| t.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
    for (shape, offset, dtype, slope, beta_range, from_output) in cases {
        let [n, c, h, w] = shape;
        let numel = n * c * h * w;
        let x0 = Tensor::<B, 1>::random([numel], Distribution::Normal(offset as f64, 1.0), &device);
        let r0 = Tensor::<B, 1>::random([numel], Distribution::Normal(0.0, 1.0), &device);
        let gamma = Tensor::<B, 1>::random([c], Distribution::Uniform(0.5, 1.5), &device);
        let beta = Tensor::<B, 1>::random([c], Distribution::Uniform(-beta_range, beta_range), &device);
        let run = |choice: TchKernels| {
            set_tch_kernels(choice);
            let mut bn = BatchNormConfig::new(c).init::<A>(&device);
            bn.gamma = Param::from_tensor(Tensor::from_inner(gamma.clone()));
            bn.beta = Param::from_tensor(Tensor::from_inner(beta.clone()));
            bn.running_mean = RunningState::new(Tensor::from_inner(beta.clone()));
            bn.running_var = RunningState::new(Tensor::from_inner(gamma.clone()));
            let x = Tensor::<A, 1>::from_inner(x0.clone()).cast(dtype).reshape(shape).require_grad();
            let y = vsr_kernels::conv::batch_norm_act(&bn, x.clone(), slope).unwrap_or_else(|_| panic!("no fused BatchNorm"));
            assert_eq!(y.dtype(), dtype);
            let r = Tensor::<A, 1>::from_inner(r0.clone()).cast(dtype).reshape(shape);
            let g = (y.clone() * r).cast(DType::F32).sum().backward();
            [
                vec(y.inner().reshape([numel])),
                vec(x.grad(&g).unwrap().reshape([numel])),
                vec(bn.gamma.val().grad(&g).unwrap()),
                vec(bn.beta.val().grad(&g).unwrap()),
                vec(bn.running_mean.value_sync().inner()),
                vec(bn.running_var.value_sync().inner()),
            ]
        };
        // Backward launches reading [x, the output] (this thread's).
        let reads = || {
            let y = launches("bn_grad_stats_f16_v4_y") + launches("bn_grad_stats_f16_v1_y");
            [launches("bn_grad_stats_") - y, y]
        };
        let before = reads();
        let ours = run(TchKernels::Own);
        let after = reads();
        let want = if from_output { [0, 1] } else { [1, 0] };
        assert_eq!(
            [after[0] - before[0], after[1] - before[1]],
            want,
            "{shape:?} {dtype:?} beta within {beta_range}: backwards reading [x, the output]"
        );
        let theirs = run(TchKernels::Libtorch);
        set_tch_kernels(TchKernels::Own);
        // The definition in f64 on the host, from the values the GPU saw (rounded to f16 there).
        let host = |t: Tensor<B, 1>| t.cast(dtype).cast(DType::F32).into_data().to_vec::<f32>().unwrap();
        let half = dtype == DType::F16;
        // LeakyReLU's derivative jumps at 0: where |z| is within the arithmetic's error of 0 the
        // implementations may take either side, and the input gradient of that one value differs
        // by (1 - slope) dy gamma / std. Those values are left out of the input-gradient check;
        // the gamma and beta gradients sum over every value, and there the reference takes the
        // side ours took where z is within f32's rounding of 0 (`batch_norm_reference`).
        let kink = if half { 1e-2 } else { 1e-4 };
        let (want, near_kink) = batch_norm_reference(
            &host(x0.clone()),
            &host(r0.clone()),
            &vec(gamma.clone()),
            &vec(beta.clone()),
            [n, c, h * w],
            slope,
            kink,
            &ours[0],
        );
        for (i, (what, tol)) in [
            ("output", if half { 2e-3 } else { 2e-5 }),
            ("input gradient", if half { 4e-3 } else { 5e-5 }),
            ("gamma gradient", if half { 2e-3 } else { 1e-4 }),
            ("beta gradient", if half { 2e-3 } else { 1e-4 }),
            ("running mean", 1e-5),
            ("running variance", 1e-5),
        ]
        .into_iter()
        .enumerate()
        {
            let case = format!("{shape:?} {dtype:?} offset {offset} slope {slope:?} beta within {beta_range}: {what}");
            if i < 4 {
                let skip = |v: &[f32]| -> Vec<f32> {
                    if i != 1 || slope.is_none() {
                        return v.to_vec();
                    }
                    v.iter().zip(&near_kink).map(|(&x, &k)| if k { 0.0 } else { x }).collect()
                };
                let (ours, theirs, want) = (skip(&ours[i]), skip(&theirs[i]), skip(&want[i]));
                // (LibTorch's against the definition: reported, not asserted)
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                let d = theirs.iter().zip(&want).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                eprintln!("{case}: LibTorch's differs from the definition by {:.2e} relative", d / scale);
                assert_close(&format!("{case} (ours against the definition)"), &ours, &want, tol);
            } else {
                assert_close(&case, &ours[i], &theirs[i], tol);
            }
        }
    }
}

/// Training BatchNorm (epsilon 1e-5, batch statistics) + LeakyReLU(`slope`) of `x` (n, c, l) and
/// the gradients of `sum(y * r)`, in f64: `[y, dx, dgamma, dbeta]`, and which values have
/// `|z| <= kink` for the pre-activation z (LeakyReLU's derivative undecided within the
/// arithmetic's error: their input gradients are left out of the check). Where z lies within f32's
/// rounding of it from 0 (1e-6 (1 + |beta| + 4 |gamma|)), the side of the kink is the one the
/// implementation under test took, read from the sign of its output `taken` (0: either side, z's
/// own): those few values (a handful among the largest case's 8.8 M) move their channel's gamma
/// and beta gradients by up to (1 - slope) |r xhat| and (1 - slope) |r| if taken the other way.
#[allow(clippy::too_many_arguments)]
fn batch_norm_reference(
    x: &[f32],
    r: &[f32],
    gamma: &[f32],
    beta: &[f32],
    [n, c, l]: [usize; 3],
    slope: Option<f64>,
    kink: f64,
    taken: &[f32],
) -> ([Vec<f32>; 4], Vec<bool>) {
    let mut near_kink = vec![false; x.len()];
    let m = (n * l) as f64;
    let (mut y, mut dx) = (vec![0f32; x.len()], vec![0f32; x.len()]);
    let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
    let s = slope.unwrap_or(1.0);
    for ch in 0..c {
        let idx: Vec<usize> = (0..n).flat_map(|i| ((i * c + ch) * l)..((i * c + ch + 1) * l)).collect();
        let mean = idx.iter().map(|&k| x[k] as f64).sum::<f64>() / m;
        let var = idx.iter().map(|&k| (x[k] as f64 - mean).powi(2)).sum::<f64>() / m;
        let invstd = 1.0 / (var + 1e-5).sqrt();
        let (g, b) = (gamma[ch] as f64, beta[ch] as f64);
        let (mut sdz, mut sdzx) = (0.0, 0.0);
        let mut dzs = Vec::with_capacity(idx.len());
        for &k in &idx {
            let xhat = (x[k] as f64 - mean) * invstd;
            let z = g * xhat + b;
            near_kink[k] = z.abs() <= kink;
            let undecided = z.abs() <= 1e-6 * (1.0 + b.abs() + 4.0 * g.abs()) && taken[k] != 0.0;
            let positive = if undecided { taken[k] > 0.0 } else { z > 0.0 };
            y[k] = (if positive { z } else { z * s }) as f32;
            let dz = if positive { r[k] as f64 } else { r[k] as f64 * s };
            sdz += dz;
            sdzx += dz * xhat;
            dzs.push(dz);
        }
        dbeta[ch] = sdz as f32;
        dgamma[ch] = sdzx as f32;
        for (&k, dz) in idx.iter().zip(dzs) {
            let xhat = (x[k] as f64 - mean) * invstd;
            dx[k] = (g * invstd * (dz - sdz / m - xhat * sdzx / m)) as f32;
        }
    }
    ([y, dx, dgamma, dbeta], near_kink)
}

/// `ours` within `tol` times the largest magnitude of `theirs` (the reference), element by
/// element, and finite.
fn assert_close(case: &str, ours: &[f32], theirs: &[f32], tol: f32) {
    assert_eq!(ours.len(), theirs.len(), "{case}: lengths");
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let d = ours.iter().zip(theirs).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(ours.iter().all(|v| v.is_finite()), "{case}: not finite");
    assert!(d <= tol * scale, "{case}: differs from the reference by {d} (its largest magnitude {scale}, bound {tol} of it)");
    eprintln!("{case}: max diff {:.2e} relative", d / scale);
}

/// Puts `ConvPrecision::Tf32` (the default) back when dropped, so that a test that fails under
/// `ConvPrecision::F32` leaves the process-wide setting as the other tests expect.
struct Tf32Again;

impl Drop for Tf32Again {
    fn drop(&mut self) {
        vsr_kernels::conv::set_conv_precision(vsr_kernels::conv::ConvPrecision::Tf32);
    }
}

/// The values of `t` as f32, flattened.
fn values(t: burn::tensor::Tensor<B, 4>) -> Vec<f32> {
    let n = t.shape().num_elements();
    t.cast(burn::tensor::DType::F32).reshape([n]).into_data().to_vec::<f32>().unwrap()
}

/// Under autodiff, with our kernels or LibTorch's (`choice`, left set): the convolution of `x0`
/// by `w0` (stride 1, "same" padding, no bias) computed in `dtype` (`vsr_kernels::conv::conv2d`),
/// and the gradients of `sum(y * r0)`: `[output, weight gradient]`, then the input gradient where
/// `input_grad` (the input requires one there, and only there).
fn conv_and_grads(
    choice: vsr_kernels::nvrtc::TchKernels,
    [x0, w0, r0]: [&burn::tensor::Tensor<B, 4>; 3],
    dtype: burn::tensor::DType,
    input_grad: bool,
) -> Vec<Vec<f32>> {
    use burn::tensor::{DType, Tensor};
    type A = burn::backend::Autodiff<B>;
    vsr_kernels::nvrtc::set_tch_kernels(choice);
    let x = Tensor::<A, 4>::from_inner(x0.clone().cast(dtype));
    let x = if input_grad { x.require_grad() } else { x };
    let wt = Tensor::<A, 4>::from_inner(w0.clone().cast(dtype)).require_grad();
    let k = w0.dims()[2];
    let p = (k - 1) / 2;
    let options = burn::tensor::ops::ConvOptions::new([1, 1], [p, p], [1, 1], 1);
    let y = vsr_kernels::conv::conv2d(x.clone(), wt.clone(), None, options);
    assert_eq!(y.dims(), r0.dims());
    assert_eq!(y.dtype(), dtype);
    let r = Tensor::<A, 4>::from_inner(r0.clone().cast(dtype));
    let g = (y.clone() * r).cast(DType::F64).sum().backward();
    assert_eq!(x.grad(&g).is_some(), input_grad, "an input gradient where, and only where, required");
    let mut out = vec![values(y.inner()), values(wt.grad(&g).unwrap())];
    if input_grad {
        out.push(values(x.grad(&g).unwrap()));
    }
    out
}

/// `conv2d(x, w) + bias` outside autodiff (inference) with `choice`'s kernels, computed in
/// `dtype`, stride 1, "same" padding for w's (square) kernel.
fn inference_with_bias(
    choice: vsr_kernels::nvrtc::TchKernels,
    [x, w]: [&burn::tensor::Tensor<B, 4>; 2],
    bias: &burn::tensor::Tensor<B, 1>,
    dtype: burn::tensor::DType,
) -> Vec<f32> {
    vsr_kernels::nvrtc::set_tch_kernels(choice);
    let p = (w.dims()[3] - 1) / 2;
    let options = burn::tensor::ops::ConvOptions::new([1, 1], [p, p], [1, 1], 1);
    values(vsr_kernels::conv::conv2d(x.clone().cast(dtype), w.clone().cast(dtype), Some(bias.clone().cast(dtype)), options))
}

/// `ours` against the f64 definition `exact` (within `tol_exact` of its largest magnitude) and
/// against LibTorch's result in the same precision `theirs` (`tol_theirs`), printing how far
/// LibTorch's is from the definition.
fn assert_near_definition(case: &str, ours: &[f32], theirs: &[f32], exact: &[f32], [tol_exact, tol_theirs]: [f32; 2]) {
    let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let d = theirs.iter().zip(exact).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    eprintln!("{case}: LibTorch's differs from the f64 definition by {:.2e} relative", d / scale);
    assert_close(&format!("{case} (ours against the f64 definition)"), ours, exact, tol_exact);
    assert_close(&format!("{case} (ours against LibTorch's)"), ours, theirs, tol_theirs);
}

/// The one-output-channel convolution kernels of our own (VSRNet's conv3; `VSR_TCH_KERNELS=own`,
/// the default on CUDA) against LibTorch's convolution (cuDNN, TF32 allowed: hence the f32
/// bound) under its autograd: output, input and weight gradients; f32 and f16; kernels 3, 5 and
/// 9 (and 7); images that are not whole tiles (32 x 8) and a weight-gradient grid with a partial last
/// block of tile rows. A 2-channel output (not ours) is checked to still run. Process-wide choice
/// as in `own_batch_norm_matches_cudnn`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_one_channel_conv_matches_cudnn() {
    use burn::tensor::{DType, Distribution, Tensor};
    use vsr_kernels::nvrtc::{TchKernels, set_tch_kernels};
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    let cases: [([usize; 4], usize, usize, DType); 7] = [
        ([3, 32, 128, 160], 5, 1, DType::F32),
        ([3, 32, 128, 160], 5, 1, DType::F16),
        ([2, 7, 33, 45], 3, 1, DType::F32),
        ([1, 4, 20, 70], 9, 1, DType::F16),
        ([2, 3, 70, 33], 7, 1, DType::F32),
        ([2, 3, 150, 37], 5, 1, DType::F32),
        ([2, 6, 24, 40], 3, 2, DType::F32),
    ];
    for (shape, k, cout, dtype) in cases {
        let [n, c, h, w] = shape;
        let x0 = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let w0 = Tensor::<B, 4>::random([cout, c, k, k], Distribution::Normal(0.0, 0.2), &device);
        let r0 = Tensor::<B, 4>::random([n, cout, h, w], Distribution::Normal(0.0, 1.0), &device);
        let ours = conv_and_grads(TchKernels::Own, [&x0, &w0, &r0], dtype, true);
        let theirs = conv_and_grads(TchKernels::Libtorch, [&x0, &w0, &r0], dtype, true);
        set_tch_kernels(TchKernels::Own);
        let tol = if dtype == DType::F16 { 5e-3 } else { 2e-3 };
        for (i, what) in ["output", "weight gradient", "input gradient"].into_iter().enumerate() {
            assert_close(&format!("{shape:?} k {k} cout {cout} {dtype:?}: {what}"), &ours[i], &theirs[i], tol);
        }
    }
}

/// Inference-mode BatchNorm + LeakyReLU in one kernel of our own (`batch_norm_act_eval`, LibTorch's
/// CUDA) against Burn's `BatchNorm::forward` outside autodiff (the running statistics) followed by
/// LeakyReLU, computed in f32: f32 and f16 inputs, plane lengths a multiple of 4 and not, with and
/// without the activation.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_batch_norm_inference_matches_burn() {
    use burn::module::{Param, RunningState};
    use burn::nn::BatchNormConfig;
    use burn::tensor::{DType, Distribution, Tensor};
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    for (shape, dtype, slope) in [
        ([3, 16, 40, 48], DType::F32, Some(0.1)),
        ([3, 16, 40, 48], DType::F16, Some(0.1)),
        ([2, 5, 7, 9], DType::F32, None),
        ([2, 5, 7, 9], DType::F16, Some(0.1)),
    ] {
        let c = shape[1];
        let mut bn = BatchNormConfig::new(c).init::<B>(&device);
        let r = |lo: f64, hi: f64| Tensor::<B, 1>::random([c], Distribution::Uniform(lo, hi), &device);
        bn.gamma = Param::from_tensor(r(0.5, 1.5));
        bn.beta = Param::from_tensor(r(-0.5, 0.5));
        bn.running_mean = RunningState::new(r(-1.0, 1.0));
        bn.running_var = RunningState::new(r(0.5, 2.0));
        let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.3, 1.2), &device).cast(dtype);
        let ours = vsr_kernels::conv::batch_norm_act_eval(&bn, x.clone(), slope).unwrap_or_else(|_| panic!("no fused BatchNorm on CUDA"));
        assert_eq!(ours.dtype(), dtype);
        let reference = bn.forward(x.cast(DType::F32));
        let reference = match slope {
            Some(s) => burn::tensor::activation::leaky_relu(reference, s),
            None => reference,
        };
        let n = ours.shape().num_elements();
        let v = |t: Tensor<B, 4>| t.cast(DType::F32).reshape([n]).into_data().to_vec::<f32>().unwrap();
        let tol = if dtype == DType::F16 { 2e-3 } else { 2e-6 };
        assert_close(&format!("{shape:?} {dtype:?} slope {slope:?}: inference output"), &v(ours), &v(reference), tol);
    }
}

/// Our kernels on contiguous views that do not start at a 16-byte boundary (rows 1..9 of a
/// 6-wide image: 24 bytes in): the four-value loads must not be used there. BatchNorm
/// (training, forward and backward) and bias + LeakyReLU, against LibTorch's kernels on the same
/// views.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_kernels_take_unaligned_views() {
    use burn::backend::Autodiff;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{DType, Distribution, Tensor};
    use vsr_kernels::nvrtc::{TchKernels, set_tch_kernels};
    type A = Autodiff<B>;
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    let x0 = Tensor::<B, 4>::random([1, 1, 10, 6], Distribution::Normal(0.0, 1.0), &device);
    let b0 = Tensor::<B, 1>::random([1], Distribution::Normal(0.0, 1.0), &device);
    let vec = |t: Tensor<B, 4>| t.reshape([-1]).into_data().to_vec::<f32>().unwrap();
    let run = |choice: TchKernels| {
        set_tch_kernels(choice);
        let bn = BatchNormConfig::new(1).init::<A>(&device);
        let x = Tensor::<A, 4>::from_inner(x0.clone()).require_grad();
        // rows 1..9: 48 values (a multiple of 4) from 6 floats (24 bytes) in
        let view = x.clone().narrow(2, 1, 8);
        let y = vsr_kernels::conv::batch_norm_act(&bn, view, Some(0.1)).unwrap_or_else(|_| panic!("no fused BatchNorm"));
        let g = (y.clone() * y.clone()).sum().backward();
        let z = vsr_kernels::conv::bias_leaky_relu(x0.clone().narrow(2, 1, 6).cast(DType::F32), b0.clone(), 0.1);
        [vec(y.inner()), vec(x.grad(&g).unwrap()), vec(z)]
    };
    let ours = run(TchKernels::Own);
    let theirs = run(TchKernels::Libtorch);
    set_tch_kernels(TchKernels::Own);
    for (i, what) in ["BatchNorm output", "BatchNorm input gradient", "bias + LeakyReLU"].into_iter().enumerate() {
        assert_close(&format!("unaligned view: {what}"), &ours[i], &theirs[i], 1e-5);
    }
}

/// The one-input-channel convolution kernels of our own (VSRNet's conv1: an input that needs no
/// gradient; `VSR_TCH_KERNELS=own`, the default on CUDA) under autodiff, in f16 and in f32 (TF32
/// tensor cores, where `ConvPrecision::Tf32` allows them): output and weight gradient held against
/// the definition computed in f64 by LibTorch from the same values and against LibTorch's
/// convolution in the same precision (cuDNN, TF32 allowed in f32). Bounds, of the largest
/// magnitude: f16 2e-3 against the definition (f16 rounding of the results), 5e-3 against cuDNN;
/// f32 3e-3 for both: TF32 keeps 11 significant bits (rounded to nearest, rna), so each product
/// carries a relative error of at most 2^-10 (about 1e-3), and the sums of 9 to 81 products (the
/// output) or millions (the weight gradient) add these with random signs, well inside 3e-3 of the
/// largest magnitude (measured on an H100: at most 4.4e-4, cuDNN's TF32 alike). Kernels 9, 7, 5 and 3, 16 to 128 output channels (48: a partial group of
/// warps; 128: two groups of the f32 forward's weights), images that are not whole tiles (64 x 8)
/// nor multiples of 8 (or 4) wide. With an input that requires a gradient the kernels do not
/// apply: LibTorch's path must still give the same output and gradients, the input's too.
/// Outside autodiff (inference) the forward plus a bias against the f64 definition. Under
/// `ConvPrecision::F32` (no TF32) f32 stays on LibTorch, in training and inference. Launch counts
/// (`nvrtc::launches`) show that our kernels ran where meant and only there. Process-wide choices
/// as in `own_batch_norm_matches_cudnn`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_one_input_channel_conv_matches_cudnn() {
    use burn::tensor::{DType, Distribution, Tensor};
    use vsr_kernels::conv::{ConvPrecision, set_conv_precision};
    use vsr_kernels::nvrtc::{TchKernels, launches, set_tch_kernels};
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    let _restore = Tf32Again;
    set_conv_precision(ConvPrecision::Tf32);
    // (input shape, kernel size, output channels)
    let cases: [([usize; 4], usize, usize); 6] = [
        ([9, 1, 512, 960], 9, 64),
        ([2, 1, 37, 70], 9, 64),
        ([3, 1, 64, 64], 5, 16),
        ([1, 1, 20, 33], 3, 32),
        ([2, 1, 37, 70], 7, 48),
        ([1, 1, 20, 33], 9, 128),
    ];
    for (shape, k, cout) in cases {
        for dtype in [DType::F16, DType::F32] {
            let [n, _, h, w] = shape;
            let case = format!("{shape:?} k {k} cout {cout} {dtype:?}");
            // (f16 values for the f16 case, so that the f64 definition sees what the kernels see)
            let random = |dims: [usize; 4], std: f64| Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, std), &device).cast(dtype);
            let (x0, w0, r0) = (random(shape, 1.0), random([cout, 1, k, k], 0.1), random([n, cout, h, w], 1.0));
            let run = |choice, dtype, input_grad| conv_and_grads(choice, [&x0, &w0, &r0], dtype, input_grad);
            let name = if dtype == DType::F16 { "f16" } else { "f32" };
            let (forward, grad_weight) = (format!("oicv_forward_{name}"), format!("oicv_grad_weight_{name}"));
            let kernels = || [launches(&forward), launches(&grad_weight)];
            let [tol_exact, tol_theirs] = if dtype == DType::F16 { [2e-3, 5e-3] } else { [3e-3, 3e-3] };
            let before = kernels();
            let ours = run(TchKernels::Own, dtype, false);
            let after = kernels();
            assert_eq!([after[0] - before[0], after[1] - before[1]], [1, 1], "{case}: our forward and weight gradient ran once each");
            let theirs = run(TchKernels::Libtorch, dtype, false);
            let exact = run(TchKernels::Libtorch, DType::F64, false);
            for (i, what) in ["output", "weight gradient"].into_iter().enumerate() {
                assert_near_definition(&format!("{case}: {what}"), &ours[i], &theirs[i], &exact[i], [tol_exact, tol_theirs]);
            }
            // Outside autodiff (inference), with a bias: the forward kernel, then the bias.
            let bias = Tensor::<B, 1>::random([cout], Distribution::Normal(0.0, 1.0), &device).cast(dtype);
            let infer = |choice, dtype| inference_with_bias(choice, [&x0, &w0], &bias, dtype);
            let before = launches(&forward);
            let ours = infer(TchKernels::Own, dtype);
            assert_eq!(launches(&forward) - before, 1, "{case}: our forward ran outside autodiff");
            let exact_inference = infer(TchKernels::Libtorch, DType::F64);
            assert_close(&format!("{case}: inference with a bias"), &ours, &exact_inference, tol_exact);
            // An input that requires a gradient: LibTorch's path under either choice.
            let before = kernels();
            let ours = run(TchKernels::Own, dtype, true);
            assert_eq!(kernels(), before, "{case}: an input requiring a gradient ran our kernels");
            let theirs_input = run(TchKernels::Libtorch, dtype, true);
            for (i, what) in ["output", "weight gradient", "input gradient"].into_iter().enumerate() {
                assert_close(&format!("{case}, input requiring a gradient: {what}"), &ours[i], &theirs_input[i], tol_theirs);
            }
            if dtype == DType::F32 {
                // No TF32 allowed: LibTorch's f32 convolution, in training and inference alike.
                set_conv_precision(ConvPrecision::F32);
                let before = kernels();
                let ours = run(TchKernels::Own, dtype, false);
                let inference = infer(TchKernels::Own, dtype);
                set_conv_precision(ConvPrecision::Tf32);
                assert_eq!(kernels(), before, "{case}: ConvPrecision::F32 ran our kernels");
                // (f32 arithmetic, the backward's included: LibTorch's convolution backward takes
                // TF32 from its process-wide setting, which vsr sets to match; TF32 there measured
                // up to 2.7e-4 at 3x64x64 k 5 and 2x37x70 k 7)
                assert_close(&format!("{case}, ConvPrecision::F32: output"), &ours[0], &exact[0], 1e-4);
                assert_close(&format!("{case}, ConvPrecision::F32: weight gradient"), &ours[1], &exact[1], 1e-4);
                assert_close(&format!("{case}, ConvPrecision::F32: inference with a bias"), &inference, &exact_inference, 1e-4);
            }
            set_tch_kernels(TchKernels::Own);
        }
    }
}

/// The tensor-core kernels of our own for many-channel convolutions to 32 output channels
/// (VSRNet's conv2: 192 -> 32, 5x5; `tensor_core_conv`): the weight gradient, and for f16 the
/// forward and input gradient too (f32's on LibTorch; launch counts show which ran): output,
/// weight gradient and input gradient against the f64 definition and LibTorch's
/// in the same dtype (cuDNN; f32 with TF32 allowed, the default `ConvPrecision::Tf32`); f16 and
/// f32; images that are not whole tiles (32 x 4), W not a multiple of 8 (f16's 16-byte loads) or
/// of 4 (f32's), W a multiple of 8 (f16) or 4 (f32) but not of 32, an image smaller than the
/// kernel, an input gradient whose last group of 32 channels is half empty (48 channels); kernels 5 and 3; the weight gradient bit-for-bit the same on a second run. 16 output
/// channels (not ours) are checked to keep LibTorch's path, and so is f32 under
/// `ConvPrecision::F32` (in f32 arithmetic, its backward's included). Process-wide choices as in
/// `own_batch_norm_matches_cudnn` (the precision is restored to `Tf32` on the way out).
///
/// Bounds: f16 2e-3 of the largest magnitude against the definition (its f16 rounding of
/// results), 5e-3 against LibTorch's. TF32 rounds each f32 operand to a 10-bit mantissa (relative
/// error up to 2^-11, random in sign, about 3e-4 rms per product) and accumulates in f32 (whose
/// own error is ~1e-5 here): over the 4800 (forward, input gradient) or up to 1.5 million (weight
/// gradient) products of zero-mean data the error and the sum both grow like the square root of
/// the count, so the error stays a few 1e-4 of a typical value and, at the worst of ~1e8 values,
/// well below 2e-3 of the largest magnitude; 5e-3 against LibTorch leaves room for its own TF32
/// error. Measured on an H100 at conv2's size: weight gradient 4.2e-4 from the definition
/// (LibTorch's 3.8e-4), 1.9e-4 from LibTorch's.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_tensor_core_conv_matches_cudnn() {
    use burn::tensor::{DType, Distribution, Tensor};
    use vsr_kernels::conv::{ConvPrecision, set_conv_precision};
    use vsr_kernels::nvrtc::{TchKernels, launches, set_tch_kernels};
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    // (the default precision back, also when a check fails)
    let _restore = Tf32Again;
    // (input shape, kernel size, output channels, dtype, whether our kernel applies)
    let cases: [([usize; 4], usize, usize, DType, bool); 15] = [
        ([3, 192, 512, 960], 5, 32, DType::F16, true),
        ([2, 32, 37, 70], 5, 32, DType::F16, true),
        ([1, 16, 20, 33], 3, 32, DType::F16, true),
        // 48 input channels: the input gradient's second group of 32 channels half empty; W = 4
        // mod 8 (no 16-byte loads) and H = 3 mod 16
        ([1, 48, 19, 44], 5, 32, DType::F16, true),
        ([3, 32, 35, 67], 3, 32, DType::F16, true),
        // 16-byte loads with W a multiple of 8 but not of the tile's 32; an image smaller than
        // the kernel
        ([1, 16, 7, 40], 3, 32, DType::F16, true),
        ([1, 16, 2, 5], 5, 32, DType::F16, true),
        ([1, 16, 20, 33], 3, 16, DType::F16, false),
        ([3, 192, 512, 960], 5, 32, DType::F32, true),
        // W = 2 mod 4 (no 16-byte loads), odd W, W a multiple of 4 but not of 8 (a lane's second
        // load outside the image) with H not a multiple of 4
        ([2, 32, 37, 70], 5, 32, DType::F32, true),
        ([1, 16, 20, 33], 3, 32, DType::F32, true),
        ([1, 16, 7, 36], 3, 32, DType::F32, true),
        ([2, 32, 9, 44], 5, 32, DType::F32, true),
        ([1, 16, 2, 5], 5, 32, DType::F32, true),
        ([1, 16, 20, 33], 3, 16, DType::F32, false),
    ];
    for (shape, k, cout, dtype, applies) in cases {
        let [n, cin, h, w] = shape;
        let x0 = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device).cast(dtype);
        let w0 = Tensor::<B, 4>::random([cout, cin, k, k], Distribution::Normal(0.0, 0.02), &device).cast(dtype);
        let r0 = Tensor::<B, 4>::random([n, cout, h, w], Distribution::Normal(0.0, 1.0), &device).cast(dtype);
        let run = |choice, dtype, input_grad| conv_and_grads(choice, [&x0, &w0, &r0], dtype, input_grad);
        let case = format!("{shape:?} k {k} cout {cout} {dtype:?}");
        let ours_name = if dtype == DType::F16 { "tcc_grad_weight_f16" } else { "tcc_grad_weight_f32" };
        let (before, before_conv) = (launches(ours_name), launches("tcc_conv_f16"));
        let ours = run(TchKernels::Own, dtype, true);
        let again = run(TchKernels::Own, dtype, false);
        let ran = launches(ours_name) - before;
        assert_eq!(ran, if applies { 2 } else { 0 }, "{case}: our weight gradient ran where, and only where, it applies");
        // f16: our forward in both runs, our input gradient in the first
        let convs = launches("tcc_conv_f16") - before_conv;
        let expect = if applies && dtype == DType::F16 { 3 } else { 0 };
        assert_eq!(convs, expect, "{case}: our forward and input gradient ran where, and only where, they apply");
        assert!(ours[1] == again[1], "{case}: the weight gradient differs between two runs");
        let theirs = run(TchKernels::Libtorch, dtype, true);
        let exact = run(TchKernels::Libtorch, DType::F64, true);
        set_tch_kernels(TchKernels::Own);
        for (i, what) in ["output", "weight gradient", "input gradient"].into_iter().enumerate() {
            assert_near_definition(&format!("{case}: {what}"), &ours[i], &theirs[i], &exact[i], [2e-3, 5e-3]);
        }
        // ConvPrecision::F32: LibTorch's path in f32 arithmetic (1e-4), its backward's included
        // (`convolution_backward` takes TF32 from LibTorch's process-wide setting, which vsr sets
        // to match: with TF32 the input gradient measured 7.2e-4 from the definition at
        // [2, 32, 37, 70]).
        if dtype == DType::F32 && applies && h * w < 10_000 {
            set_conv_precision(ConvPrecision::F32);
            let before = launches("tcc_grad_weight_f32");
            let plain = run(TchKernels::Own, dtype, true);
            assert_eq!(launches("tcc_grad_weight_f32"), before, "{case}: ours ran under ConvPrecision::F32");
            set_conv_precision(ConvPrecision::Tf32);
            for (i, what) in ["output", "weight gradient", "input gradient"].into_iter().enumerate() {
                assert_close(&format!("{case}, ConvPrecision::F32: {what}"), &plain[i], &exact[i], 1e-4);
            }
        }
    }
}

/// Outside autodiff (inference: `vsr upscale`), our f16 tensor-core convolution with a bias
/// against the f64 definition (2e-3 of the largest magnitude: its f16 rounding, as in training);
/// 64 output channels and f32 keep LibTorch's path (launch counts).
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_tensor_core_conv_inference_matches_definition() {
    use burn::tensor::{DType, Distribution, Tensor};
    use vsr_kernels::nvrtc::{TchKernels, launches, set_tch_kernels};
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    // (input shape, kernel size, output channels, dtype, whether our kernel applies)
    let cases: [([usize; 4], usize, usize, DType, bool); 5] = [
        ([3, 192, 512, 960], 5, 32, DType::F16, true),
        ([1, 48, 19, 44], 5, 32, DType::F16, true),
        ([3, 32, 35, 67], 3, 32, DType::F16, true),
        ([2, 32, 37, 70], 5, 64, DType::F16, false),
        ([2, 32, 37, 70], 5, 32, DType::F32, false),
    ];
    for (shape, k, cout, dtype, applies) in cases {
        let case = format!("{shape:?} k {k} cout {cout} {dtype:?}");
        let random = |dims: [usize; 4], std: f64| Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, std), &device).cast(dtype);
        let (x0, w0) = (random(shape, 1.0), random([cout, shape[1], k, k], 0.02));
        let bias = Tensor::<B, 1>::random([cout], Distribution::Normal(0.0, 1.0), &device).cast(dtype);
        let infer = |choice, dtype| inference_with_bias(choice, [&x0, &w0], &bias, dtype);
        let before = launches("tcc_conv_f16");
        let ours = infer(TchKernels::Own, dtype);
        assert_eq!(launches("tcc_conv_f16") - before, applies as usize, "{case}: our kernel ran where, and only where, it applies");
        let exact = infer(TchKernels::Libtorch, DType::F64);
        set_tch_kernels(TchKernels::Own);
        assert_close(&format!("{case}: inference with a bias"), &ours, &exact, 2e-3);
    }
}

/// Timing (not a check) of VSRNet's conv2 (x (3, 192, 512, 960) f16 -> 32 channels, 5x5) through
/// `conv2d` under autodiff, ours (`VSR_TCH_KERNELS=own`) against LibTorch's (cuDNN): the forward
/// alone (no gradient asked of the input), forward + weight gradient, and forward + both
/// gradients; the input gradient is the difference of the last two. Host clock between stream
/// synchronisations, 20 iterations after 3 warm-up ones. Prints; asserts nothing.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_tensor_core_conv_timing() {
    use burn::tensor::{DType, Distribution, Tensor};
    use vsr_kernels::nvrtc::{TchKernels, set_tch_kernels};
    type A = burn::backend::Autodiff<B>;
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    let x0 = Tensor::<B, 4>::random([3, 192, 512, 960], Distribution::Normal(0.0, 1.0), &device).cast(DType::F16);
    let w0 = Tensor::<B, 4>::random([32, 192, 5, 5], Distribution::Normal(0.0, 0.02), &device).cast(DType::F16);
    let r0 = Tensor::<B, 4>::random([3, 32, 512, 960], Distribution::Normal(0.0, 1.0), &device).cast(DType::F16);
    let options = burn::tensor::ops::ConvOptions::new([1, 1], [2, 2], [1, 1], 1);
    // 0: forward, 1: + weight gradient, 2: + input gradient
    let step = |what: usize| {
        let x = Tensor::<A, 4>::from_inner(x0.clone());
        let x = if what == 2 { x.require_grad() } else { x };
        let wt = Tensor::<A, 4>::from_inner(w0.clone()).require_grad();
        let y = vsr_kernels::conv::conv2d(x, wt, None, options.clone());
        if what > 0 {
            let _ = (y * Tensor::<A, 4>::from_inner(r0.clone())).sum().backward();
        }
    };
    for choice in [TchKernels::Libtorch, TchKernels::Own] {
        set_tch_kernels(choice);
        let ms: Vec<f64> = (0..3)
            .map(|what| {
                for _ in 0..3 {
                    step(what);
                }
                tch::Cuda::synchronize(0);
                let t = std::time::Instant::now();
                for _ in 0..20 {
                    step(what);
                }
                tch::Cuda::synchronize(0);
                t.elapsed().as_secs_f64() * 1e3 / 20.0
            })
            .collect();
        eprintln!(
            "conv2 f16 {choice:?}: forward {:.3} ms, forward + weight gradient {:.3} ms, + input gradient {:.3} ms (input gradient {:.3} ms)",
            ms[0],
            ms[1],
            ms[2],
            ms[2] - ms[1]
        );
    }
    set_tch_kernels(TchKernels::Own);
}

/// FlowNetSD's first layer (6 -> 64 channels, 3x3, padding 1, bias, LeakyReLU 0.1) in one kernel
/// of our own (`few_input_channel_conv`: f16, a channels-last input, outside autodiff) through
/// `conv2d_module_leaky`, against the f64 definition (LibTorch's f64 convolution, bias and
/// LeakyReLU) and LibTorch's f16 path (`VSR_TCH_KERNELS=libtorch`: cuDNN, its bias add and
/// PReLU): FlowNetSD's size in vsr's training step, images that are
/// not whole tiles (64 x 8) nor 8 pixels wide, 3 and 8 input channels; the output channels-last
/// like its input. An NCHW input, 9 input channels and 32 output channels keep LibTorch's path.
/// Launch counts (`nvrtc::launches`) show which ran. The layout (`to_conv_layout`) is
/// channels-last on CUDA unless a test sets `VSR_TCH_LAYOUT=nchw`, which none does.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_few_input_channel_conv_matches_cudnn() {
    use burn::module::Param;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{DType, Distribution, Tensor, TensorPrimitive};
    use vsr_kernels::conv::{conv2d_module_leaky, tch_is_channels_last, to_conv_layout};
    use vsr_kernels::nvrtc::{TchKernels, launches, set_tch_kernels};
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    // (input shape, output channels, channels-last input, whether our kernel applies)
    let cases: [([usize; 4], usize, bool, bool); 7] = [
        ([6, 6, 512, 960], 64, true, true),
        ([2, 6, 37, 70], 64, true, true),
        ([1, 3, 5, 9], 64, true, true),
        ([1, 8, 20, 130], 64, true, true),
        ([1, 6, 20, 33], 64, false, false),
        ([1, 9, 20, 33], 64, true, false),
        ([1, 6, 20, 33], 32, true, false),
    ];
    for (shape, cout, channels_last, applies) in cases {
        let cin = shape[1];
        let conv = Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init::<B>(&device);
        let (w0, b0) = (conv.weight.val(), conv.bias.as_ref().unwrap().val());
        let x0 = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        // (whether the output is channels-last, its values)
        let run = |choice: TchKernels, dtype: DType| {
            set_tch_kernels(choice);
            let mut c = conv.clone();
            c.weight = Param::from_tensor(w0.clone().cast(dtype));
            c.bias = Some(Param::from_tensor(b0.clone().cast(dtype)));
            let x = x0.clone().cast(dtype);
            let x = if channels_last { to_conv_layout(x) } else { x };
            let y = conv2d_module_leaky(&c, x, 0.1);
            let TensorPrimitive::Float(p) = y.clone().into_primitive() else { unreachable!() };
            (tch_is_channels_last(&p.tensor), values(y))
        };
        let case = format!("{shape:?} -> {cout}, channels-last {channels_last}");
        let before = launches("ficv_");
        let (layout, ours) = run(TchKernels::Own, DType::F16);
        assert_eq!(launches("ficv_") - before, applies as usize, "{case}: our kernel ran where, and only where, it applies");
        assert_eq!(layout, channels_last, "{case}: the output's layout follows the input's");
        let (_, theirs) = run(TchKernels::Libtorch, DType::F16);
        let (_, exact) = run(TchKernels::Libtorch, DType::F64);
        set_tch_kernels(TchKernels::Own);
        assert_near_definition(&case, &ours, &theirs, &exact, [2e-3, 5e-3]);
    }
}

/// Adam in one kernel of our own (`vsr_kernels::adam`, LibTorch's CUDA f32) against Burn's `Adam`
/// on the same device: parameter and both moments after each of three steps, with and without
/// weight decay, a size that is not a multiple of the block (1000 values) and a 4-d parameter;
/// equal to the bit (the kernel rounds each operation as Burn's kernels do), and Burn's moments
/// fed back in (the state is interchangeable: checkpoints do not depend on which ran). CPU
/// tensors and f16 parameters get `None` (Burn's `Adam` then).
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_adam_matches_burn() {
    use burn::backend::libtorch::TchTensor;
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::{AdamConfig, AdamState, AdaptiveMomentumState, SimpleOptimizer};
    use burn::tensor::{DType, Distribution, Tensor, TensorPrimitive};
    use vsr_kernels::adam::{AdamBackend, AdamStep};
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    let prim = |t: &Tensor<B, 4>| -> TchTensor { t.clone().into_primitive().tensor() };
    let back = |t: TchTensor| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t));
    for (shape, wd) in [([1, 1, 1, 1000], 4e-4f32), ([1, 1, 1, 1000], 0.0), ([32, 6, 5, 5], 4e-4)] {
        let mut config = AdamConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8);
        if wd > 0.0 {
            config = config.with_weight_decay(Some(WeightDecayConfig::new(wd)));
        }
        let burn = config.build();
        let mut p_burn = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 0.1), &device);
        let mut p_ours = p_burn.clone();
        let mut state: Option<AdamState<B, 4>> = None;
        for time in 1..=3usize {
            let g = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1e-2), &device);
            let lr = 1e-3 * time as f64;
            let step = AdamStep { lr: lr as f32, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: wd, time };
            // ours from Burn's moments of the previous step
            let moments = state.as_ref().map(|s| [prim(&s.momentum.moment_1), prim(&s.momentum.moment_2)]);
            let [p, m, v] = B::adam_step(&prim(&p_ours), &prim(&g), moments.as_ref().map(|[m, v]| [m, v]), step)
                .expect("our Adam applies to f32 CUDA tensors");
            let (p_next, s) = burn.step(lr, p_burn.clone(), g.clone(), state);
            let s = s.expect("Adam keeps a state");
            let case = format!("{shape:?} weight decay {wd} step {time}");
            for (what, ours, theirs) in [("parameter", back(p), &p_next), ("moment 1", back(m), &s.momentum.moment_1), ("moment 2", back(v), &s.momentum.moment_2)] {
                let (a, b) = (values(ours), values(theirs.clone()));
                let differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!(differ, 0, "{case}: {what}: {differ} of {} values differ from Burn's", a.len());
            }
            assert_eq!(s.momentum.time, time, "{case}: Burn's step count");
            p_burn = p_next;
            p_ours = p_burn.clone();
            state = Some(AdamState::new(AdaptiveMomentumState::new(time, s.momentum.moment_1, s.momentum.moment_2)));
        }
    }
    let step = AdamStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.0, time: 1 };
    let cpu = Tensor::<B, 4>::ones([1, 1, 2, 2], &LibTorchDevice::Cpu);
    assert!(B::adam_step(&prim(&cpu), &prim(&cpu), None, step).is_none(), "CPU tensors: Burn's Adam");
    let half = Tensor::<B, 4>::ones([1, 1, 2, 2], &device).cast(DType::F16);
    assert!(B::adam_step(&prim(&half), &prim(&half), None, step).is_none(), "f16 parameters: Burn's Adam");
}

/// `ReadbackBackend::read_later` on LibTorch's CUDA tensors: copied in the background on its
/// current stream, the values as they were when requested (inf and NaN kept), with a long chain of
/// work queued after the request; CPU tensors are read at once.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_readback_is_async() {
    use burn::tensor::Tensor;
    use vsr_kernels::readback::ReadbackBackend;
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let device = LibTorchDevice::Cuda(0);
    let values = [1.5f32, -2.0, f32::INFINITY, f32::NAN];
    let t = Tensor::<B, 1>::from_floats(values.as_slice(), &device) * 2.0;
    let pending = B::read_later(t.into_primitive().tensor());
    assert!(pending.is_async(), "CUDA tensors are copied in the background");
    let mut big = Tensor::<B, 2>::ones([2048, 2048], &device);
    for _ in 0..50 {
        big = big.clone().matmul(big) * 1e-3;
    }
    let got = pending.wait().expect("the values");
    for (g, v) in got.iter().zip(values) {
        let w = v * 2.0;
        assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{got:?}");
    }
    drop(big);
    let cpu = B::read_later(Tensor::<B, 1>::from_floats([3.0f32], &LibTorchDevice::Cpu).into_primitive().tensor());
    assert!(!cpu.is_async(), "CPU tensors are read at once");
    assert_eq!(cpu.wait().expect("the value"), vec![3.0]);
}

/// `UploadBackend::upload_int` on LibTorch's CUDA: the exact bytes, shaped, behind long work queued
/// on the current stream, and back to back uploads each keep their own (PyTorch's page-locked
/// buffers are not reused before their copies); on the CPU through `from_data`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn own_upload_is_exact() {
    use burn::tensor::{Int, Tensor};
    use vsr_kernels::upload::UploadBackend;
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    let bytes = |n: usize, seed: u32| -> Vec<u8> { (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8).collect() };
    let read = |t: Tensor<B, 3, Int>| -> Vec<u8> { t.into_data().iter::<i64>().map(|v| v as u8).collect() };
    for device in [LibTorchDevice::Cuda(0), LibTorchDevice::Cpu] {
        let mut big = Tensor::<B, 2>::ones([2048, 2048], &device);
        for _ in 0..20 {
            big = big.clone().matmul(big) * 1e-3;
        }
        let n = 3 * 512 * 960;
        let (a, b) = (bytes(n, 1), bytes(n, 2));
        let ta = Tensor::<B, 3, Int>::from_primitive(B::upload_int(a.clone(), [3, 512, 960].into(), burn::tensor::DType::U8, &device));
        let tb = Tensor::<B, 3, Int>::from_primitive(B::upload_int(b.clone(), [3, 512, 960].into(), burn::tensor::DType::U8, &device));
        assert_eq!(ta.dims(), [3, 512, 960]);
        assert!(read(ta) == a, "{device:?}: the first upload differs");
        assert!(read(tb) == b, "{device:?}: the second upload differs");
        drop(big);
    }
}

