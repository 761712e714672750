//! The video source: windows decoded from the transcoded scene files with FFmpeg's libraries.
//!
//! * **Index** (at [`Dataset::open`](super::Dataset::open)): a demux-only pass records every
//!   frame's presentation timestamp and which frames are keyframes. Frames are addressed by
//!   their rank in presentation order, found by timestamp, never by counting decoded frames.
//! * **Decoders stay open and go forward.** Each worker keeps up to its share of
//!   `max_open_decoders` decoders (least recently used closed first; with NVDEC, one per file,
//!   since creating one costs far more than seeking it). A window is decoded by a
//!   decoder already positioned at or before it when that costs no more than a seek would (no
//!   keyframe between the decoder's position and the window, give or take one frame); otherwise
//!   by seeking to the keyframe at or before the window's first frame and decoding forward,
//!   dropping frames before it. The sampler's runs of consecutive windows make the first case
//!   the common one: one frame decoded per frame used.
//! * **Exact, or an error.** Every frame is identified by its timestamp; a missing frame after a
//!   seek (FFmpeg can drop pictures after seeking to a keyframe that is not an IDR frame) makes
//!   the window retry from the keyframe before, then from the start of the file. Decoders run
//!   with `err_detect=explode`, and frames flagged corrupt are refused, so damaged data is an
//!   error naming the file rather than concealed pixels.
//! * **Only the crop is converted.** yuv420p frames go to RGB through swscale for the cropped
//!   area only (even offsets: the same pixels as converting the whole frame, as `vsr prep frames`
//!   does, with the same swscale settings); other pixel formats convert the whole frame.
//! * **On the GPU's decoder, the same pixels.** With [`VideoDecoder::Nvdec`] files are decoded
//!   by NVDEC ([`super::nvdec`]); its NV12 pictures have the crop's chroma de-interleaved and go
//!   through the same yuv420p conversion, so a window is the same bytes whichever decoder read
//!   it. A file NVDEC cannot decode is read by the CPU decoder.
//!
//! Scene files are expected as `vsr prep transcode` writes them: upright (no display matrix),
//! one video stream, constant frame rate.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use video_rs::ffmpeg as ff;

use ff::ffi;
use ff::format::Pixel;
use ff::software::scaling::Flags as SwsFlags;

use super::dataset::Scene;
use super::loader::{Counters, Crop, WindowReader, frame_slot, write_frame};
use super::nvdec::{self, Nvdec};
use crate::error::{Error, Result};
use crate::prep::media::{self, FrameReader, media_err};

/// Timestamps and keyframes of a scene file.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    /// Presentation timestamp of every frame (stream time base), increasing.
    pub pts: Vec<i64>,
    /// Frames (ranks in `pts`) that are keyframes, increasing; never empty (frame 0 at least).
    pub keyframes: Vec<usize>,
}

impl Index {
    /// Rank of the frame shown at `pts`.
    pub fn frame_of(&self, pts: i64) -> Option<usize> {
        self.pts.binary_search(&pts).ok()
    }

    /// The last keyframe at or before frame `i`.
    pub fn key_at_or_before(&self, i: usize) -> usize {
        match self.keyframes.binary_search(&i) {
            Ok(k) => self.keyframes[k],
            Err(0) => 0,
            Err(k) => self.keyframes[k - 1],
        }
    }

    /// The last keyframe strictly before frame `i` (0 when none).
    pub fn key_before(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.key_at_or_before(i - 1) }
    }
}

