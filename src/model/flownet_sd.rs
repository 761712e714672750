//! FlowNet2-SD: the small-displacement FlowNet of FlowNet 2.0.
//!
//! Ilg et al., "FlowNet 2.0: Evolution of Optical Flow Estimation with Deep Networks", CVPR 2017,
//! <https://arxiv.org/abs/1612.01925>. Layer names and shapes follow NVIDIA's flownet2-pytorch
//! `networks/FlowNetSD.py` (batchNorm=False), so `FlowNet2-SD_checkpoint.pth.tar` loads by name
//! (see [`crate::checkpoint`]). 45,371,666 parameters.

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::{DType, Tensor, TensorPrimitive, backend::Backend};

use super::blocks::{ConvBlock, ConvSpec, DeconvBlock, LEAKY_SLOPE, predict_flow, upsample_x2};
use vsr_kernels::channels_last::{Recorder, Value};
use vsr_kernels::conv::{
    ConvBackend, conv_transpose2d_module as deconv, conv2d_module as conv, to_conv_layout,
};

/// FlowNetSD's configuration: the published network has no free settings, so this only
/// records that and builds it.
#[derive(Config, Debug)]
pub struct FlowNetSDConfig {
    /// BatchNorm after each encoder convolution (flownet2-pytorch's `batchNorm`; the released
    /// checkpoint uses `false`).
    #[config(default = false)]
    pub batch_norm: bool,
}

/// FlowNetSD. Input (B, 6, H, W): centre and neighbour RGB frames, mean-subtracted, divided by
/// 255; H and W multiples of 64. [`FlowNetSD::forward`] returns `flow2` (B, 2, H/4, W/4).
#[derive(Module, Debug)]
pub struct FlowNetSD<B: Backend> {
    pub conv0: ConvBlock<B>,
    pub conv1: ConvBlock<B>,
    pub conv1_1: ConvBlock<B>,
    pub conv2: ConvBlock<B>,
    pub conv2_1: ConvBlock<B>,
    pub conv3: ConvBlock<B>,
    pub conv3_1: ConvBlock<B>,
    pub conv4: ConvBlock<B>,
    pub conv4_1: ConvBlock<B>,
    pub conv5: ConvBlock<B>,
    pub conv5_1: ConvBlock<B>,
    pub conv6: ConvBlock<B>,
    pub conv6_1: ConvBlock<B>,
    pub deconv5: DeconvBlock<B>,
    pub deconv4: DeconvBlock<B>,
    pub deconv3: DeconvBlock<B>,
    pub deconv2: DeconvBlock<B>,
    pub inter_conv5: ConvBlock<B>,
    pub inter_conv4: ConvBlock<B>,
    pub inter_conv3: ConvBlock<B>,
    pub inter_conv2: ConvBlock<B>,
    pub predict_flow6: Conv2d<B>,
    pub predict_flow5: Conv2d<B>,
    pub predict_flow4: Conv2d<B>,
    pub predict_flow3: Conv2d<B>,
    pub predict_flow2: Conv2d<B>,
    pub upsampled_flow6_to_5: ConvTranspose2d<B>,
    pub upsampled_flow5_to_4: ConvTranspose2d<B>,
    pub upsampled_flow4_to_3: ConvTranspose2d<B>,
    pub upsampled_flow3_to_2: ConvTranspose2d<B>,
    /// Whether [`FlowNetSD::for_inference`] made the network channels-last: every tensor (N, H,
    /// W, C), every weight (A, R, S, B) for its (A, B, R, S), conv0's input widened to 8
    /// channels (see [`Layers`]).
    #[module(skip)]
    pub channels_last: bool,
}

/// All flows of one forward pass, finest first (flownet2-pytorch's training-mode output).
#[derive(Debug, Clone)]
pub struct FlowPyramid<B: Backend> {
    /// `[flow2, flow3, flow4, flow5, flow6]`; flow2 is at 1/4 resolution.
    pub flows: [Tensor<B, 4>; 5],
}

