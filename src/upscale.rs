//! `vsr upscale`: 4x super-resolution of a whole video, streaming.
//!
//! Three threads with bounded queues between them, so that memory does not grow with the
//! video's length and decoding, the network and encoding overlap:
//!
//! 1. **read**: decodes frames in presentation order (FFmpeg), makes them upright (display
//!    matrix) 4:2:0 and converts them to RGB for the network; the packets of every audio stream
//!    are passed along untouched.
//! 2. **network** (the calling thread, which owns the device): F-frame windows
//!    ([`SlidingWindows`]: the first and last frames repeated at the edges), `batch` windows at a
//!    time through the [`Engine`] (frames of any size: reflection padding to a multiple of 64
//!    and back; fusion in tiles).
//! 3. **write**: each output frame's chroma is the input's Cb/Cr up-sampled bicubically
//!    (swscale), its luma the network's: Y' = 16 + 219 Y in the limited range of the input's
//!    colour description (the network's full-range luma 0.299 R + 0.587 G + 0.114 B of the
//!    decoder's RGB is (Y' - 16) / 219 of the input). H.264 (libx264, `crf`, `preset`) at the
//!    input's timestamps, frame for frame; audio packets copied unchanged with their timestamps
//!    rescaled, interleaved by time.
//!
//! The output is written under a temporary name in its folder and renamed when complete; any
//! failure removes it, so the final name never holds a partial file.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use video_rs::ffmpeg as ff;

use ff::format::Pixel;
use ff::software::scaling::Flags as SwsFlags;
use ff::{Rational, media};

use crate::backend::VsrBackend;
use crate::error::{Error, Result};
use crate::infer::{Engine, LrFrame, SlidingWindows, SrFrame, Window, auto_batch};
use crate::model::vsrnet::SCALE;
use crate::prep::media::{self as m, ColourTags, FrameReader, H264Settings, H264Writer, OutputExtras, Scaler};
use crate::prep::{Progress, tmp_path};

/// Settings of `vsr upscale` beyond the networks.
#[derive(Debug, Clone)]
pub struct UpscaleOptions {
    /// libx264 constant rate factor.
    pub crf: u32,
    /// libx264 preset.
    pub preset: String,
    /// Windows per batch through the network (0: [`auto_batch`]).
    pub batch: usize,
    /// Encoder threads (0: libx264's choice).
    pub encoder_threads: usize,
    /// Progress bar (or plain lines off a terminal) on stderr.
    pub progress: bool,
}

impl Default for UpscaleOptions {
    fn default() -> Self {
        UpscaleOptions { crf: 18, preset: "medium".into(), batch: 0, encoder_threads: 0, progress: false }
    }
}

/// What `vsr upscale` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpscaleReport {
    pub input: PathBuf,
    pub output: PathBuf,
    pub frames: usize,
    pub input_size: (u32, u32),
    pub output_size: (u32, u32),
    pub batch: usize,
    pub audio_streams: usize,
    pub audio_packets: usize,
    pub seconds: f64,
    pub frames_per_second: f64,
}

/// A decoded input frame: its timestamp, the upright yuv420p picture (for the chroma) and the
/// network's RGB.
struct FrameIn {
    pts: i64,
    yuv: ff::frame::Video,
    rgb: LrFrame,
}

enum ReadMsg {
    Frame(Box<FrameIn>),
    /// A packet of copied stream `usize` (1-based), with its time base.
    Packet(usize, ff::Packet, Rational),
    End,
}

enum WriteMsg {
    Frame(i64, ff::frame::Video, SrFrame),
    Packet(usize, ff::Packet, Rational),
}

/// Removes the temporary output unless it was committed.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The FFmpeg muxer for an output file name.
pub fn container_for(path: &Path) -> Result<&'static str> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => Ok("mp4"),
        "mov" => Ok("mov"),
        "mkv" => Ok("matroska"),
        _ => Err(m::media_err(path, "unknown output container: name it .mp4, .m4v, .mov or .mkv")),
    }
}

