//! The float-atomic image gradient (opt-in, not deterministic) against the default one. A separate
//! test binary: the switch is process-wide.
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};

type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;

fn device() -> WgpuDevice {
    WgpuDevice::default()
}

#[test]
fn atomic_variant_matches() {
    // Lavapipe has no f32 atomic add, so this runs the deterministic path there; on runtimes with
    // f32 atomics it compares the two paths.
    use burn::tensor::{Distribution, Tensor};
    let device = device();
    let img = Tensor::<Cube, 4>::random([2, 3, 16, 20], Distribution::Uniform(-1.0, 1.0), &device);
    let flow = Tensor::<Cube, 4>::random([2, 2, 16, 20], Distribution::Uniform(-5.0, 5.0), &device);
    let up = Tensor::<Cube, 4>::random([2, 3, 16, 20], Distribution::Uniform(-1.0, 1.0), &device);
    let (gi, _) = vsr_kernels::warp_backward(img.clone(), flow.clone(), up.clone());
    vsr_kernels::cube::set_atomic_grad_img(true);
    let (gi_atomic, _) = vsr_kernels::warp_backward(img, flow, up);
    vsr_kernels::cube::set_atomic_grad_img(false);
    common::assert_close(
        "atomic grad_img",
        &common::values(gi_atomic),
        &common::values(gi),
        1e-5,
        1e-6,
    );
}