/// Demuxes `path` (no decoding): its size, every frame's timestamp and the keyframes. Fails on
/// files that cannot be opened, have no video stream, or are truncated.
pub(crate) fn index_scene(path: &Path) -> Result<Scene> {
    let (mut ictx, stream) = media::open_input(path)?;
    let (listed, params) = {
        let st = ictx.stream(stream).expect("stream exists");
        (st.frames(), st.parameters())
    };
    let dec = ff::codec::context::Context::from_parameters(params)
        .and_then(|c| c.decoder().video())
        .map_err(|e| media_err(path, format!("unsupported video stream ({e})")))?;
    let (width, height) = (dec.width() as usize, dec.height() as usize);
    if width < 2 || height < 2 {
        return Err(media_err(path, format!("video stream has no usable picture size ({width}x{height})")));
    }
    let mut frames: Vec<(i64, bool)> = Vec::new();
    let mut packet = ff::Packet::empty();
    loop {
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => {
                return Err(media_err(path, format!("read error after {} frames ({e}): truncated or corrupt", frames.len())));
            }
        }
        if packet.stream() != stream {
            continue;
        }
        if let Some(t) = packet.pts().or(packet.dts()) {
            frames.push((t, packet.is_key()));
        }
    }
    if frames.is_empty() {
        return Err(media_err(path, "video stream holds no frames"));
    }
    if listed > 0 && (frames.len() as i64) < listed {
        return Err(media_err(
            path,
            format!("truncated: the index lists {listed} frames, only {} are in the file", frames.len()),
        ));
    }
    frames.sort_unstable();
    frames.dedup_by_key(|f| f.0);
    let pts: Vec<i64> = frames.iter().map(|f| f.0).collect();
    let mut keyframes: Vec<usize> = frames.iter().enumerate().filter(|(_, f)| f.1).map(|(i, _)| i).collect();
    if keyframes.first() != Some(&0) {
        keyframes.insert(0, 0);
    }
    let bytes = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let name = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Scene {
        name,
        path: path.to_path_buf(),
        frames: pts.len(),
        height,
        width,
        bytes,
        video: Some(Arc::new(Index { pts, keyframes })),
    })
}

/// One open file's decoder and where it stands.
struct Decoder {
    path: PathBuf,
    reader: FrameReader,
    /// Rank of the next frame the decoder will output, when known.
    next: Option<usize>,
    last_use: u64,
}

impl Decoder {
    fn open(path: &Path, gpu: Option<&Nvdec>) -> Result<Decoder> {
        let reader = match gpu {
            Some(gpu) => FrameReader::open_nvdec(path, gpu)?,
            None => FrameReader::open_strict(path)?,
        };
        Ok(Decoder { path: path.to_path_buf(), reader, next: Some(0), last_use: 0 })
    }

    /// Seeks to keyframe `frame` (rank) of `index`.
    fn seek(&mut self, index: &Index, frame: usize) -> Result<()> {
        self.next = None;
        self.reader.seek_to_key(index.pts[frame])
    }
}

/// A swscale context converting a (fmt, w, h) picture to RGB24 of the same size.
struct ToRgb {
    ctx: *mut ffi::SwsContext,
    key: (Pixel, usize, usize),
}

