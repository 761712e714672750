//! Super-resolution of real low-resolution frames: what `vsr upscale`, `vsr eval` and `vsr bench
//! upscale` share.
//!
//! * [`SlidingWindows`] turns a stream of frames into F-frame windows, one per frame, the first
//!   and last frames repeated at the edges, holding at most F frames.
//! * [`Engine`] runs batches of windows through VSRNet ([`VsrNet::forward_lr`]'s path: bilinear
//!   x4 up-sampling, motion compensation, fusion). Frames of any size are padded by reflection
//!   to FlowNetSD's multiple of 64 (16 low-resolution pixels) and cropped back; the fusion runs in
//!   tiles ([`VsrNet::fuse_tiled`]) so that 4K outputs fit in memory; weights and activations can
//!   be fp16.

use std::collections::VecDeque;
use std::sync::Arc;

use burn::tensor::{FloatDType, Tensor, TensorData};

use crate::backend::VsrBackend;
use crate::error::{Error, Result};
use crate::model::vsrnet::{SCALE, SIZE_MULTIPLE, upsample_lr};
use crate::model::{FlowEstimator, FlowNetSD, VsrNet};
use crate::precision::Precision;

/// Low-resolution frame sides are padded to multiples of this (so that 4x is a multiple of 64).
pub const LR_MULTIPLE: usize = SIZE_MULTIPLE / SCALE;

/// A low-resolution RGB frame: planes R, G, B (row-major), values in [0, 255].
#[derive(Debug, Clone, PartialEq)]
pub struct LrFrame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<f32>,
}

impl LrFrame {
    /// From packed RGB24 rows `stride` bytes apart.
    pub fn from_rgb24(width: usize, height: usize, data: &[u8], stride: usize) -> LrFrame {
        let mut rgb = vec![0f32; 3 * width * height];
        for y in 0..height {
            let row = &data[y * stride..y * stride + 3 * width];
            for x in 0..width {
                for c in 0..3 {
                    rgb[(c * height + y) * width + x] = f32::from(row[3 * x + c]);
                }
            }
        }
        LrFrame { width, height, rgb }
    }
}

/// Indices of the F frames of the window centred on frame `centre` of a `len`-frame sequence:
/// neighbours beyond either end repeat the first or last frame.
pub fn window(centre: usize, frames: usize, len: usize) -> Vec<usize> {
    let m = frames / 2;
    (0..frames).map(|k| (centre + k).saturating_sub(m).min(len - 1)).collect()
}

/// F-frame windows over a stream of frames of unknown length, holding at most F frames.
#[derive(Debug)]
pub struct SlidingWindows<T> {
    frames: usize,
    /// The frames still needed; `buf[0]` is frame `first`.
    buf: VecDeque<Arc<T>>,
    first: usize,
    pushed: usize,
    /// Centre of the next window to give.
    next: usize,
}

/// One window: the index of its centre frame and its F frames in order.
pub type Window<T> = (usize, Vec<Arc<T>>);

impl<T> SlidingWindows<T> {
    pub fn new(frames: usize) -> Self {
        assert!(frames % 2 == 1, "windows have an odd number of frames");
        SlidingWindows { frames, buf: VecDeque::new(), first: 0, pushed: 0, next: 0 }
    }

    /// Adds the next frame; returns the window it completes, if any.
    pub fn push(&mut self, frame: T) -> Option<Window<T>> {
        self.buf.push_back(Arc::new(frame));
        self.pushed += 1;
        let m = self.frames / 2;
        // the window centred on `next` is complete once frame next + m has arrived
        (self.next + m < self.pushed).then(|| self.take(self.pushed))
    }

    /// The remaining windows once the stream has ended (the last frame repeated).
    pub fn finish(&mut self) -> Vec<Window<T>> {
        let mut out = Vec::new();
        while self.next < self.pushed {
            out.push(self.take(self.pushed));
        }
        out
    }

