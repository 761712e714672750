//! `vsr prep`: data preparation (split, transcode, frames, all). See [`crate::prep`].

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::prep::{self, Report, Resolution, frames, split, transcode};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Cut source videos into scenes: <out>/orig/scenes/{train,val}/<scene>.mp4 + manifest.json.
    Split(SplitArgs),
    /// Re-encode every scene at the given resolutions: <data>/<res>/scenes/{train,val}/.
    Transcode(TranscodeArgs),
    /// Every frame of every transcoded scene as PNG: <data>/<res>/frames/{train,val}/<scene>/.
    Frames(FramesArgs),
    /// split, then transcode (every resolution that is a down-scale), then optionally frames.
    All(AllArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Worker threads, one scene each (default: all cores).
    #[arg(short = 'j', long, default_value_t = 0)]
    pub jobs: usize,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SplitOpts {
    /// Timestamps file of cuts (one per line: seconds or HH:MM:SS.mmm), one per video in order.
    #[arg(long, conflicts_with = "detect")]
    pub cuts: Vec<PathBuf>,
    /// Detect hard cuts (FFmpeg's scene score).
    #[arg(long)]
    pub detect: bool,
    /// Scene score above which a frame starts a new scene (with --detect).
    #[arg(long, default_value_t = prep::detect::DEFAULT_THRESHOLD, requires = "detect")]
    pub threshold: f64,
    /// Scenes with fewer frames are dropped.
    #[arg(long, default_value_t = 3)]
    pub min_frames: usize,
    /// The last N scenes go to validation.
    #[arg(long, conflicts_with = "val_fraction")]
    pub val_scenes: Option<usize>,
    /// This share of the scenes (the last ones) goes to validation [default: 0.1].
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Quality (x264 CRF) of the re-encoded scenes.
    #[arg(long, default_value_t = 16)]
    pub scene_crf: u32,
    /// x264 preset of the re-encoded scenes.
    #[arg(long, default_value = "fast")]
    pub scene_preset: String,
}

impl SplitOpts {
    fn options(&self, common: &Common) -> anyhow::Result<split::SplitOptions> {
        let cuts = if self.detect {
            if !(0.0..=1.0).contains(&self.threshold) {
                bail!("--threshold {} is not a scene score (0 to 1)", self.threshold);
            }
            split::Cuts::Detect { threshold: self.threshold }
        } else if !self.cuts.is_empty() {
            split::Cuts::Files(self.cuts.clone())
        } else {
            split::Cuts::None
        };
        let val = match (self.val_scenes, self.val_fraction) {
            (Some(n), _) => split::ValSplit::Scenes(n),
            (None, Some(f)) if (0.0..=1.0).contains(&f) => split::ValSplit::Fraction(f),
            (None, Some(f)) => bail!("--val-fraction {f} is not between 0 and 1"),
            (None, None) => split::ValSplit::Fraction(0.1),
        };
        Ok(split::SplitOptions {
            cuts,
            min_frames: self.min_frames.max(1),
            val,
            crf: self.scene_crf,
            preset: self.scene_preset.clone(),
            jobs: common.jobs,
            progress: !common.quiet,
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SplitArgs {
    /// Source videos.
    #[arg(required = true)]
    pub videos: Vec<PathBuf>,
    /// Data directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub split: SplitOpts,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct EncodeOpts {
    /// x264 CRF of the transcodes.
    #[arg(long, default_value_t = 18)]
    pub crf: u32,
    /// Keyframe interval (FFmpeg's -g); also keyint_min, no scene-cut keyframes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub gop: u32,
    /// x264 preset of the transcodes.
    #[arg(long, default_value = "medium")]
    pub preset: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TranscodeArgs {
    /// Data directory (made by `vsr prep split`).
    #[arg(long)]
    pub data: PathBuf,
    /// Target resolutions: 4k, 1080p, 720p, 540p (or <even height>p); repeat or comma-separate.
    #[arg(long, required = true, value_delimiter = ',')]
    pub resolution: Vec<Resolution>,
    #[command(flatten)]
    pub encode: EncodeOpts,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FramesArgs {
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Resolutions whose transcodes to write as PNG; repeat or comma-separate.
    #[arg(long, required = true, value_delimiter = ',')]
    pub resolution: Vec<Resolution>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AllArgs {
    /// Source videos.
    #[arg(required = true)]
    pub videos: Vec<PathBuf>,
    /// Data directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub split: SplitOpts,
    /// Target resolutions [default: 4k,1080p,720p,540p, each where it is a down-scale].
    #[arg(long, value_delimiter = ',')]
    pub resolution: Vec<Resolution>,
    #[command(flatten)]
    pub encode: EncodeOpts,
    /// Also write PNG frames of every transcode.
    #[arg(long)]
    pub frames: bool,
    #[command(flatten)]
    pub common: Common,
}

fn transcode_options(resolutions: Vec<Resolution>, e: &EncodeOpts, c: &Common) -> transcode::TranscodeOptions {
    transcode::TranscodeOptions {
        resolutions,
        crf: e.crf,
        gop: e.gop,
        preset: e.preset.clone(),
        jobs: c.jobs,
        progress: !c.quiet,
    }
}

/// Prints the reports and the bytes on disk; fails when anything failed.
fn finish(data: &Path, reports: &[Report]) -> anyhow::Result<()> {
    for r in reports {
        print!("{}", r.summary());
    }
    println!("on disk in {}:", data.display());
    for (label, bytes) in prep::disk_usage(data) {
        println!("  {label:<16} {:>12}  ({bytes} bytes)", prep::human_bytes(bytes));
    }
    let failed: usize = reports.iter().map(|r| r.failed.len()).sum();
    if failed > 0 {
        bail!("{failed} input(s) failed (listed above)");
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Split(a) => {
            let opts = a.split.options(&a.common)?;
            let r = split::split(&a.videos, &a.out, &opts).with_context(|| format!("splitting into {}", a.out.display()))?;
            finish(&a.out, &[r])
        }
        What::Transcode(a) => {
            let opts = transcode_options(a.resolution, &a.encode, &a.common);
            let r = transcode::transcode(&a.data, &opts).with_context(|| format!("transcoding {}", a.data.display()))?;
            finish(&a.data, &[r])
        }
        What::Frames(a) => {
            let opts = frames::FramesOptions { resolutions: a.resolution, jobs: a.common.jobs, progress: !a.common.quiet };
            let r = frames::frames(&a.data, &opts).with_context(|| format!("writing frames in {}", a.data.display()))?;
            finish(&a.data, &[r])
        }
        What::All(a) => {
            let opts = a.split.options(&a.common)?;
            let mut reports = vec![
                split::split(&a.videos, &a.out, &opts).with_context(|| format!("splitting into {}", a.out.display()))?,
            ];
            let resolutions = if a.resolution.is_empty() { Resolution::ALL.to_vec() } else { a.resolution };
            let topts = transcode_options(resolutions.clone(), &a.encode, &a.common);
            let manifest = prep::manifest::Manifest::load(&a.out)?;
            if manifest.scenes.is_empty() {
                return finish(&a.out, &reports);
            }
            reports.push(transcode::transcode(&a.out, &topts).with_context(|| format!("transcoding {}", a.out.display()))?);
            if a.frames {
                let fopts = frames::FramesOptions { resolutions, jobs: a.common.jobs, progress: !a.common.quiet };
                reports.push(frames::frames(&a.out, &fopts).with_context(|| format!("writing frames in {}", a.out.display()))?);
            }
            finish(&a.out, &reports)
        }
    }
}
