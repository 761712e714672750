//! FFmpeg plumbing shared by the preparation stages: probing a file's video stream (demux only),
//! decoding frames in presentation order, making them upright, even-sized yuv420p, scaling, and
//! encoding H.264 into MP4. Everything goes through FFmpeg's libraries (ffmpeg-next, re-exported
//! by video-rs); no external program is run.

use std::path::{Path, PathBuf};
use std::sync::Once;

use video_rs::ffmpeg as ff;

use ff::ffi;
use ff::format::Pixel;
use ff::software::scaling::Flags as SwsFlags;
use ff::{Rational, codec, media};

use crate::error::{Error, Result};

/// An error about `path`.
pub(crate) fn media_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Media { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Initialises FFmpeg once and silences its own logging: errors reach the user through ours,
/// one line naming the file.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
}

/// How a frame must be turned to be upright: output pixel (x, y) reads input pixel (a, b) =
/// `transpose ? (y, x) : (x, y)`, then `a` mirrored when `flip_x`, `b` when `flip_y`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Orientation {
    pub transpose: bool,
    pub flip_x: bool,
    pub flip_y: bool,
}

impl Orientation {
    pub fn is_identity(&self) -> bool {
        *self == Orientation::default()
    }

    /// What FFmpeg's command line does with a display matrix (`autorotate`, FFmpeg 6 rules:
    /// rotations by multiples of 90 degrees, with mirroring).
    pub fn from_display_matrix(m: &[i32; 9]) -> Orientation {
        // SAFETY: `m` holds the 9 entries the function reads.
        let rot = unsafe { ffi::av_display_rotation_get(m.as_ptr()) };
        let mut theta = if rot.is_nan() { 0.0 } else { -rot.round() };
        theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
        let t = |transpose, flip_x, flip_y| Orientation { transpose, flip_x, flip_y };
        if (theta - 90.0).abs() < 1.0 {
            // transpose=clock, or cclock_flip (a plain transpose) when mirrored
            if m[3] > 0 { t(true, false, false) } else { t(true, false, true) }
        } else if (theta - 180.0).abs() < 1.0 {
            t(false, m[0] < 0, m[4] < 0)
        } else if (theta - 270.0).abs() < 1.0 {
            // transpose=cclock, or clock_flip when mirrored
            if m[3] < 0 { t(true, true, true) } else { t(true, true, false) }
        } else {
            t(false, false, m[4] < 0)
        }
    }

    /// Degrees clockwise a viewer turns the stored picture (for reports).
    pub fn describe(&self) -> String {
        match (self.transpose, self.flip_x, self.flip_y) {
            (false, false, false) => "none".into(),
            (true, false, true) => "rotated 90 clockwise".into(),
            (true, true, false) => "rotated 90 counter-clockwise".into(),
            (false, true, true) => "rotated 180".into(),
            (false, true, false) => "mirrored horizontally".into(),
            (false, false, true) => "mirrored vertically".into(),
            (true, false, false) => "transposed".into(),
            (true, true, true) => "anti-transposed".into(),
        }
    }

    /// Size after turning a `w` x `h` picture.
    pub fn apply_size(&self, w: u32, h: u32) -> (u32, u32) {
        if self.transpose { (h, w) } else { (w, h) }
    }
}

/// What a demux-only pass learns about a file's video stream.
#[derive(Debug, Clone)]
pub struct Probe {
    pub path: PathBuf,
    pub stream_index: usize,
    pub time_base: Rational,
    /// Presentation timestamps of every frame (stream time base), sorted.
    pub pts: Vec<i64>,
    /// Presentation end of the last frame (stream time base).
    pub end_pts: i64,
    /// Coded picture size.
    pub coded_width: u32,
    pub coded_height: u32,
    pub pixel_format: Pixel,
    pub orientation: Orientation,
    /// Frame rate the output grid uses (nominal rate of the stream, snapped to a standard rate).
    pub fps: Rational,
    /// Frame intervals are not all equal.
    pub vfr: bool,
    pub has_audio: bool,
}

impl Probe {
    /// Upright, even-sized picture size: what every stage outputs before scaling.
    pub fn display_size(&self) -> (u32, u32) {
        let (w, h) = self.orientation.apply_size(self.coded_width, self.coded_height);
        (w & !1, h & !1)
    }

