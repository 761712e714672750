//! VSRNet: video super-resolution with motion compensation, as in NVIDIA DALI's
//! `video_superres` example (`model/model.py`).
//!
//! Kappeler et al., "Video Super-Resolution With Convolutional Neural Networks", IEEE TCI 2016.
//! 4x super-resolution of the Y channel of the centre frame of an F-frame window: every frame is
//! degraded (4x4 average pooling, bilinear x4 up-sampling), each neighbour is warped onto the
//! centre frame by FlowNetSD's optical flow, conv1 (shared) runs on every frame, and conv2/conv3
//! fuse them. The two defects of the original are fixed (see the module docs of [`FlowInput`] and
//! [`VsrOutput::target`]).
//!
//! The forward pass is split along the spec's lines: [`VsrNet::forward`] degrades HR windows as
//! in training, [`VsrNet::forward_lr`] takes real low-resolution frames, and both feed
//! [`VsrNet::super_resolve`] = [`VsrNet::compensate`] (flow and warp) then [`VsrNet::fuse`]
//! (conv1..conv3), which [`VsrNet::fuse_tiled`] computes tile by tile for large frames.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::module::{avg_pool2d, interpolate};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{FloatDType, Tensor, activation::sigmoid, backend::Backend};

use super::blocks::{ConvBlock, ConvSpec};
use super::flownet_sd::FlowNetSD;
use super::warp::warp;
use crate::backend::VsrBackend;
use crate::error::{Error, Result};
use crate::precision::{Precision, cast_module, materialize};
use vsr_kernels::conv::conv2d_module;

/// Down- and up-sampling factor.
pub const SCALE: usize = 4;
/// FlowNetSD needs H and W to be multiples of this.
pub const SIZE_MULTIPLE: usize = 64;

/// Which frames FlowNetSD estimates motion from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlowInput {
    /// The degraded (bilinear up-sampled low-resolution) RGB frames: what a real low-resolution
    /// video offers. The default.
    #[default]
    Lr,
    /// The full-resolution frames, as the original does (flow from data a real input lacks).
    Hr,
}

/// VSRNet's configuration.
#[derive(Config, Debug)]
pub struct VsrNetConfig {
    /// Frames per window F (odd); the centre frame is super-resolved.
    #[config(default = 3)]
    pub frames: usize,
    /// Frames FlowNetSD reads.
    #[config(default = "FlowInput::Lr")]
    pub flow_input: FlowInput,
}

/// VSRNet's own layers (FlowNetSD is separate and frozen, see [`VsrNet::forward`]).
#[derive(Module, Debug)]
pub struct VsrNet<B: Backend> {
    /// conv(bn, 1 -> 64, 9x9), shared by all frames.
    pub conv1: ConvBlock<B>,
    /// conv(bn, 64 F -> 32, 5x5).
    pub conv2: ConvBlock<B>,
    /// Conv2d(32 -> 1, 5x5, bias), weights ~ N(0, 0.1).
    pub conv3: Conv2d<B>,
    pub frames: usize,
    pub flow_input: FlowInput,
    /// Compute precision of the convolutions (not saved with the weights).
    pub precision: Precision,
}

/// What one forward pass gives.
#[derive(Debug, Clone)]
pub struct VsrOutput<B: Backend> {
    /// Super-resolved Y of the centre frame, (B, 1, H, W) in [0, 1], fp32.
    pub pred: Tensor<B, 4>,
    /// The true HR centre Y, (B, 1, H, W) in [0, 1]. (The original aliased it with the degraded
    /// frame and so trained against the bilinear up-sampling.)
    pub target: Tensor<B, 4>,
    /// Degraded centre Y (bilinear up-sampling of the LR frame): the baseline.
    pub bilinear: Tensor<B, 4>,
    /// Flow (B, 2, H, W) in pixels from the centre to each neighbour, in frame order.
    pub flows: Vec<Tensor<B, 4>>,
}

