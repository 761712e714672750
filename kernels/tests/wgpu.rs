//! The CubeCL kernels on wgpu (CI: Mesa's lavapipe, a Vulkan CPU driver). Both the bare
//! `CubeBackend` and `burn::backend::Wgpu` (a `Fusion<CubeBackend>` with Burn's fusion feature, so
//! this also runs the fusion custom op). Without an adapter these tests fail, they don't skip.
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;

type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
type Fused = burn::backend::Wgpu;

fn device() -> WgpuDevice {
    WgpuDevice::default()
}

macro_rules! on_both {
    ($($name:ident => $($check:ident)::+;)*) => {
        mod cube {
            use super::*;
            $(#[test] fn $name() { $($check)::+::<Cube>(&device()); })*
        }
        mod fused {
            use super::*;
            $(#[test] fn $name() { $($check)::+::<Fused>(&device()); })*
        }
    };
}

fn random_large<B: vsr_kernels::WarpBackend<Device = WgpuDevice>>(device: &WgpuDevice) {
    common::check_against_reference::<B>(device, [2, 3, 24, 40], 6.0);
    common::check_against_reference::<B>(device, [1, 4, 33, 65], 40.0);
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
    upload => check_upload;
}

/// `UploadBackend::upload_int` off CUDA: `from_data` on the bare backend, and on Fusion the
/// registration of the inner backend's tensor (vsr_kernels::upload); the words (little-endian
/// bytes, as vsr's packed uploads send them where a device stores no u8) and shape exact.
fn check_upload<B: vsr_kernels::upload::UploadBackend<Device = WgpuDevice>>(device: &WgpuDevice) {
    use burn::tensor::{DType, Int, Tensor};
    let want: Vec<i32> = (0..2 * 3 * 50u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 1) as i32).collect();
    let bytes: Vec<u8> = want.iter().flat_map(|w| w.to_le_bytes()).collect();
    let t = Tensor::<B, 3, Int>::from_primitive(B::upload_int(bytes, [2, 3, 50].into(), DType::I32, device));
    assert_eq!(t.dims(), [2, 3, 50]);
    // computed on, as the loader does (bitwise unpacking)
    let low = t.clone().bitwise_and_scalar(255.elem()).float().sum().into_scalar().elem::<f64>();
    assert_eq!(low, want.iter().map(|&w| (w & 255) as f64).sum::<f64>(), "computing on the upload");
    let got: Vec<i32> = t.into_data().iter::<i64>().map(|v| v as i32).collect();
    assert!(got == want, "the words differ");
}

#[test]
fn passes_against_model() {
    common::stages::check_passes_against_model::<WgpuRuntime, u32>(&device());
}

#[test]
fn adapter_present() {
    // Creating a client panics when wgpu finds no adapter: the test fails instead of skipping.
    let name = Cube::name(&device());
    assert!(!name.is_empty());
    eprintln!("wgpu backend: {name}");
}

#[test]
fn bench_runs() {
    let r = vsr_kernels::bench::bench_warp::<Fused>(
        &device(),
        [1, 3, 32, 32],
        burn::tensor::DType::F32,
        1,
        3,
    );
    eprintln!("{r}");
    assert!(r.kernel_forward_ms > 0.0 && r.reference_forward_backward_ms > 0.0);
}
