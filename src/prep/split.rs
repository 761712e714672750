//! `vsr prep split`: source videos -> scenes (`<data>/orig/scenes/{train,val}/<scene>.mp4`).
//!
//! Cut points come from a timestamps file (one per line: seconds, `MM:SS.mmm` or
//! `HH:MM:SS.mmm`; `#` starts a comment) or from hard-cut detection ([`super::detect`]). A cut
//! time snaps to the first frame displayed at or after it (within half a frame), so scene
//! boundaries are frames, and each scene holds exactly the frames `[start_frame, end_frame)` of
//! its source: it is decoded from the keyframe before its start and re-encoded (libx264, CRF 16,
//! preset fast by default), so cuts are frame-exact wherever they fall. Source timestamps are
//! kept (a variable-rate source stays variable here; transcode makes it constant), audio is
//! dropped, the picture is made upright and even-sized. Scenes shorter than `min_frames` are
//! dropped; the last scenes (over all sources, in order) go to validation.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest, Scene, Source, Split};
use super::media::{self, FrameReader, H264Settings, H264Writer, Probe, Uprighter, media_err};
use super::{Progress, Report, detect, parallel, thread_split};
use crate::error::{Error, Result};

/// Where scene boundaries come from.
#[derive(Debug, Clone)]
pub enum Cuts {
    /// Each source is one scene.
    None,
    /// One timestamps file per source (same order), or one file when there is one source.
    Files(Vec<PathBuf>),
    /// Hard cuts whose scene score exceeds the threshold.
    Detect { threshold: f64 },
}

/// Which scenes go to validation: the last ones, by count or by share.
#[derive(Debug, Clone, Copy)]
pub enum ValSplit {
    Scenes(usize),
    Fraction(f64),
}

impl ValSplit {
    /// Number of validation scenes out of `total`.
    pub fn count(self, total: usize) -> usize {
        match self {
            ValSplit::Scenes(n) => n.min(total),
            ValSplit::Fraction(f) => {
                let n = (total as f64 * f).round() as usize;
                let n = if f > 0.0 && n == 0 && total >= 2 { 1 } else { n };
                n.min(total)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct SplitOptions {
    pub cuts: Cuts,
    pub min_frames: usize,
    pub val: ValSplit,
    /// Quality of the re-encoded scenes.
    pub crf: u32,
    pub preset: String,
    /// Worker threads (0: all cores).
    pub jobs: usize,
    /// Show progress on stderr.
    pub progress: bool,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            cuts: Cuts::None,
            min_frames: 3,
            val: ValSplit::Fraction(0.1),
            crf: 16,
            preset: "fast".into(),
            jobs: 0,
            progress: false,
        }
    }
}

/// Parses one timestamp: seconds (`12.5`), `MM:SS(.mmm)` or `HH:MM:SS(.mmm)`.
pub fn parse_time(s: &str) -> Option<f64> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.trim().is_empty()) {
        return None;
    }
    let mut secs = 0.0;
    for (i, p) in parts.iter().enumerate() {
        let v: f64 = p.trim().parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
        if i + 1 < parts.len() && (v.fract() != 0.0 || (i > 0 && v >= 60.0)) {
            return None;
        }
        if i + 1 == parts.len() && parts.len() > 1 && v >= 60.0 {
            return None;
        }
        secs = secs * 60.0 + v;
    }
    Some(secs)
}

/// Reads a timestamps file: one cut per line; blank lines and `#` comments ignored.
pub fn read_cuts_file(path: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut cuts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let t = parse_time(line).ok_or_else(|| {
            media_err(path, format!("line {}: `{line}` is not a time (seconds or HH:MM:SS.mmm)", i + 1))
        })?;
        cuts.push(t);
    }
    Ok(cuts)
}

/// Frame indices that start a scene, for cut times in seconds: each time snaps to the first
/// frame shown at or after it, allowing half a frame of slack. Times at the very start or past
/// the end make no cut (returned second, for the report).
pub fn cut_frames(probe: &Probe, times: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let half = 0.5 / f64::from(probe.fps);
    let mut frames = BTreeSet::new();
    let mut ignored = Vec::new();
    for &t in times {
        let i = probe.pts.partition_point(|&p| probe.seconds(p) < t - half);
        if i == 0 || i >= probe.frame_count() {
            ignored.push(t);
        } else {
            frames.insert(i);
        }
    }
    (frames.into_iter().collect(), ignored)
}

/// One scene to be, before encoding.
#[derive(Debug, Clone)]
struct Planned {
    source: usize,
    scene: Scene,
    start_pts: i64,
    end_pts: i64,
}

