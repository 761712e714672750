//! What a [`Loader`](super::Loader) is asked for: window length and stride, batch size, crop,
//! shuffle, threads, prefetch depth, seed, the video decoder. Checked up front against the data set by
//! [`LoaderConfig::check`], so that a bad crop is one clear error before any thread starts.

use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::error::{Error, Result};

/// FlowNetSD halves the picture six times: crops must be multiples of this.
pub const CROP_MULTIPLE: usize = 64;

/// Which part of each frame a window keeps. Offsets are always even (see [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// A uniformly random `h` x `w` area, the same for every frame of a window; a new one for each
    /// window and epoch.
    Random { h: usize, w: usize },
    /// The `h` x `w` area at the centre of each frame.
    Centre { h: usize, w: usize },
    /// The whole frame floored to multiples of 64 in each direction, centred: 1280x720 gives
    /// 1280x704 from row 8. When scenes differ in size, the largest such area that fits in
    /// every scene (all windows of a batch must have one size).
    Full,
}

impl CropMode {
    /// Parses `HxW` (e.g. `512x960`) as a random crop of that size.
    pub fn parse_size(s: &str) -> Result<(usize, usize)> {
        let bad = || Error::Invalid(format!("crop `{s}` is not HxW (e.g. 512x960)"));
        let (h, w) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        Ok((h.trim().parse().map_err(|_| bad())?, w.trim().parse().map_err(|_| bad())?))
    }
}

/// Which decoder reads video scenes, as asked for (`--decoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderChoice {
    /// NVDEC when training runs on an NVIDIA GPU that has it, else the CPU.
    #[default]
    Auto,
    /// FFmpeg's H.264 decoder on the loader's threads.
    Cpu,
    /// The GPU's video decoder (NVDEC); an error where there is none.
    Nvdec,
}

/// Which decoder reads video scenes, resolved ([`VideoDecoder::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoDecoder {
    /// FFmpeg's H.264 decoder on the loader's threads.
    #[default]
    Cpu,
    /// NVDEC on CUDA device n ([`super::nvdec`]): the same pixels, next to no CPU time.
    Nvdec(usize),
}

impl VideoDecoder {
    /// `choice` for training on CUDA device `gpu` (None: not an NVIDIA GPU): `auto` takes NVDEC
    /// where it can be used; `nvdec` where it cannot is an error saying why.
    pub fn resolve(choice: DecoderChoice, gpu: Option<usize>) -> Result<VideoDecoder> {
        match (choice, gpu) {
            (DecoderChoice::Cpu, _) | (DecoderChoice::Auto, None) => Ok(VideoDecoder::Cpu),
            (DecoderChoice::Nvdec, None) => {
                Err(Error::Invalid("--decoder nvdec decodes on the training GPU: it needs --backend cuda or tch on an NVIDIA GPU".into()))
            }
            (DecoderChoice::Nvdec, Some(g)) => VideoDecoder::nvdec(g),
            (DecoderChoice::Auto, Some(g)) => Ok(VideoDecoder::nvdec(g).unwrap_or(VideoDecoder::Cpu)),
        }
    }

    #[cfg(feature = "video")]
    fn nvdec(gpu: usize) -> Result<VideoDecoder> {
        super::nvdec::Nvdec::check(gpu).map(|_| VideoDecoder::Nvdec(gpu))
    }

    #[cfg(not(feature = "video"))]
    fn nvdec(_gpu: usize) -> Result<VideoDecoder> {
        Err(Error::Invalid("NVDEC: this vsr is built without the `video` feature".into()))
    }
}

impl std::fmt::Display for VideoDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VideoDecoder::Cpu => write!(f, "cpu"),
            VideoDecoder::Nvdec(g) => write!(f, "nvdec (GPU {g})"),
        }
    }
}

/// Settings of a [`Loader`](super::Loader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Frames per window (F, odd: the model super-resolves the centre one).
    pub frames: usize,
    /// Frames between the starts of consecutive windows of a scene (DALI's `step`; default F:
    /// windows do not overlap).
    pub stride: usize,
    /// Windows per batch (B).
    pub batch: usize,
    pub crop: CropMode,
    /// Shuffle the windows every epoch (training); off: scenes by name, windows in order.
    pub shuffle: bool,
    /// Size of the shuffle buffer, in runs of consecutive windows (see [`super::sampler`]).
    pub initial_fill: usize,
    /// Decoding threads (0: the cores of this machine minus one, at least one).
    pub workers: usize,
    /// Batches decoded ahead of the one the caller takes next.
    pub prefetch: usize,
    /// Open video decoders, all workers together (host memory stays flat however many files;
    /// with NVDEC, GPU memory too: about 25 frames each).
    pub max_open_decoders: usize,
    /// Decoder of video scenes (PNG frames ignore it).
    #[serde(default)]
    pub decoder: VideoDecoder,
    pub seed: u64,
    /// Go on over epochs forever (training); off: one pass, then `next_batch` returns None.
    pub repeat: bool,
    /// Leave out the last batch of an epoch when it would be smaller than `batch`.
    pub drop_last: bool,
    /// Data-parallel training: which share of every batch this loader reads (see [`Shard`]).
    #[serde(default)]
    pub shard: Shard,
}

/// One worker's share of each batch in data-parallel training: of the `batch` windows the
/// sampler puts in batch i, worker `rank` of `count` takes windows
/// `rank * batch / count .. (rank + 1) * batch / count`. The shares are disjoint, their union is
/// the whole batch, and what a worker reads is, like the batch itself, a pure function of
/// (seed, epoch, window): the same on every run whatever the number of threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub rank: usize,
    pub count: usize,
}

