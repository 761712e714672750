//! `vsr bench step`: one full training step (frozen FlowNetSD forward for the F-1 neighbours,
//! warp, VSRNet forward and backward, Adam) on device-resident synthetic input, with a per-stage
//! breakdown.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
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
    #[command(flatten)]
    pub shape: BatchShape,
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
    /// Bracket the timed steps with CUDA's profiler start and stop, so that a profiler records
    /// those steps only: `nsys profile --capture-range=cudaProfilerApi ...` or `ncu
    /// --profile-from-start off ...` (CUDA and LibTorch backends).
    #[arg(long)]
    pub profile: bool,
    /// Data-parallel scaling: numbers of workers, e.g. 1,2,4: N workers on GPUs --device ..
    /// --device + N - 1 (--backend cpu: N workers sharing the CPU), --batch windows each
    /// (per GPU); each against one worker of the same batch in the same process: ms/iter,
    /// samples/s, scaling efficiency, all-reduce time.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub gpus: Vec<usize>,
    /// Data-parallel on exactly these GPUs (instead of --gpus), e.g. 0,2.
    #[arg(long, value_delimiter = ',', conflicts_with = "gpus")]
    pub devices: Option<Vec<usize>>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// The shape of a training batch: windows, frames, crop.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchShape {
    /// Windows per batch.
    #[arg(long, default_value_t = 3)]
    pub batch: usize,
    /// Frames per window.
    #[arg(long, default_value_t = 3)]
    pub frames: usize,
    /// Crop HxW (multiples of 64).
    #[arg(long, default_value = "512x960")]
    pub crop: String,
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
    /// Steps queued back to back as training runs them (`Trainer::queue`: the host reads each
    /// step's check during the next step, the GPU never drains): median and 90th percentile of
    /// the time between consecutive steps.
    pub median_ms: f64,
    pub p90_ms: f64,
    /// The same steps: their total time to the end of the last one (the device synchronised),
    /// divided by their number: what `torch_ref.py` reports.
    pub mean_ms: f64,
    /// Median of steps each run alone: queued, its outcome read, the device synchronised (the
    /// GPU idle at every step's start).
    pub synced_median_ms: f64,
    pub iters: usize,
    /// Per-stage medians (each stage run alone, synchronised).
    pub stages_ms: Vec<(String, f64)>,
    /// Per-stage medians of the host's time to queue the stage's work (the same runs).
    pub stages_host_ms: Vec<(String, f64)>,
    /// Device memory in use after the timed steps (CUDA: the whole process, allocator pool
    /// included), bytes.
    pub device_memory_bytes: Option<u64>,
    /// LibTorch on CUDA: the peak of bytes its allocator had allocated during the timed steps
    /// (PyTorch's `torch.cuda.max_memory_allocated`, which `torch_ref.py` reports), bytes. The
    /// CUDA backend: the peak of bytes in use in CubeCL's pool over one more step, checked at
    /// each allocation, plus cuDNN's workspace.
    pub peak_allocated_bytes: Option<u64>,
    /// The CUDA backend after the timed steps: CubeCL's memory pool of the stream the steps ran
    /// on (bytes in use, bytes reserved from the driver, which is what its peak needed plus
    /// fragmentation) and cuDNN's workspace: the parts of `device_memory_bytes`.
    pub cuda_memory: Option<crate::backend::CudaMemory>,
}

