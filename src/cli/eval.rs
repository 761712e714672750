//! `vsr eval`: PSNR and SSIM of VSRNet on benchmark clips. See [`crate::eval::benchmark`].

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;

use super::{BackendArgs, NetworkArgs};
use crate::backend::{BackendTask, VsrAutodiffBackend, dispatch};
use crate::eval::benchmark::{Degradation, EvalOptions, EvalReport, evaluate, find_clips};
use crate::model::vsrnet::SCALE;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Ground truth: one folder of PNG frames per clip (e.g. Vid4's `GT`), or one such folder.
    #[arg(long)]
    pub gt: PathBuf,
    /// Low-resolution frames to use instead of degrading the ground truth (e.g. Vid4's `BIx4`),
    /// with the same clip folders and frame names.
    #[arg(long)]
    pub lr: Option<PathBuf>,
    /// How the low-resolution input is made from the ground truth.
    #[arg(long, value_enum, default_value_t = Degradation::Bicubic, conflicts_with = "lr")]
    pub degradation: Degradation,
    /// Pixels cropped from every side before scoring (default: the scale, 4).
    #[arg(long, default_value_t = SCALE)]
    pub crop_border: usize,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Windows per batch through the network.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Write the super-resolved frames here (<dir>/<clip>/<frame>.png).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Also write the results (per frame too) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let kind = args.backend.kind();
    let report = dispatch(kind, args.backend.device, Eval(args.clone()))??;
    println!(
        "{} ({} degradation{}, crop {}, F = {}, flow: {}, backend {kind})",
        args.gt.display(),
        if args.lr.is_some() { "given" } else { degradation_name(report.degradation) },
        args.lr.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default(),
        report.crop_border,
        report.window_frames,
        if report.flownet { "FlowNetSD" } else { "none" },
    );
    print!("{}", report.table());
    if let Some(path) = &args.json {
        crate::checkpoint::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn degradation_name(d: Degradation) -> &'static str {
    match d {
        Degradation::Bicubic => "bicubic (MATLAB imresize)",
        Degradation::Avgpool => "4x4 average pooling",
    }
}

struct Eval(Args);

impl BackendTask for Eval {
    type Output = anyhow::Result<EvalReport>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let clips = find_clips(&a.gt)?;
        let engine = a.network.engine::<<B as AutodiffBackend>::InnerBackend>(&device)?;
        let options = EvalOptions {
            degradation: a.degradation,
            crop_border: a.crop_border,
            batch: a.batch,
            lr: a.lr.clone(),
            save: a.save.clone(),
        };
        let total: usize = clips.iter().map(|c| c.frames.len()).sum();
        #[cfg(feature = "video")]
        let progress = crate::prep::Progress::new("eval", clips.len(), total as u64, !a.quiet)
            .with_plain_lines(std::time::Duration::from_secs(10));
        let report = evaluate(&engine, &clips, &options, |clip, done, frames| {
            #[cfg(feature = "video")]
            {
                progress.frames(1);
                if done == frames {
                    progress.item(clip);
                }
            }
            #[cfg(not(feature = "video"))]
            if done == frames && !a.quiet {
                eprintln!("eval: {clip} done ({frames} frames of {total})");
            }
        })
        .with_context(|| format!("evaluating on {}", a.gt.display()))?;
        #[cfg(feature = "video")]
        progress.finish();
        Ok(report)
    }
}