impl FlowNetSDConfig {
    /// Builds FlowNetSD with Xavier-uniform weights (the checkpoint normally replaces them).
    pub fn init<B: Backend>(&self, device: &B::Device) -> FlowNetSD<B> {
        let init = Initializer::XavierUniform { gain: 1.0 };
        let bn = self.batch_norm;
        let conv = |cin, cout, stride| ConvSpec::conv(cin, cout, 3, stride, bn).init(init.clone(), device);
        let i_conv = |cin, cout| ConvSpec::i_conv(cin, cout).init(init.clone(), device);
        crate::precision::materialize(FlowNetSD {
            conv0: conv(6, 64, 1),
            conv1: conv(64, 64, 2),
            conv1_1: conv(64, 128, 1),
            conv2: conv(128, 128, 2),
            conv2_1: conv(128, 128, 1),
            conv3: conv(128, 256, 2),
            conv3_1: conv(256, 256, 1),
            conv4: conv(256, 512, 2),
            conv4_1: conv(512, 512, 1),
            conv5: conv(512, 512, 2),
            conv5_1: conv(512, 512, 1),
            conv6: conv(512, 1024, 2),
            conv6_1: conv(1024, 1024, 1),
            deconv5: DeconvBlock::new(1024, 512, device),
            deconv4: DeconvBlock::new(1026, 256, device),
            deconv3: DeconvBlock::new(770, 128, device),
            deconv2: DeconvBlock::new(386, 64, device),
            inter_conv5: i_conv(1026, 512),
            inter_conv4: i_conv(770, 256),
            inter_conv3: i_conv(386, 128),
            inter_conv2: i_conv(194, 64),
            predict_flow6: predict_flow(1024, init.clone(), device),
            predict_flow5: predict_flow(512, init.clone(), device),
            predict_flow4: predict_flow(256, init.clone(), device),
            predict_flow3: predict_flow(128, init.clone(), device),
            predict_flow2: predict_flow(64, init, device),
            upsampled_flow6_to_5: upsample_x2(2, 2, device),
            upsampled_flow5_to_4: upsample_x2(2, 2, device),
            upsampled_flow4_to_3: upsample_x2(2, 2, device),
            upsampled_flow3_to_2: upsample_x2(2, 2, device),
            channels_last: false,
        })
    }
}

impl<B: ConvBackend> FlowNetSD<B> {
    /// Number of parameters of the published network.
    pub const NUM_PARAMS: usize = 45_371_666;