fn sanitize(stem: &str) -> String {
    let s: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if s.is_empty() { "scene".into() } else { s }
}

/// Splits `videos` into scenes under `data`, updating `<data>/manifest.json`.
pub fn split(videos: &[PathBuf], data: &Path, opts: &SplitOptions) -> Result<Report> {
    let mut report = Report::new("split");
    if videos.is_empty() {
        return Err(Error::Invalid("no source videos given".into()));
    }
    if let Cuts::Files(files) = &opts.cuts
        && files.len() != videos.len()
    {
        return Err(Error::Invalid(format!(
            "{} timestamps files for {} videos: give one --cuts file per video, in the same order",
            files.len(),
            videos.len()
        )));
    }
    std::fs::create_dir_all(data).map_err(|e| Error::io(data, e))?;
    let old = Manifest::load(data)?;
    let (jobs, _) = thread_split(opts.jobs, videos.len());

    // 1. Probe every source (demux only), in parallel.
    let probes = parallel(jobs, videos.to_vec(), |v| media::probe(&v))?;

    // 2. Cut points: timestamps or detection (a full decode, progress in frames).
    let analyse: Vec<(usize, &Probe)> =
        probes.iter().enumerate().filter_map(|(i, p)| p.as_ref().ok().map(|p| (i, p))).collect();
    let total: u64 = analyse.iter().map(|(_, p)| p.frame_count() as u64).sum();
    let detecting = matches!(opts.cuts, Cuts::Detect { .. });
    let progress = Progress::new("detect", analyse.len(), total, opts.progress && detecting);
    let (_, threads) = thread_split(opts.jobs, analyse.len());
    let cut_results = parallel(jobs, analyse, |(i, probe)| -> (usize, Result<(Vec<usize>, Vec<f64>)>) {
        let r = match &opts.cuts {
            Cuts::None => Ok((Vec::new(), Vec::new())),
            Cuts::Files(files) => read_cuts_file(&files[i]).map(|times| cut_frames(probe, &times)),
            Cuts::Detect { threshold } => detect::scene_scores(&probe.path, probe, threads, Some(&progress)).map(|s| {
                progress.item(&probe.path.display().to_string());
                (detect::cuts(&s, *threshold), Vec::new())
            }),
        };
        (i, r)
    })?;
    progress.finish();
    let mut cuts: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut failed_sources = BTreeSet::new();
    for (i, p) in probes.iter().enumerate() {
        if let Err(e) = p {
            report.failed.push(e.to_string());
            failed_sources.insert(i);
        }
    }
    for (i, r) in cut_results {
        match r {
            Ok((frames, ignored)) => {
                if !ignored.is_empty() {
                    report.notes.push(format!(
                        "{}: cuts at {ignored:?} s are at the start or past the end: ignored",
                        videos[i].display()
                    ));
                }
                cuts.insert(i, frames);
            }
            Err(e) => {
                report.failed.push(e.to_string());
                failed_sources.insert(i);
            }
        }
    }

    // 3. Scenes: names, frame ranges, short ones dropped, last ones to validation.
    let mut planned: Vec<Planned> = Vec::new();
    let mut sources = Vec::new();
    let mut stems: HashMap<String, usize> = HashMap::new();
    for (i, probe) in probes.iter().enumerate() {
        let (Ok(probe), Some(frames)) = (probe, cuts.get(&i)) else { continue };
        let stem = sanitize(&videos[i].file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        let seen = stems.entry(stem.clone()).or_insert(0);
        *seen += 1;
        let stem = if *seen == 1 { stem } else { format!("{stem}-{seen}") };
        let (bytes, mtime_ns) = manifest::stat(&videos[i])?;
        let (width, height) = probe.display_size();
        let mut bounds = vec![0];
        bounds.extend(frames.iter().copied());
        bounds.push(probe.frame_count());
        let mut dropped = 0;
        let mut kept = 0;
        for w in bounds.windows(2) {
            let (start, end) = (w[0], w[1]);
            if end - start < opts.min_frames {
                dropped += 1;
                continue;
            }
            let start_pts = probe.pts[start];
            let end_pts = if end < probe.frame_count() { probe.pts[end] } else { probe.end_pts };
            let name = format!("{stem}_{kept:03}");
            kept += 1;
            let key = manifest::key(&[
                &"split-v1",
                &videos[i].display(),
                &bytes,
                &mtime_ns,
                &start,
                &end,
                &opts.crf,
                &opts.preset,
            ]);
            planned.push(Planned {
                source: i,
                start_pts,
                end_pts,
                scene: Scene {
                    name,
                    split: Split::Train,
                    source: videos[i].clone(),
                    start_time: probe.seconds(start_pts),
                    end_time: probe.seconds(end_pts),
                    start_frame: start,
                    end_frame: end,
                    frames: end - start,
                    width,
                    height,
                    fps: f64::from(probe.fps),
                    fps_num: probe.fps.numerator(),
                    fps_den: probe.fps.denominator(),
                    vfr: probe.vfr,
                    path: PathBuf::new(),
                    bytes: 0,
                    mtime_ns: 0,
                    key,
                    renditions: Default::default(),
                },
            });
        }
        let name = videos[i].display();
        let mut what = format!("{name}: {kept} scenes");
        if dropped > 0 {
            what += &format!(", {dropped} shorter than {} frames dropped", opts.min_frames);
        }
        report.notes.push(what);
        if probe.has_audio {
            report.notes.push(format!("{name}: audio removed"));
        }
        if probe.vfr {
            report.notes.push(format!(
                "{name}: variable frame rate: timestamps kept in orig, transcodes resampled to {:.3} fps",
                f64::from(probe.fps)
            ));
        }
        if !probe.orientation.is_identity() {
            report.notes.push(format!("{name}: display matrix applied ({})", probe.orientation.describe()));
        }
        if probe.cropped() {
            report.notes.push(format!(
                "{name}: odd size {}x{} cropped to {}x{}",
                probe.coded_width, probe.coded_height, probe.coded_width & !1, probe.coded_height & !1
            ));
        }
        sources.push(Source {
            path: videos[i].clone(),
            bytes,
            mtime_ns,
            scenes: kept,
            frames: probe.frame_count(),
            vfr: probe.vfr,
            orientation: probe.orientation.describe(),
            cropped: probe.cropped(),
        });
    }
    let n_val = opts.val.count(planned.len());
    let n_train = planned.len() - n_val;
    for (k, p) in planned.iter_mut().enumerate() {
        p.scene.split = if k >= n_train { Split::Val } else { Split::Train };
        p.scene.path = Path::new("orig/scenes").join(p.scene.split.dir()).join(format!("{}.mp4", p.scene.name));
    }

    // 4. Encode what is not up to date.
    let mut scenes: Vec<Option<Scene>> = vec![None; planned.len()];
    let mut todo = Vec::new();
    for (k, p) in planned.iter().enumerate() {
        let reusable = old.scene(&p.scene.name).filter(|s| {
            s.key == p.scene.key
                && s.split == p.scene.split
                && s.path == p.scene.path
                && manifest::unchanged(&data.join(&s.path), s.bytes, s.mtime_ns)
        });
        match reusable {
            Some(s) => {
                scenes[k] = Some(s.clone());
                report.up_to_date += 1;
            }
            None => todo.push(k),
        }
    }
    let total: u64 = todo.iter().map(|&k| planned[k].scene.frames as u64).sum();
    let progress = Progress::new("split", todo.len(), total, opts.progress);
    let (jobs, threads) = thread_split(opts.jobs, todo.len());
    let settings = H264Settings { crf: opts.crf, preset: opts.preset.clone(), gop: None, profile: None };
    let results = parallel(jobs, todo, |k| {
        let p = &planned[k];
        let probe = probes[p.source].as_ref().expect("planned from a probed source");
        let r = encode_scene(probe, p, data, &settings, threads, &progress);
        progress.item(&p.scene.name);
        (k, r)
    })?;
    progress.finish();
    for (k, r) in results {
        match r {
            Ok(scene) => {
                report.done.push(format!(
                    "{} ({}): frames {}..{} of {}, {:.2}-{:.2} s",
                    scene.name,
                    scene.split.dir(),
                    scene.start_frame,
                    scene.end_frame,
                    scene.source.display(),
                    scene.start_time,
                    scene.end_time
                ));
                scenes[k] = Some(scene);
            }
            Err(e) => {
                report.failed.push(format!("scene {}: {e}", planned[k].scene.name));
                failed_sources.insert(planned[k].source);
            }
        }
    }

    // 5. Manifest: new scenes; stale scenes of sources that were split again lose their files.
    let mut new = Manifest { version: manifest::VERSION, sources, scenes: scenes.into_iter().flatten().collect() };
    let kept: BTreeSet<PathBuf> = new.scenes.iter().map(|s| s.path.clone()).collect();
    let failed_paths: BTreeSet<&PathBuf> = failed_sources.iter().map(|&i| &videos[i]).collect();
    for s in &old.scenes {
        if new.scenes.iter().any(|n| n.name == s.name && n.key == s.key && n.path == s.path) {
            continue;
        }
        if failed_paths.contains(&s.source) && !new.scenes.iter().any(|n| n.name == s.name) {
            // Its source failed this time: keep what was made from it.
            new.scenes.push(s.clone());
            continue;
        }
        remove_scene_files(data, s, &kept);
    }
    save_if_changed(&new, data)?;
    Ok(report)
}

/// Writes the manifest unless it is unchanged (a rerun that does nothing touches nothing).
pub(crate) fn save_if_changed(m: &Manifest, data: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(m).expect("manifest serialises");
    if std::fs::read_to_string(data.join(manifest::MANIFEST)).is_ok_and(|old| old == json) {
        return Ok(());
    }
    m.save(data)
}

/// Deletes the files made for a scene that is no longer in the data set (except `keep`).
fn remove_scene_files(data: &Path, s: &Scene, keep: &BTreeSet<PathBuf>) {
    if !keep.contains(&s.path) {
        let _ = std::fs::remove_file(data.join(&s.path));
    }
    for r in s.renditions.values() {
        let _ = std::fs::remove_file(data.join(&r.path));
        if let Some(png) = &r.png {
            let _ = std::fs::remove_dir_all(data.join(&png.path));
        }
    }
}

/// Decodes frames `[start, end)` of the source and encodes them into the scene file.
fn encode_scene(
    probe: &Probe,
    p: &Planned,
    data: &Path,
    settings: &H264Settings,
    threads: usize,
    progress: &Progress,
) -> Result<Scene> {
    let out = data.join(&p.scene.path);
    super::ensure_parent(&out)?;
    let tmp = super::tmp_path(&out);
    let result = write_scene(probe, p, &tmp, &out, settings, threads, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crate::checkpoint::commit(&tmp, &out)?;
    let (bytes, mtime_ns) = manifest::stat(&out)?;
    let mut scene = p.scene.clone();
    scene.bytes = bytes;
    scene.mtime_ns = mtime_ns;
    Ok(scene)
}

fn write_scene(
    probe: &Probe,
    p: &Planned,
    tmp: &Path,
    out: &Path,
    settings: &H264Settings,
    threads: usize,
    progress: &Progress,
) -> Result<()> {
    let src = &probe.path;
    let mut reader = FrameReader::open(src, threads)?;
    if p.scene.start_frame > 0 {
        reader.seek(p.start_pts)?;
    }
    let mut upright = Uprighter::new(probe);
    let mut writer: Option<H264Writer> = None;
    let mut count = 0usize;
    let mut first = true;
    while let Some((t, frame)) = reader.next_frame()? {
        if first && t > p.start_pts {
            // The seek landed after the start (an unreliable index): decode from the beginning.
            reader = FrameReader::open(src, threads)?;
            first = false;
            continue;
        }
        first = false;
        if t < p.start_pts {
            continue;
        }
        if t >= p.end_pts {
            break;
        }
        let mut frame = upright.apply(frame)?;
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(H264Writer::create(
                tmp,
                out,
                (frame.width(), frame.height()),
                probe.fps,
                probe.time_base,
                settings,
                threads,
            )?),
        };
        w.write(&mut frame, t - p.start_pts)?;
        count += 1;
        progress.frames(1);
    }
    let written = match writer {
        Some(w) => w.finish()?,
        None => 0,
    };
    if count != p.scene.frames || written != count {
        return Err(media_err(
            src,
            format!(
                "decoded {count} of the {} frames of scene {} (frames {}..{}), wrote {written}: truncated or corrupt",
                p.scene.frames, p.scene.name, p.scene.start_frame, p.scene.end_frame
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1.2"), Some(1.2));
        assert_eq!(parse_time("01:02.5"), Some(62.5));
        assert_eq!(parse_time("1:00:03.040"), Some(3603.04));
        assert_eq!(parse_time("00:61.0"), None);
        assert_eq!(parse_time("a"), None);
        assert_eq!(parse_time("-1"), None);
        assert_eq!(parse_time("1::2"), None);
    }

    #[test]
    fn val_counts() {
        assert_eq!(ValSplit::Scenes(6).count(59), 6);
        assert_eq!(ValSplit::Scenes(6).count(4), 4);
        assert_eq!(ValSplit::Fraction(0.1).count(59), 6);
        assert_eq!(ValSplit::Fraction(0.1).count(6), 1);
        assert_eq!(ValSplit::Fraction(0.1).count(1), 0);
        assert_eq!(ValSplit::Fraction(0.0).count(10), 0);
    }
}
