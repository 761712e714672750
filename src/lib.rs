//! `vsr`: video super-resolution (VSRNet with FlowNet2-SD motion compensation) trained in pure
//! Rust on Burn.
//!
//! The tree follows the pipeline: `prep` (source videos -> scenes -> transcodes -> PNG frames, with
//! the `video` feature) -> [`data`] (loaders: windows, crops, batches on the device) -> [`model`]
//! (FlowNetSD, warp, VSRNet) -> [`checkpoint`] (weights in and out) -> [`image`] (colour output);
//! [`video`] decodes whole clips for the demo; [`backend`] is the one place that names Burn
//! backend types, and [`cli`] is the `vsr` program.

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod image;
pub mod model;
#[cfg(feature = "video")]
pub mod prep;
pub mod tensors;
pub mod train;
#[cfg(feature = "video")]
pub mod video;

pub use error::{Error, Result};
