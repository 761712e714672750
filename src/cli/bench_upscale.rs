//! `vsr bench upscale`: super-resolution throughput (frames per second) of the inference engine
//! that `vsr upscale` runs, for given input sizes: batches of F-frame windows through VSRNet (+
//! FlowNetSD), including the host-to-device copy of the frames and the copy of the result back,
//! excluding decoding and encoding (which run on other threads in `vsr upscale`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::{BackendArgs, NetworkArgs, bench::Precision};
use crate::backend::{BackendTask, VsrAutodiffBackend, dispatch};
use crate::infer::{LrFrame, auto_batch};
use crate::model::vsrnet::SCALE;

#[derive(Debug, Clone, clap::Args)]
pub struct UpscaleBenchArgs {
    /// Input sizes WIDTHxHEIGHT (comma-separated); outputs are 4x.
    #[arg(long, default_value = "480x270,960x540")]
    pub sizes: String,
    /// Real frames: decoded from this video and scaled to each size (default: synthetic frames).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// VSRNet weights (the default, the test fixture, has the real architecture).
    #[arg(long, default_value = "tests/fixtures/vsrnet_zip.pth")]
    pub checkpoint: PathBuf,
    /// FlowNetSD checkpoint (may be gzipped), or `none`.
    #[arg(long, default_value = "tests/fixtures/flownet_sd.pth.tar.gz")]
    pub flownet: String,
    /// Frames per window (odd).
    #[arg(long, default_value_t = 3)]
    pub frames: usize,
    /// Windows per batch (default: as `vsr upscale` chooses for each size).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Fusion tile side in output pixels (0: whole frames).
    #[arg(long, default_value_t = 512)]
    pub tile: usize,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Untimed batches after the first (cold) one.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed batches (median reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// One row of `vsr bench upscale`.
#[derive(Debug, Serialize)]
pub struct UpscaleRow {
    pub backend: String,
    pub precision: Precision,
    pub input: String,
    pub width: usize,
    pub height: usize,
    pub output_width: usize,
    pub output_height: usize,
    pub frames_per_window: usize,
    pub flownet: bool,
    pub batch: usize,
    pub tile: usize,
    pub load_s: f64,
    /// The first batch: kernel compilation, autotuning.
    pub cold_s: f64,
    pub median_batch_ms: f64,
    pub best_batch_ms: f64,
    /// Output frames per second at the median batch time.
    pub frames_per_second: f64,
    pub iters: usize,
    /// Peak resident memory of the process so far (host), MB.
    pub peak_rss_mb: f64,
}

pub fn run(a: UpscaleBenchArgs) -> anyhow::Result<()> {
    let kind = a.backend.kind();
    let rows = dispatch(kind, a.backend.device, Bench(a.clone()))??;
    println!("| backend | precision | input | output | F | flow | batch | tile | cold s | median ms/batch | frames/s | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:?} | {}x{} {} | {}x{} | {} | {} | {} | {} | {:.2} | {:.1} | {:.3} | {:.0} |",
            r.backend,
            r.precision,
            r.width,
            r.height,
            r.input,
            r.output_width,
            r.output_height,
            r.frames_per_window,
            if r.flownet { "FlowNetSD" } else { "none" },
            r.batch,
            r.tile,
            r.cold_s,
            r.median_batch_ms,
            r.frames_per_second,
            r.peak_rss_mb
        );
    }
    let json = serde_json::to_string_pretty(&rows)?;
    println!("{json}");
    if let Some(path) = a.json {
        crate::checkpoint::write_atomic(&path, json.as_bytes())?;
    }
    Ok(())
}

/// Parses `WIDTHxHEIGHT`.
fn parse_wh(s: &str) -> anyhow::Result<(usize, usize)> {
    let (w, h) = s.trim().split_once(['x', 'X']).with_context(|| format!("size `{s}` is not WIDTHxHEIGHT"))?;
    let w: usize = w.trim().parse().with_context(|| format!("width in `{s}`"))?;
    let h: usize = h.trim().parse().with_context(|| format!("height in `{s}`"))?;
    anyhow::ensure!(w > 0 && h > 0, "size `{s}` is empty");
    Ok((w, h))
}

/// Deterministic synthetic frames: smooth gradients and textures drifting by a pixel a frame.
fn synthetic(width: usize, height: usize, count: usize) -> Vec<LrFrame> {
    (0..count)
        .map(|t| {
            let mut rgb = vec![0f32; 3 * width * height];
            for c in 0..3 {
                for y in 0..height {
                    for x in 0..width {
                        let (xf, yf) = ((x + t) as f32, (y + t / 2) as f32);
                        let v = 128.0
                            + 60.0 * ((xf * 0.07 + c as f32).sin() * (yf * 0.05).cos())
                            + 40.0 * ((xf * 0.31 + yf * 0.17).sin());
                        rgb[(c * height + y) * width + x] = v.clamp(0.0, 255.0);
                    }
                }
            }
            LrFrame { width, height, rgb }
        })
        .collect()
}

/// `count` consecutive frames of `video` scaled to `width` x `height` (bicubic).
#[cfg(feature = "video")]
fn real(video: &std::path::Path, width: usize, height: usize, count: usize) -> anyhow::Result<Vec<LrFrame>> {
    use crate::prep::media::{FrameReader, Scaler};
    use video_rs::ffmpeg::format::Pixel;
    use video_rs::ffmpeg::software::scaling::Flags;
    let mut reader = FrameReader::open(video, 0)?;
    let mut scaler: Option<Scaler> = None;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let Some((_, frame)) = reader.next_frame()? else {
            anyhow::bail!("{}: has fewer than {count} frames", video.display())
        };
        let s = match &mut scaler {
            Some(s) => s,
            None => scaler.insert(Scaler::new(
                (frame.format(), frame.width(), frame.height()),
                (Pixel::RGB24, width as u32, height as u32),
                Flags::BICUBIC,
            )?),
        };
        let rgb = s.run(&frame);
        out.push(LrFrame::from_rgb24(width, height, rgb.data(0), rgb.stride(0)));
    }
    Ok(out)
}