/// Upscales `input` into `output` (4x) with `engine`.
pub fn upscale<B: VsrBackend>(
    engine: &Engine<B>,
    input: &Path,
    output: &Path,
    options: &UpscaleOptions,
) -> Result<UpscaleReport> {
    let start = Instant::now();
    let format = container_for(output)?;
    if output.exists() && std::fs::canonicalize(output).ok() == std::fs::canonicalize(input).ok() {
        return Err(m::media_err(output, "is the input: choose another output name"));
    }
    let probe = m::probe(input)?;
    let mut reader = FrameReader::open(input, 0)?;
    let audio = reader.streams_of(media::Type::Audio);
    reader.keep_streams(&audio.iter().map(|a| a.0).collect::<Vec<_>>());

    let (cw, ch) = (probe.coded_width, probe.coded_height);
    let (w, h) = probe.orientation.apply_size(cw, ch);
    let out_size = (w * SCALE as u32, h * SCALE as u32);
    let batch = if options.batch == 0 { auto_batch(w as usize, h as usize) } else { options.batch };

    crate::prep::ensure_parent(output)?;
    let tmp = tmp_path(output);
    let mut guard = TmpGuard(Some(tmp.clone()));
    let mut colour = ColourTags::of(reader.decoder());
    colour.range = ff::color::Range::MPEG;
    let extras = OutputExtras {
        format: Some(format),
        colour: Some(colour),
        aspect: Some(reader.decoder().aspect_ratio()),
        copy: audio.iter().map(|(_, p, tb)| (p.clone(), *tb)).collect(),
    };
    let settings = H264Settings { crf: options.crf, preset: options.preset.clone(), gop: None, profile: None };
    let writer = H264Writer::create_with(
        &tmp,
        output,
        out_size,
        probe.fps,
        reader.time_base(),
        &settings,
        options.encoder_threads,
        extras,
    )?;

    let total = probe.frame_count();
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let progress = Progress::new("upscale", 1, total as u64, options.progress).with_plain_lines(Duration::from_secs(10));

    let (read_tx, read_rx) = sync_channel::<Result<ReadMsg>>(2 * batch + engine.frames());
    let (write_tx, write_rx) = sync_channel::<WriteMsg>(2 * batch);
    let orientation = probe.orientation;
    let video_tb = reader.time_base();
    // copied stream k (1-based) <- input stream audio[k - 1]
    let copies: Vec<(usize, Rational)> = audio.iter().map(|(i, _, tb)| (*i, *tb)).collect();
    let (frames, copied) = std::thread::scope(|scope| -> Result<(usize, usize)> {
        scope.spawn(move || read_frames(reader, input, orientation, (w, h), &copies, read_tx));
        let writer_thread = scope.spawn(move || write_frames(writer, output, (w, h), write_rx));
        let network = run_network(engine, batch, video_tb, read_rx, write_tx, &progress);
        // The writer stops when its queue closes (the reader when its own does).
        let written = writer_thread.join().map_err(|_| Error::Invalid("the encoding thread panicked".into()))?;
        match (network, written) {
            // the first cause wins: a write error stops the network
            (Err(Stop::Failed(e)), _) | (_, Err(e)) => Err(e),
            (Err(Stop::WriterGone), Ok(_)) => Err(m::media_err(output, "the encoder stopped")),
            (Ok(n), Ok(w)) if w.0 != n => Err(m::media_err(output, format!("encoded {} frames for {n} input frames", w.0))),
            (Ok(_), Ok(w)) => Ok(w),
        }
    })?;
    crate::checkpoint::commit(&tmp, output)?;
    guard.0 = None;
    progress.item(&name);
    progress.finish();
    let seconds = start.elapsed().as_secs_f64();
    Ok(UpscaleReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        frames,
        input_size: (w, h),
        output_size: out_size,
        batch,
        audio_streams: audio.len(),
        audio_packets: copied,
        seconds,
        frames_per_second: frames as f64 / seconds.max(1e-9),
    })
}

