//! `vsr bench step`: one full training step (frozen FlowNetSD forward for the F-1 neighbours,
//! warp, VSRNet forward and backward, Adam) on device-resident synthetic input, with a per-stage
//! breakdown.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use super::BackendArgs;
use super::demo::parse_size;
use crate::backend::{BackendTask, VsrAutodiffBackend, dispatch};
use crate::checkpoint;
use crate::model::vsrnet::{down_up, mse};
use crate::model::{FlowEstimator, FlowNetSDConfig, VsrNetConfig};
use crate::precision::Precision;
use crate::train::{AdamSettings, Trainer};

#[derive(Debug, Clone, clap::Args)]
pub struct StepArgs {
    /// Windows per batch.
    #[arg(long, default_value_t = 3)]
    pub batch: usize,
    /// Frames per window.
    #[arg(long, default_value_t = 3)]
    pub frames: usize,
    /// Crop HxW (multiples of 64).
    #[arg(long, default_value = "512x960")]
    pub crop: String,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Untimed steps after the first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    /// FlowNetSD checkpoint (may be gzipped); random weights if omitted (same speed).
    #[arg(long)]
    pub flownet: Option<PathBuf>,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Result of `vsr bench step`.
#[derive(Debug, Serialize)]
pub struct StepResult {
    pub backend: String,
    pub precision: Precision,
    pub batch: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Process start to the end of the first step (model set-up, kernel compilation, autotune).
    pub first_step_s: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub iters: usize,
    /// Per-stage medians (each stage run alone, synchronised).
    pub stages_ms: Vec<(String, f64)>,
    /// Device memory in use after the timed steps (CUDA: the whole process, allocator pool
    /// included), bytes.
    pub device_memory_bytes: Option<u64>,
}

pub fn run(a: StepArgs, started: Instant) -> anyhow::Result<()> {
    let kind = a.backend.kind();
    let r = dispatch(kind, a.backend.device, Step(a.clone(), started))??;
    let mut table = String::from("| backend | precision | batch | crop | first step s | median ms | p90 ms | memory GiB |\n|---|---|---|---|---|---|---|---|\n");
    table += &format!(
        "| {} | {} | {} | {}x{} | {:.1} | {:.2} | {:.2} | {} |\n",
        r.backend,
        r.precision,
        r.batch,
        r.height,
        r.width,
        r.first_step_s,
        r.median_ms,
        r.p90_ms,
        r.device_memory_bytes.map(|b| format!("{:.2}", b as f64 / (1u64 << 30) as f64)).unwrap_or_else(|| "-".into())
    );
    table += "\n| stage | median ms |\n|---|---|\n";
    for (name, ms) in &r.stages_ms {
        table += &format!("| {name} | {ms:.2} |\n");
    }
    super::bench::report(&table, &r, a.json.as_deref())
}

struct Step(StepArgs, Instant);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl BackendTask for Step {
    type Output = anyhow::Result<StepResult>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let (a, started) = (self.0, self.1);
        let (h, w) = parse_size(&a.crop)?;
        let config = VsrNetConfig::new().with_frames(a.frames);
        config.validate()?;
        let tmp = tempfile::tempdir()?;
        let flownet = match &a.flownet {
            Some(p) => {
                let p = if p.extension().is_some_and(|e| e == "gz") { checkpoint::gunzip_to(p, tmp.path())? } else { p.clone() };
                checkpoint::load_flownet::<I<B>>(&p, &device).context("loading FlowNetSD")?
            }
            None => FlowNetSDConfig::new().init::<I<B>>(&device),
        };
        let mut trainer = Trainer::new(config.init::<B>(&device), Some(flownet), a.precision, AdamSettings::default());
        if a.precision == Precision::Fp16 {
            // Measure steady state, not the first steps' overflow skips from the 2^32 start.
            trainer.scaler.scale = 1024.0;
        }
        let x = Tensor::<B, 5>::random([a.batch, 3, a.frames, h, w], Distribution::Uniform(0.0, 255.0), &device);
        let step = |trainer: &mut Trainer<B>| -> anyhow::Result<f64> {
            let t = Instant::now();
            trainer.step(x.clone(), 1e-4)?; // reads the loss back: synchronised
            B::sync(&device)?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        step(&mut trainer)?;
        let first_step_s = started.elapsed().as_secs_f64();
        for _ in 0..a.warmup {
            step(&mut trainer)?;
        }
        let mut times: Vec<f64> = (0..a.iters.max(1)).map(|_| step(&mut trainer)).collect::<anyhow::Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        let device_memory_bytes = crate::backend::device_memory_in_use::<I<B>>(&device);

        // Per-stage breakdown: each stage alone, synchronised, on the same input.
        let n = a.iters.clamp(3, 10);
        let sync = || I::<B>::sync(&device);
        let time = |f: &mut dyn FnMut()| -> anyhow::Result<f64> {
            f();
            sync()?;
            let mut v = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                f();
                sync()?;
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(median(v))
        };
        let xi = x.clone().inner();
        let m = a.frames / 2;
        let net = trainer.flownet.clone().expect("flownet");
        let pairs = Tensor::cat(
            (0..a.frames)
                .filter(|&i| i != m)
                .map(|i| {
                    let f = |k: usize| xi.clone().narrow(2, k, 1).squeeze_dim::<4>(2);
                    Tensor::cat(vec![f(m), f(i)], 1) / 255.0
                })
                .collect(),
            0,
        );
        let mut stages = Vec::new();
        stages.push(("FlowNetSD forward (F-1 pairs)".to_string(), time(&mut || drop(net.0.flow2(pairs.clone())))?));
        let flow = Tensor::<I<B>, 4>::random([a.batch * (a.frames - 1), 2, h, w], Distribution::Uniform(-4.0, 4.0), &device);
        let img = Tensor::<I<B>, 4>::random([a.batch * (a.frames - 1), 1, h, w], Distribution::Uniform(0.0, 1.0), &device);
        stages.push(("warp forward".to_string(), time(&mut || drop(crate::model::warp::warp(img.clone(), flow.clone())))?));
        let degrade = xi.clone().reshape([a.batch * a.frames * 3, 1, h, w]);
        stages.push(("degradation (avg-pool + bilinear)".to_string(), time(&mut || drop(down_up(degrade.clone())))?));
        let model = trainer.model.clone();
        stages.push((
            "VSRNet forward + backward (no flow)".to_string(),
            time(&mut || {
                let out = model.forward(x.clone(), None);
                drop(mse(out.pred, out.target).backward());
            })?,
        ));
        let valid = trainer.model.valid();
        stages.push(("VSRNet forward, inference (no flow)".to_string(), time(&mut || drop(valid.forward(xi.clone(), None).pred))?));
        Ok(StepResult {
            backend: crate::backend::device_name::<I<B>>(&device),
            precision: a.precision,
            batch: a.batch,
            frames: a.frames,
            height: h,
            width: w,
            first_step_s,
            median_ms: pct(0.5),
            p90_ms: pct(0.9),
            iters: times.len(),
            stages_ms: stages,
            device_memory_bytes,
        })
    }
}
