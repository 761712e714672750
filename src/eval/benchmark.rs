//! `vsr eval`: VSRNet on a standard VSR benchmark (Vid4's layout: one folder of PNG frames per
//! clip), beside the bicubic and bilinear baselines, with the literature's metrics.
//!
//! Per clip: every ground-truth frame is cropped to a multiple of the scale (BasicSR's
//! `mod_crop`) and degraded to its low-resolution input, either with MATLAB's bicubic
//! `imresize(gt, 1/4)` stored as uint8 ("BI", the convention of published Vid4 tables) or with
//! the model's own training degradation, 4x4 average pooling (kept in float, as in training); or
//! the low-resolution frames come from a folder (`--lr`, e.g. Vid4's `BIx4`). Every frame is then
//! super-resolved from its F-frame window (edges repeated), and three images are scored against
//! the ground truth, all stored as uint8 RGB like files on disk:
//! - VSRNet: the network's luma with the bicubic image's Cb/Cr (JPEG YCbCr, as [`crate::image`]);
//! - bicubic: MATLAB `imresize(lr, 4)`;
//! - bilinear: PyTorch's bilinear x4 (the network's own starting point).
//!
//! Scores: PSNR and SSIM on BT.601 luma in [16, 235] after cropping `crop_border` pixels from
//! every side; per frame, per clip (mean over its frames) and the mean over clips.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::plane::{Plane, Rgb};
use super::psnr::psnr;
use super::resize::{bilinear, imresize_rgb};
use super::ssim::ssim;
use crate::backend::VsrBackend;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::infer::{Engine, LrFrame, window};
use crate::model::vsrnet::SCALE;

/// How the low-resolution input is made from the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Degradation {
    /// MATLAB's `imresize(gt, 1/4, 'bicubic')` with antialiasing, stored as uint8 (BI).
    Bicubic,
    /// 4x4 average pooling, unrounded: the model's training degradation.
    Avgpool,
}

/// One clip of a benchmark: its name and frames in order.
#[derive(Debug, Clone)]
pub struct Clip {
    pub name: String,
    pub frames: Vec<PathBuf>,
}

fn pngs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The clips under `dir`: each sub-folder holding PNG frames (sorted by name), or `dir` itself
/// when it holds the PNGs.
pub fn find_clips(dir: &Path) -> Result<Vec<Clip>> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!("{}: not a folder of clips", dir.display())));
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    let mut clips = Vec::new();
    for sub in subdirs {
        let frames = pngs(&sub)?;
        if !frames.is_empty() {
            let name = sub.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            clips.push(Clip { name, frames });
        }
    }
    if clips.is_empty() {
        let frames = pngs(dir)?;
        if !frames.is_empty() {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "clip".into());
            clips.push(Clip { name, frames });
        }
    }
    if clips.is_empty() {
        return Err(Error::Invalid(format!("{}: no PNG frames in it or in its sub-folders", dir.display())));
    }
    Ok(clips)
}

/// Settings of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub degradation: Degradation,
    /// Pixels cropped from every side before scoring.
    pub crop_border: usize,
    /// Windows per batch through the network.
    pub batch: usize,
    /// Low-resolution frames to use instead of degrading: `<lr>/<clip>/<frame>.png`.
    pub lr: Option<PathBuf>,
    /// Where to write the super-resolved frames: `<save>/<clip>/<frame>.png`.
    pub save: Option<PathBuf>,
}

/// PSNR (dB) and SSIM of one method.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Scores {
    pub psnr: f64,
    pub ssim: f64,
}

/// Scores of the three methods.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Methods {
    pub vsrnet: Scores,
    pub bicubic: Scores,
    pub bilinear: Scores,
}