pub fn run(a: StepArgs, started: Instant) -> anyhow::Result<()> {
    let kind = a.backend.kind();
    let counts: Vec<usize> = match &a.devices {
        Some(list) => vec![1, list.len()],
        None => a.gpus.clone(),
    };
    if counts.contains(&0) {
        anyhow::bail!("--gpus: every count must be at least 1");
    }
    if counts.iter().any(|&n| n > 1) {
        let devices = match &a.devices {
            Some(list) => list.clone(),
            None => (a.backend.device..a.backend.device + counts.iter().copied().max().unwrap_or(1)).collect(),
        };
        return run_parallel(a, devices, counts);
    }
    let r = dispatch(kind, a.backend.device, Step(a.clone(), started))??;
    let gib = |b: Option<u64>| b.map(|b| format!("{:.2}", b as f64 / (1u64 << 30) as f64)).unwrap_or_else(|| "-".into());
    let mut table = String::from(
        "| backend | precision | batch | crop | first step s | median ms | p90 ms | mean ms | synced ms | memory GiB | peak allocated GiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    table += &format!(
        "| {} | {} | {} | {}x{} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
        r.backend,
        r.precision,
        r.batch,
        r.height,
        r.width,
        r.first_step_s,
        r.median_ms,
        r.p90_ms,
        r.mean_ms,
        r.synced_median_ms,
        gib(r.device_memory_bytes),
        gib(r.peak_allocated_bytes),
    );
    if let Some(m) = r.cuda_memory {
        let g = |b: u64| b as f64 / (1u64 << 30) as f64;
        table += &format!(
            "\nCUDA memory after the steps: CubeCL's pool {:.2} GiB reserved ({:.2} in use), cuDNN's workspace {:.2} GiB\n",
            g(m.reserved),
            g(m.in_use),
            g(m.workspace)
        );
    }
    table += "\nmedian, p90, mean: steps queued back to back as training runs them (mean: to the end of the last, as \
              torch_ref.py measures); synced: each step alone, its outcome read and the device synchronised\n";
    table += "\n| stage | median ms | host ms |\n|---|---|---|\n";
    for ((name, ms), (_, host)) in r.stages_ms.iter().zip(&r.stages_host_ms) {
        table += &format!("| {name} | {ms:.2} | {host:.2} |\n");
    }
    super::bench::report(&table, &r, a.json.as_deref())
}

struct Step(StepArgs, Instant);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `--crop`'s height and width: positive multiples of 64, as FlowNetSD needs (a clear error here,
/// not a failed concatenation deep in its pyramid).
fn crop_size(crop: &str) -> anyhow::Result<(usize, usize)> {
    let m = crate::model::vsrnet::SIZE_MULTIPLE;
    let (h, w) = parse_size(crop)?;
    anyhow::ensure!(
        h > 0 && w > 0 && h % m == 0 && w % m == 0,
        "--crop {h}x{w}: height and width must be positive multiples of {m} (FlowNetSD needs it)"
    );
    Ok((h, w))
}

/// Gradients (small random values) for every float parameter of `model`, on its inner backend.
fn gradients_like<B: VsrAutodiffBackend>(model: &crate::model::VsrNet<B>) -> GradientsParams {
    struct Like<'a>(&'a mut GradientsParams);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Like<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let p = param.val().inner();
            let g = Tensor::<B::InnerBackend, D>::random(p.shape(), Distribution::Normal(0.0, 1e-3), &p.device());
            self.0.register::<B::InnerBackend, D>(param.id, g);
        }
    }
    let mut grads = GradientsParams::new();
    model.visit(&mut Like(&mut grads));
    grads
}

/// A new [`GradientsParams`] holding `template`'s gradients of `model`'s parameters (the same
/// tensors: nothing is computed).
fn copy_gradients<B: VsrAutodiffBackend>(model: &crate::model::VsrNet<B>, template: &GradientsParams) -> GradientsParams {
    struct Copy<'a>(&'a GradientsParams, GradientsParams);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Copy<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.0.get::<B::InnerBackend, D>(param.id) {
                self.1.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    let mut copy = Copy(template, GradientsParams::new());
    model.visit(&mut copy);
    copy.1
}

/// Median wall time of `f` over `iters` calls (at least one), each synchronised with `device`,
/// after one untimed call; ms.
pub(super) fn time_synced<B: Backend>(device: &B::Device, iters: usize, f: &mut dyn FnMut()) -> anyhow::Result<f64> {
    Ok(time_stage::<B>(device, iters, f)?.0)
}

/// Medians of `f`'s time to the device's synchronisation and of its host time alone (until `f`
/// returns, its work queued): where the two are close the stage is bound by the host's
/// queueing, not by the GPU.
fn time_stage<B: Backend>(device: &B::Device, iters: usize, f: &mut dyn FnMut()) -> anyhow::Result<(f64, f64)> {
    f();
    B::sync(device)?;
    let (mut v, mut host) = (Vec::new(), Vec::new());
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f();
        host.push(t.elapsed().as_secs_f64() * 1e3);
        B::sync(device)?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(v), median(host)))
}

