//! A frozen channels-last network ([`crate::channels_last::Net`]) on the CUDA backend: every
//! layer in one call on CubeCL's device thread. Convolutions run on cuDNN with NHWC descriptors
//! ([`super::cudnn::convolve_here`]); each layer's bias and LeakyReLU is one kernel of ours, in
//! place, and each concatenation one such kernel per part, writing its channel slice
//! ([`crate::bias_act`]). Layer by layer, each convolution was a Fusion custom operation (a
//! blocking hop from Fusion's server thread to the device thread) and each bias and activation
//! recorded element-wise operations; here the whole forward is one operation and one hop.

use burn::tensor::DType;

use super::conv::{conv_geometry, transpose_geometry};
use super::cudnn::{Pass, convolve_here, dense, empty, on_device_thread};
use super::own_conv::Tensor;
use super::nhwc_to_nchw;
use crate::bias_act::cube::write;
use crate::channels_last::{Layer, Net, Value, Values};

/// Runs `net` on `inputs` (CUDA buffers of one device) on CubeCL's device thread: the values
/// `net.outputs`. The layers compute in the dtype of each layer's input; weights and biases of
/// another dtype are cast.
pub(crate) fn run(inputs: Vec<Tensor>, net: &Net) -> Vec<Tensor> {
    let client = inputs.first().expect("channels-last net: no inputs").client.clone();
    on_device_thread(&client, move || run_here(inputs, net))
}

fn run_here(inputs: Vec<Tensor>, net: &Net) -> Vec<Tensor> {
    let mut values = Values::new(inputs);
    for layer in &net.layers {
        let y = match layer {
            Layer::Conv { x, w, b, options, slope } => {
                let x = dense(values.get(*x).clone());
                let w = operand(&values, *w, x.dtype);
                let g = conv_geometry(nhwc_to_nchw(dims(&x)), nhwc_to_nchw(dims(&w)), options, true);
                finish(convolve_here(Pass::Forward, g, x, w), &values, *b, *slope)
            }
            Layer::Transpose { x, w, b, options, slope } => {
                let x = dense(values.get(*x).clone());
                let w = operand(&values, *w, x.dtype);
                let g = transpose_geometry(nhwc_to_nchw(dims(&x)), nhwc_to_nchw(dims(&w)), options, true);
                finish(convolve_here(Pass::Data, g, w, x), &values, *b, *slope)
            }
            Layer::Cat(parts) => {
                let parts: Vec<Tensor> = parts.iter().map(|&p| dense(values.get(p).clone())).collect();
                let [n, h, w, _] = dims(&parts[0]);
                let c = parts.iter().map(|p| dims(p)[3]).sum();
                let y = empty(&parts[0], [n, h, w, c], parts[0].dtype);
                let mut offset = 0;
                for p in &parts {
                    let p = if p.dtype == y.dtype { p.clone() } else { burn_cubecl::kernel::cast(p.clone(), y.dtype) };
                    write(&p, None, &y, offset, 1.0);
                    offset += dims(&p)[3];
                }
                y
            }
        };
        values.push(y);
    }
    net.outputs.iter().map(|&v| values.get(v).clone()).collect()
}

/// `y` plus the bias `b`, then LeakyReLU(`slope`), in place; `y` itself without either.
fn finish(y: Tensor, values: &Values<Tensor>, b: Option<Value>, slope: Option<f64>) -> Tensor {
    if b.is_none() && slope.is_none() {
        return y;
    }
    let bias = b.map(|b| operand(values, b, y.dtype));
    write(&y, bias.as_ref(), &y, 0, slope.unwrap_or(1.0) as f32);
    y
}

/// The value `v` dense, in `dtype`.
fn operand(values: &Values<Tensor>, v: Value, dtype: DType) -> Tensor {
    let t = dense_any(values.get(v).clone());
    if t.dtype == dtype { t } else { burn_cubecl::kernel::cast(t, dtype) }
}

/// `t` dense: 4-d tensors through [`dense`], vectors (biases) as they are if contiguous.
fn dense_any(t: Tensor) -> Tensor {
    if t.meta.shape().num_dims() == 4 { dense(t) } else { burn_cubecl::kernel::into_contiguous(t) }
}

fn dims(t: &Tensor) -> [usize; 4] {
    super::cudnn::dims(t)
}
