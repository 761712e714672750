//! Data preparation (`vsr prep`): source videos -> scenes -> transcodes -> PNG frames, the
//! layout DALI's `video_superres` example trains on:
//!
//! ```text
//! <data>/manifest.json                               every scene, its source, every output
//! <data>/orig/scenes/{train,val}/<scene>.mp4         split: the scenes, re-encoded, no audio
//! <data>/<res>/scenes/{train,val}/<scene>.mp4        transcode: H.264, keyframe every --gop
//! <data>/<res>/frames/{train,val}/<scene>/000000.png frames: every frame, presentation order
//! ```
//!
//! * [`split`] cuts sources at timestamps or at detected hard cuts ([`detect`]). **Cuts are
//!   frame-exact at any frame**: each scene is decoded from the keyframe before it and
//!   re-encoded (libx264, CRF 16, preset fast by default: visually lossless), so a cut need not
//!   land on a keyframe. A stream copy would only be exact where a cut falls on a keyframe.
//!   Audio is dropped. Pictures are made upright (display matrix or `rotate` tag) and an odd
//!   width or height loses its last column or row (4:2:0 needs even sizes).
//! * [`transcode`] re-encodes every scene at 4k/1080p/720p/540p (libx264 high profile, CRF 18,
//!   keyframe interval 4 with keyint_min 4 and no scene-cut keyframes, bilinear swscale), at a
//!   constant frame rate: frames of a variable-rate scene are placed on the grid of its nominal
//!   rate by presentation timestamp, duplicated or dropped.
//! * [`frames`] writes every frame of a transcode as PNG.
//!
//! Every stage runs scenes in parallel (`-j` worker threads), skips outputs that are up to date (keys in the
//! [`manifest`]), and writes atomically (temporary name in the same folder, then rename). A bad
//! input fails alone: the others go on and the [`Report`] lists it.

pub mod detect;
pub mod frames;
pub mod manifest;
pub mod media;
pub mod split;
pub mod transcode;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A target resolution, named by its height. A non-16:9 scene keeps its aspect ratio: the
/// height is the target's, the width the nearest even number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resolution {
    pub height: u32,
}

impl Resolution {
    /// The original's four: 4k, 1080p, 720p, 540p (largest first).
    pub const ALL: [Resolution; 4] =
        [Resolution { height: 2160 }, Resolution { height: 1080 }, Resolution { height: 720 }, Resolution { height: 540 }];

    /// Folder name: `4k` for 2160, else `<height>p`.
    pub fn name(&self) -> String {
        if self.height == 2160 { "4k".into() } else { format!("{}p", self.height) }
    }

    /// Output size for a `w` x `h` scene: 16:9 gives 3840x2160, 1920x1080, 1280x720, 960x540.
    pub fn size_for(&self, w: u32, h: u32) -> (u32, u32) {
        let width = (f64::from(self.height) * f64::from(w) / f64::from(h) / 2.0).round() as u32 * 2;
        (width.max(2), self.height)
    }
}

impl std::str::FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let height = match s.as_str() {
            "4k" | "2160p" => 2160,
            _ => s
                .strip_suffix('p')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|h| *h >= 16 && h % 2 == 0)
                .ok_or_else(|| format!("`{s}` is not a resolution (4k, 1080p, 720p, 540p, or <even height>p)"))?,
        };
        Ok(Resolution { height })
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// What a stage did, for the summary.
#[derive(Debug, Default)]
pub struct Report {
    pub stage: String,
    /// Outputs written (one line each).
    pub done: Vec<String>,
    /// Outputs already up to date.
    pub up_to_date: usize,
    /// Awkward inputs handled, targets skipped.
    pub notes: Vec<String>,
    /// Inputs or outputs that failed, with the error (naming the file).
    pub failed: Vec<String>,
}

impl Report {
    pub fn new(stage: &str) -> Report {
        Report { stage: stage.into(), ..Default::default() }
    }

    /// The summary, a few lines.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} written, {} up to date, {} failed\n",
            self.stage,
            self.done.len(),
            self.up_to_date,
            self.failed.len()
        );
        for n in &self.notes {
            s += &format!("  note: {n}\n");
        }
        for f in &self.failed {
            s += &format!("  FAILED: {f}\n");
        }
        s
    }
}

/// Bytes on disk of every file under `dir` (0 when absent).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes on disk per output folder of a data directory: (label, bytes), e.g. ("540p scenes", n).
pub fn disk_usage(data: &Path) -> Vec<(String, u64)> {
    let mut rows = Vec::new();
    let Ok(entries) = std::fs::read_dir(data) else { return rows };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for (sub, label) in [("scenes", "video"), ("frames", "PNG")] {
            let bytes = dir_bytes(&dir.join(sub));
            if bytes > 0 {
                rows.push((format!("{name} {label}"), bytes));
            }
        }
    }
    rows
}

/// Human-readable bytes.
pub fn human_bytes(b: u64) -> String {
    let mut v = b as f64;
    for unit in ["B", "kB", "MB", "GB", "TB"] {
        if v < 1000.0 || unit == "TB" {
            return if unit == "B" { format!("{b} B") } else { format!("{v:.1} {unit}") };
        }
        v /= 1000.0;
    }
    unreachable!()
}

