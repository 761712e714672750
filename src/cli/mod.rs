//! The `vsr` program: one subcommand per stage of the pipeline.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::BackendKind;

pub mod bench;
mod bench_loaders;
#[cfg(feature = "video")]
mod bench_transcode;
pub mod demo;
pub mod info;
#[cfg(feature = "video")]
pub mod prep;

/// Video super-resolution (VSRNet + FlowNet2-SD) trained in pure Rust.
#[derive(Debug, Parser)]
#[command(name = "vsr", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Backends compiled in, devices found, versions.
    Info(info::Args),
    /// Super-resolve one frame of a video with VSRNet + FlowNetSD and write a PNG.
    Demo(demo::Args),
    /// Benchmarks (table and JSON).
    Bench(bench::Args),
    /// Data preparation: split sources into scenes, transcode them, write PNG frames.
    #[cfg(feature = "video")]
    Prep(prep::Args),
}

/// Parses the command line, runs, prints any error once with its causes, returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "video")]
        Command::Prep(args) => prep::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
