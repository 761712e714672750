//! The CubeCL kernels on CUDA, bare `CubeBackend` and `burn::backend::Cuda` (fusion custom op).
//! Ignored by default (CI has no GPU); on a GPU machine run them with `--ignored`, where a missing
//! GPU fails them. The backward kernels run by default (`VSR_WARP_BACKWARD_KERNEL=0` would test
//! the tensor-op fallback instead); `passes_against_model` runs the
//! deterministic backward's passes directly and compares each with its host model.
#![cfg(feature = "cuda")]

mod common;

use burn::backend::cuda::CudaDevice;
use burn_cubecl::CubeBackend;

type Cube = CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
type Fused = burn::backend::Cuda;

fn device() -> CudaDevice {
    CudaDevice::new(0)
}

/// `mod $module { fn cube(), fn fused() }`: `$check` on the bare CubeCL backend and on Fusion.
macro_rules! cube_and_fused {
    ($module:ident => $check:ident) => {
        mod $module {
            use super::*;
            #[test]
            #[ignore = "needs a CUDA GPU"]
            fn cube() {
                $check::<Cube>(&device());
            }
            #[test]
            #[ignore = "needs a CUDA GPU"]
            fn fused() {
                $check::<Fused>(&device());
            }
        }
    };
}

macro_rules! on_both {
    ($($name:ident => $($check:ident)::+;)*) => {
        mod cube {
            use super::*;
            $(#[test] #[ignore = "needs a CUDA GPU"] fn $name() { $($check)::+::<Cube>(&device()); })*
        }
        mod fused {
            use super::*;
            $(#[test] #[ignore = "needs a CUDA GPU"] fn $name() { $($check)::+::<Fused>(&device()); })*
        }
    };
}

fn random_large<B: vsr_kernels::WarpBackend<Device = CudaDevice>>(device: &CudaDevice) {
    common::check_against_reference::<B>(device, [2, 3, 24, 40], 6.0);
    common::check_against_reference::<B>(device, [1, 4, 33, 65], 40.0);
    common::check_against_reference::<B>(device, [3, 1, 128, 240], 20.0);
}

on_both! {
    golden_parity => common::check_golden;
    reference_random => random_large;
    identity => common::check_identity;
    far_outside => common::check_far_outside;
    finite_differences => common::check_finite_differences;
    shapes => common::check_shapes;
    determinism => common::check_determinism;
    f16 => common::check_f16;
    composition => common::check_composition;
    conv_f32 => common::check_conv_f32;
    conv_train => common::check_conv_train;
    batch_norm_ops => common::check_batch_norm_ops;
    leaky_relu => common::check_leaky_relu;
    bias_leaky_relu => common::check_bias_leaky_relu;
    taps_f16 => common::check_taps_f16;
    vendor_conv => common::check_vendor_conv;
    batch_norm_train => common::check_batch_norm_train;
    batch_norm_train_f16 => common::check_batch_norm_train_f16;
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn passes_against_model() {
    common::stages::check_passes_against_model::<cubecl::cuda::CudaRuntime, u8>(&device());
}

/// vsr's own convolution kernels on the CUDA backend (`vsr_kernels::cube::own_conv`, the default
/// `VSR_CUDA_KERNELS=own`): each of VSRNet's three convolutions, smaller, through the backend's
/// `vendor_conv2d` and `vendor_conv2d_backward` (what the training step runs), against Burn's
/// convolution and its gradients on the CPU, in f16 and in f32 (TF32 allowed, the default
/// precision); widths that are and are not a multiple of 8 (the 16-byte load paths). Each case
/// checks that the kernels it means to test ran (the launch counts of their entries grew), and
/// the values of the passes they ran.
fn check_own_conv<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
    use burn::tensor::{DType, Distribution, Tensor, TensorPrimitive};
    use vsr_kernels::nvrtc::launches_anywhere;
    type Cpu = burn::backend::Flex;
    assert!(B::vendor_conv(), "no vendor convolutions on this backend: is libcudnn.so.9 on the library path?");
    let cpu = Default::default();
    let data = |shape: [usize; 4]| Tensor::<Cpu, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), &cpu).into_data();
    let prim = |d: &burn::tensor::TensorData, dtype: DType| -> FloatTensor<B> {
        Tensor::<B, 4>::from_data(d.clone(), device).cast(dtype).into_primitive().tensor()
    };
    let values = |t: FloatTensor<B>| -> Vec<f32> {
        Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t)).cast(DType::F32).into_data().to_vec().unwrap()
    };
    let cpu_values = |t: FloatTensor<Cpu>| -> Vec<f32> {
        Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(t)).into_data().to_vec().unwrap()
    };
    // (x, w, padding, the entries that must run per pass: forward, input and weight gradient)
    let cases: [([usize; 4], [usize; 4], usize, [&str; 3]); 5] = [
        ([3, 1, 20, 70], [32, 1, 9, 9], 4, ["oicv_forward", "", "oicv_grad_weight"]),
        ([2, 1, 19, 64], [64, 1, 5, 5], 2, ["oicv_forward", "", "oicv_grad_weight"]),
        ([2, 32, 19, 40], [32, 32, 5, 5], 2, ["tcc_conv_f16", "tcc_conv_f16", "tcc_grad_weight"]),
        ([2, 48, 13, 37], [32, 48, 3, 3], 1, ["tcc_conv_f16", "tcc_conv_f16", "tcc_grad_weight"]),
        ([2, 32, 19, 37], [1, 32, 5, 5], 2, ["ocv_forward", "ocv_grad_input", "ocv_grad_weight"]),
    ];
    for (dtype, rtol, atol) in [(DType::F32, 1e-2, 2e-2), (DType::F16, 2e-2, 5e-2)] {
        for (xs, ws, p, entries) in cases {
            let name = format!("{dtype:?} x {xs:?} w {ws:?}");
            let options = ConvOptions::new([1, 1], [p, p], [1, 1], 1);
            let (xd, wd) = (data(xs), data(ws));
            let yd = data([xs[0], ws[0], xs[2], xs[3]]);
            // f32's forward and input gradient of 32-channel outputs stay on cuDNN (TF32).
            let ours = |pass: usize| !entries[pass].is_empty() && (dtype == DType::F16 || !entries[pass].starts_with("tcc_conv"));
            let before = entries.map(|e| if e.is_empty() { 0 } else { launches_anywhere(e) });
            let got_y = B::vendor_conv2d(prim(&xd, dtype), prim(&wd, dtype), None, options.clone());
            let need_x = !entries[1].is_empty();
            let [gx, gw] = B::vendor_conv2d_backward(prim(&xd, dtype), prim(&wd, dtype), prim(&yd, dtype), options.clone(), [need_x, true]);
            let (got_y, gw) = (values(got_y), values(gw.expect("weight gradient")));
            let gx = gx.map(values);
            for (pass, e) in entries.iter().enumerate() {
                if ours(pass) {
                    assert!(launches_anywhere(e) > before[pass], "{name}: {e} did not run");
                }
            }
            let c = |d: &burn::tensor::TensorData| -> FloatTensor<Cpu> { Tensor::<Cpu, 4>::from_data(d.clone(), &cpu).into_primitive().tensor() };
            // (the passes cuDNN runs are `vendor_conv`'s to check: in f32 with TF32 allowed it
            // times its algorithms per process, and some of them are off by more than this
            // tolerance, about 1e-2 of the largest value, as in PyTorch's benchmark mode)
            if ours(0) {
                let want_y = cpu_values(Cpu::conv2d(c(&xd), c(&wd), None, options.clone()));
                common::assert_close(&format!("{name}: forward"), &got_y, &want_y, rtol, atol);
            }
            if let Some(gx) = gx.filter(|_| ours(1)) {
                let want = cpu_values(Cpu::conv2d_x_backward(c(&xd), c(&wd), c(&yd), options.clone()));
                common::assert_close(&format!("{name}: input gradient"), &gx, &want, rtol, atol);
            }
            // A weight gradient sums up to 3 * 20 * 70 products: scale the tolerance.
            let want = cpu_values(Cpu::conv2d_weight_backward(c(&xd), c(&wd), c(&yd), options.clone()));
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs())) / 8.0;
            common::assert_close(&format!("{name}: weight gradient"), &gw, &want, rtol, atol * scale.max(1.0));
        }
    }
}