impl VsrNetConfig {
    /// Checks the settings: F odd and at least 1.
    pub fn validate(&self) -> Result<()> {
        if self.frames == 0 || self.frames % 2 == 0 {
            return Err(Error::Invalid(format!("frames must be odd and >= 1, got {}", self.frames)));
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> VsrNet<B> {
        let default_init = Conv2dConfig::new([1, 1], [1, 1]).initializer;
        materialize(VsrNet {
            conv1: ConvSpec::conv(1, 64, 9, 1, true).init(default_init.clone(), device),
            conv2: ConvSpec::conv(64 * self.frames, 32, 5, 1, true).init(default_init, device),
            conv3: Conv2dConfig::new([32, 1], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.1 })
                .init(device),
            frames: self.frames,
            flow_input: self.flow_input,
            precision: Precision::Fp32,
        })
    }
}

/// Luma in [0, 1] of RGB in [0, 255]: (B, 3, F, H, W) -> (B, 1, F, H, W).
pub fn rgb_to_y<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 5> {
    let r = x.clone().narrow(1, 0, 1);
    let g = x.clone().narrow(1, 1, 1);
    let b = x.narrow(1, 2, 1);
    (r * 0.299 + g * 0.587 + b * 0.114) / 255.0
}

/// The training degradation: 4x4 average pooling then bilinear x4 up-sampling
/// (PyTorch `Upsample(scale_factor=4, mode='bilinear')`, align_corners=False).
pub fn down_up<B: Backend>(img: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = img.dims();
    upsample_bilinear(avg_pool_x4(img), [h, w])
}

/// 4x4 average pooling: the low-resolution frame of the training degradation.
pub fn avg_pool_x4<B: Backend>(img: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(img, [SCALE, SCALE], [SCALE, SCALE], [0, 0], true, false)
}

/// Bilinear up-sampling to `size` with half-pixel centres (align_corners=False).
pub fn upsample_bilinear<B: Backend>(img: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    interpolate(img, size, InterpolateOptions { mode: InterpolateMode::Bilinear, align_corners: false })
}

/// Frame `f` of a (B, C, F, H, W) tensor as (B, C, H, W).
fn frame<B: Backend>(x: &Tensor<B, 5>, f: usize) -> Tensor<B, 4> {
    x.clone().narrow(2, f, 1).squeeze_dim(2)
}

/// All frames of (B, C, F, H, W) as a batch (B F, C, H, W), sample-major.
fn frames_as_batch<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 4> {
    let [b, c, f, h, w] = x.dims();
    x.swap_dims(1, 2).reshape([b * f, c, h, w])
}

/// Optical flow for the motion compensation: FlowNetSD's `flow2`.
///
/// At inference FlowNetSD runs on the same backend as VSRNet ([`FlowNetSD`] implements this);
/// in training it is [`Frozen`]: it runs on the autodiff backend's inner backend, so no graph is
/// built for it and its weights never see a gradient.
pub trait FlowEstimator<B: Backend> {
    /// `flow2` (N, 2, H/4, W/4) of N (centre, neighbour) pairs (N, 6, H, W), in fp32 whatever the
    /// estimator computes in (its weights' dtype).
    fn flow2(&self, pairs: Tensor<B, 4>) -> Tensor<B, 4>;
}

impl<B: VsrBackend> FlowEstimator<B> for FlowNetSD<B> {
    fn flow2(&self, pairs: Tensor<B, 4>) -> Tensor<B, 4> {
        let dtype = self.conv0.conv.weight.val().dtype();
        self.forward(pairs.cast(dtype)).cast(FloatDType::F32)
    }
}

/// A FlowNetSD on the inner backend of an autodiff backend: frozen, untracked.
#[derive(Debug, Clone)]
pub struct Frozen<M>(pub M);

impl<B: AutodiffBackend> FlowEstimator<B> for Frozen<FlowNetSD<B::InnerBackend>>
where
    B::InnerBackend: VsrBackend,
{
    fn flow2(&self, pairs: Tensor<B, 4>) -> Tensor<B, 4> {
        Tensor::from_inner(self.0.flow2(pairs.inner()))
    }
}

impl<B: VsrBackend> VsrNet<B> {
    /// Index of the centre frame.
    pub fn centre(&self) -> usize {
        self.frames / 2
    }

    /// Checks a (B, 3, F, H, W) input against the configuration.
    pub fn check_input(&self, dims: [usize; 5]) -> Result<()> {
        let [_, c, f, h, w] = dims;
        if c != 3 || f != self.frames {
            return Err(Error::Invalid(format!(
                "VSRNet expects (B, 3, {}, H, W) RGB windows, got {dims:?}",
                self.frames
            )));
        }
        if h % SIZE_MULTIPLE != 0 || w % SIZE_MULTIPLE != 0 {
            return Err(Error::Invalid(format!(
                "frame size {h}x{w} is not a multiple of {SIZE_MULTIPLE} (FlowNetSD needs it)"
            )));
        }
        Ok(())
    }

    /// The BatchNorm layers (conv1's, conv2's), for precise-BN recalibration
    /// ([`crate::train::Trainer::recalibrate_batch_norm`]).
    pub fn batch_norms_mut(&mut self) -> impl Iterator<Item = &mut burn::nn::BatchNorm<B>> {
        [&mut self.conv1.bn, &mut self.conv2.bn].into_iter().filter_map(|bn| bn.as_mut())
    }

