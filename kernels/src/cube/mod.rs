//! CubeCL implementation of the warp (`cuda` / `wgpu` features).
//!
//! * [`kernel`]: the `#[cube]` kernels (forward; backward in three deterministic passes, or a
//!   float-atomic variant behind [`set_atomic_grad_img`]).
//! * `backend`: `impl WarpBackend for CubeBackend<R, F, I, BT>`.
//! * `fusion`: `impl WarpBackend for Fusion<B>` as a fusion custom operation.
//! * `conv`: `impl ConvBackend` for both (f32 convolutions through Burn's direct kernels; on
//!   CUDA every convolution through cuDNN where it loads).
//! * [`cudnn`]: cuDNN's convolutions on CubeCL's CUDA buffers.
//! * [`own_conv`]: vsr's own convolution kernels on those buffers, where they beat cuDNN.
//! * `net`: a frozen channels-last network in one call on CubeCL's device thread.

mod backend;
pub(crate) mod conv;
#[cfg(feature = "cuda")]
pub mod cudnn;
#[cfg(feature = "cuda")]
mod net;
#[cfg(feature = "cuda")]
pub mod own_conv;
mod fusion;
pub mod kernel;

pub use backend::{
    BackwardStages, atomic_grad_img, set_atomic_grad_img, warp_backward, warp_backward_stages,
    warp_forward,
};

/// Keeps CubeCL's autotune results and compiled kernels under `dir` (`autotune/`, `kernels/`)
/// instead of `./target` of whatever directory the program runs from, so that tuning done once
/// serves every later run. Must be called before the first CubeCL device is used; returns `false`
/// (and changes nothing) if CubeCL's configuration was already fixed.
pub fn set_cache_dir(dir: &std::path::Path) -> bool {
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    let mut config = CubeClRuntimeConfig::from_current_dir();
    config.autotune.cache = CacheConfig::File(dir.join("autotune"));
    config.compilation.cache = Some(CacheConfig::File(dir.join("kernels")));
    std::panic::catch_unwind(|| CubeClRuntimeConfig::set(config)).is_ok()
}

/// CubeCL's memory pool on CUDA device `index` for the calling thread's stream (CubeCL keeps one
/// per stream): the bytes its live buffers hold and the bytes it has reserved from the driver (a
/// call to its device thread, queued after the work before it).
#[cfg(feature = "cuda")]
pub fn cuda_pool_usage(index: usize) -> Option<(u64, u64)> {
    use cubecl::Runtime;
    let client = cubecl::cuda::CudaRuntime::client(&cubecl::cuda::CudaDevice::new(index));
    client.memory_usage().ok().map(|m| (m.bytes_in_use, m.bytes_reserved))
}

/// Starts (from 0) or stops tracking the peak of bytes in use in CubeCL's CUDA memory pools,
/// checked at every allocation (vendored cubecl-cuda's `peak_memory`; slows allocations: for
/// measurements).
#[cfg(feature = "cuda")]
pub fn track_peak_memory(on: bool) {
    cubecl::cuda::peak_memory::track(on)
}

/// The most bytes in use in one stream's pool at an allocation since tracking started
/// ([`track_peak_memory`]).
#[cfg(feature = "cuda")]
pub fn peak_memory_in_use() -> u64 {
    cubecl::cuda::peak_memory::peak()
}

/// (N, C, H, W) dims as (N, H, W, C), the dims of a channels-last tensor (and a (K, C, R, S)
/// filter's as (K, R, S, C)).
#[cfg(feature = "cuda")]
pub(crate) fn nchw_to_nhwc([a, b, c, d]: [usize; 4]) -> [usize; 4] {
    [a, c, d, b]
}

/// The inverse of [`nchw_to_nhwc`].
#[cfg(feature = "cuda")]
pub(crate) fn nhwc_to_nchw([a, b, c, d]: [usize; 4]) -> [usize; 4] {
    [a, d, b, c]
}
