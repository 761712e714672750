//! `vsr bench loaders`: the original's comparison of the video loader with the PNG loader, on the
//! same data, the same sampling and a simulated training step (the consumer sleeps `--step-ms`
//! after each batch): bytes on disk, data wait per iteration (mean, p99), sequences per second,
//! CPU cores busy, peak resident memory; and why, for the video loader: read time and frames
//! decoded per window, seeks and decoder opens. The video loader runs with each decoder asked
//! for: FFmpeg on the CPU, and NVDEC on `--gpu` (by default where this machine has it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::data::{CropMode, Dataset, DecoderChoice, Loader, LoaderConfig, LoaderState, SourceKind, Split, VideoDecoder};

#[derive(Debug, Clone, clap::Args)]
pub struct LoadersBenchArgs {
    /// Data directory (`vsr prep all <videos> --out <dir> --frames`).
    #[arg(long)]
    pub data: PathBuf,
    /// Resolution folder to read.
    #[arg(long, default_value = "720p")]
    pub resolution: String,
    #[arg(long, value_enum, default_value_t = Split::Train)]
    pub split: Split,
    /// Windows per batch.
    #[arg(long, default_value_t = 3)]
    pub batch: usize,
    /// Frames per window.
    #[arg(long, default_value_t = 3)]
    pub frames: usize,
    /// Frames between window starts [default: --frames].
    #[arg(long)]
    pub stride: Option<usize>,
    /// Random crop HxW.
    #[arg(long, default_value = "512x960")]
    pub crop: String,
    /// Simulated training step: the consumer sleeps this long after each batch (0: as fast as
    /// the loader goes).
    #[arg(long, default_value_t = 30.0)]
    pub step_ms: f64,
    /// Timed iterations per loader.
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    /// Untimed iterations first (the prefetch queue fills).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Worker thread counts to run, comma-separated [default: cores minus one].
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
    /// Loaders to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SourceKind::Video, SourceKind::Png])]
    pub loaders: Vec<SourceKind>,
    /// Video decoders to run, comma-separated (cpu, nvdec) [default: cpu, and nvdec where --gpu
    /// has it].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub decoders: Vec<DecoderChoice>,
    /// CUDA device whose NVDEC decodes.
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Batches decoded ahead.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One row of `vsr bench loaders`.
#[derive(Debug, Serialize)]
pub struct LoaderRow {
    pub loader: SourceKind,
    /// Video: `cpu` or `nvdec (GPU n)`; PNG: `-`.
    pub decoder: String,
    pub workers: usize,
    pub scenes: usize,
    pub disk_bytes: u64,
    pub windows_per_epoch: usize,
    pub batch: usize,
    pub frames: usize,
    pub crop: [usize; 2],
    pub step_ms: f64,
    pub iters: usize,
    /// Indexing the data set (video: demuxing every file; PNG: listing the folders).
    pub open_ms: f64,
    /// From starting the loader to the first batch.
    pub first_batch_ms: f64,
    pub wait_mean_ms: f64,
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    pub wait_max_ms: f64,
    pub sequences_per_s: f64,
    /// CPU time of the process over wall time, during the timed iterations.
    pub cpu_cores: f64,
    /// Resident memory before the loader started, and the peak while it ran (MB).
    pub rss_before_mb: f64,
    pub peak_rss_mb: f64,
    /// Worker time reading one window (decode, convert, crop): wall clock and CPU; and frames
    /// decoded per window.
    pub read_ms_per_window: f64,
    pub read_cpu_ms_per_window: f64,
    pub frames_decoded_per_window: f64,
    pub seeks_per_window: f64,
    pub decoder_opens: u64,
    pub failed_windows: u64,
    /// NVDEC: GPU memory of this process at the end of the run (nvidia-smi), MB.
    pub gpu_memory_mb: Option<f64>,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A `kB` line of /proc/self/status, in MB.
fn proc_status_mb(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak resident memory (Linux: `5` into /proc/self/clear_refs); false if not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:").unwrap_or_else(|| {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        u.ru_maxrss as f64 / 1024.0
    })
}

