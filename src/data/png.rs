//! The PNG source: the frames of `vsr prep frames`, one folder per scene, decoded whole with the
//! `image` crate (a PNG cannot be decoded in part) and cropped.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use image::codecs::png::PngDecoder;
use image::{ColorType, DynamicImage, ImageDecoder};

use super::dataset::Scene;
use super::loader::{Counters, Crop, WindowReader, write_frame};
use crate::error::{Error, Result};

/// File name of frame `i` (what `vsr prep frames` writes).
pub fn frame_name(i: usize) -> String {
    format!("{i:06}.png")
}

fn err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Media { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Indexes a scene folder: frames numbered from 0 without gaps, size from the first one.
pub(crate) fn index_scene(dir: &Path) -> Result<Scene> {
    let mut numbers = Vec::new();
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".png") else { continue };
        if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let n: usize = stem.parse().map_err(|_| err(dir, format!("{name}: frame number too large")))?;
        numbers.push(n);
        bytes += e.metadata().map_or(0, |m| m.len());
    }
    numbers.sort_unstable();
    if let Some(gap) = numbers.iter().enumerate().find(|(i, n)| *i != **n).map(|(i, _)| i) {
        return Err(err(dir, format!("frame {} is missing (frames are numbered from 0 without gaps)", frame_name(gap))));
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (width, height) = if numbers.is_empty() {
        (0, 0)
    } else {
        let first = dir.join(frame_name(0));
        image::image_dimensions(&first).map_err(|e| err(&first, format!("not a readable PNG ({e})")))?
    };
    Ok(Scene {
        name,
        path: dir.to_path_buf(),
        frames: numbers.len(),
        height: height as usize,
        width: width as usize,
        bytes,
        #[cfg(feature = "video")]
        video: None,
    })
}

/// Decodes `path` into `buf` as packed RGB8; returns (width, height).
pub(crate) fn decode_rgb(path: &Path, buf: &mut Vec<u8>) -> Result<(usize, usize)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: image::ImageError| err(path, format!("not a readable PNG ({e})"));
    let dec = PngDecoder::new(BufReader::with_capacity(1 << 16, file)).map_err(bad)?;
    let (w, h) = dec.dimensions();
    if dec.color_type() == ColorType::Rgb8 {
        buf.resize(dec.total_bytes() as usize, 0);
        dec.read_image(buf).map_err(bad)?;
    } else {
        let img = DynamicImage::from_decoder(dec).map_err(bad)?.to_rgb8();
        buf.clear();
        buf.extend_from_slice(img.as_raw());
    }
    Ok((w as usize, h as usize))
}

/// Reads windows from PNG folders (one per worker thread).
#[derive(Default)]
pub(crate) struct PngReader {
    buf: Vec<u8>,
}

impl WindowReader for PngReader {
    fn read(&mut self, scene: &Scene, start: usize, frames: usize, crop: Crop, out: &mut [u8], counters: &Counters) -> Result<()> {
        for f in 0..frames {
            let path: PathBuf = scene.path.join(frame_name(start + f));
            let (w, h) = decode_rgb(&path, &mut self.buf)?;
            if (h, w) != (scene.height, scene.width) {
                return Err(err(&path, format!("is {w}x{h}, the scene's first frame {}x{}", scene.width, scene.height)));
            }
            counters.frame_decoded();
            write_frame(out, frames, f, crop, &self.buf, w * 3);
        }
        Ok(())
    }
}
