//! A frozen network's forward on channels-last tensors as *one* backend operation.
//!
//! FlowNetSD runs frozen (inference only) beside VSRNet's training. Layer by layer on the CUDA
//! backend, each of its 27 convolutions was a Fusion custom operation, a blocking round trip from
//! Fusion's server thread to CubeCL's device thread, plus a recorded bias add and LeakyReLU: the
//! forward took 4.9-9.1 ms of host time for 2.5 ms of kernels (fp16, batch 3, H100), and the GPU
//! waited. A [`Net`] lists the layers (convolution, transposed convolution, concatenation) over
//! numbered values; [`Recorder`] builds one from Burn modules and runs it through
//! [`ConvBackend::vendor_net_nhwc`], which the CUDA backend runs in one call on its device thread:
//! cuDNN for the convolutions, one kernel of ours for each bias + LeakyReLU and each
//! concatenation part (`bias_act.cu`).
//!
//! Layout: values are (N, H, W, C) tensors; a convolution's weight is stored (K, R, S, C / groups)
//! for Burn's (K, C / groups, R, S), a transposed convolution's (C, R, S, K / groups) for Burn's
//! (C, K / groups, R, S). Backends without channels-last convolutions run a [`Net`] layer by layer
//! on Burn's own convolutions ([`run_reference`]): the CPU tests check a network through it.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor};
use burn::tensor::{Tensor, TensorPrimitive};
use burn::tensor::ops::conv::{calculate_conv_output_size, calculate_conv_transpose_output_size};

use crate::conv::ConvBackend;

/// A value of a [`Net`]: its `i`-th input tensor, or the output of its `i`-th layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Input(usize),
    Layer(usize),
}

/// One layer of a [`Net`].
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `LeakyReLU(slope)(conv2d(x, w) + b)`; without a bias or a slope that part is skipped.
    Conv { x: Value, w: Value, b: Option<Value>, options: ConvOptions<2>, slope: Option<f64> },
    /// The same with a transposed convolution.
    Transpose { x: Value, w: Value, b: Option<Value>, options: ConvTransposeOptions<2>, slope: Option<f64> },
    /// The values concatenated along the channels.
    Cat(Vec<Value>),
}

/// A channels-last network over `inputs` input tensors (activations, weights, biases), whose
/// results are the values `outputs`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Net {
    pub inputs: usize,
    pub layers: Vec<Layer>,
    pub outputs: Vec<Value>,
}

/// Values of a [`Net`] as a runner holds them: the inputs, then each layer's output.
pub struct Values<T> {
    inputs: Vec<T>,
    layers: Vec<T>,
}

impl<T> Values<T> {
    pub fn new(inputs: Vec<T>) -> Self {
        Self { inputs, layers: Vec::new() }
    }

    /// `v`, made already.
    ///
    /// # Panics
    /// Where `v` is not (yet) there.
    pub fn get(&self, v: Value) -> &T {
        let got = match v {
            Value::Input(i) => self.inputs.get(i),
            Value::Layer(i) => self.layers.get(i),
        };
        got.unwrap_or_else(|| panic!("channels-last net: {v:?} read before it is made"))
    }

    /// The next layer's output.
    pub fn push(&mut self, t: T) {
        self.layers.push(t);
    }
}

impl Net {
    /// The shape of every layer's output ((N, H, W, C)), from the input tensors' shapes (as
    /// stored: weights channels-last, biases 1-d).
    ///
    /// # Panics
    /// Where a layer reads a value not yet made, or its operands do not fit.
    pub fn shapes(&self, inputs: &[Vec<usize>]) -> Values<Vec<usize>> {
        assert_eq!(inputs.len(), self.inputs, "channels-last net: {} inputs for {}", inputs.len(), self.inputs);
        let mut shapes = Values::new(inputs.to_vec());
        for (i, layer) in self.layers.iter().enumerate() {
            let get = |v: Value| -> [usize; 4] {
                let s = shapes.get(v);
                s.as_slice().try_into().unwrap_or_else(|_| panic!("channels-last net: layer {i}: {v:?} is {s:?}, not 4-d"))
            };
            let out = match layer {
                Layer::Conv { x, w, options, .. } => {
                    let ([n, h, wd, c], [k, r, s, cg]) = (get(*x), get(*w));
                    assert_eq!(c, cg * options.groups, "channels-last net: layer {i}: {c} input channels, weight {:?}", get(*w));
                    let size = |len, k, d: usize| {
                        calculate_conv_output_size(k, options.stride[d], options.padding[d], options.dilation[d], len)
                    };
                    vec![n, size(h, r, 0), size(wd, s, 1), k]
                }
                Layer::Transpose { x, w, options, .. } => {
                    let ([n, h, wd, c], [cw, r, s, kg]) = (get(*x), get(*w));
                    assert_eq!(c, cw, "channels-last net: layer {i}: {c} input channels, weight {:?}", get(*w));
                    let size = |len, k, d: usize| {
                        calculate_conv_transpose_output_size(
                            k,
                            options.stride[d],
                            options.padding[d],
                            options.padding_out[d],
                            options.dilation[d],
                            len,
                        )
                    };
                    vec![n, size(h, r, 0), size(wd, s, 1), kg * options.groups]
                }
                Layer::Cat(parts) => {
                    let first = get(parts[0]);
                    let mut c = 0;
                    for &p in parts {
                        let s = get(p);
                        assert_eq!(s[..3], first[..3], "channels-last net: layer {i} concatenates {s:?} with {first:?}");
                        c += s[3];
                    }
                    vec![first[0], first[1], first[2], c]
                }
            };
            shapes.push(out);
        }
        shapes
    }

