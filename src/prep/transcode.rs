//! `vsr prep transcode`: every scene to H.264 at a target resolution
//! (`<data>/<res>/scenes/{train,val}/<scene>.mp4`), the job of the original's
//! `transcode_scenes.py` (`ffmpeg -g 4 -profile:v high -crf 18 -vf scale=..:flags=bilinear -an`).
//!
//! * libx264, high profile, CRF 18, preset medium by default; keyframe interval `gop` (4) with
//!   `keyint_min = gop` and scene-cut keyframes off, so every GOP is exactly `gop` frames (the
//!   last may be shorter) and any frame is at most `gop - 1` decodes from a keyframe.
//! * Bilinear swscale to the target height; the width keeps the scene's aspect ratio, rounded to
//!   an even number (16:9 gives exactly 3840x2160, 1920x1080, 1280x720, 960x540).
//! * Only down-scales: a target taller than the scene is skipped and noted in the report.
//! * Constant frame rate: output frame k shows the input frame displayed at k / fps (input
//!   frames are placed at the nearest grid slot by presentation timestamp; a frame that shares
//!   a slot with a later one is dropped, an empty slot repeats the previous frame). A constant
//!   rate input maps one to one.

use std::path::{Path, PathBuf};

use video_rs::ffmpeg as ff;

use ff::Rational;
use ff::format::Pixel;
use ff::software::scaling::Flags as SwsFlags;

use super::manifest::{self, Manifest, Rendition};
use super::media::{self, FrameReader, H264Settings, H264Writer, Scaler, Uprighter, media_err};
use super::{Progress, Report, Resolution, parallel, thread_split};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct TranscodeOptions {
    pub resolutions: Vec<Resolution>,
    pub crf: u32,
    pub gop: u32,
    pub preset: String,
    /// Worker threads (0: all cores).
    pub jobs: usize,
    pub progress: bool,
}

impl Default for TranscodeOptions {
    fn default() -> Self {
        TranscodeOptions { resolutions: Resolution::ALL.to_vec(), crf: 18, gop: 4, preset: "medium".into(), jobs: 0, progress: false }
    }
}

impl TranscodeOptions {
    pub fn h264(&self) -> H264Settings {
        H264Settings { crf: self.crf, preset: self.preset.clone(), gop: Some(self.gop), profile: Some("high".into()) }
    }
}

/// What one transcode did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcoded {
    pub width: u32,
    pub height: u32,
    pub fps: Rational,
    /// Frames written.
    pub frames: usize,
    /// Frames decoded.
    pub input_frames: usize,
    /// Output frames that repeat the previous one (variable-rate input).
    pub duplicated: usize,
    /// Input frames not shown (variable-rate input).
    pub dropped: usize,
}