    /// Seconds of `pts` after the first frame.
    pub fn seconds(&self, pts: i64) -> f64 {
        (pts - self.pts[0]) as f64 * f64::from(self.time_base)
    }

    pub fn frame_count(&self) -> usize {
        self.pts.len()
    }

    /// Odd coded sizes are cropped by one column / row.
    pub fn cropped(&self) -> bool {
        self.coded_width % 2 == 1 || self.coded_height % 2 == 1
    }
}

const STANDARD_RATES: [(i32, i32); 11] =
    [(24000, 1001), (24, 1), (25, 1), (30000, 1001), (30, 1), (48, 1), (50, 1), (60000, 1001), (60, 1), (100, 1), (120, 1)];

/// The rate of the constant-rate output grid, snapped to the nearest standard rate when within
/// 2%: for a constant-rate stream its average rate (exact in the container), else the rate of
/// its median frame interval (gaps and jitter of a variable-rate stream do not move it), else
/// FFmpeg's guess; 25 fps when nothing is usable.
pub(crate) fn grid_rate(avg: Rational, guess: Rational, median_rate: f64, vfr: bool) -> Rational {
    let valid = |r: f64| r.is_finite() && r > 0.0 && r < 1000.0;
    let as_f = |r: Rational| if r.denominator() != 0 { f64::from(r) } else { 0.0 };
    let candidates = if vfr { [median_rate, as_f(avg), as_f(guess)] } else { [as_f(avg), median_rate, as_f(guess)] };
    let Some(rate) = candidates.into_iter().find(|r| valid(*r)) else { return Rational::new(25, 1) };
    let err = |&(n, d): &(i32, i32)| (rate / (n as f64 / d as f64) - 1.0).abs();
    match STANDARD_RATES.iter().min_by(|a, b| err(a).total_cmp(&err(b))) {
        Some(&(n, d)) if err(&(n, d)) < 0.02 => Rational::new(n, d),
        _ if !vfr && avg.numerator() > 0 && avg.denominator() > 0 => avg.reduce(),
        _ => Rational::new((rate * 1000.0).round() as i32, 1000).reduce(),
    }
}

fn display_matrix(stream: &ff::format::stream::Stream) -> Option<[i32; 9]> {
    // SAFETY: the stream pointer is valid while `stream` lives; side data of this type is 9 i32.
    unsafe {
        let mut size = 0usize;
        let ptr = ffi::av_stream_get_side_data(
            stream.as_ptr(),
            ffi::AVPacketSideDataType::AV_PKT_DATA_DISPLAYMATRIX,
            &mut size,
        );
        if ptr.is_null() || size < 36 {
            return None;
        }
        let mut m = [0i32; 9];
        std::ptr::copy_nonoverlapping(ptr as *const i32, m.as_mut_ptr(), 9);
        Some(m)
    }
}

/// Opens `path`, checking that it is a readable file with a video stream.
pub(crate) fn open_input(path: &Path) -> Result<(ff::format::context::Input, usize)> {
    init();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(media_err(path, "not a regular file"));
    }
    std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let ictx = ff::format::input(&path).map_err(|e| media_err(path, format!("not a readable video file ({e})")))?;
    let index = ictx
        .streams()
        .best(media::Type::Video)
        .map(|s| s.index())
        .ok_or_else(|| media_err(path, "has no video stream"))?;
    Ok((ictx, index))
}