    /// The shapes of [`Net::outputs`].
    pub fn output_shapes(&self, inputs: &[Vec<usize>]) -> Vec<Vec<usize>> {
        let all = self.shapes(inputs);
        self.outputs.iter().map(|&v| all.get(v).clone()).collect()
    }
}

/// Builds a [`Net`] from Burn modules whose 4-d weights are stored channels-last (see the module
/// docs) and runs it: inputs and layers in the order the forward reads them, then
/// [`Recorder::run`].
pub struct Recorder<B: ConvBackend> {
    inputs: Vec<FloatTensor<B>>,
    shapes: Vec<Vec<usize>>,
    net: Net,
}

impl<B: ConvBackend> Default for Recorder<B> {
    fn default() -> Self {
        Self { inputs: Vec::new(), shapes: Vec::new(), net: Net::default() }
    }
}

impl<B: ConvBackend> Recorder<B> {
    /// A tensor the net reads.
    pub fn input<const D: usize>(&mut self, t: Tensor<B, D>) -> Value {
        self.shapes.push(t.dims().to_vec());
        self.inputs.push(t.into_primitive().tensor());
        self.net.inputs += 1;
        Value::Input(self.inputs.len() - 1)
    }

    fn layer(&mut self, layer: Layer) -> Value {
        self.net.layers.push(layer);
        Value::Layer(self.net.layers.len() - 1)
    }

    /// `conv.forward(x)`, then LeakyReLU(`slope`) if given.
    ///
    /// # Panics
    /// On asymmetric padding (cuDNN has none).
    pub fn conv2d(&mut self, conv: &Conv2d<B>, x: Value, slope: Option<f64>) -> Value {
        let padding = match conv.padding {
            PaddingConfig2d::Valid => [0, 0],
            PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
            ref other => panic!("channels-last conv2d: symmetric padding only, got {other:?}"),
        };
        let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
        let w = self.input(conv.weight.val());
        let b = conv.bias.as_ref().map(|b| self.input(b.val()));
        self.layer(Layer::Conv { x, w, b, options, slope })
    }

    /// `conv.forward(x)`, then LeakyReLU(`slope`) if given.
    pub fn conv_transpose2d(&mut self, conv: &ConvTranspose2d<B>, x: Value, slope: Option<f64>) -> Value {
        let options = ConvTransposeOptions::new(conv.stride, conv.padding, conv.padding_out, conv.dilation, conv.groups);
        let w = self.input(conv.weight.val());
        let b = conv.bias.as_ref().map(|b| self.input(b.val()));
        self.layer(Layer::Transpose { x, w, b, options, slope })
    }

    /// The values concatenated along the channels.
    pub fn cat(&mut self, parts: Vec<Value>) -> Value {
        assert!(!parts.is_empty(), "channels-last net: an empty concatenation");
        self.layer(Layer::Cat(parts))
    }

    /// Runs the net ([`ConvBackend::vendor_net_nhwc`]): the values `outputs`, in that order.
    ///
    /// # Panics
    /// Where the layers do not fit their operands ([`Net::shapes`]).
    pub fn run(self, outputs: Vec<Value>) -> Vec<Tensor<B, 4>> {
        let mut net = self.net;
        net.outputs = outputs;
        let want = net.output_shapes(&self.shapes);
        let out = B::vendor_net_nhwc(self.inputs, &net);
        assert_eq!(out.len(), want.len(), "channels-last net: {} outputs for {}", out.len(), want.len());
        out.into_iter().map(|t| Tensor::from_primitive(TensorPrimitive::Float(t))).collect()
    }
}

