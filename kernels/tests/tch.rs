//! The LibTorch warp (PyTorch's `grid_sample`, gradients from LibTorch's autograd) and its f32
//! convolutions, through the same checks as the other backends: on LibTorch's CPU in any `tch`
//! build, on its CUDA device 0 with `--ignored` on a GPU machine (where a missing GPU fails them).
//! LibTorch's CUDA `grid_sample` backward adds with atomics, so its image gradient is not
//! bit-for-bit deterministic there: the determinism check runs on the CPU only.
#![cfg(feature = "tch")]

mod common;

use burn::backend::LibTorch;
use burn::backend::libtorch::LibTorchDevice;

type B = LibTorch<f32>;

fn random_large(device: &LibTorchDevice) {
    common::check_against_reference::<B>(device, [2, 3, 24, 40], 6.0);
    common::check_against_reference::<B>(device, [1, 4, 33, 65], 40.0);
    common::check_against_reference::<B>(device, [3, 1, 128, 240], 20.0);
}

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
    reference_random => random_large;
    identity => common::check_identity::<B>;
    far_outside => common::check_far_outside::<B>;
    finite_differences => common::check_finite_differences::<B>;
    shapes => common::check_shapes::<B>;
    composition => common::check_composition::<B>;
    conv_f32 => common::check_conv_f32::<B>;
}

/// fp16 on the GPU only: LibTorch's CPU has no half-precision `grid_sample`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_f16() {
    assert!(tch::Cuda::is_available(), "LibTorch sees no CUDA device");
    common::check_f16::<B>(&LibTorchDevice::Cuda(0));
}