/// The read thread: frames (upright yuv420p and RGB) and copied packets, in file order; a
/// failure is passed on as the last message.
fn read_frames(
    mut reader: FrameReader,
    path: &Path,
    orientation: m::Orientation,
    size: (u32, u32),
    copies: &[(usize, Rational)],
    tx: SyncSender<Result<ReadMsg>>,
) {
    let mut convert = Converter { orientation, to_yuv: None, to_rgb: None };
    // false once the network has stopped listening
    let pass_packets = |reader: &mut FrameReader| -> bool {
        let packets: Vec<(usize, ff::Packet)> = reader.take_packets().collect();
        for (stream, packet) in packets {
            let Some(k) = copies.iter().position(|c| c.0 == stream) else { continue };
            if tx.send(Ok(ReadMsg::Packet(k + 1, packet, copies[k].1))).is_err() {
                return false;
            }
        }
        true
    };
    let result = (|| -> Result<bool> {
        while let Some((pts, frame)) = reader.next_frame()? {
            let (yuv, rgb) = convert.apply(frame, path, size)?;
            if tx.send(Ok(ReadMsg::Frame(Box::new(FrameIn { pts, yuv, rgb })))).is_err() || !pass_packets(&mut reader) {
                return Ok(false);
            }
        }
        Ok(pass_packets(&mut reader))
    })();
    let _ = match result {
        Ok(true) => tx.send(Ok(ReadMsg::End)),
        Ok(false) => Ok(()),
        Err(e) => tx.send(Err(e)),
    };
}

/// Decoded frame -> upright yuv420p + the network's RGB.
struct Converter {
    orientation: m::Orientation,
    to_yuv: Option<(Pixel, u32, u32, Scaler)>,
    to_rgb: Option<Scaler>,
}

impl Converter {
    fn apply(&mut self, frame: ff::frame::Video, path: &Path, size: (u32, u32)) -> Result<(ff::frame::Video, LrFrame)> {
        let (fmt, fw, fh) = (frame.format(), frame.width(), frame.height());
        let yuv = if fmt == Pixel::YUV420P {
            frame
        } else {
            if !matches!(&self.to_yuv, Some((f, w, h, _)) if (*f, *w, *h) == (fmt, fw, fh)) {
                let s = Scaler::new((fmt, fw, fh), (Pixel::YUV420P, fw, fh), SwsFlags::BILINEAR | SwsFlags::ACCURATE_RND)?;
                self.to_yuv = Some((fmt, fw, fh, s));
            }
            self.to_yuv.as_mut().expect("just set").3.run(&frame)
        };
        let yuv = if self.orientation.is_identity() { yuv } else { m::reorient(&yuv, self.orientation) };
        let (w, h) = (yuv.width(), yuv.height());
        if (w, h) != size {
            return Err(m::media_err(
                path,
                format!("the picture size changes from {}x{} to {w}x{h} mid-stream: not supported", size.0, size.1),
            ));
        }
        let to_rgb = match &mut self.to_rgb {
            Some(s) => s,
            None => self.to_rgb.insert(Scaler::new(
                (Pixel::YUV420P, w, h),
                (Pixel::RGB24, w, h),
                SwsFlags::BILINEAR | SwsFlags::ACCURATE_RND,
            )?),
        };
        let rgb = to_rgb.run(&yuv);
        let lr = LrFrame::from_rgb24(w as usize, h as usize, rgb.data(0), rgb.stride(0));
        Ok((yuv, lr))
    }
}

