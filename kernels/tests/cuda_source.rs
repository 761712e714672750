//! The CUDA C++ that CubeCL's CUDA compiler emits for the warp kernels, generated without a GPU:
//! each kernel's `KernelDefinition` is expanded with a wgpu client (Mesa's lavapipe in CI; the
//! expansion only reads the client's device properties) and compiled by `cubecl::cuda`'s
//! compiler with the options it uses on an H100 (fast math, grid constants, warp size 32).
//!
//! The sources go to `target/cuda-source/` (or `$VSR_CUDA_SOURCE_DIR`) for reading, and are
//! checked for constructs that NVRTC rejects or that change the kernels' meaning (see each
//! assertion).
#![cfg(all(feature = "cuda", feature = "wgpu"))]

use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
use cubecl::Compiler;
use cubecl::cuda::CudaCompiler;
use cubecl::prelude::*;
use vsr_kernels::cube::kernel::{
    warp_backward_flow_kernel, warp_backward_img_atomic_kernel, warp_backward_img_resolve_kernel,
    warp_backward_img_scatter_kernel, warp_forward_kernel,
};

fn tensor() -> TensorCompilationArg {
    TensorCompilationArg { inplace: None }
}

/// The CUDA source of every warp kernel, f32 storage, as `(name, source)`.
fn sources() -> Vec<(&'static str, String)> {
    let client = WgpuRuntime::client(&WgpuDevice::default());
    let settings = || {
        KernelSettings::default()
            .cube_dim(CubeDim::new_1d(256))
            .address_type(AddressType::U32)
    };
    let f32_ty = StorageType::Scalar(cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F32));
    let definitions = vec![
        (
            "warp_forward",
            warp_forward_kernel::WarpForwardKernel::<WgpuRuntime>::new(
                settings(),
                client.clone(),
                tensor(),
                tensor(),
                tensor(),
                f32_ty,
            )
            .define(),
        ),
        (
            "warp_backward_flow",
            warp_backward_flow_kernel::WarpBackwardFlowKernel::<WgpuRuntime>::new(
                settings(),
                client.clone(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                true,
                f32_ty,
            )
            .define(),
        ),
        (
            "warp_backward_img_scatter",
            warp_backward_img_scatter_kernel::WarpBackwardImgScatterKernel::<WgpuRuntime>::new(
                settings(),
                client.clone(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                (),
                f32_ty,
            )
            .define(),
        ),
        (
            "warp_backward_img_resolve",
            warp_backward_img_resolve_kernel::WarpBackwardImgResolveKernel::<WgpuRuntime>::new(
                settings(),
                client.clone(),
                tensor(),
                tensor(),
                tensor(),
                (),
                f32_ty,
            )
            .define(),
        ),
        (
            "warp_backward_img_atomic",
            warp_backward_img_atomic_kernel::WarpBackwardImgAtomicKernel::<WgpuRuntime>::new(
                settings(),
                client,
                tensor(),
                tensor(),
                tensor(),
                f32_ty,
            )
            .define(),
        ),
    ];
    // The options `cubecl::cuda` sets up for an sm_90 device (cubecl-cuda 0.10 runtime.rs).
    let mut options = <CudaCompiler as Compiler>::CompilationOptions::default();
    options.warp_size = 32;
    options.supports_features.fast_math = true;
    options.supports_features.grid_constants = true;
    options.supports_features.fast_tanh = true;
    definitions
        .into_iter()
        .map(|(name, definition)| {
            let source = CudaCompiler::default()
                .compile(
                    definition,
                    &options,
                    ExecutionMode::Checked,
                    AddressType::U32.unsigned_type(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .to_string();
            (name, source)
        })
        .collect()
}

#[test]
fn cuda_sources() {
    let dir = std::env::var_os("VSR_CUDA_SOURCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cuda-source")
        });
    std::fs::create_dir_all(&dir).unwrap();
    for (name, source) in sources() {
        let path = dir.join(format!("{name}.cu"));
        std::fs::write(&path, &source).unwrap();
        eprintln!("{}: {} lines", path.display(), source.lines().count());
        // NVRTC rejects a bitcast of a literal (`reinterpret_cast<float const&>(uint32(..))`:
        // not an lvalue); the kernels make such values at run time instead.
        assert!(
            !source.contains("reinterpret_cast<float const&>(uint32("),
            "{name}: bitcast of a constant"
        );
    }
}
