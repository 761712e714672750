//! `<data>/manifest.json`: every scene of a data set, where it came from, and every file made
//! from it. It is also what makes the stages idempotent: each output records a key (a hash of
//! its input's size and mtime and of the settings that made it) and its own size; an output
//! whose key and size still match is up to date and is not made again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name of the manifest inside a data directory.
pub const MANIFEST: &str = "manifest.json";

/// Version of the manifest layout.
pub const VERSION: u32 = 1;

/// Training or validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    /// Folder name under `scenes/` and `frames/`.
    pub fn dir(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Every source video of the last split, with the key of its size and mtime.
    pub sources: Vec<Source>,
    pub scenes: Vec<Scene>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub path: PathBuf,
    pub bytes: u64,
    pub mtime_ns: u128,
    /// Scenes cut from it (after dropping short ones).
    pub scenes: usize,
    pub frames: usize,
    pub vfr: bool,
    /// How the picture was turned upright ("none" when it was already).
    pub orientation: String,
    /// Odd width or height cropped by one column / row.
    pub cropped: bool,
}

/// One scene: `<data>/orig/scenes/<split>/<name>.mp4` and everything made from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scene {
    pub name: String,
    pub split: Split,
    pub source: PathBuf,
    /// Seconds after the source's first frame.
    pub start_time: f64,
    pub end_time: f64,
    /// Frames `[start_frame, end_frame)` of the source, in presentation order.
    pub start_frame: usize,
    pub end_frame: usize,
    pub frames: usize,
    pub width: u32,
    pub height: u32,
    /// Rate of the constant-rate grid the transcodes use (the source's nominal rate).
    pub fps: f64,
    pub fps_num: i32,
    pub fps_den: i32,
    /// The source's frame intervals are irregular (kept in `orig`, made constant by transcode).
    pub vfr: bool,
    /// Path of the scene file, relative to the data directory.
    pub path: PathBuf,
    pub bytes: u64,
    pub mtime_ns: u128,
    pub key: String,
    /// Transcodes by resolution name (`540p`, ...).
    #[serde(default)]
    pub renditions: BTreeMap<String, Rendition>,
}

/// A transcode of a scene.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rendition {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub frames: usize,
    pub crf: u32,
    pub gop: u32,
    pub preset: String,
    pub bytes: u64,
    pub mtime_ns: u128,
    pub key: String,
    /// Its frames as PNG files, when made.
    #[serde(default)]
    pub png: Option<Png>,
}

/// A folder of PNG frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Png {
    pub path: PathBuf,
    pub frames: usize,
    pub bytes: u64,
    pub key: String,
}

impl Manifest {
    /// Reads `<data>/manifest.json`; an absent file is an empty manifest.
    pub fn load(data: &Path) -> Result<Manifest> {
        let path = data.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest { version: VERSION, ..Default::default() });
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::Media { path: path.clone(), reason: format!("not a valid manifest: {e}") })?;
        if m.version != VERSION {
            return Err(Error::Media {
                path,
                reason: format!("manifest version {} (this vsr writes {VERSION}): run `vsr prep split` again", m.version),
            });
        }
        Ok(m)
    }

    /// Writes it atomically.
    pub fn save(&self, data: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("manifest serialises");
        crate::checkpoint::write_atomic(&data.join(MANIFEST), json.as_bytes())
    }

    pub fn scene(&self, name: &str) -> Option<&Scene> {
        self.scenes.iter().find(|s| s.name == name)
    }
}

/// Size and modification time (ns since the epoch) of a file.
pub fn stat(path: &Path) -> Result<(u64, u128)> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok((m.len(), mtime))
}

/// True when `path` exists with exactly this size and mtime.
pub fn unchanged(path: &Path, bytes: u64, mtime_ns: u128) -> bool {
    stat(path).is_ok_and(|s| s == (bytes, mtime_ns))
}

/// A stable 64-bit FNV-1a hash of `parts`, as 16 hex digits.
pub fn key(parts: &[&dyn std::fmt::Display]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.to_string().bytes().chain([0x1f]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_separate_parts() {
        assert_eq!(key(&[&"a", &1]), key(&[&"a", &1]));
        assert_ne!(key(&[&"ab", &""]), key(&[&"a", &"b"]));
        // FNV-1a of "" followed by the separator byte: fixed forever.
        assert_eq!(key(&[&""]), format!("{:016x}", (0xcbf2_9ce4_8422_2325u64 ^ 0x1f).wrapping_mul(0x0100_0000_01b3)));
    }
}
