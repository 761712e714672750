//! `vsr bench`: timings on the chosen backend, as a table and as JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use super::BackendArgs;
use super::demo::parse_size;
use crate::backend::{BackendTask, VsrAutodiffBackend, dispatch};
use crate::checkpoint;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// One FlowNetSD forward: cold (first call: kernel compilation, autotune) and warm.
    Flownet(FlownetArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct FlownetArgs {
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Input size HxW (multiples of 64).
    #[arg(long, default_value = "512x960")]
    pub size: String,
    /// Warm iterations timed after the first.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// FlowNetSD checkpoint (may be gzipped); random weights if omitted.
    #[arg(long)]
    pub flownet: Option<PathBuf>,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Result of `vsr bench flownet`.
#[derive(Debug, Serialize)]
pub struct FlownetResult {
    pub backend: String,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub load_s: f64,
    pub cold_ms: f64,
    pub warm_median_ms: f64,
    pub warm_p90_ms: f64,
    pub iters: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Flownet(a) => {
            let kind = a.backend.kind();
            let result = dispatch(kind, a.backend.device, Flownet(a.clone()))??;
            println!("| backend | batch | size | load s | cold ms | warm median ms | warm p90 ms |");
            println!("|---|---|---|---|---|---|---|");
            println!(
                "| {} | {} | {}x{} | {:.2} | {:.1} | {:.2} | {:.2} |",
                result.backend, result.batch, result.height, result.width, result.load_s, result.cold_ms,
                result.warm_median_ms, result.warm_p90_ms
            );
            let json = serde_json::to_string_pretty(&result)?;
            println!("{json}");
            if let Some(path) = a.json {
                crate::checkpoint::write_atomic(&path, json.as_bytes())?;
            }
            Ok(())
        }
    }
}

struct Flownet(FlownetArgs);

impl BackendTask for Flownet {
    type Output = anyhow::Result<FlownetResult>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let a = self.0;
        let (h, w) = parse_size(&a.size)?;
        let t = Instant::now();
        let tmp = tempfile::tempdir()?;
        let net = match &a.flownet {
            Some(p) => {
                let p = if p.extension().is_some_and(|e| e == "gz") { checkpoint::gunzip_to(p, tmp.path())? } else { p.clone() };
                checkpoint::load_flownet::<I<B>>(&p, &device).context("loading FlowNetSD")?
            }
            None => crate::model::FlowNetSDConfig::new().init::<I<B>>(&device),
        };
        let x = Tensor::<I<B>, 4>::random([a.batch, 6, h, w], Distribution::Uniform(-0.5, 0.5), &device);
        I::<B>::sync(&device)?;
        let load_s = t.elapsed().as_secs_f64();
        let time = |x: Tensor<I<B>, 4>| -> anyhow::Result<f64> {
            let t = Instant::now();
            let out = net.forward(x);
            I::<B>::sync(&device)?;
            drop(out);
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        let cold_ms = time(x.clone())?;
        let mut warm: Vec<f64> = (0..a.iters.max(1)).map(|_| time(x.clone())).collect::<anyhow::Result<_>>()?;
        warm.sort_by(f64::total_cmp);
        let pct = |p: f64| warm[((warm.len() - 1) as f64 * p).round() as usize];
        Ok(FlownetResult {
            backend: std::any::type_name::<I<B>>().split("::").last().unwrap_or("").to_string(),
            batch: a.batch,
            height: h,
            width: w,
            load_s,
            cold_ms,
            warm_median_ms: pct(0.5),
            warm_p90_ms: pct(0.9),
            iters: warm.len(),
        })
    }
}