    /// Super-resolves the centre frame of `x` (B, 3, F, H, W), RGB in [0, 255], degrading every
    /// frame first as in training. Without `flownet` the neighbours are used unwarped. FlowNetSD
    /// is run on untracked inputs, so no autodiff graph is built for it.
    pub fn forward(&self, x: Tensor<B, 5>, flownet: Option<&dyn FlowEstimator<B>>) -> VsrOutput<B> {
        let [b, _, f, h, w] = x.dims();
        let m = self.centre();

        // Y = 0.299 R + 0.587 G + 0.114 B, divided by 255                  [b, 1, f, h, w]
        let y = rgb_to_y(x.clone());
        // HR = Y[:, :, m]                                                    [b, 1, h, w]
        let target = frame(&y, m);
        // LR_f = bilinear_up_x4(avg_pool_4x4(Y[:, :, f])), every frame      [b, f, h, w]
        let lr = down_up(y.reshape([b, f, h, w]));
        // FlowNetSD reads the degraded RGB frames (or the HR ones, as the original)
        let flow_rgb = flownet.map(|_| match self.flow_input {
            FlowInput::Hr => x,
            FlowInput::Lr => map_frames(x, down_up),
        });

        let sr = self.super_resolve(lr, flow_rgb, flownet);
        VsrOutput { pred: sr.pred, target, bilinear: sr.bilinear, flows: sr.flows }
    }

    /// Super-resolves the centre frame of real low-resolution frames `lr` (B, 3, F, h, w), RGB in
    /// [0, 255]: the training degradation without its down-sampling. The network and FlowNetSD
    /// both read the bilinear x4 up-sampled frames, whatever `flow_input` says (there are no HR
    /// frames). 4h and 4w must be multiples of 64.
    pub fn forward_lr(&self, lr: Tensor<B, 5>, flownet: Option<&dyn FlowEstimator<B>>) -> SrOutput<B> {
        let (y, rgb) = upsample_lr(lr);
        self.super_resolve(y, flownet.map(|_| rgb), flownet)
    }

    /// The network on degraded input: `lr` (B, F, H, W) holds LR_f, the bilinear up-sampled Y of
    /// every frame in [0, 1]; `flow_rgb` (B, 3, F, H, W) the RGB frames in [0, 255] that
    /// FlowNetSD reads (needed with `flownet`). Convolutions compute in `self.precision`.
    pub fn super_resolve(
        &self,
        lr: Tensor<B, 4>,
        flow_rgb: Option<Tensor<B, 5>>,
        flownet: Option<&dyn FlowEstimator<B>>,
    ) -> SrOutput<B> {
        let bilinear = lr.clone().narrow(1, self.centre(), 1);
        let (inputs, flows) = self.compensate(lr, flow_rgb, flownet);
        SrOutput { pred: self.fuse(inputs), bilinear, flows }
    }

    /// Motion compensation of `lr` (B, F, H, W): W_f = warp(LR_f, flow(m -> f)) for f != m, and
    /// LR_m itself, (B, F, H, W); with the flows (B, 2, H, W) in pixels, in frame order. Without
    /// `flownet` (or `flow_rgb`) the frames pass unwarped.
    pub fn compensate(
        &self,
        lr: Tensor<B, 4>,
        flow_rgb: Option<Tensor<B, 5>>,
        flownet: Option<&dyn FlowEstimator<B>>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let [_, f, h, w] = lr.dims();
        let m = self.centre();
        let neighbours: Vec<usize> = (0..f).filter(|&i| i != m).collect();
        let (Some(net), Some(rgb)) = (flownet, flow_rgb) else { return (lr, Vec::new()) };
        if neighbours.is_empty() {
            return (lr, Vec::new());
        }
        // All neighbours in one batch, neighbour-major:
        //   flow = bilinear_up_x4(FlowNetSD(concat(X_m, X_f)).flow2) / 16    (pixels)
        //   W_f  = warp(LR_f, flow)                                           for f != m
        let xn = flownet_input(rgb); //                                         [b, 3, f, h, w]
        let pairs = Tensor::cat(
            neighbours.iter().map(|&i| Tensor::cat(vec![frame(&xn, m), frame(&xn, i)], 1)).collect(),
            0,
        ); //                                                                   [(f-1) b, 6, h, w]
        let flow = upsample_bilinear(net.flow2(pairs), [h, w]) / 16.0; //        [(f-1) b, 2, h, w]
        let lr_n = Tensor::cat(neighbours.iter().map(|&i| lr.clone().narrow(1, i, 1)).collect(), 0);
        let mut frames = warp(lr_n, flow.clone()).chunk(neighbours.len(), 0); // (f-1) x [b, 1, h, w]
        frames.insert(m, lr.narrow(1, m, 1));
        (Tensor::cat(frames, 1), flow.chunk(neighbours.len(), 0))
    }

