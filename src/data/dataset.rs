//! The scenes of one split of one resolution of a prepared data set, indexed once at open:
//!
//! * video: `<data>/<res>/scenes/<split>/*.mp4` (also `.mkv`, `.mov`, `.m4v`). Each file is
//!   demuxed, not decoded: every frame's presentation timestamp, the keyframes, the picture
//!   size. A file that cannot be opened, has no video stream or is truncated is skipped.
//! * png: `<data>/<res>/frames/<split>/<scene>/` folders of `000000.png`, `000001.png`, ...
//!   (numbered from 0 without gaps); the size is read from the first file's header.
//!
//! Scenes are in name order; hidden entries (prep's temporary `.name.tmp-*`) are ignored. The
//! manifest is not needed: the folders are the truth. Nothing here depends on the window length:
//! scenes too short for a window are left out by the loader.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{SourceKind, Split};
use crate::error::{Error, Result};

/// One scene of a [`Dataset`].
#[derive(Debug, Clone)]
pub struct Scene {
    /// File stem (video) or folder name (PNG): `bikes_003`.
    pub name: String,
    /// The scene file (video) or folder (PNG).
    pub path: PathBuf,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Bytes on disk (for PNG: every frame file).
    pub bytes: u64,
    /// Timestamps and keyframes (video only).
    #[cfg(feature = "video")]
    pub(crate) video: Option<std::sync::Arc<super::video::Index>>,
}

impl Scene {
    /// Windows of `frames` frames at `stride` (0 when the scene is shorter than a window).
    pub fn num_windows(&self, frames: usize, stride: usize) -> usize {
        if frames == 0 || stride == 0 || self.frames < frames { 0 } else { (self.frames - frames) / stride + 1 }
    }
}

/// The scenes of `<data>/<res>/{scenes,frames}/<split>`.
#[derive(Debug)]
pub struct Dataset {
    kind: SourceKind,
    dir: PathBuf,
    resolution: String,
    split: Split,
    scenes: Vec<Scene>,
    skipped: Vec<(PathBuf, String)>,
}

impl Dataset {
    /// Indexes the scenes of `split` at `resolution` (a folder name: `720p`, `4k`) under
    /// `data_dir`. Unreadable scenes are skipped (see [`Dataset::skipped`]); no usable scene at
    /// all is an error.
    pub fn open(kind: SourceKind, data_dir: &Path, resolution: &str, split: Split) -> Result<Dataset> {
        let (sub, stage) = match kind {
            SourceKind::Video => ("scenes", "transcode"),
            SourceKind::Png => ("frames", "frames"),
        };
        let dir = data_dir.join(resolution).join(sub).join(split.dir());
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: no such folder: no {split} scenes at {resolution} ({kind} loader); make them with `vsr prep {stage} --data {} --resolution {resolution}`",
                dir.display(),
                data_dir.display()
            )));
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
            .filter(|p| match kind {
                SourceKind::Video => p.is_file() && is_video_name(p),
                SourceKind::Png => p.is_dir(),
            })
            .collect();
        entries.sort();
        let indexed = par_map(entries, |path| {
            let scene = match kind {
                SourceKind::Video => index_video(&path),
                SourceKind::Png => super::png::index_scene(&path),
            };
            (path, scene)
        });
        let mut scenes = Vec::new();
        let mut skipped = Vec::new();
        for (path, r) in indexed {
            match r {
                Ok(s) if s.frames == 0 => skipped.push((path, "holds no frames".into())),
                Ok(s) => scenes.push(s),
                Err(e) => {
                    let reason = strip_path(&e.to_string(), &path);
                    skipped.push((path, reason));
                }
            }
        }
        if scenes.is_empty() {
            let why = if skipped.is_empty() {
                format!("it holds no {}", if kind == SourceKind::Video { "video files (.mp4)" } else { "scene folders" })
            } else {
                let list: Vec<String> = skipped.iter().map(|(p, r)| format!("{}: {r}", p.display())).collect();
                format!("every scene is unreadable: {}", list.join("; "))
            };
            return Err(Error::Invalid(format!("{}: empty data set: {why}", dir.display())));
        }
        Ok(Dataset { kind, dir, resolution: resolution.to_string(), split, scenes, skipped })
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    pub fn split(&self) -> Split {
        self.split
    }

    pub fn resolution(&self) -> &str {
        &self.resolution
    }

    /// The folder the scenes are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Scene names, in order.
    pub fn scenes(&self) -> Vec<String> {
        self.scenes.iter().map(|s| s.name.clone()).collect()
    }

    /// The scenes with their sizes and frame counts.
    pub fn entries(&self) -> &[Scene] {
        &self.scenes
    }

    pub fn scene(&self, name: &str) -> Option<&Scene> {
        self.scenes.iter().find(|s| s.name == name)
    }

    /// Windows an epoch visits: every scene's windows of `frames` frames at `stride`.
    pub fn num_windows(&self, frames: usize, stride: usize) -> usize {
        self.scenes.iter().map(|s| s.num_windows(frames, stride)).sum()
    }

    /// Frame size (h, w). Scenes of one resolution share the height; when their widths (aspect
    /// ratios) differ, this is the smallest height and the smallest width: the area every scene
    /// covers.
    pub fn frame_size(&self) -> (usize, usize) {
        let h = self.scenes.iter().map(|s| s.height).min().unwrap_or(0);
        let w = self.scenes.iter().map(|s| s.width).min().unwrap_or(0);
        (h, w)
    }

    /// Bytes on disk of every usable scene.
    pub fn disk_bytes(&self) -> u64 {
        self.scenes.iter().map(|s| s.bytes).sum()
    }

    /// Scenes left out at open, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }
}

fn is_video_name(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "mp4" | "mkv" | "mov" | "m4v"))
}

/// `"<path>: reason"` -> `"reason"` (the path is listed beside it).
pub(crate) fn strip_path(msg: &str, path: &Path) -> String {
    let p = format!("{}: ", path.display());
    msg.strip_prefix(&p).unwrap_or(msg).to_string()
}

#[cfg(feature = "video")]
fn index_video(path: &Path) -> Result<Scene> {
    super::video::index_scene(path)
}

#[cfg(not(feature = "video"))]
fn index_video(path: &Path) -> Result<Scene> {
    Err(Error::Invalid(format!(
        "{}: this vsr was built without the `video` feature and cannot decode video; use the PNG loader or rebuild with `--features video`",
        path.display()
    )))
}

/// `f` over `items` on up to one thread per core; results in order.
pub(crate) fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get()).min(n).max(1);
    let queue = Mutex::new(items.into_iter().enumerate());
    let out = Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, item)) = next else { break };
                    let r = f(item);
                    out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().map(|r| r.expect("every item mapped")).collect()
}