/// Why the network thread stopped early.
enum Stop {
    /// A read or network failure.
    Failed(Error),
    /// The writer's queue closed: its own error says why.
    WriterGone,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

type AudioQueue = VecDeque<(f64, usize, ff::Packet, Rational)>;

/// The network thread: windows, batches, super-resolution; audio held back until the video
/// catches up with it. Returns the number of frames sent to the writer.
fn run_network<B: VsrBackend>(
    engine: &Engine<B>,
    batch: usize,
    video_tb: Rational,
    rx: Receiver<Result<ReadMsg>>,
    tx: SyncSender<WriteMsg>,
    progress: &Progress,
) -> std::result::Result<usize, Stop> {
    let mut windows = SlidingWindows::<FrameIn>::new(engine.frames());
    let mut ready = Vec::new();
    let mut audio = AudioQueue::new();
    let mut sent = 0usize;
    let mut last_pts = i64::MIN;

    let mut flush = |ready: &mut Vec<Window<FrameIn>>, audio: &mut AudioQueue| -> std::result::Result<(), Stop> {
        if ready.is_empty() {
            return Ok(());
        }
        let inputs: Vec<Vec<&LrFrame>> = ready.iter().map(|(_, w)| w.iter().map(|f| &f.rgb).collect()).collect();
        let outputs = engine.run(&inputs)?;
        let n = outputs.len();
        for ((_, frames), sr) in ready.drain(..).zip(outputs) {
            let me = &frames[frames.len() / 2];
            // Timestamps must increase for the encoder; a decoder's duplicates are nudged.
            let pts = if me.pts > last_pts { me.pts } else { last_pts + 1 };
            last_pts = pts;
            tx.send(WriteMsg::Frame(pts, me.yuv.clone(), sr)).map_err(|_| Stop::WriterGone)?;
            sent += 1;
            // the audio up to this frame's time
            let now = pts as f64 * f64::from(video_tb);
            while audio.front().is_some_and(|a| a.0 <= now) {
                let (_, k, p, tb) = audio.pop_front().expect("front exists");
                tx.send(WriteMsg::Packet(k, p, tb)).map_err(|_| Stop::WriterGone)?;
            }
        }
        progress.frames(n as u64);
        Ok(())
    };

    loop {
        match rx.recv().map_err(|_| Error::Invalid("the decoding thread stopped".into()))?? {
            ReadMsg::Frame(frame) => {
                ready.extend(windows.push(*frame));
                if ready.len() >= batch {
                    flush(&mut ready, &mut audio)?;
                }
            }
            ReadMsg::Packet(k, packet, tb) => {
                let t = packet.pts().or(packet.dts()).map_or(f64::NEG_INFINITY, |p| p as f64 * f64::from(tb));
                audio.push_back((t, k, packet, tb));
            }
            ReadMsg::End => break,
        }
    }
    ready.extend(windows.finish());
    while !ready.is_empty() {
        let rest = ready.split_off(batch.min(ready.len()));
        flush(&mut ready, &mut audio)?;
        ready = rest;
    }
    drop(flush);
    for (_, k, p, tb) in audio.drain(..) {
        tx.send(WriteMsg::Packet(k, p, tb)).map_err(|_| Stop::WriterGone)?;
    }
    Ok(sent)
}

/// The write thread: chroma up-sampling, the network's luma, encoding, copied packets. Returns
/// (frames, copied packets).
fn write_frames(
    mut writer: H264Writer,
    path: &Path,
    size: (u32, u32),
    rx: Receiver<WriteMsg>,
) -> Result<(usize, usize)> {
    let (w, h) = size;
    let (ow, oh) = (w * SCALE as u32, h * SCALE as u32);
    let mut chroma = Scaler::new((Pixel::YUV420P, w, h), (Pixel::YUV420P, ow, oh), SwsFlags::BICUBIC | SwsFlags::ACCURATE_RND)?;
    let mut frames = 0;
    for msg in rx {
        match msg {
            WriteMsg::Frame(pts, yuv, sr) => {
                if (sr.width, sr.height) != (ow as usize, oh as usize) {
                    return Err(m::media_err(path, format!("network output {}x{} for a {ow}x{oh} video", sr.width, sr.height)));
                }
                let mut out = chroma.run(&yuv);
                let stride = out.stride(0);
                let plane = out.data_mut(0);
                for (y, row) in sr.y.chunks_exact(sr.width).enumerate() {
                    // Y' = 16 + 219 Y: limited-range luma of the network's full-range Y
                    let dst = &mut plane[y * stride..y * stride + sr.width];
                    for (d, v) in dst.iter_mut().zip(row) {
                        *d = (16.0 + 219.0 * v.clamp(0.0, 1.0)).round() as u8;
                    }
                }
                writer.write(&mut out, pts)?;
                frames += 1;
            }
            WriteMsg::Packet(k, packet, tb) => writer.write_copied(k, packet, tb)?,
        }
    }
    let copied = writer.copied_packets();
    let encoded = writer.finish()?;
    // libx264 emits one packet per frame
    if encoded != frames {
        return Err(m::media_err(path, format!("encoded {encoded} packets for {frames} frames")));
    }
    Ok((frames, copied))
}