cube_and_fused!(own_conv => check_own_conv);

/// A channels-last net (`vsr_kernels::channels_last`: what FlowNetSD runs on the CUDA backend,
/// in one call: cuDNN on NHWC buffers, bias + LeakyReLU and concatenations in `bias_act.cu`)
/// against the NCHW vendor convolutions and Burn's tensor ops on the same values, in f32 and f16:
/// a strided 3x3 convolution with bias and LeakyReLU, a 6-channel one with neither, 4x4 / 2
/// transposed convolutions with a bias only and with LeakyReLU only, and a concatenation whose
/// parts have 16, 6 (the kernel's one-value path) and 16 channels.
fn check_channels_last_net<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
    use burn::tensor::activation::leaky_relu;
    use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor};
    use burn::tensor::{DType, Distribution, Tensor, TensorPrimitive};
    use vsr_kernels::channels_last::Recorder;
    assert!(B::vendor_nhwc(), "no channels-last vendor convolutions on this backend: is libcudnn.so.9 on the library path?");
    let t = |f: FloatTensor<B>| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(f));
    let f = |t: Tensor<B, 4>| -> FloatTensor<B> { t.into_primitive().tensor() };
    let values = |t: Tensor<B, 4>| -> Vec<f32> { t.cast(DType::F32).into_data().to_vec().unwrap() };
    let nhwc = |t: Tensor<B, 4>| t.permute([0, 2, 3, 1]);
    let pad = |p| PaddingConfig2d::Explicit(p, p, p, p);
    for dtype in [DType::F32, DType::F16] {
        let cast = |m| cast_c::<B>(m, dtype);
        let random = |shape: [usize; 4]| Tensor::<B, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), device).cast(dtype);
        let conv_a = cast(Conv2dConfig::new([16, 24], [3, 3]).with_stride([2, 2]).with_padding(pad(1)).init::<B>(device));
        let conv_b = cast(Conv2dConfig::new([6, 8], [3, 3]).with_padding(pad(1)).with_bias(false).init::<B>(device));
        let up_c = ConvTranspose2dConfig::new([24, 16], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).init::<B>(device);
        let up_e = ConvTranspose2dConfig::new([8, 8], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).with_bias(false).init::<B>(device);
        let (up_c, up_e) = (cast_t::<B>(up_c, dtype), cast_t::<B>(up_e, dtype));
        let (x0, x1) = (random([2, 16, 12, 20]), random([2, 6, 12, 20]));

        // NCHW: cuDNN's NCHW convolutions, Burn's bias (in the convolution), activation and cat
        let conv_opts = |c: &burn::nn::conv::Conv2d<B>, p| ConvOptions::new(c.stride, [p, p], c.dilation, c.groups);
        let up_opts = |c: &burn::nn::conv::ConvTranspose2d<B>| {
            ConvTransposeOptions::new(c.stride, c.padding, c.padding_out, c.dilation, c.groups)
        };
        let bias = |b: &Option<burn::module::Param<Tensor<B, 1>>>| b.as_ref().map(|b| b.val().into_primitive().tensor());
        let a = leaky_relu(t(B::vendor_conv2d(f(x0.clone()), f(conv_a.weight.val()), bias(&conv_a.bias), conv_opts(&conv_a, 1))), 0.1);
        let b = t(B::vendor_conv2d(f(x1.clone()), f(conv_b.weight.val()), None, conv_opts(&conv_b, 1)));
        let c = t(B::vendor_conv_transpose2d(f(a.clone()), f(up_c.weight.val()), bias(&up_c.bias), up_opts(&up_c)));
        let d = Tensor::cat(vec![x0.clone(), x1.clone(), c], 1);
        let e = leaky_relu(t(B::vendor_conv_transpose2d(f(b), f(up_e.weight.val()), None, up_opts(&up_e))), 0.1);

        // channels-last, one operation
        let last = |m: burn::module::Param<Tensor<B, 4>>| m.map(nhwc);
        let conv_a_l = burn::nn::conv::Conv2d { weight: last(conv_a.weight.clone()), ..conv_a.clone() };
        let conv_b_l = burn::nn::conv::Conv2d { weight: last(conv_b.weight.clone()), ..conv_b.clone() };
        let up_c_l = burn::nn::conv::ConvTranspose2d { weight: last(up_c.weight.clone()), ..up_c.clone() };
        let up_e_l = burn::nn::conv::ConvTranspose2d { weight: last(up_e.weight.clone()), ..up_e.clone() };
        let mut r = Recorder::<B>::default();
        let (v0, v1) = (r.input(nhwc(x0)), r.input(nhwc(x1)));
        let va = r.conv2d(&conv_a_l, v0, Some(0.1));
        let vb = r.conv2d(&conv_b_l, v1, None);
        let vc = r.conv_transpose2d(&up_c_l, va, None);
        let vd = r.cat(vec![v0, v1, vc]);
        let ve = r.conv_transpose2d(&up_e_l, vb, Some(0.1));
        let got = r.run(vec![va, vd, ve]);
        for ((name, want), got) in [("conv + bias + LeakyReLU", a), ("cat", d), ("transposed + LeakyReLU", e)].into_iter().zip(got) {
            let name = format!("{dtype:?} {name}");
            assert_eq!(got.dims(), nhwc(want.clone()).dims(), "{name}: shape");
            common::assert_close(&name, &values(got.permute([0, 3, 1, 2])), &values(want), 1e-2, 2e-2);
        }
    }
}