impl Methods {
    fn mean<'a>(items: impl Iterator<Item = &'a Methods>) -> Methods {
        let items: Vec<&Methods> = items.collect();
        let n = items.len().max(1) as f64;
        let avg = |f: &dyn Fn(&Methods) -> Scores| Scores {
            psnr: items.iter().map(|m| f(m).psnr).sum::<f64>() / n,
            ssim: items.iter().map(|m| f(m).ssim).sum::<f64>() / n,
        };
        Methods { vsrnet: avg(&|m| m.vsrnet), bicubic: avg(&|m| m.bicubic), bilinear: avg(&|m| m.bilinear) }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FrameResult {
    pub frame: String,
    #[serde(flatten)]
    pub scores: Methods,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClipResult {
    pub clip: String,
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    /// Means over the clip's frames.
    #[serde(flatten)]
    pub mean: Methods,
    pub per_frame: Vec<FrameResult>,
}

/// Everything `vsr eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub degradation: Degradation,
    pub lr_folder: Option<PathBuf>,
    pub scale: usize,
    pub crop_border: usize,
    pub window_frames: usize,
    pub flownet: bool,
    pub clips: Vec<ClipResult>,
    /// Mean over clips of the clip means (how Vid4 tables average).
    pub mean_over_clips: Methods,
    /// Mean over every frame of every clip.
    pub mean_over_frames: Methods,
}

impl EvalReport {
    /// A Markdown table: one row per clip and the mean over clips.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| clip | frames | size | VSRNet PSNR | VSRNet SSIM | bicubic PSNR | bicubic SSIM | bilinear PSNR | bilinear SSIM |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        let row = |name: &str, frames: usize, size: &str, m: &Methods| {
            format!(
                "| {name} | {frames} | {size} | {:.2} | {:.4} | {:.2} | {:.4} | {:.2} | {:.4} |\n",
                m.vsrnet.psnr, m.vsrnet.ssim, m.bicubic.psnr, m.bicubic.ssim, m.bilinear.psnr, m.bilinear.ssim
            )
        };
        for c in &self.clips {
            s += &row(&c.clip, c.frames, &format!("{}x{}", c.width, c.height), &c.mean);
        }
        let frames = self.clips.iter().map(|c| c.frames).sum();
        s += &row("**mean of clips**", frames, "", &self.mean_over_clips);
        s
    }
}

fn load(path: &Path) -> Result<Rgb> {
    Ok(Rgb::from_image(&RgbImage::load_png(path)?))
}

/// 4x4 (`scale`) average pooling of every channel.
pub fn avg_pool(img: &Rgb, scale: usize) -> Rgb {
    img.map(|p| {
        let (w, h) = (p.width / scale, p.height / scale);
        let mut out = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0.0;
                for dy in 0..scale {
                    for dx in 0..scale {
                        sum += p.at(x * scale + dx, y * scale + dy);
                    }
                }
                out.data[y * w + x] = sum / (scale * scale) as f64;
            }
        }
        out
    })
}

/// The low-resolution input of a ground-truth frame (already mod-cropped).
pub fn degrade(gt: &Rgb, degradation: Degradation) -> Rgb {
    match degradation {
        Degradation::Bicubic => imresize_rgb(gt, 1.0 / SCALE as f64).quantised(),
        Degradation::Avgpool => avg_pool(gt, SCALE),
    }
}

fn to_lr_frame(img: &Rgb) -> LrFrame {
    LrFrame {
        width: img.width(),
        height: img.height(),
        rgb: img.planes.iter().flat_map(|p| p.data.iter().map(|&v| v as f32)).collect(),
    }
}

fn from_lr_frame(f: &LrFrame) -> Rgb {
    let n = f.width * f.height;
    Rgb {
        planes: std::array::from_fn(|c| Plane {
            width: f.width,
            height: f.height,
            data: f.rgb[c * n..(c + 1) * n].iter().map(|&v| f64::from(v)).collect(),
        }),
    }
}

/// The three output images of one frame, as stored uint8 images.
pub struct Outputs {
    pub vsrnet: Rgb,
    pub bicubic: Rgb,
    pub bilinear: Rgb,
}

/// Builds the outputs from the low-resolution frame and the network's luma (in [0, 1]).
pub fn outputs(lr: &Rgb, y: &Plane) -> Outputs {
    let bicubic = imresize_rgb(lr, SCALE as f64).quantised();
    let bilinear = lr.map(|p| bilinear(p, p.width * SCALE, p.height * SCALE)).quantised();
    let y255 = Plane { data: y.data.iter().map(|v| v.clamp(0.0, 1.0) * 255.0).collect(), ..*y };
    let vsrnet = Rgb::from_ycbcr(&y255, &bicubic.cbcr()).quantised();
    Outputs { vsrnet, bicubic, bilinear }
}

/// PSNR and SSIM of `out` against `gt` on BT.601 luma, `border` pixels cropped.
pub fn score(gt: &Rgb, out: &Rgb, border: usize) -> Scores {
    let a = gt.y_bt601().crop_border(border);
    let b = out.y_bt601().crop_border(border);
    Scores { psnr: psnr(&a, &b), ssim: ssim(&a, &b) }
}

