//! Motion compensation: the single `warp` entry point. It dispatches to our CubeCL kernel on
//! CubeCL backends and to the tensor-op implementation elsewhere (see the `vsr-kernels` crate).

pub use vsr_kernels::{WarpBackend, warp, warp_reference};