/// Reads every packet of `path`'s video stream (no decoding): timestamps, rotation, rates; fails
/// on truncation (fewer packets than the index lists, or a read error).
pub fn probe(path: &Path) -> Result<Probe> {
    let (mut ictx, index) = open_input(path)?;
    let (time_base, avg, nominal, listed, orientation, params) = {
        let st = ictx.stream(index).expect("stream exists");
        let mut orientation = display_matrix(&st).map(|m| Orientation::from_display_matrix(&m)).unwrap_or_default();
        if orientation.is_identity()
            && let Some(rot) = st.metadata().get("rotate").and_then(|r| r.trim().parse::<f64>().ok())
        {
            let mut m = [0i32; 9];
            // SAFETY: m has room for the 3x3 matrix.
            unsafe { ffi::av_display_rotation_set(m.as_mut_ptr(), rot) };
            orientation = Orientation::from_display_matrix(&m);
        }
        (st.time_base(), st.avg_frame_rate(), st.rate(), st.frames(), orientation, st.parameters())
    };
    let has_audio = ictx.streams().any(|s| s.parameters().medium() == media::Type::Audio);
    let dec = codec::context::Context::from_parameters(params)
        .and_then(|c| c.decoder().video())
        .map_err(|e| media_err(path, format!("unsupported video stream ({e})")))?;
    let (coded_width, coded_height, pixel_format) = (dec.width(), dec.height(), dec.format());
    if coded_width < 2 || coded_height < 2 {
        return Err(media_err(path, format!("video stream has no usable picture size ({coded_width}x{coded_height})")));
    }
    let mut pts = Vec::new();
    let mut last_duration = 0i64;
    let mut packet = ff::Packet::empty();
    loop {
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => {
                return Err(media_err(path, format!("read error after {} frames ({e}): truncated or corrupt", pts.len())));
            }
        }
        if packet.stream() != index {
            continue;
        }
        if let Some(t) = packet.pts().or(packet.dts()) {
            pts.push(t);
            last_duration = packet.duration();
        }
    }
    if pts.is_empty() {
        return Err(media_err(path, "video stream holds no frames"));
    }
    if listed > 0 && (pts.len() as i64) < listed {
        return Err(media_err(
            path,
            format!("truncated: the index lists {listed} frames, only {} are in the file", pts.len()),
        ));
    }
    pts.sort_unstable();
    pts.dedup();
    let deltas: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = deltas.clone();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let vfr = match (sorted.first(), sorted.last()) {
        (Some(&lo), Some(&hi)) => hi - lo > 1.max(median / 200),
        _ => false,
    };
    let median_rate = if median > 0 { 1.0 / (median as f64 * f64::from(time_base)) } else { 0.0 };
    let fps = grid_rate(avg, nominal, median_rate, vfr);
    let last_len = if last_duration > 0 {
        last_duration
    } else if median > 0 {
        median
    } else {
        ((1.0 / f64::from(fps)) / f64::from(time_base)).round().max(1.0) as i64
    };
    let end_pts = pts[pts.len() - 1] + last_len;
    Ok(Probe {
        path: path.to_path_buf(),
        stream_index: index,
        time_base,
        pts,
        end_pts,
        coded_width,
        coded_height,
        pixel_format,
        orientation,
        fps,
        vfr,
        has_audio,
    })
}

/// Decodes a file's video stream frame by frame, in presentation order.
pub struct FrameReader {
    path: PathBuf,
    ictx: ff::format::context::Input,
    decoder: ff::decoder::Video,
    index: usize,
    flushed: bool,
    eof: bool,
    /// Frames flagged damaged are errors ([`FrameReader::open_strict`]).
    strict: bool,
    /// Streams whose packets are kept (in file order) for [`FrameReader::take_packets`].
    keep: Vec<usize>,
    kept: std::collections::VecDeque<(usize, ff::Packet)>,
}

impl FrameReader {
    /// Opens `path` for decoding with `threads` decoder threads (0: FFmpeg's choice).
    pub fn open(path: &Path, threads: usize) -> Result<FrameReader> {
        Self::open_with(path, ff::threading::Config { kind: ff::threading::Type::Frame, count: threads, ..Default::default() }, false)
    }

    /// Opens `path` for random access: one decoder thread (frame threads would add frames of
    /// latency to every seek) and strict decoding (`err_detect=explode`; a frame flagged damaged
    /// is an error naming the file, never concealed pixels).
    pub fn open_strict(path: &Path) -> Result<FrameReader> {
        Self::open_with(path, ff::threading::Config { kind: ff::threading::Type::Slice, count: 1, ..Default::default() }, true)
    }

    /// Opens `path` for random access decoded by NVDEC on `gpu` (H.264 only): frames come as
    /// NV12 in host memory, the same pixels as [`FrameReader::open_strict`]'s (see
    /// [`crate::data::nvdec`]); damaged data is concealed, not flagged.
    pub fn open_nvdec(path: &Path, gpu: &crate::data::nvdec::Nvdec) -> Result<FrameReader> {
        Self::open_with_decoder(path, ff::threading::Config::default(), false, Some(gpu))
    }

    fn open_with(path: &Path, threading: ff::threading::Config, strict: bool) -> Result<FrameReader> {
        Self::open_with_decoder(path, threading, strict, None)
    }

