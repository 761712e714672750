//! `vsr prep frames`: every frame of every scene of a resolution as PNG (RGB, 8 bit), for the
//! PNG loader the original compares against: `<data>/<res>/frames/{train,val}/<scene>/000000.png`,
//! `000001.png`, ... (six digits, from 0, presentation order). Each scene folder is written under
//! a temporary name and renamed when complete, so a folder that exists is whole.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use video_rs::ffmpeg as ff;

use ff::format::Pixel;
use ff::software::scaling::Flags as SwsFlags;

use super::manifest::{self, Manifest, Png};
use super::media::{self, FrameReader, Scaler, Uprighter, media_err};
use super::{Progress, Report, Resolution, parallel, thread_split};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct FramesOptions {
    pub resolutions: Vec<Resolution>,
    pub jobs: usize,
    pub progress: bool,
}

/// File name of frame `i`.
pub fn frame_name(i: usize) -> String {
    format!("{i:06}.png")
}

/// Writes every frame of `video` into the folder `dir` (through a temporary folder). Returns
/// the number of frames.
pub fn write_frames(video: &Path, dir: &Path, threads: usize, progress: Option<&Progress>) -> Result<usize> {
    super::ensure_parent(dir)?;
    let tmp = super::tmp_path(dir);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| -> Result<usize> {
        let probe = media::probe(video)?;
        let mut reader = FrameReader::open(video, threads)?;
        let mut upright = Uprighter::new(&probe);
        let (w, h) = probe.display_size();
        let mut rgb = Scaler::new((Pixel::YUV420P, w, h), (Pixel::RGB24, w, h), SwsFlags::BICUBIC)?;
        let mut n = 0;
        let mut row = Vec::with_capacity(w as usize * h as usize * 3);
        while let Some((_, frame)) = reader.next_frame()? {
            let frame = rgb.run(&upright.apply(frame)?);
            let stride = frame.stride(0);
            row.clear();
            for y in 0..h as usize {
                row.extend_from_slice(&frame.data(0)[y * stride..y * stride + w as usize * 3]);
            }
            let path = tmp.join(frame_name(n));
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            PngEncoder::new_with_quality(BufWriter::new(file), CompressionType::Fast, FilterType::Adaptive)
                .write_image(&row, w, h, image::ExtendedColorType::Rgb8)
                .map_err(|e| media_err(&path, format!("writing PNG ({e})")))?;
            n += 1;
            if let Some(p) = progress {
                p.frames(1);
            }
        }
        if n != probe.frame_count() {
            return Err(media_err(video, format!("decoded {n} of its {} frames: truncated or corrupt", probe.frame_count())));
        }
        Ok(n)
    })();
    match result {
        Ok(n) => {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Number of entries in `dir` (None when it is not a folder).
fn entries(dir: &Path) -> Option<usize> {
    std::fs::read_dir(dir).ok().map(|d| d.count())
}

/// Writes the PNG frames of every scene transcoded at each resolution.
pub fn frames(data: &Path, opts: &FramesOptions) -> Result<Report> {
    let mut report = Report::new("frames");
    let mut m = Manifest::load(data)?;
    struct Task {
        scene: usize,
        res: String,
        key: String,
    }
    let mut tasks = Vec::new();
    for res in &opts.resolutions {
        let name = res.name();
        let (mut missing, mut smaller) = (0, 0);
        for (i, s) in m.scenes.iter().enumerate() {
            let Some(r) = s.renditions.get(&name) else {
                if res.height > s.height { smaller += 1 } else { missing += 1 }
                continue;
            };
            let key = manifest::key(&[&"png-v1", &r.key, &r.bytes, &r.mtime_ns]);
            let current = r.png.as_ref().is_some_and(|p| {
                p.key == key && entries(&data.join(&p.path)) == Some(p.frames) && p.frames == r.frames
            });
            if current {
                report.up_to_date += 1;
            } else {
                tasks.push(Task { scene: i, res: name.clone(), key });
            }
        }
        if smaller > 0 {
            report.notes.push(format!("{name}: {smaller} scene(s) smaller than {} lines have no transcode (only down-scales)", res.height));
        }
        if missing > 0 {
            report.notes.push(format!("{name}: {missing} scene(s) have no {name} transcode: run `vsr prep transcode` first"));
        }
    }
    let total: u64 = tasks.iter().map(|t| m.scenes[t.scene].renditions[&t.res].frames as u64).sum();
    let progress = Progress::new("frames", tasks.len(), total, opts.progress);
    let (jobs, threads) = thread_split(opts.jobs, tasks.len());
    let scenes = &m.scenes;
    let results = parallel(jobs, tasks, |t| {
        let s = &scenes[t.scene];
        let r = &s.renditions[&t.res];
        let dir = Path::new(&t.res).join("frames").join(s.split.dir()).join(&s.name);
        let n = write_frames(&data.join(&r.path), &data.join(&dir), threads, Some(&progress));
        progress.item(&format!("{} {}", s.name, t.res));
        (t, dir, n)
    })?;
    progress.finish();
    for (t, dir, n) in results {
        let s = &mut m.scenes[t.scene];
        match n {
            Ok(n) => {
                let bytes = super::dir_bytes(&data.join(&dir));
                report.done.push(format!("{} {}: {n} PNG frames", s.name, t.res));
                if let Some(r) = s.renditions.get_mut(&t.res) {
                    r.png = Some(Png { path: dir, frames: n, bytes, key: t.key });
                }
            }
            Err(e) => report.failed.push(format!("scene {} {}: {e}", s.name, t.res)),
        }
    }
    super::split::save_if_changed(&m, data)?;
    Ok(report)
}