    /// `flow2` (B, 2, H/4, W/4) for a (B, 6, H, W) input: eval-mode output.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [flow2, ..] = self.forward_pyramid(x).flows;
        flow2
    }

    /// Every flow of the decoder: training-mode output. (`conv` / `deconv` are the layers'
    /// `forward` at the process's convolution precision, `vsr_kernels::conv`.)
    ///
    /// # Shapes
    /// - x: `[batch, 6, h, w]`, h and w multiples of 64
    /// - flows: `[batch, 2, h/4, w/4]` ... `[batch, 2, h/64, w/64]`
    pub fn forward_pyramid(&self, x: Tensor<B, 4>) -> FlowPyramid<B> {
        if !self.channels_last {
            let flows = self.pyramid(&mut Eager, to_conv_layout(x));
            return FlowPyramid { flows: flows.map(|f| f.narrow(1, 0, 2)) };
        }
        // One operation for the whole network (`vsr_kernels::channels_last`), on (N, H, W, C)
        // tensors, the input widened to conv0's 8 channels.
        let mut r = Recorder::default();
        let x = r.input(pad_to_8(x, 1).permute([0, 2, 3, 1]));
        let flows = self.pyramid(&mut r, x);
        let mut flows = r.run(flows.to_vec()).into_iter().map(|f| f.narrow(3, 0, 2).permute([0, 3, 1, 2]));
        FlowPyramid { flows: std::array::from_fn(|_| flows.next().expect("five flows")) }
    }

    /// The network on the values of `l` (see [`Layers`]): `[flow2, ..., flow6]`.
    fn pyramid<L: Layers<B>>(&self, l: &mut L, x: L::V) -> [L::V; 5] {
        let x = l.block(&self.conv0, x); //                                  [b, 64, h, w]
        let c1 = l.block(&self.conv1, x);
        let c1 = l.block(&self.conv1_1, c1); //                              [b, 128, h/2, w/2]
        let c2 = l.block(&self.conv2, c1);
        let c2 = l.block(&self.conv2_1, c2); //                              [b, 128, h/4, w/4]
        let c3 = l.block(&self.conv3, c2.clone());
        let c3 = l.block(&self.conv3_1, c3); //                              [b, 256, h/8, w/8]
        let c4 = l.block(&self.conv4, c3.clone());
        let c4 = l.block(&self.conv4_1, c4); //                              [b, 512, h/16, w/16]
        let c5 = l.block(&self.conv5, c4.clone());
        let c5 = l.block(&self.conv5_1, c5); //                              [b, 512, h/32, w/32]
        let c6 = l.block(&self.conv6, c5.clone());
        let c6 = l.block(&self.conv6_1, c6); //                              [b, 1024, h/64, w/64]

        let flow6 = l.conv(&self.predict_flow6, c6.clone());
        let (d5, u5) = (l.up(&self.deconv5, c6), l.deconv(&self.upsampled_flow6_to_5, flow6.clone()));
        let cat5 = l.cat(vec![c5, d5, u5]); //                               [b, 1026, h/32, w/32]
        let i5 = l.block(&self.inter_conv5, cat5.clone());
        let flow5 = l.conv(&self.predict_flow5, i5);
        let (d4, u4) = (l.up(&self.deconv4, cat5), l.deconv(&self.upsampled_flow5_to_4, flow5.clone()));
        let cat4 = l.cat(vec![c4, d4, u4]); //                               [b, 770, h/16, w/16]
        let i4 = l.block(&self.inter_conv4, cat4.clone());
        let flow4 = l.conv(&self.predict_flow4, i4);
        let (d3, u3) = (l.up(&self.deconv3, cat4), l.deconv(&self.upsampled_flow4_to_3, flow4.clone()));
        let cat3 = l.cat(vec![c3, d3, u3]); //                               [b, 386, h/8, w/8]
        let i3 = l.block(&self.inter_conv3, cat3.clone());
        let flow3 = l.conv(&self.predict_flow3, i3);
        let (d2, u2) = (l.up(&self.deconv2, cat3), l.deconv(&self.upsampled_flow3_to_2, flow3.clone()));
        let cat2 = l.cat(vec![c2, d2, u2]); //                               [b, 194, h/4, w/4]
        let i2 = l.block(&self.inter_conv2, cat2);
        let flow2 = l.conv(&self.predict_flow2, i2);
        [flow2, flow3, flow4, flow5, flow6]
    }

    /// The network as frozen inference runs it: weights cast once to `dtype`, every flow layer
    /// widened from 2 to [`FLOW_CHANNELS`] channels (zero weights and biases: the extra channels
    /// are exactly 0) and the layers reading the concatenations given as many zero input
    /// channels, so that every convolution has a multiple of 8 channels, and the weights in the
    /// backend's convolution layout ([`to_conv_layout`]). cuDNN's tensor-core kernels need both:
    /// otherwise each of the 14 layers with 2, 194, 386, 770 or 1026 channels pads its input and
    /// weight in two extra kernels, and every layer converts its weight to channels-last, per
    /// call (fp16 training step, H100, batch 3: ~0.6 ms of 4.1 in FlowNetSD, Nsight Compute).
    /// The same flows ([`FlowNetSD::forward_pyramid`] returns their 2 channels). On backends with
    /// channels-last vendor convolutions ([`ConvBackend::vendor_nhwc`]: cuDNN on the CUDA backend)
    /// the network is made channels-last instead ([`Layers`]). For frozen networks only: the
    /// padding would take gradients in training.
    pub fn for_inference(self, dtype: DType) -> Self {
        let net = crate::precision::cast_module(self, dtype);
        let net = FlowNetSD {
            deconv4: DeconvBlock { conv: pad_deconv_inputs(net.deconv4.conv) },
            deconv3: DeconvBlock { conv: pad_deconv_inputs(net.deconv3.conv) },
            deconv2: DeconvBlock { conv: pad_deconv_inputs(net.deconv2.conv) },
            inter_conv5: pad_conv_block_inputs(net.inter_conv5),
            inter_conv4: pad_conv_block_inputs(net.inter_conv4),
            inter_conv3: pad_conv_block_inputs(net.inter_conv3),
            inter_conv2: pad_conv_block_inputs(net.inter_conv2),
            predict_flow6: widen_flow(net.predict_flow6),
            predict_flow5: widen_flow(net.predict_flow5),
            predict_flow4: widen_flow(net.predict_flow4),
            predict_flow3: widen_flow(net.predict_flow3),
            predict_flow2: widen_flow(net.predict_flow2),
            upsampled_flow6_to_5: widen_flow_upsampling(net.upsampled_flow6_to_5),
            upsampled_flow5_to_4: widen_flow_upsampling(net.upsampled_flow5_to_4),
            upsampled_flow4_to_3: widen_flow_upsampling(net.upsampled_flow4_to_3),
            upsampled_flow3_to_2: widen_flow_upsampling(net.upsampled_flow3_to_2),
            ..net
        };
        if B::vendor_nhwc() && net.conv0.bn.is_none() {
            return channels_last(net);
        }
        struct ConvLayout;
        impl<B: ConvBackend> ModuleMapper<B> for ConvLayout {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
                if D != 4 {
                    return param;
                }
                param.map(|t| Tensor::from_primitive(TensorPrimitive::Float(B::conv_layout(t.into_primitive().tensor()))))
            }
        }
        net.map(&mut ConvLayout)
    }
}