/// `m` (a convolution) with its parameters in `dtype`.
fn cast_c<B: burn::tensor::backend::Backend>(m: burn::nn::conv::Conv2d<B>, dtype: burn::tensor::DType) -> burn::nn::conv::Conv2d<B> {
    burn::nn::conv::Conv2d { weight: m.weight.map(|w| w.cast(dtype)), bias: m.bias.map(|b| b.map(|b| b.cast(dtype))), ..m }
}

/// `m` (a transposed convolution) with its parameters in `dtype`.
fn cast_t<B: burn::tensor::backend::Backend>(m: burn::nn::conv::ConvTranspose2d<B>, dtype: burn::tensor::DType) -> burn::nn::conv::ConvTranspose2d<B> {
    burn::nn::conv::ConvTranspose2d { weight: m.weight.map(|w| w.cast(dtype)), bias: m.bias.map(|b| b.map(|b| b.cast(dtype))), ..m }
}

cube_and_fused!(channels_last_net => check_channels_last_net);

/// Adam's update in one kernel (`AdamBackend::adam_step` / `adam_steps`: `adam.cu` on the CUDA
/// backend) against the same f32 operations in the same order on the host (each correctly
/// rounded, as the kernel's `__f*_rn` intrinsics): bit-equal, on the first step (no moments) and a
/// later one, with and without weight decay, for parameters of 300 and 37 values, one at a time
/// and all four in one call; gated by a finite value (applied) and by inf and NaN (skipped: every
/// parameter and moment as it was, the first step's moments 0); and an update it does not take
/// gives every update back.
fn check_adam<B: vsr_kernels::adam::AdamBackend>(device: &B::Device) {
    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{Tensor, TensorPrimitive};
    use vsr_kernels::adam::{AdamBatch, AdamStep, AdamUpdate};
    assert!(B::adam_kernel(), "no Adam kernel on this backend");
    let host = |p: &[f32], g: &[f32], mv: Option<(&[f32], &[f32])>, s: AdamStep| -> [Vec<f32>; 3] {
        let (cf, ec) = s.factors();
        let (c1, c2) = (1.0 - s.beta1, 1.0 - s.beta2);
        let mut out = [Vec::new(), Vec::new(), Vec::new()];
        for i in 0..p.len() {
            let gi = if s.weight_decay != 0.0 { p[i] * s.weight_decay + g[i] } else { g[i] };
            let g2 = gi * gi;
            let (mi, vi) = match mv {
                None => (gi * c1, g2 * c2),
                Some((m, v)) => (m[i] * s.beta1 + gi * c1, v[i] * s.beta2 + g2 * c2),
            };
            let u = mi * cf / (vi.sqrt() + ec);
            out[0].push(p[i] - u * s.lr);
            out[1].push(mi);
            out[2].push(vi);
        }
        out
    };
    let values = |n: usize, seed: u64, lo: f32, hi: f32| common::stages::lcg_values(n, seed, lo, hi);
    let on = |x: &[f32]| -> FloatTensor<B> { Tensor::<B, 1>::from_floats(x, device).into_primitive().tensor() };
    let back = |t: FloatTensor<B>| -> Vec<f32> { Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t)).into_data().to_vec().unwrap() };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // every case: parameters of 300 and 37 values, with and without weight decay, first and
    // fifth step
    let mut cases = Vec::new();
    for (n, weight_decay) in [(4 * 3 * 5 * 5, 1e-4f32), (37, 0.0)] {
        for time in [1, 5] {
            let seed = cases.len() as u64 * 4;
            let [p, g, m, v] = [(1, -1.0, 1.0), (2, -0.1, 0.1), (3, -0.01, 0.01), (4, 0.0, 1e-4)].map(|(k, lo, hi)| values(n, seed + k, lo, hi));
            let step = AdamStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay, time };
            let want = host(&p, &g, (time > 1).then(|| (m.as_slice(), v.as_slice())), step);
            cases.push((p, g, m, v, step, want));
        }
    }
    // one at a time
    for (p, g, m, v, step, want) in &cases {
        let (mt, vt) = (on(m), on(v));
        let moments = (step.time > 1).then(|| [&mt, &vt]);
        let got = B::adam_step(&on(p), &on(g), moments, *step).expect("the kernel takes f32 tensors of one shape");
        for (what, (got, want)) in ["param", "moment 1", "moment 2"].iter().zip(got.into_iter().map(back).zip(want)) {
            assert_eq!(bits(&got), bits(want), "{what}, {} values, step {}", p.len(), step.time);
        }
    }
    // all together (one operation), in their order; ungated, then gated by a finite value
    // (applied), then by inf and NaN (skipped)
    let updates = || -> Vec<AdamUpdate<B>> {
        cases
            .iter()
            .map(|(p, g, m, v, step, _)| AdamUpdate { param: on(p), grad: on(g), moments: (step.time > 1).then(|| [on(m), on(v)]), step: *step })
            .collect()
    };
    for gate in [None, Some(12.5f32), Some(f32::INFINITY), Some(f32::NAN)] {
        let batch = AdamBatch { updates: updates(), gate: gate.map(|x| on(&[x])) };
        let outs = B::adam_steps(batch).unwrap_or_else(|_| panic!("the kernel takes f32 tensors of one shape per parameter"));
        assert_eq!(outs.len(), cases.len(), "one result per update");
        let skipped = gate.is_some_and(|x| !x.is_finite());
        for ((p, _, m, v, step, want), got) in cases.iter().zip(outs) {
            let kept = if step.time > 1 { [p.clone(), m.clone(), v.clone()] } else { [p.clone(), vec![0.0; p.len()], vec![0.0; p.len()]] };
            let want = if skipped { &kept } else { want };
            for (what, (got, want)) in ["param", "moment 1", "moment 2"].iter().zip(got.into_iter().map(back).zip(want)) {
                assert_eq!(bits(&got), bits(want), "together, gate {gate:?}: {what}, {} values, step {}", p.len(), step.time);
            }
        }
    }
    // an update the kernel does not take (a gradient of another shape) gives all of them back
    let (p, g) = (on(&cases[0].0), on(&cases[1].1[..10]));
    let mixed = vec![AdamUpdate { param: p.clone(), grad: p.clone(), moments: None, step: cases[0].4 }, AdamUpdate { param: p, grad: g, moments: None, step: cases[0].4 }];
    assert_eq!(B::adam_steps(AdamBatch::new(mixed)).err().map(|b| b.updates.len()), Some(2), "declined, both updates returned");
}