impl BackendTask for Step {
    type Output = anyhow::Result<StepResult>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let (a, started) = (self.0, self.1);
        let (h, w) = crop_size(&a.shape.crop)?;
        let config = VsrNetConfig::new().with_frames(a.shape.frames);
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
        let x = Tensor::<B, 5>::random([a.shape.batch, 3, a.shape.frames, h, w], Distribution::Uniform(0.0, 255.0), &device);
        // One step alone: its outcome read, the device synchronised.
        let step = |trainer: &mut Trainer<B>| -> anyhow::Result<f64> {
            let t = Instant::now();
            trainer.step(x.clone(), 1e-4)?;
            B::sync(&device)?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        step(&mut trainer)?;
        let first_step_s = started.elapsed().as_secs_f64();
        for _ in 0..a.warmup {
            step(&mut trainer)?;
        }
        let peak = |reset| crate::backend::tch_peak_allocated(a.backend.kind(), a.backend.device, reset);
        peak(true);
        if a.profile {
            crate::backend::cuda_profiler(a.backend.device, true)?;
        }
        // Back to back, as training queues them.
        let iters = a.iters.max(1);
        let mut times = Vec::with_capacity(iters);
        let start = Instant::now();
        let mut last = start;
        for _ in 0..iters {
            trainer.queue(x.clone(), 1e-4)?;
            let now = Instant::now();
            times.push((now - last).as_secs_f64() * 1e3);
            last = now;
        }
        trainer.settle()?;
        B::sync(&device)?;
        let mean_ms = start.elapsed().as_secs_f64() * 1e3 / iters as f64;
        if a.profile {
            crate::backend::cuda_profiler(a.backend.device, false)?;
        }
        let peak_allocated_bytes = peak(false);
        let synced_median_ms = median((0..iters).map(|_| step(&mut trainer)).collect::<anyhow::Result<_>>()?);
        // The CUDA backend: its pool's peak over one more step, tracked (untimed: it slows
        // allocations).
        let (tracked, cuda_peak) = crate::backend::cubecl_peak_in_use(a.backend.kind(), a.backend.device, || step(&mut trainer));
        tracked?;
        let peak_allocated_bytes = peak_allocated_bytes.or(cuda_peak);
        times.sort_by(f64::total_cmp);
        let cuda_memory = crate::backend::cubecl_cuda_memory(a.backend.kind(), a.backend.device);
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        let device_memory_bytes = crate::backend::device_memory_in_use::<I<B>>(&device);

        // Per-stage breakdown: each stage alone, synchronised, on the same input.
        let n = a.iters.clamp(3, 10);
        let time = |f: &mut dyn FnMut()| time_stage::<I<B>>(&device, n, f);
        let xi = x.clone().inner();
        let m = a.shape.frames / 2;
        let net = trainer.flownet.clone().expect("flownet");
        let pairs = Tensor::cat(
            (0..a.shape.frames)
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
        let flow = Tensor::<I<B>, 4>::random([a.shape.batch * (a.shape.frames - 1), 2, h, w], Distribution::Uniform(-4.0, 4.0), &device);
        let img = Tensor::<I<B>, 4>::random([a.shape.batch * (a.shape.frames - 1), 1, h, w], Distribution::Uniform(0.0, 1.0), &device);
        stages.push(("warp forward".to_string(), time(&mut || drop(crate::model::warp::warp(img.clone(), flow.clone())))?));
        let degrade = xi.clone().reshape([a.shape.batch * a.shape.frames * 3, 1, h, w]);
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
        // Adam's update of VSRNet's parameters alone, from gradients shaped like them.
        let template = gradients_like::<B>(&trainer.model);
        stages.push((
            "Adam update".to_string(),
            time(&mut || {
                let grads = copy_gradients::<B>(&trainer.model, &template);
                trainer.model = trainer.optim.step(1e-4, trainer.model.clone(), grads);
            })?,
        ));
        Ok(StepResult {
            backend: crate::backend::device_name::<I<B>>(&device),
            precision: a.precision,
            batch: a.shape.batch,
            frames: a.shape.frames,
            height: h,
            width: w,
            first_step_s,
            median_ms: pct(0.5),
            p90_ms: pct(0.9),
            mean_ms,
            synced_median_ms,
            iters: times.len(),
            stages_host_ms: stages.iter().map(|(s, (_, host))| (s.clone(), *host)).collect(),
            stages_ms: stages.into_iter().map(|(s, (ms, _))| (s, ms)).collect(),
            device_memory_bytes,
            peak_allocated_bytes,
            cuda_memory,
        })
    }
}

/// Result of `vsr bench step --gpus 1,2,...`.
#[derive(Debug, Serialize)]
pub struct ScalingResult {
    pub backend: String,
    pub precision: Precision,
    /// Windows per worker (per GPU).
    pub batch_per_gpu: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub iters: usize,
    /// Floats in the all-reduced bucket (gradients, loss, flags).
    pub bucket_floats: usize,
    /// One row per number of workers; the row of 1 is the single-device path (no collective)
    /// on the first device.
    pub rows: Vec<ScalingRow>,
}

#[derive(Debug, Serialize)]
pub struct ScalingRow {
    pub gpus: usize,
    /// Device indices (the CPU backend: all the same CPU).
    pub devices: Vec<usize>,
    /// Median step time of worker 0 (every worker steps in lockstep).
    pub median_ms: f64,
    pub p90_ms: f64,
    /// gpus x batch_per_gpu / median.
    pub samples_per_s: f64,
    /// samples_per_s / (gpus x the 1-GPU row's samples_per_s).
    pub scaling_efficiency: f64,
    /// Median time inside the all-reduce call during the steps (including waiting for the
    /// slowest worker), ms; None for 1.
    pub allreduce_in_step_ms: Option<f64>,
    /// Median time of the all-reduce of a bucket alone (workers already in step), ms.
    pub allreduce_alone_ms: Option<f64>,
}

fn percentiles(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.9))
}