/// The layer operations [`FlowNetSD::pyramid`] is written in, on values `V`: NCHW tensors layer
/// by layer ([`Eager`], in the layout the backend's convolutions prefer, [`to_conv_layout`]:
/// channels-last strides on LibTorch's CUDA), or, in a network [`FlowNetSD::for_inference`] made
/// channels-last (backends with channels-last vendor convolutions, [`ConvBackend::vendor_nhwc`]:
/// cuDNN on the CUDA backend), the layers of one channels-last operation ([`Recorder`]: (N, H,
/// W, C) values, (A, R, S, B) weights). CubeCL's element-wise kernels write their outputs in
/// logical order, so channels-last strides do not survive a bias add there: the tensors
/// themselves are (N, H, W, C). cuDNN's tensor-core kernels convert NCHW operands to NHWC and
/// back on every call: 2.3 ms of an fp16 training step's 16 ms of kernels (H100, batch 3, Nsight
/// Compute). Layer by layer, each convolution was a blocking hop to CubeCL's device thread and
/// each bias and activation recorded operations: 4.9-9.1 ms of host time a forward for 2.5 ms of
/// kernels; as one operation, one hop.
trait Layers<B: Backend> {
    type V: Clone;
    /// A convolution, its bias and activation.
    fn block(&mut self, b: &ConvBlock<B>, x: Self::V) -> Self::V;
    /// A transposed convolution, its bias and LeakyReLU.
    fn up(&mut self, d: &DeconvBlock<B>, x: Self::V) -> Self::V;
    /// A convolution and its bias.
    fn conv(&mut self, c: &Conv2d<B>, x: Self::V) -> Self::V;
    /// A transposed convolution and its bias.
    fn deconv(&mut self, c: &ConvTranspose2d<B>, x: Self::V) -> Self::V;
    /// Concatenation along the channels.
    fn cat(&mut self, parts: Vec<Self::V>) -> Self::V;
}