cube_and_fused!(adam => check_adam);

/// `ReadbackBackend::read_later` on the CUDA backend: copied in the background (not read at once),
/// the values of the tensor as it was when requested (a temporary, handed over), with a long chain
/// of work queued after the request and before the wait; more
/// values than it copies in the background are read at once, equal too.
fn check_readback<B: vsr_kernels::readback::ReadbackBackend>(device: &B::Device) {
    use burn::tensor::Tensor;
    use vsr_kernels::readback::MAX_VALUES;
    let values: Vec<f32> = (0..5).map(|i| i as f32 * 1.5 - 2.0).chain([f32::INFINITY, f32::NAN]).collect();
    let t = Tensor::<B, 1>::from_floats(values.as_slice(), device);
    let pending = B::read_later((t.clone() * 2.0).into_primitive().tensor());
    assert!(pending.is_async(), "the CUDA backend copies in the background");
    // queued after the request: a long chain over a large tensor
    let mut big = Tensor::<B, 2>::ones([2048, 2048], device);
    for _ in 0..50 {
        big = big.clone().matmul(big) * 1e-3;
    }
    let got = pending.wait().expect("the values");
    let want: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{got:?} != {want:?}");
    }
    drop(big);
    let many = Tensor::<B, 1>::ones([MAX_VALUES + 1], device);
    let pending = B::read_later(many.into_primitive().tensor());
    assert!(!pending.is_async(), "more values than it copies in the background: read at once");
    assert_eq!(pending.wait().expect("the values"), vec![1.0; MAX_VALUES + 1]);
}