fn run_parallel(a: StepArgs, devices: Vec<usize>, counts: Vec<usize>) -> anyhow::Result<()> {
    let kind = a.backend.kind();
    let r = crate::backend::dispatch_devices(kind, &devices, Scaling(a.clone(), counts))??;
    let mut table = String::from(
        "| backend | precision | batch/GPU | crop | GPUs | ms/iter | p90 ms | samples/s | scaling efficiency | all-reduce in step ms | all-reduce alone ms |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    for row in &r.rows {
        table += &format!(
            "| {} | {} | {} | {}x{} | {} | {:.2} | {:.2} | {:.2} | {:.1}% | {} | {} |\n",
            r.backend,
            r.precision,
            r.batch_per_gpu,
            r.height,
            r.width,
            row.gpus,
            row.median_ms,
            row.p90_ms,
            row.samples_per_s,
            row.scaling_efficiency * 100.0,
            ms(row.allreduce_in_step_ms),
            ms(row.allreduce_alone_ms),
        );
    }
    super::bench::report(&table, &r, a.json.as_deref())
}

/// The scaling bench: `.1` numbers of workers on the first devices of those given.
struct Scaling(StepArgs, Vec<usize>);

/// A trainer with random (or given, already decompressed) FlowNetSD weights, fp16 started at a
/// steady loss scale.
fn bench_trainer<B: VsrAutodiffBackend>(a: &StepArgs, flownet: Option<&std::path::Path>, device: &B::Device) -> anyhow::Result<Trainer<B>> {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    let config = VsrNetConfig::new().with_frames(a.shape.frames);
    config.validate()?;
    let flownet = match flownet {
        Some(p) => checkpoint::load_flownet::<I<B>>(p, device).context("loading FlowNetSD")?,
        None => FlowNetSDConfig::new().init::<I<B>>(device),
    };
    let mut trainer = Trainer::new(config.init::<B>(device), Some(flownet), a.precision, AdamSettings::default());
    if a.precision == Precision::Fp16 {
        trainer.scaler.scale = 1024.0;
    }
    Ok(trainer)
}

/// Per worker: step times, all-reduce waits in the steps, all-reduce alone, bucket size.
type WorkerTimes = (Vec<f64>, Vec<f64>, Vec<f64>, usize);

impl crate::backend::MultiDeviceTask for Scaling {
    type Output = anyhow::Result<ScalingResult>;
    fn run<B: VsrAutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        use crate::train::collective::{Cluster, GradSync};
        use crate::train::parallel::{WorkerInput, run_workers};
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let (a, mut counts) = (self.0, self.1);
        counts.sort_unstable();
        counts.dedup();
        let (h, w) = crop_size(&a.shape.crop)?;
        let tmp = tempfile::tempdir()?;
        let flownet = match &a.flownet {
            Some(p) if p.extension().is_some_and(|e| e == "gz") => Some(checkpoint::gunzip_to(p, tmp.path())?),
            Some(p) => Some(p.clone()),
            None => None,
        };
        let indices: Vec<usize> = match &a.devices {
            Some(list) => list.clone(),
            None => (a.backend.device..a.backend.device + devices.len()).collect(),
        };
        let steps = 1 + a.warmup + a.iters.max(1);