impl ToRgb {
    fn new(fmt: Pixel, w: usize, h: usize) -> Result<ToRgb> {
        // SAFETY: plain constructor; null means failure. BICUBIC as `vsr prep frames` uses (the
        // flags do not matter to the unscaled yuv -> rgb path, but keep them identical).
        let ctx = unsafe {
            ffi::sws_getContext(
                w as i32,
                h as i32,
                fmt.into(),
                w as i32,
                h as i32,
                Pixel::RGB24.into(),
                SwsFlags::BICUBIC.bits(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if ctx.is_null() {
            return Err(Error::Invalid(format!("swscale cannot convert {fmt:?} {w}x{h} to RGB")));
        }
        Ok(ToRgb { ctx, key: (fmt, w, h) })
    }

    /// Converts `h` rows starting at the plane pointers `src` into packed RGB `dst` (`w * 3` a row).
    ///
    /// # Safety
    /// `src`/`stride` must describe at least `key.2` rows of `key.1` pixels of format `key.0`.
    unsafe fn run(&mut self, src: [*const u8; 4], stride: [i32; 4], dst: &mut [u8]) {
        let (_, w, h) = self.key;
        assert!(dst.len() >= w * h * 3);
        let dst_ptr = [dst.as_mut_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut()];
        let dst_stride = [(w * 3) as i32, 0, 0, 0];
        // SAFETY: the caller vouches for the source; the destination holds h rows of w*3 bytes.
        unsafe { ffi::sws_scale(self.ctx, src.as_ptr(), stride.as_ptr(), 0, h as i32, dst_ptr.as_ptr(), dst_stride.as_ptr()) };
    }
}

impl Drop for ToRgb {
    fn drop(&mut self) {
        // SAFETY: created by sws_getContext, freed once.
        unsafe { ffi::sws_freeContext(self.ctx) }
    }
}

/// Reads windows from scene files (one per worker thread): its decoders, a frame, the RGB
/// conversion.
pub(crate) struct VideoReader {
    decoders: Vec<Decoder>,
    cap: usize,
    clock: u64,
    frame: ff::frame::Video,
    rgb: Vec<u8>,
    /// NV12's chroma of the crop, de-interleaved (U then V).
    chroma: Vec<u8>,
    to_rgb: Option<ToRgb>,
    /// NVDEC, when it decodes.
    gpu: Option<Nvdec>,
    /// Files NVDEC failed on, read by the CPU decoder.
    cpu_only: HashSet<PathBuf>,
}

impl VideoReader {
    /// A reader keeping at most `cap` decoders open, decoding on `gpu`'s NVDEC if given, else on
    /// the CPU.
    pub fn new(cap: usize, gpu: Option<Nvdec>) -> VideoReader {
        media::init();
        VideoReader {
            decoders: Vec::new(),
            cap: cap.max(1),
            clock: 0,
            frame: ff::frame::Video::empty(),
            rgb: Vec::new(),
            chroma: Vec::new(),
            to_rgb: None,
            gpu,
            cpu_only: HashSet::new(),
        }
    }

    /// A decoder for `path` that reaches frame `start` going forward: one already positioned at
    /// or before it with no keyframe in between (give or take a frame), else one sought to the
    /// keyframe at or before `start`. `fallback` (a keyframe) forces a fresh decoder sought there.
    fn decoder_for(&mut self, path: &Path, index: &Index, start: usize, fallback: Option<usize>, counters: &Counters) -> Result<usize> {
        self.clock += 1;
        let target = fallback.unwrap_or_else(|| index.key_at_or_before(start));
        let reaches = |d: &Decoder| d.next.is_some_and(|p| p <= start && p + 1 >= target);
        if fallback.is_some() {
            // the state of this file's decoders is suspect: start afresh
            self.decoders.retain(|d| d.path != path);
        } else if let Some(i) =
            (0..self.decoders.len()).filter(|&i| self.decoders[i].path == path && reaches(&self.decoders[i])).max_by_key(|&i| self.decoders[i].next)
        {
            self.decoders[i].last_use = self.clock;
            return Ok(i);
        }
        // Open one more while under the cap (the others keep their places), else seek this
        // file's least recently used decoder, else close the least recently used one. NVDEC
        // decoders cost tens of milliseconds to create (and GPU memory) but little to seek: one
        // per file, sought.
        let same = (0..self.decoders.len()).filter(|&i| self.decoders[i].path == path).min_by_key(|&i| self.decoders[i].last_use);
        let on_gpu = self.gpu.is_some() && !self.cpu_only.contains(path);
        let i = match same {
            Some(i) if self.decoders.len() >= self.cap || on_gpu => i,
            _ => {
                if self.decoders.len() >= self.cap {
                    let lru = (0..self.decoders.len()).min_by_key(|&i| self.decoders[i].last_use).expect("cap >= 1");
                    self.decoders.swap_remove(lru);
                }
                let gpu = self.gpu.as_ref().filter(|_| !self.cpu_only.contains(path));
                self.decoders.push(Decoder::open(path, gpu)?);
                counters.opened();
                self.decoders.len() - 1
            }
        };
        let d = &mut self.decoders[i];
        d.last_use = self.clock;
        if !reaches(&*d) {
            d.seek(index, target)?;
            counters.sought();
        }
        Ok(i)
    }

    #[allow(clippy::too_many_arguments)]
    fn try_read(&mut self, scene: &Scene, index: &Index, start: usize, frames: usize, crop: Crop, out: &mut [u8], fallback: Option<usize>, counters: &Counters) -> Result<()> {
        let di = self.decoder_for(&scene.path, index, start, fallback, counters)?;
        let mut got = 0;
        let result = loop {
            let d = &mut self.decoders[di];
            let t = match d.reader.read_frame(&mut self.frame) {
                Ok(Some(t)) => t,
                Ok(None) => {
                    break Err(media_err(&scene.path, format!("ended before frame {} of its {} frames", start + got, index.pts.len())));
                }
                Err(e) => break Err(e),
            };
            counters.frame_decoded();
            let Some(i) = index.frame_of(t) else {
                break Err(media_err(&scene.path, format!("decoded a frame at timestamp {t} that its index does not list")));
            };
            d.next = Some(i + 1);
            if i < start + got {
                continue;
            }
            if i > start + got {
                break Err(media_err(&scene.path, format!("frame {} did not come out of the decoder (got frame {i})", start + got)));
            }
            if let Err(e) = self.convert(scene, frames, got, crop, out) {
                break Err(e);
            }
            got += 1;
            if got == frames {
                break Ok(());
            }
        };
        if result.is_err() {
            self.decoders[di].next = None;
        }
        result
    }

    /// Converts the decoded frame's crop into frame `f` of the window `out` (F, h, w, 3).
    fn convert(&mut self, scene: &Scene, frames: usize, f: usize, crop: Crop, out: &mut [u8]) -> Result<()> {
        let frame = &self.frame;
        let (fmt, w, h) = (frame.format(), frame.width() as usize, frame.height() as usize);
        if (h, w) != (scene.height, scene.width) {
            return Err(media_err(&scene.path, format!("a frame is {w}x{h}, the stream {}x{}", scene.width, scene.height)));
        }
        let even = crop.y0 % 2 == 0 && crop.x0 % 2 == 0;
        let nv12 = fmt == Pixel::NV12 && even;
        let planar420 = (matches!(fmt, Pixel::YUV420P | Pixel::YUVJ420P) && even) || nv12;
        // NV12 converts as the yuv420p it is once de-interleaved (full range as yuvj420p).
        let as_fmt = match fmt {
            Pixel::NV12 if frame.color_range() == ff::color::Range::JPEG => Pixel::YUVJ420P,
            Pixel::NV12 => Pixel::YUV420P,
            f => f,
        };
        let key = if planar420 { (as_fmt, crop.w, crop.h) } else { (fmt, w, h) };
        if self.to_rgb.as_ref().is_none_or(|c| c.key != key) {
            self.to_rgb = Some(ToRgb::new(key.0, key.1, key.2)?);
        }
        let conv = self.to_rgb.as_mut().expect("just set");
        // 4:2:0: swscale writes the crop straight into the window (its rows are the crop's);
        // otherwise the whole frame into `rgb`, then the crop is copied.
        let dst = if planar420 {
            frame_slot(out, frames, f)
        } else {
            self.rgb.resize(w * h * 3, 0);
            &mut self.rgb[..]
        };
        // SAFETY: the frame's planes hold h rows of w pixels; for 4:2:0 the offsets stay inside
        // them (crop inside the frame, even offsets, chroma at half resolution).
        unsafe {
            let p = frame.as_ptr();
            let mut stride = [(*p).linesize[0], (*p).linesize[1], (*p).linesize[2], (*p).linesize[3]];
            let mut src = [(*p).data[0] as *const u8, (*p).data[1] as *const u8, (*p).data[2] as *const u8, (*p).data[3] as *const u8];
            if nv12 {
                // The crop's chroma rows (interleaved U, V pairs at half resolution) into planes.
                let (cw, ch) = (crop.w / 2, crop.h / 2);
                self.chroma.resize(2 * cw * ch, 0);
                let (u, v) = self.chroma.split_at_mut(cw * ch);
                for r in 0..ch {
                    let row = std::slice::from_raw_parts(src[1].offset((crop.y0 / 2 + r) as isize * stride[1] as isize + crop.x0 as isize), 2 * cw);
                    for (i, pair) in row.chunks_exact(2).enumerate() {
                        u[r * cw + i] = pair[0];
                        v[r * cw + i] = pair[1];
                    }
                }
                src = [src[0].offset(crop.y0 as isize * stride[0] as isize + crop.x0 as isize), u.as_ptr(), v.as_ptr(), std::ptr::null()];
                stride = [stride[0], cw as i32, cw as i32, 0];
            } else if planar420 {
                src[0] = src[0].offset(crop.y0 as isize * stride[0] as isize + crop.x0 as isize);
                for c in 1..3 {
                    src[c] = src[c].offset((crop.y0 / 2) as isize * stride[c] as isize + (crop.x0 / 2) as isize);
                }
            }
            conv.run(src, stride, dst);
        }
        if !planar420 {
            write_frame(out, frames, f, crop, &self.rgb, w * 3);
        }
        Ok(())
    }
}

impl WindowReader for VideoReader {
    fn read(&mut self, scene: &Scene, start: usize, frames: usize, crop: Crop, out: &mut [u8], counters: &Counters) -> Result<()> {
        let read = self.read_exact(scene, start, frames, crop, out, counters);
        match read {
            // NVDEC could not read the file (a format it lacks, an engine error): the CPU decoder
            // reads it from now on, and says what is wrong if the data is.
            Err(e) if self.gpu.is_some() && !self.cpu_only.contains(&scene.path) => {
                nvdec::note_fallback(&scene.path, &super::dataset::strip_path(&e.to_string(), &scene.path));
                counters.fell_back_to_cpu();
                self.cpu_only.insert(scene.path.clone());
                self.decoders.retain(|d| d.path != scene.path);
                self.read_exact(scene, start, frames, crop, out, counters)
            }
            r => r,
        }
    }
}

impl VideoReader {
    /// [`WindowReader::read`] with the decoders at hand, retrying from earlier keyframes.
    fn read_exact(&mut self, scene: &Scene, start: usize, frames: usize, crop: Crop, out: &mut [u8], counters: &Counters) -> Result<()> {
        let index = scene.video.clone().ok_or_else(|| media_err(&scene.path, "not indexed as a video"))?;
        let first = self.try_read(scene, &index, start, frames, crop, out, None, counters);
        let Err(mut err) = first else { return Ok(()) };
        // Retry from further back: the keyframe before this window's keyframe, then the start.
        let key = index.key_at_or_before(start);
        for fallback in [index.key_before(key), 0] {
            counters.retried();
            match self.try_read(scene, &index, start, frames, crop, out, Some(fallback), counters) {
                Ok(()) => return Ok(()),
                Err(e) => err = e,
            }
            if fallback == 0 {
                break;
            }
        }
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of `fmt` whose planes hold `fill(plane, row, byte)`.
    fn frame(fmt: Pixel, w: usize, h: usize, fill: impl Fn(usize, usize, usize) -> u8) -> ff::frame::Video {
        let mut f = ff::frame::Video::new(fmt, w as u32, h as u32);
        for p in 0..f.planes() {
            let (stride, rows) = (f.stride(p), f.plane_height(p) as usize);
            let bytes = if fmt == Pixel::NV12 && p == 1 { w } else { f.plane_width(p) as usize };
            let data = f.data_mut(p);
            for r in 0..rows {
                for b in 0..bytes {
                    data[r * stride + b] = fill(p, r, b);
                }
            }
        }
        f
    }

    /// NV12 pictures (NVDEC's) give the bytes of the same picture in yuv420p (the CPU decoder's):
    /// the crop's chroma is de-interleaved correctly, at any even offset.
    #[test]
    fn nv12_crops_equal_yuv420p_crops() {
        let (w, h) = (96, 48);
        let luma = |r: usize, b: usize| ((r * 37 + b * 11) % 220 + 16) as u8;
        let chroma = |c: usize, r: usize, b: usize| ((r * 13 + b * 7 + c * 101) % 224 + 16) as u8;
        let yuv = frame(Pixel::YUV420P, w, h, |p, r, b| if p == 0 { luma(r, b) } else { chroma(p - 1, r, b) });
        // NV12: U and V of chroma sample b interleaved at bytes 2b and 2b+1
        let nv12 = frame(Pixel::NV12, w, h, |p, r, b| if p == 0 { luma(r, b) } else { chroma(b % 2, r, b / 2) });
        let scene = Scene { name: "s".into(), path: "s.mp4".into(), frames: 1, height: h, width: w, bytes: 0, video: None };
        for crop in [Crop { y0: 0, x0: 0, h: 32, w: 64 }, Crop { y0: 10, x0: 22, h: 32, w: 64 }, Crop { y0: 16, x0: 32, h: 32, w: 64 }] {
            let mut out = [vec![0u8; crop.h * crop.w * 3], vec![0u8; crop.h * crop.w * 3]];
            let mut reader = VideoReader::new(1, None);
            for (f, o) in [&yuv, &nv12].into_iter().zip(out.iter_mut()) {
                reader.frame = f.clone();
                reader.convert(&scene, 1, 0, crop, o).unwrap();
            }
            assert!(out[0].iter().any(|&v| v != out[0][0]), "a flat picture tests nothing");
            assert!(out[0] == out[1], "crop {crop:?}: NV12 and yuv420p give different RGB");
        }
    }
}
