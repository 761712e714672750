//! The `vsr` program: one subcommand per stage of the pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::FloatDType;
use clap::{Parser, Subcommand};

use crate::backend::{BackendKind, VsrBackend};
use crate::checkpoint;
use crate::infer::{Engine, EngineOptions};
use crate::model::VsrNetConfig;

pub mod bench;
mod bench_loaders;
mod bench_conv;
mod bench_step;
#[cfg(feature = "video")]
mod bench_transcode;
mod bench_upscale;
pub mod demo;
pub mod eval;
pub mod info;
mod logging;
#[cfg(feature = "profile")]
mod profile;
#[cfg(feature = "video")]
pub mod prep;
#[cfg(feature = "video")]
pub mod upscale;
pub mod runs;
pub mod train;

/// Video super-resolution (VSRNet + FlowNet2-SD) trained in pure Rust.
#[derive(Debug, Parser)]
#[command(name = "vsr", version, about, propagate_version = true, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where GPU backends keep tuned kernel choices and compiled kernels between runs
    /// [default: ~/.cache/vsr/cubecl].
    #[arg(long, global = true, env = "VSR_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
}

/// Backend selection shared by every command that computes.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Backend to compute on (default: cuda if a GPU is usable, else cpu).
    #[arg(long, env = "VSR_BACKEND", value_enum)]
    pub backend: Option<BackendKind>,
    /// GPU index for GPU backends.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
}

impl BackendArgs {
    /// The chosen backend, or the best one this machine offers.
    pub fn kind(&self) -> BackendKind {
        self.backend.unwrap_or_else(|| {
            #[cfg(feature = "cuda")]
            if crate::backend::cuda_device_count().is_ok() {
                return BackendKind::Cuda;
            }
            BackendKind::Cpu
        })
    }
}

/// The networks of a super-resolution run, shared by `upscale`, `eval` and `bench upscale`.
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkArgs {
    /// VSRNet weights (PyTorch state dict, safetensors or Burn record).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// FlowNetSD checkpoint (`FlowNet2-SD_checkpoint.pth.tar`, may be gzipped), or `none` for no
    /// motion compensation (neighbour frames used unwarped).
    #[arg(long)]
    pub flownet: String,
    /// Frames per window (odd), as the checkpoint was trained with.
    #[arg(long, default_value_t = 3)]
    pub frames: usize,
    /// Side of the tiles the fusion layers run on, in output pixels (0: whole frames). Bounds
    /// memory for large frames; the result is the same.
    #[arg(long, default_value_t = 512)]
    pub tile: usize,
    /// Storage type of weights and activations.
    #[arg(long, value_enum, default_value_t = bench::Precision::Fp32)]
    pub precision: bench::Precision,
}

impl NetworkArgs {
    /// Loads both networks onto `device` as an inference [`Engine`].
    pub fn engine<B: VsrBackend>(&self, device: &B::Device) -> anyhow::Result<Engine<B>> {
        let config = VsrNetConfig::new().with_frames(self.frames);
        config.validate()?;
        let net = checkpoint::load_vsrnet::<B>(&self.checkpoint, &config, device)
            .with_context(|| format!("loading VSRNet weights from {}", self.checkpoint.display()))?;
        let flownet = match self.flownet.as_str() {
            "none" => None,
            path => {
                let tmp = tempfile::tempdir()?;
                let mut path = PathBuf::from(path);
                if path.extension().is_some_and(|e| e == "gz") {
                    path = checkpoint::gunzip_to(&path, tmp.path())?;
                }
                Some(checkpoint::load_flownet::<B>(&path, device).context("loading FlowNetSD")?)
            }
        };
        let dtype = match self.precision {
            bench::Precision::Fp32 => FloatDType::F32,
            bench::Precision::Fp16 => FloatDType::F16,
        };
        Ok(Engine::new(net, flownet, device.clone(), EngineOptions { tile: self.tile, dtype }))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Backends compiled in, devices found, versions.
    Info(info::Args),
    /// Super-resolve one frame of a video with VSRNet + FlowNetSD and write a PNG.
    Demo(demo::Args),
    /// 4x super-resolution of a whole video (audio copied, timestamps kept).
    #[cfg(feature = "video")]
    Upscale(upscale::Args),
    /// PSNR/SSIM on a benchmark of PNG clips (e.g. Vid4), beside bicubic and bilinear.
    Eval(eval::Args),
    /// Benchmarks (table and JSON).
    Bench(bench::Args),
    /// Data preparation: split sources into scenes, transcode them, write PNG frames.
    #[cfg(feature = "video")]
    Prep(prep::Args),
    /// Train VSRNet (frozen FlowNetSD motion compensation) on prepared data, or resume a run.
    Train(train::Args),
    /// Training curves of runs (their TensorBoard files) as a PNG chart.
    Plot(runs::PlotArgs),
    /// Compare two runs' logged values: the same run, bit for bit (or within a tolerance)?
    Compare(runs::CompareArgs),
}

static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// When this process started (the first call of [`main`]), for launch-to-first-step timings.
pub fn process_start() -> std::time::Instant {
    *PROCESS_START.get_or_init(std::time::Instant::now)
}

/// Parses the command line, runs, prints any error once with its causes, returns the exit code.
pub fn main() -> ExitCode {
    process_start();
    logging::init();
    let cli = Cli::parse();
    crate::backend::set_kernel_cache_dir(cli.cache_dir.clone().or_else(crate::backend::default_kernel_cache_dir));
    #[cfg(not(feature = "profile"))]
    if std::env::var_os("VSR_PROFILE").is_some_and(|v| !v.is_empty()) {
        eprintln!("warning: VSR_PROFILE is set, but this build has no `profile` feature: no profile is written");
    }
    #[cfg(feature = "profile")]
    if let Err(e) = profile::start() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Info(args) => info::run(args),
        Command::Demo(args) => demo::run(args),
        #[cfg(feature = "video")]
        Command::Upscale(args) => upscale::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "video")]
        Command::Prep(args) => prep::run(args),
        Command::Train(args) => train::run(args),
        Command::Plot(args) => runs::plot(args),
        Command::Compare(args) => runs::compare(args),
    };
    #[cfg(feature = "profile")]
    let result = result.and(profile::finish());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
