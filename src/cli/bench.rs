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
    /// The warp (our kernel on CubeCL backends) against Burn's tensor-op warp, forward and
    /// forward+backward, with achieved memory bandwidth.
    Warp(WarpArgs),
    /// `vsr prep transcode`'s encoder against the `ffmpeg` program on the same clip and the same
    /// settings (both single-threaded): frames per second per core.
    #[cfg(feature = "video")]
    Transcode(super::bench_transcode::TranscodeBenchArgs),
    /// The video loader against the PNG loader on the same data and sampling, at a simulated
    /// training step: bytes on disk, data wait per iteration, sequences/s, CPU cores, peak RSS.
    Loaders(super::bench_loaders::LoadersBenchArgs),
    /// `vsr upscale`'s super-resolution throughput (frames per second) for given input sizes, on
    /// synthetic or real frames: batches of windows through VSRNet (+ FlowNetSD), transfers
    /// included, decoding and encoding excluded.
    Upscale(super::bench_upscale::UpscaleBenchArgs),
    /// A full training step (frozen FlowNetSD, warp, VSRNet forward and backward, Adam) on
    /// device-resident synthetic input: time to the first step, warm ms/iter, per-stage times,
    /// device memory.
    Step(super::bench_step::StepArgs),
    /// VSRNet's convolutions at training shapes, pass by pass (forward, input gradient, weight
    /// gradient two ways, the training convolution's forward + backward).
    Conv(super::bench_conv::ConvArgs),
}

/// Prints a benchmark's Markdown table and its JSON, and writes the JSON to `json` if given.
pub fn report<T: Serialize>(table: &str, result: &T, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!("{table}");
    let text = serde_json::to_string_pretty(result)?;
    println!("{text}");
    if let Some(path) = json {
        crate::checkpoint::write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct WarpArgs {
    /// Image shapes BxCxHxW (comma-separated).
    #[arg(long, default_value = "6x1x512x960,14x1x720x1280")]
    pub shapes: String,
    /// Storage type.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Timed calls, queued back to back as in a training step (per call: median of 5 groups).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Memory bandwidth to compare against, GB/s (H100: about 3000 measured for a copy).
    #[arg(long, default_value_t = 3000.0)]
    pub roofline_gbps: f64,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

pub use crate::precision::Precision;

/// One row of `vsr bench warp`.
#[derive(Debug, Serialize)]
pub struct WarpRow {
    pub backend: String,
    pub shape: [usize; 4],
    pub precision: Precision,
    pub kernel_forward_ms: f64,
    pub kernel_forward_backward_ms: f64,
    pub burn_forward_ms: f64,
    pub burn_forward_backward_ms: f64,
    pub kernel_forward_gbps: f64,
    pub kernel_forward_backward_gbps: f64,
    pub forward_roofline_pct: f64,
    pub forward_backward_roofline_pct: f64,
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
        #[cfg(feature = "video")]
        What::Transcode(a) => super::bench_transcode::run(a),
        What::Loaders(a) => super::bench_loaders::run(a),
        What::Upscale(a) => super::bench_upscale::run(a),
        What::Step(a) => super::bench_step::run(a, super::process_start()),
        What::Conv(a) => super::bench_conv::run(a),
        What::Warp(a) => {
            let kind = a.backend.kind();
            let rows = dispatch(kind, a.backend.device, Warp(a.clone()))??;
            let mut table = String::from("| shape | precision | kernel fwd ms | kernel fwd+bwd ms | Burn ops fwd ms | Burn ops fwd+bwd ms | fwd GB/s (% roof) | fwd+bwd GB/s (% roof) |\n|---|---|---|---|---|---|---|---|\n");
            for r in &rows {
                let [b, c, h, w] = r.shape;
                table += &format!(
                    "| {b}x{c}x{h}x{w} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} ({:.0}%) | {:.0} ({:.0}%) |\n",
                    r.precision, r.kernel_forward_ms, r.kernel_forward_backward_ms, r.burn_forward_ms,
                    r.burn_forward_backward_ms, r.kernel_forward_gbps, r.forward_roofline_pct,
                    r.kernel_forward_backward_gbps, r.forward_backward_roofline_pct
                );
            }
            report(&table, &rows, a.json.as_deref())
        }
        What::Flownet(a) => {
            let kind = a.backend.kind();
            let r = dispatch(kind, a.backend.device, Flownet(a.clone()))??;
            let table = format!(
                "| backend | batch | size | load s | cold ms | warm median ms | warm p90 ms |\n|---|---|---|---|---|---|---|\n| {} | {} | {}x{} | {:.2} | {:.1} | {:.2} | {:.2} |",
                r.backend, r.batch, r.height, r.width, r.load_s, r.cold_ms, r.warm_median_ms, r.warm_p90_ms
            );
            report(&table, &r, a.json.as_deref())
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
            backend: crate::backend::name::<I<B>>(),
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

struct Warp(WarpArgs);

/// Parses `BxCxHxW`.
fn parse_shape(s: &str) -> anyhow::Result<[usize; 4]> {
    let v: Vec<usize> = s.split(['x', 'X']).map(|p| p.trim().parse()).collect::<Result<_, _>>()
        .with_context(|| format!("shape `{s}` is not BxCxHxW"))?;
    v.try_into().map_err(|_| anyhow::anyhow!("shape `{s}` is not BxCxHxW"))
}

impl BackendTask for Warp {
    type Output = anyhow::Result<Vec<WarpRow>>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let dtype = a.precision.dtype();
        let mut rows = Vec::new();
        for shape in a.shapes.split(',') {
            let shape = parse_shape(shape)?;
            let r = vsr_kernels::bench::bench_warp::<<B as AutodiffBackend>::InnerBackend>(&device, shape, dtype, a.warmup, a.runs);
            eprintln!("{r}");
            rows.push(WarpRow {
                backend: crate::backend::name::<<B as AutodiffBackend>::InnerBackend>(),
                shape,
                precision: a.precision,
                kernel_forward_ms: r.kernel_forward_ms,
                kernel_forward_backward_ms: r.kernel_forward_backward_ms,
                burn_forward_ms: r.reference_forward_ms,
                burn_forward_backward_ms: r.reference_forward_backward_ms,
                kernel_forward_gbps: r.kernel_forward_gbps(),
                kernel_forward_backward_gbps: r.kernel_forward_backward_gbps(),
                forward_roofline_pct: 100.0 * r.kernel_forward_gbps() / a.roofline_gbps,
                forward_backward_roofline_pct: 100.0 * r.kernel_forward_backward_gbps() / a.roofline_gbps,
            });
        }
        Ok(rows)
    }
}