cube_and_fused!(readback => check_readback);

/// Bytes `n` long, different for each `seed`.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn read_u8<B: burn::tensor::backend::Backend>(t: burn::tensor::ops::IntTensor<B>) -> Vec<u8> {
    let t = burn::tensor::Tensor::<B, 1, burn::tensor::Int>::from_primitive(t);
    t.into_data().iter::<i64>().map(|v| v as u8).collect()
}

/// `UploadBackend::upload_int`: exact bytes, of several sizes; a page-locked buffer is reused
/// only after its copy has run (uploads queued behind long work on the uploading thread's stream
/// keep their own bytes); and a batch uploaded on another thread, as the loader's upload thread
/// does, reads the same on this one.
fn check_upload<B: vsr_kernels::upload::UploadBackend<Device = CudaDevice>>(device: &CudaDevice) {
    use burn::tensor::Tensor;
    for (i, n) in [1usize, 1000, 3 * 3 * 3 * 512 * 960].into_iter().enumerate() {
        let want = bytes(n, i as u64);
        let got = read_u8::<B>(B::upload_int(want.clone(), [n].into(), burn::tensor::DType::U8, device));
        assert!(got == want, "{n} bytes uploaded differ");
    }
    // long work first on this thread's stream, then two uploads of one size back to back: the
    // second must wait for the first's copy before it refills the page-locked buffer
    let n = 4 << 20;
    let mut big = Tensor::<B, 2>::ones([2048, 2048], device);
    for _ in 0..50 {
        big = big.clone().matmul(big) * 1e-3;
    }
    let (a, b) = (bytes(n, 10), bytes(n, 11));
    let ta = B::upload_int(a.clone(), [n].into(), burn::tensor::DType::U8, device);
    let tb = B::upload_int(b.clone(), [n].into(), burn::tensor::DType::U8, device);
    assert!(read_u8::<B>(ta) == a, "the first upload was overwritten by the second");
    assert!(read_u8::<B>(tb) == b, "the second upload differs");
    drop(big);
    // uploaded on another thread, shaped, read here
    let want = bytes(2 * 3 * 64, 12);
    let (w, d) = (want.clone(), device.clone());
    let t = std::thread::spawn(move || B::upload_int(w, [2, 3, 64].into(), burn::tensor::DType::U8, &d)).join().expect("the upload thread");
    let t = Tensor::<B, 3, burn::tensor::Int>::from_primitive(t);
    assert_eq!(t.dims(), [2, 3, 64]);
    let got: Vec<u8> = t.into_data().iter::<i64>().map(|v| v as u8).collect();
    assert!(got == want, "uploaded on another thread: the bytes differ");
}

cube_and_fused!(upload => check_upload);
