//! `vsr`: video super-resolution (VSRNet with FlowNet2-SD motion compensation) trained in pure
//! Rust on Burn.
//!
//! The tree follows the pipeline: `prep` (source videos -> scenes -> transcodes -> PNG frames, with
//! the `video` feature) -> [`video`] (decoding) -> [`model`] (FlowNetSD, warp, VSRNet) ->
//! [`checkpoint`] (weights in and out) -> [`image`] (colour output) -> [`infer`] (super-resolution
//! of real low-resolution frames) -> [`upscale`] (whole videos) and [`eval`] (metrics, benchmark
//! clips); [`backend`] is the one place that names Burn backend types, and [`cli`] is the `vsr`
//! program.

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod error;
pub mod eval;
pub mod image;
pub mod infer;
pub mod model;
#[cfg(feature = "video")]
pub mod prep;
pub mod tensors;
pub mod train;
#[cfg(feature = "video")]
pub mod upscale;
#[cfg(feature = "video")]
pub mod video;

pub use error::{Error, Result};