#[cfg(not(feature = "video"))]
fn real(video: &std::path::Path, _: usize, _: usize, _: usize) -> anyhow::Result<Vec<LrFrame>> {
    anyhow::bail!("{}: decoding video needs the `video` feature", video.display())
}

/// Peak resident set size of this process in MB (Linux; 0 elsewhere).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Bench(UpscaleBenchArgs);

impl BackendTask for Bench {
    type Output = anyhow::Result<Vec<UpscaleRow>>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let a = self.0;
        let network = NetworkArgs {
            checkpoint: a.checkpoint.clone(),
            flownet: a.flownet.clone(),
            frames: a.frames,
            tile: a.tile,
            precision: a.precision,
        };
        let t = Instant::now();
        let engine = network.engine::<I<B>>(&device)?;
        let load_s = t.elapsed().as_secs_f64();
        let mut rows = Vec::new();
        for size in a.sizes.split(',') {
            let (w, h) = parse_wh(size)?;
            let batch = a.batch.unwrap_or_else(|| auto_batch(w, h)).max(1);
            let count = batch + a.frames - 1;
            let (frames, input) = match &a.video {
                Some(v) => (real(v, w, h, count)?, "real"),
                None => (synthetic(w, h, count), "synthetic"),
            };
            let windows: Vec<Vec<&LrFrame>> = (0..batch).map(|i| frames[i..i + a.frames].iter().collect()).collect();
            let timed = || -> anyhow::Result<f64> {
                let t = Instant::now();
                let out = engine.run(&windows)?;
                anyhow::ensure!(out.len() == batch, "got {} frames for a batch of {batch}", out.len());
                Ok(t.elapsed().as_secs_f64())
            };
            let cold_s = timed()?;
            for _ in 0..a.warmup {
                timed()?;
            }
            let mut times: Vec<f64> = (0..a.iters.max(1)).map(|_| timed()).collect::<anyhow::Result<_>>()?;
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let row = UpscaleRow {
                backend: crate::backend::device_name::<I<B>>(&device),
                precision: a.precision,
                input: input.into(),
                width: w,
                height: h,
                output_width: w * SCALE,
                output_height: h * SCALE,
                frames_per_window: a.frames,
                flownet: engine.has_flownet(),
                batch,
                tile: a.tile,
                load_s,
                cold_s,
                median_batch_ms: median * 1e3,
                best_batch_ms: times[0] * 1e3,
                frames_per_second: batch as f64 / median,
                iters: times.len(),
                peak_rss_mb: peak_rss_mb(),
            };
            eprintln!("{size}: {:.3} frames/s (median batch {:.1} ms)", row.frames_per_second, row.median_batch_ms);
            rows.push(row);
        }
        Ok(rows)
    }
}
