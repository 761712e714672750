//! FlowNet2-SD: the small-displacement FlowNet of FlowNet 2.0.
//!
//! Ilg et al., "FlowNet 2.0: Evolution of Optical Flow Estimation with Deep Networks", CVPR 2017,
//! <https://arxiv.org/abs/1612.01925>. Layer names and shapes follow NVIDIA's flownet2-pytorch
//! `networks/FlowNetSD.py` (batchNorm=False), so `FlowNet2-SD_checkpoint.pth.tar` loads by name
//! (see [`crate::checkpoint`]). 45,371,666 parameters.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::{Tensor, backend::Backend};

use super::blocks::{ConvBlock, ConvSpec, DeconvBlock, predict_flow, upsample_x2};
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
        // (in the layout the backend's convolutions prefer: channels-last on LibTorch's CUDA)
        let x = self.conv0.forward(to_conv_layout(x)); //                     [b, 64, h, w]
        let c1 = self.conv1_1.forward(self.conv1.forward(x)); //            [b, 128, h/2, w/2]
        let c2 = self.conv2_1.forward(self.conv2.forward(c1)); //           [b, 128, h/4, w/4]
        let c3 = self.conv3_1.forward(self.conv3.forward(c2.clone())); //   [b, 256, h/8, w/8]
        let c4 = self.conv4_1.forward(self.conv4.forward(c3.clone())); //   [b, 512, h/16, w/16]
        let c5 = self.conv5_1.forward(self.conv5.forward(c4.clone())); //   [b, 512, h/32, w/32]
        let c6 = self.conv6_1.forward(self.conv6.forward(c5.clone())); //   [b, 1024, h/64, w/64]

        let flow6 = conv(&self.predict_flow6, c6.clone());
        let cat5 = Tensor::cat(
            vec![c5, self.deconv5.forward(c6), deconv(&self.upsampled_flow6_to_5, flow6.clone())],
            1,
        ); //                                                                [b, 1026, h/32, w/32]
        let flow5 = conv(&self.predict_flow5, self.inter_conv5.forward(cat5.clone()));
        let cat4 = Tensor::cat(
            vec![c4, self.deconv4.forward(cat5), deconv(&self.upsampled_flow5_to_4, flow5.clone())],
            1,
        ); //                                                                [b, 770, h/16, w/16]
        let flow4 = conv(&self.predict_flow4, self.inter_conv4.forward(cat4.clone()));
        let cat3 = Tensor::cat(
            vec![c3, self.deconv3.forward(cat4), deconv(&self.upsampled_flow4_to_3, flow4.clone())],
            1,
        ); //                                                                [b, 386, h/8, w/8]
        let flow3 = conv(&self.predict_flow3, self.inter_conv3.forward(cat3.clone()));
        let cat2 = Tensor::cat(
            vec![c2, self.deconv2.forward(cat3), deconv(&self.upsampled_flow3_to_2, flow3.clone())],
            1,
        ); //                                                                [b, 194, h/4, w/4]
        let flow2 = conv(&self.predict_flow2, self.inter_conv2.forward(cat2));
        FlowPyramid { flows: [flow2, flow3, flow4, flow5, flow6] }
    }
}