/// NCHW tensors, layer by layer.
struct Eager;

impl<B: ConvBackend> Layers<B> for Eager {
    type V = Tensor<B, 4>;

    fn block(&mut self, b: &ConvBlock<B>, x: Self::V) -> Self::V {
        b.forward(x)
    }

    fn up(&mut self, d: &DeconvBlock<B>, x: Self::V) -> Self::V {
        d.forward(x)
    }

    fn conv(&mut self, c: &Conv2d<B>, x: Self::V) -> Self::V {
        conv(c, x)
    }

    fn deconv(&mut self, c: &ConvTranspose2d<B>, x: Self::V) -> Self::V {
        deconv(c, x)
    }

    fn cat(&mut self, parts: Vec<Self::V>) -> Self::V {
        Tensor::cat(parts, 1)
    }
}

impl<B: ConvBackend> Layers<B> for Recorder<B> {
    type V = Value;

    fn block(&mut self, b: &ConvBlock<B>, x: Value) -> Value {
        assert!(b.bn.is_none(), "a channels-last FlowNetSD has no BatchNorm");
        self.conv2d(&b.conv, x, b.activation.then_some(LEAKY_SLOPE))
    }

    fn up(&mut self, d: &DeconvBlock<B>, x: Value) -> Value {
        self.conv_transpose2d(&d.conv, x, Some(LEAKY_SLOPE))
    }

    fn conv(&mut self, c: &Conv2d<B>, x: Value) -> Value {
        self.conv2d(c, x, None)
    }

    fn deconv(&mut self, c: &ConvTranspose2d<B>, x: Value) -> Value {
        self.conv_transpose2d(c, x, None)
    }

    fn cat(&mut self, parts: Vec<Value>) -> Value {
        Recorder::cat(self, parts)
    }
}

/// Channels of every flow inside a network prepared by [`FlowNetSD::for_inference`]: 2 (x, y)
/// and 6 zero channels.
pub const FLOW_CHANNELS: usize = 8;

/// `net` channels-last ([`Layers`]): every 4-d weight (A, B, R, S) stored as a dense (A, R, S, B)
/// tensor, conv0's widened to 8 input channels (zero weights) first: cuDNN ran the 6-channel
/// layer on a generic kernel, 1.2 ms of a 14 ms fp16 step (H100, Nsight Compute). Copied once
/// through the host: Burn has no operation that makes a permuted view dense.
fn channels_last<B: ConvBackend>(net: FlowNetSD<B>) -> FlowNetSD<B> {
    struct Krsc;
    impl<B: Backend> ModuleMapper<B> for Krsc {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            if D != 4 {
                return param;
            }
            param.map(|t| {
                let (device, dtype, dims) = (t.device(), t.dtype(), t.dims());
                // (in its own dtype: `from_data` would take the device's default)
                let data = t.reshape(dims_4(dims)).permute([0, 2, 3, 1]).into_data();
                let t = Tensor::<B, 4>::from_data(data, (&device, dtype));
                let dims = t.dims();
                t.reshape(dims_d(dims))
            })
        }
    }
    let mut net = net;
    net.conv0.conv.weight = pad_param(net.conv0.conv.weight, 1);
    let mut net = net.map(&mut Krsc);
    net.channels_last = true;
    net
}

fn dims_4<const D: usize>(d: [usize; D]) -> [usize; 4] {
    std::array::from_fn(|i| d[i])
}

fn dims_d<const D: usize>(d: [usize; 4]) -> [usize; D] {
    std::array::from_fn(|i| d[i])
}

