//! `vsr upscale`: 4x super-resolution of a video file. See [`crate::upscale`].

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;

use super::{BackendArgs, NetworkArgs};
use crate::backend::{BackendTask, VsrAutodiffBackend, dispatch};
use crate::upscale::{UpscaleOptions, UpscaleReport, upscale};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Input video (any FFmpeg-readable file with a video stream).
    pub input: PathBuf,
    /// Output video: .mp4, .m4v, .mov or .mkv.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// libx264 constant rate factor (lower: better quality, bigger file).
    #[arg(long, default_value_t = 18)]
    pub crf: u32,
    /// libx264 preset (ultrafast ... placebo).
    #[arg(long, default_value = "medium")]
    pub preset: String,
    /// Windows per batch through the network (default: about 8 million output pixels per
    /// batch, between 1 and 8).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Encoder threads (0: libx264's choice).
    #[arg(long, default_value_t = 0)]
    pub encoder_threads: usize,
    /// Replace the output if it exists.
    #[arg(short = 'y', long)]
    pub overwrite: bool,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.output.exists() && !args.overwrite {
        anyhow::bail!("{}: already exists (pass -y to replace it)", args.output.display());
    }
    let kind = args.backend.kind();
    let report = dispatch(kind, args.backend.device, Upscale(args.clone()))??;
    println!(
        "{} -> {}: {} frames, {}x{} -> {}x{}, {} audio stream(s) copied ({} packets), {:.1} s, {:.2} frames/s (backend {kind}, batch {})",
        report.input.display(),
        report.output.display(),
        report.frames,
        report.input_size.0,
        report.input_size.1,
        report.output_size.0,
        report.output_size.1,
        report.audio_streams,
        report.audio_packets,
        report.seconds,
        report.frames_per_second,
        report.batch,
    );
    if let Some(path) = &args.json {
        crate::checkpoint::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

struct Upscale(Args);

impl BackendTask for Upscale {
    type Output = anyhow::Result<UpscaleReport>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        if a.network.flownet == "none" && !a.quiet {
            eprintln!("warning: --flownet none: no motion compensation, neighbour frames are used unwarped");
        }
        let engine = a.network.engine::<<B as AutodiffBackend>::InnerBackend>(&device)?;
        let options = UpscaleOptions {
            crf: a.crf,
            preset: a.preset.clone(),
            batch: a.batch.unwrap_or(0),
            encoder_threads: a.encoder_threads,
            progress: !a.quiet,
        };
        upscale(&engine, &a.input, &a.output, &options)
            .with_context(|| format!("upscaling {} to {}", a.input.display(), a.output.display()))
    }
}