    fn open_with_decoder(
        path: &Path,
        threading: ff::threading::Config,
        strict: bool,
        nvdec: Option<&crate::data::nvdec::Nvdec>,
    ) -> Result<FrameReader> {
        let (ictx, index) = open_input(path)?;
        let params = ictx.stream(index).expect("stream exists").parameters();
        let codec_id = params.id();
        let mut ctx = codec::context::Context::from_parameters(params)
            .map_err(|e| media_err(path, format!("unsupported video stream ({e})")))?;
        ctx.set_threading(threading);
        if strict {
            // SAFETY: a valid, not yet opened context; plain int field.
            unsafe { (*ctx.as_mut_ptr()).err_recognition |= ffi::AV_EF_EXPLODE as i32 };
        }
        let opened = match nvdec {
            None => ctx.decoder().video(),
            Some(gpu) => {
                if codec_id != codec::Id::H264 {
                    return Err(media_err(path, format!("NVDEC reads H.264 here, this video is {codec_id:?}")));
                }
                let cuvid = ff::decoder::find_by_name("h264_cuvid").ok_or_else(|| media_err(path, "this FFmpeg has no h264_cuvid decoder"))?;
                // SAFETY: a valid, not yet opened context: the GPU device (a new reference, owned
                // and released by the context), host NV12 output, frames out as soon as they are
                // decodable (no display delay: a window's last frame needs no packets after it).
                let device = gpu.device_ref();
                if device.is_null() {
                    return Err(media_err(path, "cannot reference FFmpeg's CUDA device for NVDEC"));
                }
                unsafe {
                    let c = ctx.as_mut_ptr();
                    (*c).hw_device_ctx = device;
                    (*c).get_format = Some(crate::data::nvdec::host_nv12);
                    if crate::data::nvdec::low_delay() {
                        (*c).flags |= ffi::AV_CODEC_FLAG_LOW_DELAY as i32;
                    }
                }
                ctx.decoder().open_as(cuvid).and_then(|d| d.video())
            }
        };
        let decoder = opened.map_err(|e| media_err(path, format!("no decoder for its video ({e})")))?;
        Ok(FrameReader {
            path: path.to_path_buf(),
            ictx,
            decoder,
            index,
            flushed: false,
            eof: false,
            strict,
            keep: Vec::new(),
            kept: Default::default(),
        })
    }

    /// Keeps the packets of `streams` met while decoding, for [`FrameReader::take_packets`].
    pub fn keep_streams(&mut self, streams: &[usize]) {
        self.keep = streams.to_vec();
    }

