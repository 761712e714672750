//! `vsr`: video super-resolution (VSRNet with FlowNet2-SD motion compensation) trained in pure
//! Rust on Burn.
//!
//! The tree follows the pipeline: `prep` (source videos -> scenes -> transcodes -> PNG frames, with
//! the `video` feature) -> [`data`] (loaders: windows, crops, batches on the device) -> [`model`]
//! (FlowNetSD, warp, VSRNet) -> [`train`] -> [`checkpoint`] (weights in and out) -> [`infer`]
//! (super-resolution of real low-resolution frames) -> [`upscale`] (whole videos) and [`eval`]
//! (metrics, benchmark clips); [`image`] makes colour output, [`video`] decodes whole clips for
//! the demo; [`backend`] is the one place that names Burn backend types, and [`cli`] is the
//! `vsr` program.

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod image;
pub mod infer;
pub mod model;
pub mod precision;
#[cfg(feature = "video")]
pub mod prep;
pub mod tensors;
pub mod train;
#[cfg(feature = "video")]
pub mod upscale;
#[cfg(feature = "video")]
pub mod video;

pub use error::{Error, Result};