    /// pred = sigmoid(conv3(conv2(concat over f of conv1(input_f)))), (B, F, H, W) -> (B, 1, H,
    /// W). conv1 is shared: one call over all frames. The sigmoid runs in fp32 whatever the
    /// input's precision. Each output pixel depends on the input within [`FUSE_RADIUS`] pixels.
    pub fn fuse(&self, inputs: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, f, h, w] = inputs.dims();
        // in the compute precision (fp16: weights cast per layer, BatchNorm in fp32)
        let stacked = inputs.reshape([b * f, 1, h, w]).cast(self.precision.dtype());
        let feat = self.conv1.forward(stacked).reshape([b, f * 64, h, w]); // [b, 64 f, h, w]
        let conv3 = cast_module(self.conv3.clone(), feat.dtype());
        let logits = conv2d_module(&conv3, self.conv2.forward(feat)); //      [b, 1, h, w]
        sigmoid(logits.cast(FloatDType::F32))
    }
}

/// Receptive radius of [`VsrNet::fuse`]: 4 (conv1, 9x9) + 2 (conv2, 5x5) + 2 (conv3, 5x5).
pub const FUSE_RADIUS: usize = 8;

impl<B: VsrBackend> VsrNet<B> {
    /// [`VsrNet::fuse`] tile by tile: output tiles of `tile` x `tile` pixels, each computed from
    /// an input window that holds the tile and a [`FUSE_RADIUS`] margin, so that the result is
    /// the same (every output pixel sees the same inputs, and zero padding only at the frame's
    /// own border) while memory is bounded by the tile size. Every window has the same size
    /// ([`tile_windows`]), so GPU backends that tune or compile per shape do it once, not once
    /// per edge-tile shape. `tile == 0`: the whole frame at once.
    pub fn fuse_tiled(&self, inputs: Tensor<B, 4>, tile: usize) -> Tensor<B, 4> {
        let [b, f, h, w] = inputs.dims();
        if tile == 0 || (h <= tile && w <= tile) {
            return self.fuse(inputs);
        }
        let (rows, cols) = (tile_windows(h, tile), tile_windows(w, tile));
        let mut out_rows = Vec::new();
        for row in &rows {
            let mut out_row = Vec::new();
            for col in &cols {
                let out = self.fuse(inputs.clone().slice([0..b, 0..f, row.window.clone(), col.window.clone()]));
                out_row.push(out.slice([0..b, 0..1, row.in_window(), col.in_window()]));
            }
            out_rows.push(Tensor::cat(out_row, 3));
        }
        Tensor::cat(out_rows, 2)
    }
}

/// One tile of [`tile_windows`] along an axis: output pixels `tile`, computed from the input
/// pixels `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileWindow {
    pub tile: std::ops::Range<usize>,
    pub window: std::ops::Range<usize>,
}

impl TileWindow {
    /// The tile in the window's coordinates.
    pub fn in_window(&self) -> std::ops::Range<usize> {
        self.tile.start - self.window.start..self.tile.end - self.window.start
    }
}

/// Splits an axis of `n` pixels into output tiles of at most `tile` pixels: as few tiles as that
/// allows, of equal length but the last (shorter by less than the number of tiles), so that no
/// tile is a sliver. Each has an input window of one common length `min(t + 2 FUSE_RADIUS, n)`
/// (t: the first tile's length): the tile plus FUSE_RADIUS on both sides, shifted inwards at the
/// frame's borders (where the frame's own zero padding is the right one). Every output pixel of
/// a tile is then at least FUSE_RADIUS from its window's edges, or the edge is the frame's.
pub fn tile_windows(n: usize, tile: usize) -> Vec<TileWindow> {
    let count = n.div_ceil(tile.max(1));
    let t = n.div_ceil(count.max(1));
    let len = (t + 2 * FUSE_RADIUS).min(n);
    (0..n)
        .step_by(t.max(1))
        .map(|start| {
            let end = (start + t).min(n);
            let from = start.saturating_sub(FUSE_RADIUS).min(n - len);
            TileWindow { tile: start..end, window: from..from + len }
        })
        .collect()
}