/// Progress of a stage in frames: a status line redrawn in place with rate and ETA on a
/// terminal, plain lines (one per finished item) otherwise, nothing when hidden.
///
/// (Hand-rolled rather than indicatif, and [`parallel`] rather than rayon: those crates would
/// turn on features of crates Burn shares, portable-atomic and crossbeam-utils, and rebuild Burn.)
pub struct Progress {
    visible: bool,
    tty: bool,
    label: String,
    total_frames: u64,
    total_items: usize,
    frames: AtomicU64,
    items: AtomicUsize,
    start: Instant,
    /// Last redraw of the terminal line (or plain line), and the last item message.
    draw: Mutex<(Instant, String)>,
    /// Off a terminal, also print a plain status line this often while frames advance.
    plain_every: Option<Duration>,
}

impl Progress {
    pub fn new(label: &str, total_items: usize, total_frames: u64, visible: bool) -> Progress {
        let now = Instant::now();
        Progress {
            visible: visible && total_items > 0,
            tty: std::io::stderr().is_terminal(),
            label: label.into(),
            total_frames,
            total_items,
            frames: AtomicU64::new(0),
            items: AtomicUsize::new(0),
            start: now,
            draw: Mutex::new((now - Duration::from_secs(1), String::new())),
            plain_every: None,
        }
    }

    /// Off a terminal, prints a status line every `every` while frames advance (for long single
    /// items, where one line per item says nothing for a long time).
    pub fn with_plain_lines(mut self, every: Duration) -> Progress {
        self.plain_every = Some(every);
        self.draw.get_mut().unwrap_or_else(|e| e.into_inner()).0 = Instant::now();
        self
    }

    fn status(&self, msg: &str) -> String {
        let frames = self.frames.load(Ordering::Relaxed);
        let items = self.items.load(Ordering::Relaxed);
        let elapsed = self.start.elapsed().as_secs_f64();
        let rate = frames as f64 / elapsed.max(1e-9);
        let eta = if frames > 0 {
            format!("{:.0}s", self.total_frames.saturating_sub(frames) as f64 / rate)
        } else {
            "?".into()
        };
        format!(
            "{} [{items}/{}] {frames}/{} frames, {rate:.1} frames/s, {elapsed:.0}s, ETA {eta} {msg}",
            self.label, self.total_items, self.total_frames
        )
    }

    /// `n` more frames processed.
    pub fn frames(&self, n: u64) {
        self.frames.fetch_add(n, Ordering::Relaxed);
        if self.visible && self.tty {
            let mut d = self.draw.lock().unwrap_or_else(|e| e.into_inner());
            if d.0.elapsed() >= Duration::from_millis(200) {
                d.0 = Instant::now();
                let line = self.status(&d.1);
                eprint!("\r\x1b[2K{line}");
            }
        } else if let Some(every) = self.plain_every.filter(|_| self.visible) {
            let mut d = self.draw.lock().unwrap_or_else(|e| e.into_inner());
            if d.0.elapsed() >= every {
                d.0 = Instant::now();
                eprintln!("{}", self.status(&d.1));
            }
        }
    }

    /// One item (scene) finished; `msg` says which.
    pub fn item(&self, msg: &str) {
        self.items.fetch_add(1, Ordering::Relaxed);
        if !self.visible {
            return;
        }
        let mut d = self.draw.lock().unwrap_or_else(|e| e.into_inner());
        d.1 = msg.to_string();
        if self.tty {
            d.0 = Instant::now();
            eprint!("\r\x1b[2K{}", self.status(msg));
        } else {
            eprintln!("{}", self.status(msg));
        }
    }

    /// Ends the terminal line.
    pub fn finish(&self) {
        if self.visible && self.tty {
            eprintln!();
        }
    }
}

/// Runs `f` over `tasks` on `jobs` threads (0: all cores), each taking the next task when
/// done; results in task order.
pub fn parallel<T: Send, R: Send>(jobs: usize, tasks: Vec<T>, f: impl Fn(T) -> R + Sync) -> Result<Vec<R>> {
    let jobs = if jobs == 0 { cores() } else { jobs }.min(tasks.len()).max(1);
    let n = tasks.len();
    let queue = Mutex::new(tasks.into_iter().enumerate());
    let results = Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, task)) = next else { break };
                    let r = f(task);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| Error::Invalid("a worker thread panicked".into())))
        .collect()
}

/// Cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Worker threads for `jobs` (0: all cores) and codec threads for each of `tasks` tasks, so
/// that together they use the cores without oversubscribing them.
pub fn thread_split(jobs: usize, tasks: usize) -> (usize, usize) {
    let jobs = if jobs == 0 { cores() } else { jobs };
    let busy = jobs.min(tasks).max(1);
    (jobs, (cores() / busy).max(1))
}

/// `<dir>/.<name>.tmp-<pid>`: a temporary sibling (see [`crate::checkpoint::tmp_name`]).
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    crate::checkpoint::tmp_name(path)
}

/// Creates the parent folder of `path`.
pub(crate) fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_parse_and_size() {
        let r: Resolution = "4K".parse().unwrap();
        assert_eq!((r.name(), r.size_for(7680, 4320)), ("4k".to_string(), (3840, 2160)));
        for (name, w) in [("1080p", 1920), ("720p", 1280), ("540p", 960)] {
            let r: Resolution = name.parse().unwrap();
            assert_eq!(r.size_for(3840, 2160), (w, r.height), "{name}");
            assert_eq!(r.name(), name);
        }
        // 2.35:1 keeps its aspect with an even width
        assert_eq!("136p".parse::<Resolution>().unwrap().size_for(640, 272), (320, 136));
        assert_eq!("540p".parse::<Resolution>().unwrap().size_for(1440, 1080), (720, 540));
        assert!("541p".parse::<Resolution>().is_err());
        assert!("big".parse::<Resolution>().is_err());
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