/// [`Net`] layer by layer on Burn's own convolutions (NCHW, through permuted views): the provided
/// [`ConvBackend::vendor_net_nhwc`].
pub fn run_reference<B: ConvBackend>(inputs: Vec<FloatTensor<B>>, net: &Net) -> Vec<FloatTensor<B>> {
    let mut values = Values::new(inputs);
    let act = |y: Tensor<B, 4>, slope: &Option<f64>| match slope {
        Some(s) => burn::tensor::activation::leaky_relu(y, *s),
        None => y,
    };
    let four = |t: &FloatTensor<B>| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t.clone()));
    for layer in &net.layers {
        let (dtype, nchw, w) = match layer {
            Layer::Conv { x, w, .. } | Layer::Transpose { x, w, .. } => {
                let x = four(values.get(*x));
                let dtype = x.dtype();
                let w = four(values.get(*w)).cast(dtype).permute([0, 3, 1, 2]).into_primitive().tensor();
                (dtype, x.permute([0, 3, 1, 2]).into_primitive().tensor(), w)
            }
            Layer::Cat(parts) => {
                let y = Tensor::cat(parts.iter().map(|&p| four(values.get(p))).collect(), 3);
                values.push(y.into_primitive().tensor());
                continue;
            }
        };
        let bias = |b: &Option<Value>| {
            b.map(|b| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(values.get(b).clone())).cast(dtype).into_primitive().tensor())
        };
        let (y, slope) = match layer {
            Layer::Conv { b, options, slope, .. } => (B::conv2d(nchw, w, bias(b), options.clone()), slope),
            Layer::Transpose { b, options, slope, .. } => (B::conv_transpose2d(nchw, w, bias(b), options.clone()), slope),
            Layer::Cat(_) => unreachable!(),
        };
        let y = act(four(&y).permute([0, 2, 3, 1]), slope);
        values.push(y.into_primitive().tensor());
    }
    net.outputs.iter().map(|&v| values.get(v).clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
    use burn::tensor::{Distribution, backend::Backend};

    type B = burn::backend::Flex;

    #[test]
    fn shapes_follow_the_layers_and_reject_a_channel_mismatch() {
        use Value::{Input, Layer as L};
        let net = Net {
            inputs: 3,
            layers: vec![
                Layer::Conv { x: Input(0), w: Input(1), b: None, options: ConvOptions::new([2, 2], [1, 1], [1, 1], 1), slope: None },
                Layer::Transpose {
                    x: L(0),
                    w: Input(2),
                    b: None,
                    options: ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1),
                    slope: Some(0.1),
                },
                Layer::Cat(vec![Input(0), L(1)]),
            ],
            outputs: vec![L(2)],
        };
        let inputs = vec![vec![2, 16, 24, 8], vec![32, 3, 3, 8], vec![32, 4, 4, 8]];
        assert_eq!(net.output_shapes(&inputs), vec![vec![2, 16, 24, 16]]);
        let bad = vec![vec![2, 16, 24, 8], vec![32, 3, 3, 6], vec![32, 4, 4, 8]];
        assert!(std::panic::catch_unwind(|| net.shapes(&bad)).is_err());
    }

    /// The reference runner on channels-last weights gives Burn's NCHW modules' outputs.
    #[test]
    fn reference_matches_the_nchw_modules() {
        let device = Default::default();
        <B as Backend>::seed(&device, 3);
        let conv = Conv2dConfig::new([8, 16], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<B>(&device);
        let deconv = ConvTranspose2dConfig::new([16, 8], [4, 4])
            .with_stride([2, 2])
            .with_padding([1, 1])
            .init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 8, 12, 20], Distribution::Normal(0.0, 1.0), &device);
        let y1 = burn::tensor::activation::leaky_relu(conv.forward(x.clone()), 0.1);
        let y2 = deconv.forward(y1.clone());
        let want = Tensor::cat(vec![x.clone(), y2], 1);

        let last = |t: Tensor<B, 4>| t.permute([0, 2, 3, 1]);
        let conv_l = Conv2d { weight: conv.weight.clone().map(last), ..conv.clone() };
        let deconv_l = ConvTranspose2d { weight: deconv.weight.clone().map(last), ..deconv.clone() };
        let mut r = Recorder::<B>::default();
        let xi = r.input(last(x));
        let a = r.conv2d(&conv_l, xi, Some(0.1));
        let b = r.conv_transpose2d(&deconv_l, a, None);
        let c = r.cat(vec![xi, b]);
        let got = r.run(vec![c]).remove(0).permute([0, 3, 1, 2]);
        assert_eq!(got.dims(), want.dims());
        let diff = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-5, "max |diff| {diff}");
    }
}