/// Evaluates `engine` on `clips`; `progress(clip, frames done, frames)` is called after every
/// frame.
pub fn evaluate<B: VsrBackend>(
    engine: &Engine<B>,
    clips: &[Clip],
    options: &EvalOptions,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<EvalReport> {
    let mut results = Vec::new();
    for clip in clips {
        results.push(evaluate_clip(engine, clip, options, &mut progress)?);
    }
    let mean_over_clips = Methods::mean(results.iter().map(|c| &c.mean));
    let mean_over_frames = Methods::mean(results.iter().flat_map(|c| c.per_frame.iter().map(|f| &f.scores)));
    Ok(EvalReport {
        degradation: options.degradation,
        lr_folder: options.lr.clone(),
        scale: SCALE,
        crop_border: options.crop_border,
        window_frames: engine.frames(),
        flownet: engine.has_flownet(),
        clips: results,
        mean_over_clips,
        mean_over_frames,
    })
}

fn evaluate_clip<B: VsrBackend>(
    engine: &Engine<B>,
    clip: &Clip,
    options: &EvalOptions,
    progress: &mut impl FnMut(&str, usize, usize),
) -> Result<ClipResult> {
    // Low-resolution frames of the whole clip (1/16 of the ground truth's pixels); ground truth
    // is read again when scoring, so that memory holds no more than a batch of it.
    let mut lr_frames = Vec::with_capacity(clip.frames.len());
    let mut size = None;
    for path in &clip.frames {
        let gt = load(path)?.mod_crop(SCALE);
        if gt.width() == 0 || gt.height() == 0 {
            return Err(Error::Invalid(format!("{}: smaller than {SCALE}x{SCALE} pixels", path.display())));
        }
        let dims = (gt.width(), gt.height());
        if *size.get_or_insert(dims) != dims {
            return Err(Error::Invalid(format!(
                "{}: {}x{} while the clip's first frame is {}x{}",
                path.display(),
                dims.0,
                dims.1,
                size.unwrap().0,
                size.unwrap().1
            )));
        }
        let lr = match &options.lr {
            None => degrade(&gt, options.degradation),
            Some(dir) => {
                let lr_path = dir.join(&clip.name).join(path.file_name().unwrap_or_default());
                let lr = load(&lr_path)?;
                if (lr.width() * SCALE, lr.height() * SCALE) != dims {
                    return Err(Error::Invalid(format!(
                        "{}: {}x{} is not 1/{SCALE} of its ground truth {} ({}x{} after cropping to a multiple of {SCALE})",
                        lr_path.display(),
                        lr.width(),
                        lr.height(),
                        path.display(),
                        dims.0,
                        dims.1
                    )));
                }
                lr
            }
        };
        lr_frames.push(to_lr_frame(&lr));
    }
    let (width, height) = size.expect("a clip has frames");

    let n = lr_frames.len();
    let mut per_frame = Vec::with_capacity(n);
    let centres: Vec<usize> = (0..n).collect();
    for batch in centres.chunks(options.batch.max(1)) {
        let windows: Vec<Vec<&LrFrame>> = batch
            .iter()
            .map(|&c| window(c, engine.frames(), n).into_iter().map(|i| &lr_frames[i]).collect())
            .collect();
        let srs = engine.run(&windows)?;
        for (&c, sr) in batch.iter().zip(srs) {
            let path = &clip.frames[c];
            let gt = load(path)?.mod_crop(SCALE);
            let y = Plane { width: sr.width, height: sr.height, data: sr.y.iter().map(|&v| f64::from(v)).collect() };
            let out = outputs(&from_lr_frame(&lr_frames[c]), &y);
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(dir) = &options.save {
                let dir = dir.join(&clip.name);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                out.vsrnet.to_image().save_png(&dir.join(format!("{name}.png")))?;
            }
            let b = options.crop_border;
            let scores = Methods {
                vsrnet: score(&gt, &out.vsrnet, b),
                bicubic: score(&gt, &out.bicubic, b),
                bilinear: score(&gt, &out.bilinear, b),
            };
            per_frame.push(FrameResult { frame: name, scores });
            progress(&clip.name, per_frame.len(), n);
        }
    }
    Ok(ClipResult {
        clip: clip.name.clone(),
        frames: n,
        width,
        height,
        mean: Methods::mean(per_frame.iter().map(|f| &f.scores)),
        per_frame,
    })
}
