//! flownet2-pytorch's building blocks (`networks/submodules.py`), with fields named so that
//! checkpoint keys map by `<name>.0.` -> `<name>.conv.` and `<name>.1.` -> `<name>.bn.`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::{DType, Tensor, backend::Backend};
use vsr_kernels::conv::{
    ConvBackend, batch_norm_act, batch_norm_act_eval, batch_norm_act_ops, conv2d_module, conv2d_module_leaky, conv_transpose2d_module_leaky, leaky_relu,
};

use crate::precision::cast_module;

/// Negative slope of every LeakyReLU in both networks.
pub const LEAKY_SLOPE: f64 = 0.1;

/// `conv(bn, cin, cout, k, s)`: Conv2d (padding (k-1)/2; bias unless bn), BatchNorm2d if `bn`,
/// LeakyReLU(0.1) unless it is an `i_conv` (no activation).
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    pub conv: Conv2d<B>,
    pub bn: Option<BatchNorm<B>>,
    pub activation: bool,
}

/// Settings of a [`ConvBlock`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub batch_norm: bool,
    pub activation: bool,
}

impl ConvSpec {
    /// flownet2-pytorch's `conv(batchNorm, cin, cout, kernel, stride)`.
    pub fn conv(cin: usize, cout: usize, kernel: usize, stride: usize, batch_norm: bool) -> Self {
        Self { cin, cout, kernel, stride, batch_norm, activation: true }
    }

    /// flownet2-pytorch's `i_conv(False, cin, cout)`: 3x3, bias, no activation.
    pub fn i_conv(cin: usize, cout: usize) -> Self {
        Self { cin, cout, kernel: 3, stride: 1, batch_norm: false, activation: false }
    }

    pub fn init<B: Backend>(&self, initializer: Initializer, device: &B::Device) -> ConvBlock<B> {
        let p = (self.kernel - 1) / 2;
        let conv = Conv2dConfig::new([self.cin, self.cout], [self.kernel, self.kernel])
            .with_stride([self.stride, self.stride])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(!self.batch_norm)
            .with_initializer(initializer)
            .init(device);
        let bn = self.batch_norm.then(|| BatchNormConfig::new(self.cout).init(device));
        ConvBlock { conv, bn, activation: self.activation }
    }
}

impl<B: ConvBackend> ConvBlock<B> {
    /// Computes in the dtype of `x` (autocast, see [`crate::precision`]): the convolution's
    /// weights are cast to it when they differ, BatchNorm and its activation run in fp32 (on
    /// LibTorch, in training and, on CUDA, in inference: fused kernels in the dtype of `x` with
    /// fp32 statistics, as PyTorch's autocast; elsewhere [`batch_norm_act_ops`] in training and
    /// Burn's `BatchNorm` in inference), and the output has the dtype of `x`. Blocks without
    /// BatchNorm add the bias and apply LeakyReLU in one pass where the backend has it.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let dtype = x.dtype();
        let conv = cast_module(self.conv.clone(), dtype);
        if self.bn.is_none() && self.activation {
            return conv2d_module_leaky(&conv, x, LEAKY_SLOPE);
        }
        let x = conv2d_module(&conv, x);
        let slope = self.activation.then_some(LEAKY_SLOPE);
        let x = match &self.bn {
            Some(bn) => match batch_norm_act(bn, x, slope) {
                Ok(y) => return y.cast(dtype),
                Err(x) if B::ad_enabled(&x.device()) => {
                    return batch_norm_act_ops(bn, x.cast(DType::F32), slope).cast(dtype);
                }
                Err(x) => match batch_norm_act_eval(bn, x, slope) {
                    Ok(y) => return y.cast(dtype),
                    Err(x) => bn.forward(x.cast(DType::F32)),
                },
            },
            None => x,
        };
        let x = if self.activation { leaky_relu(x, LEAKY_SLOPE) } else { x };
        x.cast(dtype)
    }
}

/// `deconv(cin, cout)`: ConvTranspose2d(cin, cout, 4, stride 2, padding 1, bias) + LeakyReLU(0.1).
#[derive(Module, Debug)]
pub struct DeconvBlock<B: Backend> {
    pub conv: ConvTranspose2d<B>,
}

impl<B: Backend> DeconvBlock<B> {
    pub fn new(cin: usize, cout: usize, device: &B::Device) -> Self {
        Self { conv: upsample_x2(cin, cout, device) }
    }
}

impl<B: ConvBackend> DeconvBlock<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv_transpose2d_module_leaky(&self.conv, x, LEAKY_SLOPE)
    }
}

/// ConvTranspose2d(cin, cout, 4, stride 2, padding 1, bias): doubles H and W. (Burn's default
/// initializer: Burn 0.21 cannot Xavier-initialise a transposed convolution's bias.)
pub fn upsample_x2<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> ConvTranspose2d<B> {
    ConvTranspose2dConfig::new([cin, cout], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).init(device)
}

/// `predict_flow(cin)`: Conv2d(cin, 2, 3, 1, 1, bias), no activation.
pub fn predict_flow<B: Backend>(cin: usize, initializer: Initializer, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, 2], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(initializer)
        .init(device)
}