    /// The kept packets read so far, in file order, with their stream index.
    pub fn take_packets(&mut self) -> impl Iterator<Item = (usize, ff::Packet)> + '_ {
        self.kept.drain(..)
    }

    /// Index, codec parameters and time base of every stream of `medium`.
    pub fn streams_of(&self, medium: media::Type) -> Vec<(usize, codec::Parameters, Rational)> {
        self.ictx
            .streams()
            .filter(|s| s.parameters().medium() == medium)
            .map(|s| (s.index(), s.parameters(), s.time_base()))
            .collect()
    }

    /// The video stream's time base.
    pub fn time_base(&self) -> Rational {
        self.ictx.stream(self.index).expect("stream exists").time_base()
    }

    /// The video decoder (picture size, format, colour description).
    pub fn decoder(&self) -> &ff::decoder::Video {
        &self.decoder
    }

    /// Seeks to the last keyframe at or before `pts` (stream time base).
    pub fn seek(&mut self, pts: i64) -> Result<()> {
        let tb = self.ictx.stream(self.index).expect("stream exists").time_base();
        let ts = pts.rescale(tb, ff::rescale::TIME_BASE);
        self.ictx.seek(ts, ..ts).map_err(|e| media_err(&self.path, format!("cannot seek ({e})")))?;
        self.reset();
        Ok(())
    }

    /// Seeks to the keyframe whose presentation timestamp (stream time base) is `pts` exactly.
    pub fn seek_to_key(&mut self, pts: i64) -> Result<()> {
        // SAFETY: a valid open input; timestamps in the stream's time base.
        let ret = unsafe { ffi::avformat_seek_file(self.ictx.as_mut_ptr(), self.index as i32, i64::MIN, pts, pts, 0) };
        if ret < 0 {
            return Err(media_err(&self.path, format!("cannot seek to timestamp {pts} ({})", ff::Error::from(ret))));
        }
        self.reset();
        Ok(())
    }

    fn reset(&mut self) {
        self.decoder.flush();
        self.flushed = false;
        self.eof = false;
    }

    /// The next frame with its presentation timestamp (stream time base), or None at the end.
    pub fn next_frame(&mut self) -> Result<Option<(i64, ff::frame::Video)>> {
        let mut frame = ff::frame::Video::empty();
        Ok(self.read_frame(&mut frame)?.map(|t| (t, frame)))
    }

    /// The next frame into `frame` (its buffers reused); its presentation timestamp (stream
    /// time base), or None at the end.
    pub fn read_frame(&mut self, frame: &mut ff::frame::Video) -> Result<Option<i64>> {
        loop {
            match self.decoder.receive_frame(frame) {
                Ok(()) => {
                    let Some(t) = frame.timestamp().or(frame.pts()) else { continue };
                    if self.strict {
                        // SAFETY: a frame just filled by the decoder.
                        let damaged = unsafe {
                            let f = frame.as_ptr();
                            ((*f).flags & ffi::AV_FRAME_FLAG_CORRUPT as i32) != 0 || (*f).decode_error_flags != 0
                        };
                        if damaged {
                            return Err(media_err(&self.path, format!("corrupt video data: the frame at timestamp {t} is damaged")));
                        }
                    }
                    return Ok(Some(t));
                }
                Err(ff::Error::Eof) => return Ok(None),
                Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {}
                Err(e) => return Err(media_err(&self.path, format!("corrupt video data ({e})"))),
            }
            if self.flushed {
                return Ok(None);
            }
            if self.eof {
                self.decoder.send_eof().map_err(|e| media_err(&self.path, format!("decoding failed ({e})")))?;
                self.flushed = true;
                continue;
            }
            let mut packet = ff::Packet::empty();
            match packet.read(&mut self.ictx) {
                Ok(()) => {
                    if packet.stream() == self.index {
                        self.decoder
                            .send_packet(&packet)
                            .map_err(|e| media_err(&self.path, format!("corrupt video data ({e})")))?;
                    } else if self.keep.contains(&packet.stream()) {
                        self.kept.push_back((packet.stream(), packet));
                    }
                }
                Err(ff::Error::Eof) => self.eof = true,
                Err(e) => return Err(media_err(&self.path, format!("read error ({e}): truncated or corrupt"))),
            }
        }
    }
}

use ff::util::mathematics::Rescale;

/// Raw sws_scale with an explicit source size, so that an odd source is cropped (right column,
/// bottom row) rather than stretched.
pub struct Scaler {
    ctx: *mut ffi::SwsContext,
    src: (Pixel, u32, u32),
    dst: (Pixel, u32, u32),
}

// SAFETY: the context is used by one thread at a time (owned, &mut for every call).
unsafe impl Send for Scaler {}

