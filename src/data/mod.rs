//! Loading training data: F-frame windows of the prepared scenes, cropped, batched as u8 RGB
//! (channels last, as decoded) on worker threads, and uploaded to the training device ahead of
//! use as float (B, 3, F, H, W).
//!
//! Two sources with the same sampling semantics (the original's comparison, `vsr bench loaders`):
//!
//! * **video** ([`SourceKind::Video`], feature `video`): the transcoded scenes
//!   `<data>/<res>/scenes/{train,val}/<scene>.mp4`, decoded with FFmpeg's libraries.
//! * **png** ([`SourceKind::Png`]): the frames of `vsr prep frames`,
//!   `<data>/<res>/frames/{train,val}/<scene>/000000.png`, decoded with the `image` crate.
//!
//! The pieces, in the order data flows:
//!
//! * [`dataset`]: the scenes of one split of one resolution, indexed once at open (frame count,
//!   size, bytes; for video every frame's timestamp and the keyframes); unreadable scenes are
//!   skipped and named.
//! * [`sampler`]: which windows an epoch visits, in which order, with which crop: a pure function
//!   of (seed, epoch, window), whatever the number of threads. See there for the shuffle.
//! * [`video`] and [`png`]: read one window, cropped, into its place in a batch.
//! * [`loader`]: worker threads, a bounded prefetch of batches delivered in order, resume from a
//!   [`LoaderState`].
//! * [`device`]: upload as u8 and convert to float on the device, one batch ahead.
//!
//! Frames of a window are consecutive frames of one scene file, never across files. Crop
//! offsets are even numbers: 4:2:0 video stores colour per 2x2 block, and an even offset lets the
//! video source convert only the cropped area to RGB, with exactly the pixels a conversion of the
//! whole frame would give (which is what the PNG files hold).

pub mod config;
pub mod dataset;
pub mod device;
pub mod loader;
#[cfg(feature = "video")]
pub mod nvdec;
pub mod png;
pub mod sampler;
#[cfg(feature = "video")]
pub mod video;

pub use config::{CropMode, DecoderChoice, LoaderConfig, Shard, VideoDecoder};
pub use dataset::{Dataset, Scene};
pub use device::{DeviceBatch, DeviceLoader, upload};
pub use loader::{HostBatch, Loader, LoaderState, LoaderStats};
pub use sampler::WindowRef;

use serde::{Deserialize, Serialize};

/// Where the frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The transcoded scene files (`<res>/scenes`), decoded with FFmpeg.
    Video,
    /// The PNG frames of `vsr prep frames` (`<res>/frames`).
    Png,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Video => "video",
            SourceKind::Png => "png",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Training or validation scenes (one type with the manifest's).
pub use crate::prep::manifest::Split;

/// A diagnostic switch of the data path, on unless the environment variable `var` is `0`.
pub(crate) fn switched_on(var: &str) -> bool {
    std::env::var(var).map_or(true, |v| v != "0")
}
