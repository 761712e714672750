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