impl Scaler {
    pub fn new(src: (Pixel, u32, u32), dst: (Pixel, u32, u32), flags: SwsFlags) -> Result<Scaler> {
        // SAFETY: plain constructor; null means failure.
        let ctx = unsafe {
            ffi::sws_getContext(
                src.1 as i32,
                src.2 as i32,
                src.0.into(),
                dst.1 as i32,
                dst.2 as i32,
                dst.0.into(),
                flags.bits(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if ctx.is_null() {
            return Err(Error::Invalid(format!("swscale cannot convert {src:?} to {dst:?}")));
        }
        Ok(Scaler { ctx, src, dst })
    }

    /// Scales `input` (its top-left `src` region) into a new frame.
    pub fn run(&mut self, input: &ff::frame::Video) -> ff::frame::Video {
        assert!(input.format() == self.src.0 && input.width() >= self.src.1 && input.height() >= self.src.2);
        let mut out = ff::frame::Video::new(self.dst.0, self.dst.1, self.dst.2);
        // SAFETY: both frames are allocated with at least the sizes the context was made for.
        unsafe {
            ffi::sws_scale(
                self.ctx,
                (*input.as_ptr()).data.as_ptr() as *const *const u8,
                (*input.as_ptr()).linesize.as_ptr(),
                0,
                self.src.2 as i32,
                (*out.as_mut_ptr()).data.as_ptr(),
                (*out.as_mut_ptr()).linesize.as_ptr(),
            );
        }
        out
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        // SAFETY: created by sws_getContext, freed once.
        unsafe { ffi::sws_freeContext(self.ctx) }
    }
}

/// Turns decoded frames into upright, even-sized yuv420p frames (the format every output uses).
pub struct Uprighter {
    orientation: Orientation,
    convert: Option<Scaler>,
    src: (Pixel, u32, u32),
}

impl Uprighter {
    pub fn new(probe: &Probe) -> Uprighter {
        Uprighter { orientation: probe.orientation, convert: None, src: (Pixel::None, 0, 0) }
    }

    pub fn apply(&mut self, frame: ff::frame::Video) -> Result<ff::frame::Video> {
        let (fmt, w, h) = (frame.format(), frame.width(), frame.height());
        let even = (w & !1, h & !1);
        let mut frame = if fmt == Pixel::YUV420P && w % 2 == 0 && h % 2 == 0 {
            frame
        } else {
            if self.convert.is_none() || self.src != (fmt, w, h) {
                self.convert =
                    Some(Scaler::new((fmt, even.0, even.1), (Pixel::YUV420P, even.0, even.1), SwsFlags::BILINEAR)?);
                self.src = (fmt, w, h);
            }
            self.convert.as_mut().expect("just set").run(&frame)
        };
        if !self.orientation.is_identity() {
            frame = reorient(&frame, self.orientation);
        }
        frame.set_kind(ff::picture::Type::None);
        Ok(frame)
    }
}

/// Applies `o` to every plane of a yuv420p frame.
pub fn reorient(input: &ff::frame::Video, o: Orientation) -> ff::frame::Video {
    let (w, h) = o.apply_size(input.width(), input.height());
    let mut out = ff::frame::Video::new(Pixel::YUV420P, w, h);
    for p in 0..3 {
        let (iw, ih) = (input.plane_width(p) as usize, input.plane_height(p) as usize);
        let (ow, oh) = (out.plane_width(p) as usize, out.plane_height(p) as usize);
        let (istride, ostride) = (input.stride(p), out.stride(p));
        let src = input.data(p);
        let dst = out.data_mut(p);
        for oy in 0..oh {
            let row = &mut dst[oy * ostride..oy * ostride + ow];
            for (ox, px) in row.iter_mut().enumerate() {
                let (a, b) = if o.transpose { (oy, ox) } else { (ox, oy) };
                let a = if o.flip_x { iw - 1 - a } else { a };
                let b = if o.flip_y { ih - 1 - b } else { b };
                *px = src[b * istride + a];
            }
        }
    }
    out
}

/// x264 settings of one output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct H264Settings {
    pub crf: u32,
    pub preset: String,
    /// Keyframe interval (`-g`): also the minimum, and scene-cut keyframes are off.
    pub gop: Option<u32>,
    /// `-profile:v`.
    pub profile: Option<String>,
}

/// What an output takes over from its input besides the pictures.
#[derive(Default)]
pub struct OutputExtras {
    /// Container (FFmpeg muxer name); MP4 when `None`.
    pub format: Option<&'static str>,
    /// Colour description of the video stream.
    pub colour: Option<ColourTags>,
    /// Pixel aspect ratio of the video stream.
    pub aspect: Option<Rational>,
    /// Streams copied packet for packet: codec parameters and time base of each input stream.
    /// They become output streams 1, 2, ... in this order (the video is stream 0).
    pub copy: Vec<(codec::Parameters, Rational)>,
}

/// Colour description of a video stream (primaries, transfer, matrix, range).
#[derive(Debug, Clone, Copy)]
pub struct ColourTags {
    pub primaries: ff::color::Primaries,
    pub transfer: ff::color::TransferCharacteristic,
    pub space: ff::color::Space,
    pub range: ff::color::Range,
}

impl ColourTags {
    /// The description of a decoder's stream.
    pub fn of(decoder: &ff::decoder::Video) -> ColourTags {
        ColourTags {
            primaries: decoder.color_primaries(),
            transfer: decoder.color_transfer_characteristic(),
            space: decoder.color_space(),
            range: decoder.color_range(),
        }
    }
}

/// H.264 (libx264) into an MP4 file (or another container, see [`OutputExtras`]), yuv420p,
/// optionally with streams copied from an input.
pub struct H264Writer {
    path: PathBuf,
    octx: ff::format::context::Output,
    encoder: ff::encoder::Video,
    enc_tb: Rational,
    stream_tb: Rational,
    /// One frame at the nominal rate, in the encoder's time base (packet durations).
    frame_ticks: i64,
    header: bool,
    packets: usize,
    copied: usize,
}

impl H264Writer {
    /// `tmp` is written as MP4 whatever its extension; `path` names the final file in errors.
    pub fn create(
        tmp: &Path,
        path: &Path,
        size: (u32, u32),
        fps: Rational,
        time_base: Rational,
        settings: &H264Settings,
        threads: usize,
    ) -> Result<H264Writer> {
        Self::create_with(tmp, path, size, fps, time_base, settings, threads, OutputExtras::default())
    }

    /// [`H264Writer::create`] with a container, colour tags and copied streams.
    #[allow(clippy::too_many_arguments)]
    pub fn create_with(
        tmp: &Path,
        path: &Path,
        size: (u32, u32),
        fps: Rational,
        time_base: Rational,
        settings: &H264Settings,
        threads: usize,
        extras: OutputExtras,
    ) -> Result<H264Writer> {
        init();
        let err = |what: &str, e: ff::Error| media_err(path, format!("{what} ({e})"));
        let mut octx =
            ff::format::output_as(&tmp, extras.format.unwrap_or("mp4")).map_err(|e| err("cannot create", e))?;
        let codec = ff::encoder::find_by_name("libx264").ok_or_else(|| media_err(path, "FFmpeg has no libx264 encoder"))?;
        let global = octx.format().flags().contains(ff::format::Flags::GLOBAL_HEADER);
        let mut ctx = codec::context::Context::new_with_codec(codec);
        if global {
            // Add to, not replace, libx264's default flags: they hold +cgop (closed GOPs).
            // SAFETY: the context is valid; flags is a plain int field.
            unsafe { (*ctx.as_mut_ptr()).flags |= ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32 };
        }
        let mut enc = ctx.encoder().video().map_err(|e| err("libx264", e))?;
        enc.set_width(size.0);
        enc.set_height(size.1);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(fps));
        if let Some(c) = extras.colour {
            enc.set_color_primaries(c.primaries);
            enc.set_color_transfer_characteristic(c.transfer);
            enc.set_colorspace(c.space);
            enc.set_color_range(c.range);
        }
        if let Some(a) = extras.aspect.filter(|a| a.numerator() > 0 && a.denominator() > 0) {
            enc.set_aspect_ratio(a);
        }
        let mut opts = ff::Dictionary::new();
        opts.set("crf", &settings.crf.to_string());
        opts.set("preset", &settings.preset);
        opts.set("threads", &threads.to_string());
        if let Some(p) = &settings.profile {
            opts.set("profile", p);
        }
        if let Some(g) = settings.gop {
            opts.set("g", &g.to_string());
            opts.set("keyint_min", &g.to_string());
            opts.set("sc_threshold", "0");
        }
        let encoder = enc.open_with(opts).map_err(|e| err("cannot open libx264 with these settings", e))?;
        let mut stream = octx.add_stream(codec).map_err(|e| err("cannot add a stream", e))?;
        stream.set_parameters(&encoder);
        stream.set_time_base(time_base);
        stream.set_avg_frame_rate(fps);
        stream.set_rate(fps);
        for (params, tb) in extras.copy {
            let mut st = octx.add_stream(ff::encoder::find(codec::Id::None)).map_err(|e| err("cannot add a stream", e))?;
            st.set_parameters(params);
            st.set_time_base(tb);
            // SAFETY: the stream's codec parameters are valid; a tag of the input's container
            // may be wrong in this one, 0 lets the muxer choose.
            unsafe { (*(*st.as_mut_ptr()).codecpar).codec_tag = 0 };
        }
        let frame_ticks = 1i64.rescale(fps.invert(), time_base).max(1);
        Ok(H264Writer {
            path: path.to_path_buf(),
            octx,
            encoder,
            enc_tb: time_base,
            stream_tb: time_base,
            frame_ticks,
            header: false,
            packets: 0,
            copied: 0,
        })
    }

    fn ensure_header(&mut self) -> Result<()> {
        if !self.header {
            self.octx.write_header().map_err(|e| {
                media_err(&self.path, format!("writing the header ({e}): a copied stream may not fit this container"))
            })?;
            self.stream_tb = self.octx.stream(0).expect("one stream").time_base();
            self.header = true;
        }
        Ok(())
    }

    /// Writes a packet of copied stream `index` (1-based among the copied streams, as in
    /// [`OutputExtras::copy`]) whose timestamps are in `time_base`, unchanged but for them.
    pub fn write_copied(&mut self, index: usize, mut packet: ff::Packet, time_base: Rational) -> Result<()> {
        self.ensure_header()?;
        let stream_tb = self
            .octx
            .stream(index)
            .ok_or_else(|| media_err(&self.path, format!("no copied stream {index}")))?
            .time_base();
        packet.set_stream(index);
        packet.set_position(-1);
        packet.rescale_ts(time_base, stream_tb);
        packet.write_interleaved(&mut self.octx).map_err(|e| media_err(&self.path, format!("writing ({e})")))?;
        self.copied += 1;
        Ok(())
    }

    /// Packets of copied streams written so far.
    pub fn copied_packets(&self) -> usize {
        self.copied
    }

    /// Encodes `frame` (yuv420p, the writer's size) at `pts` (the writer's time base).
    pub fn write(&mut self, frame: &mut ff::frame::Video, pts: i64) -> Result<()> {
        self.ensure_header()?;
        frame.set_pts(Some(pts));
        frame.set_kind(ff::picture::Type::None);
        self.encoder.send_frame(frame).map_err(|e| media_err(&self.path, format!("encoding ({e})")))?;
        self.drain()
    }

    fn drain(&mut self) -> Result<()> {
        let mut packet = ff::Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(0);
                    packet.set_position(-1);
                    if packet.duration() <= 0 {
                        // libx264 leaves it unset; MP4 takes the last frame's duration from it.
                        packet.set_duration(self.frame_ticks);
                    }
                    packet.rescale_ts(self.enc_tb, self.stream_tb);
                    packet
                        .write_interleaved(&mut self.octx)
                        .map_err(|e| media_err(&self.path, format!("writing ({e})")))?;
                    self.packets += 1;
                }
                Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => return Ok(()),
                Err(ff::Error::Eof) => return Ok(()),
                Err(e) => return Err(media_err(&self.path, format!("encoding ({e})"))),
            }
        }
    }

    /// Flushes the encoder and writes the MP4 index. Returns the number of frames written.
    pub fn finish(mut self) -> Result<usize> {
        if !self.header {
            return Err(media_err(&self.path, "no frames to write"));
        }
        self.encoder.send_eof().map_err(|e| media_err(&self.path, format!("encoding ({e})")))?;
        self.drain()?;
        self.octx.write_trailer().map_err(|e| media_err(&self.path, format!("writing MP4 index ({e})")))?;
        Ok(self.packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_rates() {
        let r = |n, d| Rational::new(n, d);
        assert_eq!(grid_rate(r(25, 1), r(25, 1), 25.0, false), r(25, 1));
        assert_eq!(grid_rate(r(30000, 1001), r(30000, 1001), 29.97, false), r(30000, 1001));
        // variable rate with gaps: the median interval decides
        assert_eq!(grid_rate(r(97, 4), r(1000, 1), 25.0, true), r(25, 1));
        // unusual constant rate kept as is
        assert_eq!(grid_rate(r(15, 2), r(15, 2), 7.5, false), r(15, 2));
        assert_eq!(grid_rate(r(0, 0), r(0, 0), 0.0, true), r(25, 1));
    }

    #[test]
    fn orientations_follow_ffmpeg() {
        let rot = |deg: f64| {
            let mut m = [0i32; 9];
            unsafe { ffi::av_display_rotation_set(m.as_mut_ptr(), deg) };
            Orientation::from_display_matrix(&m)
        };
        // a `rotate=90` tag (a phone held upright): FFmpeg turns the picture clockwise
        assert_eq!(rot(90.0), Orientation { transpose: true, flip_x: false, flip_y: true });
        assert_eq!(rot(-90.0), Orientation { transpose: true, flip_x: true, flip_y: false });
        assert_eq!(rot(180.0), Orientation { transpose: false, flip_x: true, flip_y: true });
        assert!(rot(0.0).is_identity());
        assert_eq!(rot(90.0).apply_size(640, 272), (272, 640));
    }
}
