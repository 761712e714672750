//! `vsr bench transcode`: our transcode (decode, bilinear swscale, libx264) against the `ffmpeg`
//! program doing the same job on the same clip, both on one thread, so frames per second is
//! frames per second per core. Both use the same libx264 and swscale, so they should agree
//! within a few percent; the difference is our per-frame overhead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::prep::{Resolution, media, transcode};

#[derive(Debug, Clone, clap::Args)]
pub struct TranscodeBenchArgs {
    /// Clip to transcode.
    #[arg(long, default_value = "assets/bigbuckbunny.mp4")]
    pub clip: PathBuf,
    /// Target resolution.
    #[arg(long, default_value = "540p")]
    pub resolution: Resolution,
    #[arg(long, default_value_t = 18)]
    pub crf: u32,
    #[arg(long, default_value_t = 4)]
    pub gop: u32,
    #[arg(long, default_value = "medium")]
    pub preset: String,
    /// Timed runs of each (median reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The ffmpeg program to compare against (skipped when not found).
    #[arg(long, default_value = "ffmpeg")]
    pub ffmpeg: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One row of `vsr bench transcode`.
#[derive(Debug, Serialize)]
pub struct TranscodeRow {
    pub tool: String,
    pub clip: PathBuf,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub wall_s: f64,
    pub cpu_s: f64,
    /// Frames per second of wall time (one thread).
    pub fps: f64,
    /// Frames per CPU-second: frames per second per core.
    pub fps_per_core: f64,
    pub bytes: u64,
}

fn cpu_seconds(who: i32) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn median(mut v: Vec<(f64, f64)>) -> (f64, f64) {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v[v.len() / 2]
}

fn row(tool: &str, clip: &Path, out: &Path, frames: usize, (wall_s, cpu_s): (f64, f64)) -> anyhow::Result<TranscodeRow> {
    let probe = media::probe(out)?;
    let (width, height) = probe.display_size();
    Ok(TranscodeRow {
        tool: tool.into(),
        clip: clip.to_path_buf(),
        width,
        height,
        frames,
        wall_s,
        cpu_s,
        fps: frames as f64 / wall_s,
        fps_per_core: frames as f64 / cpu_s,
        bytes: std::fs::metadata(out)?.len(),
    })
}

pub fn run(a: TranscodeBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let settings = transcode::TranscodeOptions { crf: a.crf, gop: a.gop, preset: a.preset.clone(), ..Default::default() }.h264();
    let runs = a.runs.max(1);
    let ours_out = dir.path().join("vsr.mp4");
    let mut times = Vec::new();
    let mut frames = 0;
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF));
        let r = transcode::transcode_file(&a.clip, &ours_out, a.resolution, None, None, &settings, 1, None)
            .with_context(|| format!("transcoding {}", a.clip.display()))?;
        times.push((t.elapsed().as_secs_f64(), cpu_seconds(libc::RUSAGE_SELF) - c));
        frames = r.frames;
    }
    let mut rows = vec![row("vsr", &a.clip, &ours_out, frames, median(times))?];

    let ff_out = dir.path().join("ffmpeg.mp4");
    let (w, h) = (rows[0].width, rows[0].height);
    let mut times = Vec::new();
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu_seconds(libc::RUSAGE_CHILDREN));
        let status = Command::new(&a.ffmpeg)
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i"])
            .arg(&a.clip)
            .args(["-an", "-sn", "-dn", "-vf", &format!("scale={w}:{h}:flags=bilinear"), "-filter_threads", "1"])
            .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "high", "-preset", &a.preset])
            .args(["-crf", &a.crf.to_string(), "-g", &a.gop.to_string(), "-keyint_min", &a.gop.to_string()])
            .args(["-sc_threshold", "0", "-threads", "1", "-y"])
            .arg(&ff_out)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => bail!("{} failed ({s}) on {}", a.ffmpeg.display(), a.clip.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("{} not found: no comparison", a.ffmpeg.display());
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("running {}", a.ffmpeg.display())),
        }
        times.push((t.elapsed().as_secs_f64(), cpu_seconds(libc::RUSAGE_CHILDREN) - c));
    }
    if !times.is_empty() {
        let n = media::probe(&ff_out)?.frame_count();
        rows.push(row("ffmpeg", &a.clip, &ff_out, n, median(times))?);
    }

    println!("| tool | clip | output | frames | wall s | CPU s | frames/s (1 thread) | frames/s per core | bytes |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {}x{} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {} |",
            r.tool,
            r.clip.display(),
            r.width,
            r.height,
            r.frames,
            r.wall_s,
            r.cpu_s,
            r.fps,
            r.fps_per_core,
            r.bytes
        );
    }
    if let [ours, ff] = &rows[..] {
        println!("vsr / ffmpeg, frames per second per core: {:.3}", ours.fps_per_core / ff.fps_per_core);
    }
    let json = serde_json::to_string_pretty(&rows)?;
    println!("{json}");
    if let Some(path) = a.json {
        crate::checkpoint::write_atomic(&path, json.as_bytes())?;
    }
    Ok(())
}
