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
