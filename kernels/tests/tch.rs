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