    /// Frames held now.
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, len: usize) -> Window<T> {
        let centre = self.next;
        let frames = window(centre, self.frames, len).into_iter().map(|i| self.buf[i - self.first].clone()).collect();
        self.next += 1;
        // the next window starts at next - m: older frames are no longer needed
        let keep_from = self.next.saturating_sub(self.frames / 2);
        while self.first < keep_from && !self.buf.is_empty() {
            self.buf.pop_front();
            self.first += 1;
        }
        (centre, frames)
    }
}

/// How the engine computes.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Side of the fusion tiles in output pixels (0: whole frames).
    pub tile: usize,
    /// Storage type of weights and activations (the final sigmoid is always fp32).
    pub dtype: FloatDType,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { tile: 512, dtype: FloatDType::F32 }
    }
}

/// VSRNet (+ FlowNetSD) ready to super-resolve batches of windows.
pub struct Engine<B: VsrBackend> {
    net: VsrNet<B>,
    flownet: Option<FlowNetSD<B>>,
    device: B::Device,
    options: EngineOptions,
}

/// One super-resolved frame: full-range luma (0.299 R + 0.587 G + 0.114 B) / 255 in [0, 1],
/// `width` x `height` (4x the input), row-major.
#[derive(Debug, Clone)]
pub struct SrFrame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<f32>,
}

impl<B: VsrBackend> Engine<B> {
    /// The networks (in inference mode) on `device`. fp16 (`options.dtype`): VSRNet's
    /// convolutions compute in fp16 with BatchNorm in fp32 ([`crate::precision`]); FlowNetSD's
    /// weights are cast once.
    pub fn new(mut net: VsrNet<B>, flownet: Option<FlowNetSD<B>>, device: B::Device, options: EngineOptions) -> Self {
        let dtype: burn::tensor::DType = options.dtype.into();
        net.precision = if dtype == burn::tensor::DType::F32 { Precision::Fp32 } else { Precision::Fp16 };
        let flownet = flownet.map(|f| f.for_inference(dtype));
        Engine { net, flownet, device, options }
    }

    /// Frames per window.
    pub fn frames(&self) -> usize {
        self.net.frames
    }

    pub fn has_flownet(&self) -> bool {
        self.flownet.is_some()
    }

    pub fn options(&self) -> EngineOptions {
        self.options
    }

    /// Super-resolves the centre frame of every window (each F frames of one size).
    pub fn run(&self, windows: &[Vec<&LrFrame>]) -> Result<Vec<SrFrame>> {
        let f = self.frames();
        let Some(first) = windows.first().and_then(|w| w.first()) else { return Ok(Vec::new()) };
        let (w, h) = (first.width, first.height);
        for win in windows {
            if win.len() != f {
                return Err(Error::Invalid(format!("a window of {} frames for a {f}-frame network", win.len())));
            }
            if let Some(o) = win.iter().find(|o| (o.width, o.height) != (w, h)) {
                return Err(Error::Invalid(format!(
                    "frames of different sizes in one batch: {w}x{h} and {}x{}",
                    o.width, o.height
                )));
            }
        }
        let b = windows.len();
        let (ph, pw) = (h.div_ceil(LR_MULTIPLE) * LR_MULTIPLE, w.div_ceil(LR_MULTIPLE) * LR_MULTIPLE);
        let x = Tensor::<B, 5>::from_data(TensorData::new(pad_windows(windows, ph, pw), [b, 3, f, ph, pw]), &self.device);

        // LR_f = Y(bilinear_up_x4(LR RGB_f)); FlowNetSD reads bilinear_up_x4(LR RGB_f)
        let (y, rgb) = upsample_lr(x);
        let flownet = self.flownet.as_ref().map(|f| f as &dyn FlowEstimator<B>);
        let (inputs, _flows) = self.net.compensate(y, flownet.map(|_| rgb), flownet);
        let pred = self.net.fuse_tiled(inputs, self.options.tile);
        let (oh, ow) = (h * SCALE, w * SCALE);
        let pred = pred.slice([0..b, 0..1, 0..oh, 0..ow]);
        let values = pred
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("reading the prediction back: {e:?}")))?;
        Ok(values.chunks_exact(oh * ow).map(|y| SrFrame { width: ow, height: oh, y: y.to_vec() }).collect())
    }
}

