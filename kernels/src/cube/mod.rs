//! CubeCL implementation of the warp (`cuda` / `wgpu` features).
//!
//! * [`kernel`]: the `#[cube]` kernels (forward; backward in three deterministic passes, or a
//!   float-atomic variant behind [`set_atomic_grad_img`]).
//! * `backend`: `impl WarpBackend for CubeBackend<R, F, I, BT>`.
//! * `fusion`: `impl WarpBackend for Fusion<B>` as a fusion custom operation.
//! * `conv`: `impl ConvBackend` for both (f32 convolutions through Burn's direct kernels).

mod backend;
mod conv;
mod fusion;
pub mod kernel;

pub use backend::{
    BackwardStages, atomic_grad_img, set_atomic_grad_img, warp_backward, warp_backward_stages,
    warp_forward,
};