/// The degraded input of real low-resolution frames `lr` (B, 3, F, h, w), RGB in [0, 255]:
/// RGB_f = bilinear_up_x4(LR_f) (B, 3, F, 4h, 4w), what FlowNetSD reads, and its luma
/// Y(RGB_f) = bilinear_up_x4(Y(LR_f)) (B, F, 4h, 4w) in [0, 1], what the network reads.
pub fn upsample_lr<B: Backend>(lr: Tensor<B, 5>) -> (Tensor<B, 4>, Tensor<B, 5>) {
    let [b, _, f, h, w] = lr.dims();
    let size = [h * SCALE, w * SCALE];
    let rgb = map_frames(lr, |x| upsample_bilinear(x, size)); //           [b, 3, f, 4h, 4w]
    let y = rgb_to_y(rgb.clone()).reshape([b, f, size[0], size[1]]); //     [b, f, 4h, 4w]
    (y, rgb)
}

/// What [`VsrNet::super_resolve`] gives.
#[derive(Debug, Clone)]
pub struct SrOutput<B: Backend> {
    /// Super-resolved Y of the centre frame, (B, 1, H, W) in [0, 1], fp32.
    pub pred: Tensor<B, 4>,
    /// LR_m, the bilinear up-sampled centre Y: the baseline. (B, 1, H, W).
    pub bilinear: Tensor<B, 4>,
    /// Flow (B, 2, H, W) in pixels from the centre to each neighbour, in frame order.
    pub flows: Vec<Tensor<B, 4>>,
}

/// FlowNetSD's input X = (rgb - mean) / 255, with mean per sample and channel over all frames
/// and pixels. (B, 3, F, H, W). The mean is taken in fp32 whatever the input's precision (a sum
/// over millions of pixels overflows fp16), as the mean of the rows' means (every row has W
/// pixels): the rows reduce where they lie, in any layout (the up-sampled frames are a swapped
/// view), in as many parallel reductions as rows. One reduction of F H W values per sample and
/// channel first copied the view and then ran 9 long reductions: 0.37 ms of a 15 ms fp16 step
/// (H100, batch 3, Nsight Compute).
fn flownet_input<B: Backend>(rgb: Tensor<B, 5>) -> Tensor<B, 5> {
    let [b, c, f, h, _] = rgb.dims();
    let dtype = rgb.dtype();
    let rows = rgb.clone().cast(FloatDType::F32).mean_dim(4); //           [b, c, f, h, 1]
    let mean = rows.reshape([b, c, f * h]).mean_dim(2).reshape([b, c, 1, 1, 1]);
    (rgb - mean.cast(dtype)) / 255.0
}

/// Applies `op` to every frame of (B, C, F, H, W): (B F, C, H, W) -> (B F, C, H', W').
fn map_frames<B: Backend>(x: Tensor<B, 5>, op: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>) -> Tensor<B, 5> {
    let [b, c, f, _, _] = x.dims();
    let y = op(frames_as_batch(x));
    let [_, _, h, w] = y.dims();
    y.reshape([b, f, c, h, w]).swap_dims(1, 2)
}

/// MSE between prediction and target (the training loss).
pub fn mse<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    (pred - target).powf_scalar(2.0).mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiles partition the axis in as few tiles as the size allows, of near-equal lengths;
    /// every window has one length and holds its tile with the full receptive margin, except
    /// where the margin would leave the frame.
    #[test]
    fn tile_windows_have_one_size_and_full_margins() {
        for n in [1, 7, 16, 40, 64, 100, 528, 2160, 3840] {
            for tile in [1, 8, 24, 64, 512] {
                let windows = tile_windows(n, tile);
                assert_eq!(windows.len(), n.div_ceil(tile), "n {n} tile {tile}: as few tiles as the size allows");
                let len = windows[0].window.len();
                assert_eq!(len, (windows[0].tile.len() + 2 * FUSE_RADIUS).min(n));
                let mut next = 0;
                for t in &windows {
                    assert_eq!(t.tile.start, next, "n {n} tile {tile}: {t:?}");
                    assert!(t.tile.end > t.tile.start && t.tile.len() <= tile);
                    // no slivers: every tile within the tile count of the first one's length
                    assert!(windows[0].tile.len() - t.tile.len() < windows.len(), "n {n} tile {tile}: {t:?}");
                    next = t.tile.end;
                    assert_eq!(t.window.len(), len, "n {n} tile {tile}: {t:?}");
                    assert!(t.window.end <= n);
                    assert!(t.window.start == 0 || t.tile.start >= t.window.start + FUSE_RADIUS, "{t:?}");
                    assert!(t.window.end == n || t.tile.end + FUSE_RADIUS <= t.window.end, "{t:?}");
                }
                assert_eq!(next, n);
            }
        }
    }
}