/// `t` with zeros appended along `dim` up to a multiple of 8 (itself if it has one).
fn pad_to_8<B: Backend, const D: usize>(t: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let mut dims = t.dims();
    let extra = dims[dim].next_multiple_of(8) - dims[dim];
    if extra == 0 {
        return t;
    }
    dims[dim] = extra;
    let zeros = Tensor::<B, D>::zeros(dims, &t.device()).cast(t.dtype());
    Tensor::cat(vec![t, zeros], dim)
}

/// `pad_to_8` along `dim` of a weight or bias.
fn pad_param<B: Backend, const D: usize>(p: Param<Tensor<B, D>>, dim: usize) -> Param<Tensor<B, D>> {
    p.map(|t| pad_to_8(t, dim))
}

/// A convolution reading a concatenation that ends with a widened flow: zero weights for the
/// flow's extra channels, which come last (weight (out, in, k, k)).
fn pad_conv_block_inputs<B: Backend>(block: ConvBlock<B>) -> ConvBlock<B> {
    ConvBlock { conv: Conv2d { weight: pad_param(block.conv.weight, 1), ..block.conv }, ..block }
}

/// [`pad_conv_block_inputs`] for a transposed convolution (weight (in, out, k, k)).
fn pad_deconv_inputs<B: Backend>(conv: ConvTranspose2d<B>) -> ConvTranspose2d<B> {
    let weight = pad_param(conv.weight, 0);
    let channels = [weight.val().dims()[0], conv.channels[1]];
    ConvTranspose2d { weight, channels, ..conv }
}

/// `predict_flow` with [`FLOW_CHANNELS`] outputs, the extra ones 0 (zero weights and biases).
fn widen_flow<B: Backend>(conv: Conv2d<B>) -> Conv2d<B> {
    Conv2d { weight: pad_param(conv.weight, 0), bias: conv.bias.map(|b| pad_param(b, 0)), ..conv }
}