/// Index `i` of a padded axis mirrored into `0..n` (reflection without repeating the edge,
/// periodic so that any padding works).
pub fn reflect(i: usize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let k = i % period;
    if k < n { k } else { period - k }
}

/// (B, 3, F, ph, pw) values of the windows, each frame padded at its right and bottom by
/// reflection.
fn pad_windows(windows: &[Vec<&LrFrame>], ph: usize, pw: usize) -> Vec<f32> {
    let f = windows[0].len();
    let mut out = vec![0f32; windows.len() * 3 * f * ph * pw];
    for (bi, win) in windows.iter().enumerate() {
        for (fi, frame) in win.iter().enumerate() {
            let (w, h) = (frame.width, frame.height);
            for c in 0..3 {
                let plane = &frame.rgb[c * w * h..(c + 1) * w * h];
                let dst = &mut out[((bi * 3 + c) * f + fi) * ph * pw..][..ph * pw];
                for y in 0..ph {
                    let src = &plane[reflect(y, h) * w..][..w];
                    let row = &mut dst[y * pw..(y + 1) * pw];
                    row[..w].copy_from_slice(src);
                    for x in w..pw {
                        row[x] = src[reflect(x, w)];
                    }
                }
            }
        }
    }
    out
}

/// A batch size for `width` x `height` input frames: about 8 million output pixels per batch
/// (4 windows of 1080p, 1 of 4K), between 1 and 8.
pub fn auto_batch(width: usize, height: usize) -> usize {
    let out = (width * SCALE) * (height * SCALE);
    (8_400_000 / out.max(1)).clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_repeat_the_edge_frames() {
        assert_eq!(window(0, 3, 5), [0, 0, 1]);
        assert_eq!(window(4, 3, 5), [3, 4, 4]);
        assert_eq!(window(1, 5, 3), [0, 0, 1, 2, 2]);
        assert_eq!(window(0, 5, 1), [0, 0, 0, 0, 0]);
        assert_eq!(window(2, 1, 3), [2]);
    }

    #[test]
    fn sliding_windows_match_the_clamped_windows_and_stay_small() {
        for frames in [1, 3, 5] {
            for len in 1..9 {
                let mut sw = SlidingWindows::new(frames);
                let mut got = Vec::new();
                for i in 0..len {
                    got.extend(sw.push(i));
                    assert!(sw.held() <= frames, "F {frames}: holds {}", sw.held());
                }
                got.extend(sw.finish());
                let want: Vec<(usize, Vec<usize>)> = (0..len).map(|c| (c, window(c, frames, len))).collect();
                let got: Vec<(usize, Vec<usize>)> =
                    got.into_iter().map(|(c, w)| (c, w.iter().map(|a| **a).collect())).collect();
                assert_eq!(got, want, "F {frames}, {len} frames");
            }
        }
    }

    #[test]
    fn reflection_padding() {
        assert_eq!((0..8).map(|i| reflect(i, 3)).collect::<Vec<_>>(), [0, 1, 2, 1, 0, 1, 2, 1]);
        assert_eq!(reflect(5, 1), 0);
        let frame = LrFrame { width: 3, height: 1, rgb: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0] };
        let out = pad_windows(&[vec![&frame]], 2, 5);
        // R plane: rows 0 and 1 (row 1 reflects row 0 of a 1-row frame), columns 3, 4 reflected
        assert_eq!(&out[..10], &[1.0, 2.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        assert_eq!(&out[20..25], &[7.0, 8.0, 9.0, 8.0, 7.0]);
    }

    #[test]
    fn rgb24_rows_with_stride() {
        let data = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0];
        let f = LrFrame::from_rgb24(2, 2, &data, 8);
        assert_eq!(f.rgb, [1.0, 4.0, 7.0, 10.0, 2.0, 5.0, 8.0, 11.0, 3.0, 6.0, 9.0, 12.0]);
    }

    #[test]
    fn auto_batch_sizes() {
        assert_eq!(auto_batch(480, 270), 4);
        assert_eq!(auto_batch(960, 540), 1);
        assert_eq!(auto_batch(40, 24), 8);
    }
}