impl Default for Shard {
    /// The whole batch.
    fn default() -> Self {
        Shard { rank: 0, count: 1 }
    }
}

impl Shard {
    /// The range of a batch of `n` windows this shard reads.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        self.rank * n / self.count..(self.rank + 1) * n / self.count
    }
}

impl LoaderConfig {
    /// Training: random `crop_h` x `crop_w` crops, windows at stride F, shuffled with a buffer of
    /// 16, cores minus one workers, 4 batches ahead, 32 open decoders on the CPU, endless, full
    /// batches.
    pub fn train(frames: usize, batch: usize, crop_h: usize, crop_w: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            frames,
            stride: frames,
            batch,
            crop: CropMode::Random { h: crop_h, w: crop_w },
            shuffle: true,
            initial_fill: 16,
            workers: 0,
            prefetch: 4,
            max_open_decoders: 32,
            decoder: VideoDecoder::Cpu,
            seed,
            repeat: true,
            drop_last: true,
            shard: Shard::default(),
        }
    }

    /// Validation: whole frames (floored to multiples of 64), fixed order, one pass, the last
    /// batch kept even when short.
    pub fn val(frames: usize, batch: usize) -> LoaderConfig {
        LoaderConfig {
            crop: CropMode::Full,
            shuffle: false,
            initial_fill: 1,
            repeat: false,
            drop_last: false,
            ..LoaderConfig::train(frames, batch, 0, 0, 0)
        }
    }

    /// Worker threads this configuration runs.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1)
        }
    }

    /// Checks the settings against `dataset` (scenes shorter than a window do not count) and
    /// returns the crop size (h, w).
    pub fn check(&self, dataset: &Dataset) -> Result<(usize, usize)> {
        let bad = |what: String| Err(Error::Invalid(what));
        if self.frames == 0 || self.frames % 2 == 0 {
            return bad(format!("--frames {} must be odd (the model super-resolves the centre frame)", self.frames));
        }
        if self.stride == 0 {
            return bad("--stride must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if self.prefetch == 0 {
            return bad("--prefetch must be at least 1".into());
        }
        if self.max_open_decoders == 0 {
            return bad("max_open_decoders must be at least 1".into());
        }
        if self.shard.count == 0 || self.shard.rank >= self.shard.count {
            return bad(format!("loader shard {} of {}: the rank must be below the count", self.shard.rank, self.shard.count));
        }
        if self.batch % self.shard.count != 0 {
            return bad(format!(
                "a batch of {} windows cannot be split evenly across {} data-parallel workers: make --batch a multiple of {1}",
                self.batch, self.shard.count
            ));
        }
        let scenes: Vec<_> = dataset.entries().iter().filter(|s| s.frames >= self.frames).collect();
        if scenes.is_empty() {
            return bad(format!(
                "{}: no scene has {} frames or more ({} scene(s), {} skipped as unreadable)",
                dataset.dir().display(),
                self.frames,
                dataset.entries().len(),
                dataset.skipped().len()
            ));
        }
        match self.crop {
            CropMode::Random { h, w } | CropMode::Centre { h, w } => {
                if h == 0 || w == 0 || h % CROP_MULTIPLE != 0 || w % CROP_MULTIPLE != 0 {
                    return bad(format!("crop {h}x{w}: height and width must be positive multiples of {CROP_MULTIPLE} (FlowNetSD)"));
                }
                let small: Vec<String> = scenes
                    .iter()
                    .filter(|s| s.height < h || s.width < w)
                    .map(|s| format!("{} ({}x{})", s.path.display(), s.height, s.width))
                    .collect();
                if !small.is_empty() {
                    return bad(format!(
                        "crop {h}x{w} is larger than {} of the {} scene(s) (HxW): {}",
                        small.len(),
                        scenes.len(),
                        small.join(", ")
                    ));
                }
                Ok((h, w))
            }
            CropMode::Full => {
                let h = scenes.iter().map(|s| s.height).min().unwrap_or(0) / CROP_MULTIPLE * CROP_MULTIPLE;
                let w = scenes.iter().map(|s| s.width).min().unwrap_or(0) / CROP_MULTIPLE * CROP_MULTIPLE;
                if h == 0 || w == 0 {
                    return bad(format!(
                        "{}: frames smaller than {CROP_MULTIPLE}x{CROP_MULTIPLE}: nothing is left after flooring to multiples of {CROP_MULTIPLE}",
                        dataset.dir().display()
                    ));
                }
                Ok((h, w))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_sizes_parse() {
        assert_eq!(CropMode::parse_size("512x960").unwrap(), (512, 960));
        assert_eq!(CropMode::parse_size(" 64X128 ").unwrap(), (64, 128));
        assert!(CropMode::parse_size("512").is_err());
        assert!(CropMode::parse_size("ax9").is_err());
    }

    #[test]
    fn defaults() {
        let t = LoaderConfig::train(3, 2, 512, 960, 7);
        assert_eq!((t.stride, t.initial_fill, t.shuffle, t.repeat, t.drop_last), (3, 16, true, true, true));
        let v = LoaderConfig::val(5, 4);
        assert_eq!((v.stride, v.crop, v.shuffle, v.repeat, v.drop_last), (5, CropMode::Full, false, false, false));
        assert!(t.worker_count() >= 1);
    }
}