        // One worker: the single-device path.
        let one = {
            let device = devices[0].clone();
            let mut trainer = bench_trainer::<B>(&a, flownet.as_deref(), &device)?;
            let x = Tensor::<B, 5>::random([a.shape.batch, 3, a.shape.frames, h, w], Distribution::Uniform(0.0, 255.0), &device);
            let mut times = Vec::new();
            for i in 0..steps {
                let t = Instant::now();
                trainer.step(x.clone(), 1e-4)?;
                B::sync(&device)?;
                if i > a.warmup {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            percentiles(times)
        };
        let one_rate = a.shape.batch as f64 * 1e3 / one.0;
        let mut rows = vec![ScalingRow {
            gpus: 1,
            devices: vec![indices[0]],
            median_ms: one.0,
            p90_ms: one.1,
            samples_per_s: one_rate,
            scaling_efficiency: 1.0,
            allreduce_in_step_ms: None,
            allreduce_alone_ms: None,
        }];
        let mut bucket_floats = 0;
        for &n in counts.iter().filter(|&&n| n > 1) {
            let inputs = devices[..n]
                .iter()
                .enumerate()
                .map(|(i, d)| WorkerInput { rank: i, name: format!("{d:?}"), input: d.clone() })
                .collect();
            let stop = std::sync::atomic::AtomicBool::new(false);
            let (args, flownet) = (a.clone(), flownet.clone());
            let per_worker = run_workers(
                inputs,
                crate::train::run::DEFAULT_TIMEOUT,
                &stop,
                crate::train::collective::reset::<I<B>>,
                move |local, device: B::Device, progress| -> crate::error::Result<WorkerTimes> {
                    let err = |e: anyhow::Error| crate::error::Error::Invalid(format!("{e:#}"));
                    let mut trainer = bench_trainer::<B>(&args, flownet.as_deref(), &device).map_err(err)?;
                    let sync = GradSync::join::<I<B>>(local, n, n, &device, &Cluster::single(), Some((progress, local)))?;
                    trainer.sync = Some(sync);
                    let x = Tensor::<B, 5>::random([args.shape.batch, 3, args.shape.frames, h, w], Distribution::Uniform(0.0, 255.0), &device);
                    let (mut times, mut waits) = (Vec::new(), Vec::new());
                    for i in 0..steps {
                        let t = Instant::now();
                        trainer.step(x.clone(), 1e-4)?;
                        B::sync(&device).map_err(|e| crate::error::Error::Invalid(format!("{e:?}")))?;
                        if i > args.warmup {
                            times.push(t.elapsed().as_secs_f64() * 1e3);
                            waits.push(trainer.sync.as_ref().expect("synced").last_wait.as_secs_f64() * 1e3);
                        }
                    }
                    // The all-reduce alone, on a bucket of the gradients' size (+ the loss).
                    let bucket = burn::module::Module::num_params(&trainer.model) + 1;
                    let mut sync = trainer.sync.take().expect("synced");
                    let t = Tensor::<I<B>, 1>::random([bucket], Distribution::Default, &device);
                    let mut alone = Vec::new();
                    for i in 0..args.iters.max(1) + 3 {
                        let t0 = Instant::now();
                        let r = sync.all_reduce_mean(t.clone())?;
                        drop(r.into_data());
                        if i >= 3 {
                            alone.push(t0.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    sync.leave::<I<B>>();
                    Ok((times, waits, alone, bucket))
                },
            )?;
            let (times, waits, alone, bucket) = per_worker.into_iter().next().expect("a worker");
            bucket_floats = bucket;
            let (median_ms, p90_ms) = percentiles(times);
            let samples_per_s = (n * a.shape.batch) as f64 * 1e3 / median_ms;
            rows.push(ScalingRow {
                gpus: n,
                devices: indices[..n].to_vec(),
                median_ms,
                p90_ms,
                samples_per_s,
                scaling_efficiency: samples_per_s / (n as f64 * one_rate),
                allreduce_in_step_ms: Some(median(waits)),
                allreduce_alone_ms: Some(median(alone)),
            });
        }
        Ok(ScalingResult {
            backend: crate::backend::device_name::<I<B>>(&devices[0]),
            precision: a.precision,
            batch_per_gpu: a.shape.batch,
            frames: a.shape.frames,
            height: h,
            width: w,
            iters: a.iters.max(1),
            bucket_floats,
            rows,
        })
    }
}