/// A flow up-sampling (2 -> 2 channels) as [`FLOW_CHANNELS`] -> [`FLOW_CHANNELS`], the extra
/// outputs 0 and the extra inputs unread (zero weights).
fn widen_flow_upsampling<B: Backend>(conv: ConvTranspose2d<B>) -> ConvTranspose2d<B> {
    let weight = pad_param(pad_param(conv.weight, 0), 1);
    let [cin, cout, _, _] = weight.val().dims();
    let channels = [cin, cout];
    ConvTranspose2d { weight, bias: conv.bias.map(|b| pad_param(b, 0)), channels, ..conv }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = burn::backend::Flex;

    /// The widened network has a multiple of 8 channels in every layer and gives the same flows
    /// at every level: its extra channels are zero and meet zero weights (channels in the wrong
    /// place would mix a flow's zeros into real inputs or drop real ones).
    #[test]
    fn for_inference_gives_the_same_flows_with_channels_in_multiples_of_8() {
        let device = Default::default();
        <B as Backend>::seed(&device, 7);
        let net = FlowNetSDConfig::new().init::<B>(&device);
        // non-zero biases, so that a widened flow channel would show if it were not zero
        let net = FlowNetSD {
            predict_flow4: Conv2d {
                bias: net.predict_flow4.bias.clone().map(|b| b.map(|t| t.random_like(Distribution::Normal(0.0, 1.0)))),
                ..net.predict_flow4.clone()
            },
            ..net
        };
        let x = Tensor::<B, 4>::random([2, 6, 128, 128], Distribution::Normal(0.0, 1.0), &device);
        let want = net.forward_pyramid(x.clone()).flows;
        let wide = net.for_inference(DType::F32);
        for (name, cin) in [
            ("inter_conv5", wide.inter_conv5.conv.weight.val().dims()[1]),
            ("inter_conv4", wide.inter_conv4.conv.weight.val().dims()[1]),
            ("inter_conv3", wide.inter_conv3.conv.weight.val().dims()[1]),
            ("inter_conv2", wide.inter_conv2.conv.weight.val().dims()[1]),
            ("deconv4", wide.deconv4.conv.weight.val().dims()[0]),
            ("deconv2", wide.deconv2.conv.weight.val().dims()[0]),
            ("predict_flow2", wide.predict_flow2.weight.val().dims()[0]),
            ("upsampled_flow3_to_2", wide.upsampled_flow3_to_2.weight.val().dims()[1]),
        ] {
            assert_eq!(cin % 8, 0, "{name}: {cin} channels");
        }
        let got = wide.forward_pyramid(x).flows;
        for (level, (g, w)) in got.into_iter().zip(want).enumerate() {
            assert_eq!(g.dims(), w.dims(), "flow{}", level + 2);
            let scale = w.clone().abs().max().into_scalar();
            let diff = (g - w).abs().max().into_scalar();
            assert!(diff <= 1e-5 * (1.0 + scale), "flow{}: max |diff| {diff} (max |flow| {scale})", level + 2);
        }
    }

    /// The channels-last network run as one [`Recorder`] operation (on the CPU through
    /// `vsr_kernels::channels_last::run_reference`, the same net the CUDA backend runs in one
    /// call) gives the NCHW network's flows: a layer reading the wrong value, a weight in the
    /// wrong layout or a concatenation in the wrong order would not.
    #[test]
    fn channels_last_network_gives_the_same_flows() {
        let device = Default::default();
        <B as Backend>::seed(&device, 11);
        let net = FlowNetSDConfig::new().init::<B>(&device).for_inference(DType::F32);
        let x = Tensor::<B, 4>::random([1, 6, 64, 128], Distribution::Normal(0.0, 1.0), &device);
        let want = net.forward_pyramid(x.clone()).flows;
        let got = channels_last(net).forward_pyramid(x).flows;
        for (level, (g, w)) in got.into_iter().zip(want).enumerate() {
            assert_eq!(g.dims(), w.dims(), "flow{}", level + 2);
            let scale = w.clone().abs().max().into_scalar();
            let diff = (g - w).abs().max().into_scalar();
            assert!(diff <= 1e-4 * (1.0 + scale), "flow{}: max |diff| {diff} (max |flow| {scale})", level + 2);
        }
    }

    /// The channels-last network ([`channels_last`], what `for_inference` makes on the CUDA
    /// backend) keeps each weight's dtype (an f16 network fed f32 weights ran FlowNetSD in f32 on
    /// the GPU) and holds each (A, B, R, S) weight as (A, R, S, B), conv0's widened to 8 input
    /// channels with zeros. (Its flows are checked on the GPU: the CUDA parity tests.)
    #[test]
    fn channels_last_weights_keep_dtype_and_values() {
        let device = Default::default();
        let net = FlowNetSDConfig::new().init::<B>(&device).for_inference(DType::F16);
        let last = channels_last(net.clone());
        assert!(last.channels_last && !net.channels_last);
        let pairs = [
            ("conv0", net.conv0.conv.weight.val(), last.conv0.conv.weight.val()),
            ("conv3_1", net.conv3_1.conv.weight.val(), last.conv3_1.conv.weight.val()),
            ("deconv2", net.deconv2.conv.weight.val(), last.deconv2.conv.weight.val()),
            ("upsampled_flow3_to_2", net.upsampled_flow3_to_2.weight.val(), last.upsampled_flow3_to_2.weight.val()),
        ];
        for (name, before, after) in pairs {
            assert_eq!(after.dtype(), DType::F16, "{name}: dtype");
            let [a, b, r, c] = before.dims();
            let b8 = if name == "conv0" { 8 } else { b };
            assert_eq!(after.dims(), [a, r, c, b8], "{name}: dims");
            // (every weight but conv0's already has a multiple of 8 channels there)
            let want = pad_to_8(before, 1).permute([0, 2, 3, 1]);
            let values = |t: Tensor<B, 4>| t.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
            assert_eq!(values(after), values(want), "{name}: values");
        }
    }
}