/// Transcodes `input` into `output` (written through a temporary sibling, renamed at the end) at
/// `height` lines, keeping the aspect ratio. `duration` (seconds from the first frame; default:
/// the stream's) sets the number of output frames with the rate `fps` (default: the input's
/// nominal rate).
pub fn transcode_file(
    input: &Path,
    output: &Path,
    height: Resolution,
    fps: Option<Rational>,
    duration: Option<f64>,
    settings: &H264Settings,
    threads: usize,
    progress: Option<&Progress>,
) -> Result<Transcoded> {
    super::ensure_parent(output)?;
    let tmp = super::tmp_path(output);
    match write(input, &tmp, output, height, fps, duration, settings, threads, progress) {
        Ok(t) => {
            crate::checkpoint::commit(&tmp, output)?;
            Ok(t)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write(
    input: &Path,
    tmp: &Path,
    output: &Path,
    res: Resolution,
    fps: Option<Rational>,
    duration: Option<f64>,
    settings: &H264Settings,
    threads: usize,
    progress: Option<&Progress>,
) -> Result<Transcoded> {
    let probe = media::probe(input)?;
    let (w, h) = probe.display_size();
    let (tw, th) = res.size_for(w, h);
    if th > h {
        return Err(media_err(input, format!("is {w}x{h}: {res} would up-scale it")));
    }
    let fps = fps.unwrap_or(probe.fps);
    let rate = f64::from(fps);
    let tb = f64::from(probe.time_base);
    let pts0 = probe.pts[0];
    let duration = duration.unwrap_or_else(|| (probe.end_pts - pts0) as f64 * tb);
    let total = ((duration * rate).round() as i64).max(1);
    let slot = |t: i64| ((t - pts0) as f64 * tb * rate).round() as i64;

    let mut reader = FrameReader::open(input, threads)?;
    let mut upright = Uprighter::new(&probe);
    let mut scaler = ((tw, th) != (w, h))
        .then(|| Scaler::new((Pixel::YUV420P, w, h), (Pixel::YUV420P, tw, th), SwsFlags::BILINEAR))
        .transpose()?;
    let mut writer = H264Writer::create(tmp, output, (tw, th), fps, fps.invert(), settings, threads)?;
    let mut stats = Transcoded { width: tw, height: th, fps, frames: 0, input_frames: 0, duplicated: 0, dropped: 0 };
    // The frame waiting to be shown, and whether it has been shown yet.
    let mut held: Option<(ff::frame::Video, bool)> = None;
    let mut next_k = 0i64;
    let mut emit = |frame: &mut ff::frame::Video, shown: &mut bool, until: i64, stats: &mut Transcoded, next_k: &mut i64| -> Result<()> {
        while *next_k < until.min(total) {
            writer.write(frame, *next_k)?;
            if *shown {
                stats.duplicated += 1;
            }
            *shown = true;
            *next_k += 1;
            stats.frames += 1;
        }
        Ok(())
    };
    while let Some((t, frame)) = reader.next_frame()? {
        stats.input_frames += 1;
        if let Some(p) = progress {
            p.frames(1);
        }
        let frame = upright.apply(frame)?;
        let frame = match &mut scaler {
            Some(s) => s.run(&frame),
            None => frame,
        };
        let s = slot(t);
        if let Some((mut f, mut shown)) = held.take() {
            emit(&mut f, &mut shown, s, &mut stats, &mut next_k)?;
            if !shown {
                stats.dropped += 1;
            }
        }
        held = Some((frame, false));
    }
    match held.take() {
        Some((mut f, mut shown)) => {
            emit(&mut f, &mut shown, total, &mut stats, &mut next_k)?;
            if !shown {
                stats.dropped += 1;
            }
        }
        None => return Err(media_err(input, "no frame could be decoded")),
    }
    drop(emit);
    let written = writer.finish()?;
    if stats.input_frames != probe.frame_count() {
        return Err(media_err(
            input,
            format!("decoded {} of its {} frames: truncated or corrupt", stats.input_frames, probe.frame_count()),
        ));
    }
    if written as i64 != total || stats.frames != written {
        return Err(media_err(output, format!("wrote {written} frames, expected {total}")));
    }
    Ok(stats)
}

/// Transcodes every scene of `<data>/manifest.json` to each resolution.
pub fn transcode(data: &Path, opts: &TranscodeOptions) -> Result<Report> {
    let mut report = Report::new("transcode");
    let mut m = Manifest::load(data)?;
    if m.scenes.is_empty() {
        return Err(Error::Media {
            path: data.join(manifest::MANIFEST),
            reason: "no scenes: run `vsr prep split` first".into(),
        });
    }
    let settings = opts.h264();
    let mut resolutions = opts.resolutions.clone();
    resolutions.sort_by(|a, b| b.cmp(a));
    resolutions.dedup();
    struct Task {
        scene: usize,
        res: Resolution,
        key: String,
        path: PathBuf,
    }
    let mut tasks = Vec::new();
    for res in &resolutions {
        let mut skipped = Vec::new();
        for (i, s) in m.scenes.iter().enumerate() {
            if res.height > s.height {
                skipped.push(s.name.as_str());
                continue;
            }
            let (w, h) = res.size_for(s.width, s.height);
            let key = manifest::key(&[
                &"transcode-v1", &s.key, &s.bytes, &s.mtime_ns, &w, &h, &s.fps_num, &s.fps_den,
                &settings.crf, &opts.gop, &settings.preset,
            ]);
            let path = Path::new(&res.name()).join("scenes").join(s.split.dir()).join(format!("{}.mp4", s.name));
            let current = s.renditions.get(&res.name()).is_some_and(|r| {
                r.key == key && r.path == path && manifest::unchanged(&data.join(&r.path), r.bytes, r.mtime_ns)
            });
            if current {
                report.up_to_date += 1;
            } else {
                tasks.push(Task { scene: i, res: *res, key, path });
            }
        }
        if !skipped.is_empty() {
            report.notes.push(format!(
                "{res}: skipped {} scene(s) smaller than {} lines (only down-scales): {}",
                skipped.len(),
                res.height,
                skipped.join(", ")
            ));
        }
    }
    let total: u64 = tasks.iter().map(|t| m.scenes[t.scene].frames as u64).sum();
    let progress = Progress::new("transcode", tasks.len(), total, opts.progress);
    let (jobs, threads) = thread_split(opts.jobs, tasks.len());
    let scenes = &m.scenes;
    let results = parallel(jobs, tasks, |t| {
        let s = &scenes[t.scene];
        let out = data.join(&t.path);
        let fps = Rational::new(s.fps_num, s.fps_den);
        let r = transcode_file(
            &data.join(&s.path),
            &out,
            t.res,
            Some(fps),
            Some(s.end_time - s.start_time),
            &settings,
            threads,
            Some(&progress),
        );
        progress.item(&format!("{} {}", s.name, t.res));
        (t, r)
    })?;
    progress.finish();
    for (t, r) in results {
        let s = &mut m.scenes[t.scene];
        match r.and_then(|x| manifest::stat(&data.join(&t.path)).map(|st| (x, st))) {
            Ok((x, (bytes, mtime_ns))) => {
                let mut line = format!("{} {}: {}x{}, {} frames", s.name, t.res, x.width, x.height, x.frames);
                if x.duplicated + x.dropped > 0 {
                    line += &format!(" ({} repeated, {} dropped for a constant rate)", x.duplicated, x.dropped);
                    report.notes.push(format!(
                        "{} {}: variable frame rate made constant at {:.3} fps: {} frames repeated, {} dropped",
                        s.name,
                        t.res,
                        f64::from(x.fps),
                        x.duplicated,
                        x.dropped
                    ));
                }
                report.done.push(line);
                s.renditions.insert(
                    t.res.name(),
                    Rendition {
                        path: t.path,
                        width: x.width,
                        height: x.height,
                        fps: f64::from(x.fps),
                        frames: x.frames,
                        crf: settings.crf,
                        gop: opts.gop,
                        preset: settings.preset.clone(),
                        bytes,
                        mtime_ns,
                        key: t.key,
                        png: None,
                    },
                );
            }
            Err(e) => report.failed.push(format!("scene {} {}: {e}", s.name, t.res)),
        }
    }
    super::split::save_if_changed(&m, data)?;
    Ok(report)
}