fn bench_one(a: &LoadersBenchArgs, kind: SourceKind, decoder: VideoDecoder, workers: usize, crop: (usize, usize)) -> anyhow::Result<LoaderRow> {
    let t_open = Instant::now();
    let dataset = Arc::new(
        Dataset::open(kind, &a.data, &a.resolution, a.split).with_context(|| format!("opening the {kind} data set"))?,
    );
    let open_ms = t_open.elapsed().as_secs_f64() * 1e3;
    for (p, why) in dataset.skipped() {
        eprintln!("warning: {}: skipped: {why}", p.display());
    }
    let mut cfg = LoaderConfig::train(a.frames, a.batch, crop.0, crop.1, a.seed);
    cfg.stride = a.stride.unwrap_or(a.frames);
    cfg.workers = workers;
    cfg.prefetch = a.prefetch;
    cfg.decoder = decoder;
    let windows_per_epoch = dataset.num_windows(cfg.frames, cfg.stride);
    let reset = reset_peak_rss();
    let rss_before_mb = proc_status_mb("VmRSS:").unwrap_or(0.0);
    let t_start = Instant::now();
    let mut loader = Loader::new(dataset.clone(), cfg.clone(), LoaderState::default())?;
    let step = Duration::from_secs_f64(a.step_ms.max(0.0) / 1e3);
    let mut first_batch_ms = 0.0;
    let mut waits = Vec::with_capacity(a.iters);
    let (mut cpu0, mut t0, mut stats0) = (0.0, Instant::now(), loader.stats());
    for i in 0..a.warmup + a.iters {
        if i == a.warmup {
            cpu0 = cpu_seconds();
            t0 = Instant::now();
            stats0 = loader.stats();
        }
        let t = Instant::now();
        let batch = loader.next_batch().context("the training loader never ends")??;
        let wait = t.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            first_batch_ms = t_start.elapsed().as_secs_f64() * 1e3;
        }
        if i >= a.warmup {
            waits.push(wait);
        }
        drop(batch);
        if !step.is_zero() {
            std::thread::sleep(step);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stats = loader.stats();
    let failed_windows = stats.failed_windows;
    let gpu_memory_mb = match decoder {
        #[cfg(feature = "cuda")]
        VideoDecoder::Nvdec(_) if kind == SourceKind::Video => crate::backend::cuda_memory_in_use().map(|b| b as f64 / 1048576.0),
        _ => None,
    };
    drop(loader);
    let peak = if reset { peak_rss_mb() } else { f64::NAN };
    let windows = (stats.windows - stats0.windows).max(1) as f64;
    let mut sorted = waits.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted.get(((sorted.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0.0);
    Ok(LoaderRow {
        loader: kind,
        decoder: if kind == SourceKind::Video { decoder.to_string() } else { "-".into() },
        workers: cfg.worker_count(),
        scenes: dataset.entries().len(),
        disk_bytes: dataset.disk_bytes(),
        windows_per_epoch,
        batch: a.batch,
        frames: a.frames,
        crop: [crop.0, crop.1],
        step_ms: a.step_ms,
        iters: waits.len(),
        open_ms,
        first_batch_ms,
        wait_mean_ms: waits.iter().sum::<f64>() / waits.len().max(1) as f64,
        wait_p50_ms: pct(0.5),
        wait_p99_ms: pct(0.99),
        wait_max_ms: sorted.last().copied().unwrap_or(0.0),
        sequences_per_s: (waits.len() * a.batch) as f64 / wall,
        cpu_cores: cpu / wall,
        rss_before_mb,
        peak_rss_mb: peak,
        read_ms_per_window: (stats.read_seconds - stats0.read_seconds) * 1e3 / windows,
        read_cpu_ms_per_window: (stats.read_cpu_seconds - stats0.read_cpu_seconds) * 1e3 / windows,
        frames_decoded_per_window: (stats.frames_decoded - stats0.frames_decoded) as f64 / windows,
        seeks_per_window: (stats.seeks - stats0.seeks) as f64 / windows,
        decoder_opens: stats.opens,
        failed_windows,
        gpu_memory_mb,
    })
}

/// The decoders to run: those asked for, else the CPU and, where --gpu has it, NVDEC.
fn decoders(a: &LoadersBenchArgs) -> anyhow::Result<Vec<VideoDecoder>> {
    if a.decoders.is_empty() {
        let mut all = vec![VideoDecoder::Cpu];
        match VideoDecoder::resolve(DecoderChoice::Nvdec, Some(a.gpu)) {
            Ok(d) => all.push(d),
            Err(e) => eprintln!("note: no NVDEC rows: {e}"),
        }
        return Ok(all);
    }
    let mut all = Vec::new();
    for &choice in &a.decoders {
        let d = VideoDecoder::resolve(choice, Some(a.gpu)).with_context(|| format!("--decoders {choice:?}"))?;
        if !all.contains(&d) {
            all.push(d);
        }
    }
    Ok(all)
}

pub fn run(a: LoadersBenchArgs) -> anyhow::Result<()> {
    let crop = CropMode::parse_size(&a.crop)?;
    let workers = if a.workers.is_empty() { vec![0] } else { a.workers.clone() };
    let video_decoders = if a.loaders.contains(&SourceKind::Video) { decoders(&a)? } else { Vec::new() };
    let mut rows = Vec::new();
    for &kind in &a.loaders {
        let decoders = if kind == SourceKind::Video { video_decoders.clone() } else { vec![VideoDecoder::Cpu] };
        for &d in &decoders {
            for &w in &workers {
                let dec = if kind == SourceKind::Video { format!(", {d} decoder") } else { String::new() };
                eprintln!("{kind} loader{dec}, {} worker(s)...", if w == 0 { "default".to_string() } else { w.to_string() });
                rows.push(bench_one(&a, kind, d, w, crop)?);
            }
        }
    }
    println!(
        "data {} {} {}, batch {}, {} frames, crop {}x{}, step {} ms, {} iterations",
        a.data.display(),
        a.resolution,
        a.split,
        a.batch,
        a.frames,
        crop.0,
        crop.1,
        a.step_ms,
        a.iters
    );
    println!("| loader | decoder | workers | on disk | wait mean ms | wait p99 ms | sequences/s | CPU cores | peak RSS MB | read ms/window (CPU ms) | frames decoded/window | seeks/window |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.1} | {:.2} | {:.0} | {:.1} ({:.1}) | {:.2} | {:.2} |",
            r.loader,
            r.decoder,
            r.workers,
            human_bytes(r.disk_bytes),
            r.wait_mean_ms,
            r.wait_p99_ms,
            r.sequences_per_s,
            r.cpu_cores,
            r.peak_rss_mb,
            r.read_ms_per_window,
            r.read_cpu_ms_per_window,
            r.frames_decoded_per_window,
            r.seeks_per_window
        );
    }
    let video = rows.iter().find(|r| r.loader == SourceKind::Video).map(|r| r.disk_bytes);
    let png = rows.iter().find(|r| r.loader == SourceKind::Png).map(|r| r.disk_bytes);
    if let (Some(v), Some(p)) = (video, png) {
        println!("PNG frames take {:.1}x the bytes of the video scenes", p as f64 / v.max(1) as f64);
    }
    let json = serde_json::to_string_pretty(&rows)?;
    println!("{json}");
    if let Some(path) = &a.json {
        crate::checkpoint::write_atomic(path, json.as_bytes())?;
    }
    Ok(())
}

/// Human-readable bytes (decimal units).
pub fn human_bytes(b: u64) -> String {
    let mut v = b as f64;
    for unit in ["B", "kB", "MB", "GB"] {
        if v < 1000.0 {
            return if unit == "B" { format!("{b} B") } else { format!("{v:.1} {unit}") };
        }
        v /= 1000.0;
    }
    format!("{v:.1} TB")
}
