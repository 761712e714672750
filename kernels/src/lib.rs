//! Kernels of `vsr`, as Burn backend extensions.
//!
//! # Warp
//! `warp(img, flow)` samples `img` (B,C,H,W) bilinearly at `(x + u, y + v)` for every pixel
//! `(x, y)`, with `flow` (B,2,H,W) holding `(u, v)` in pixels and sample coordinates clamped to the
//! image border. It equals PyTorch's
//! `grid_sample(img, identity_grid + flow / ((W-1)/2, (H-1)/2), bilinear, border, align_corners=True)`
//! (see `warp_reference` for the definition in plain tensor ops) but is defined for H or W = 1 too.
//! Gradients follow PyTorch too: the derivative of the clamp is 0 on and beyond the border.
//!
//! [`WarpBackend`] carries the operation. Its provided methods are the tensor-op implementation,
//! which every backend gets for free; CubeCL backends override them with the kernels
//! (`cube` module, features `cuda` / `wgpu`), LibTorch with PyTorch's `grid_sample` (feature
//! `tch`), `Fusion<B>` forwards them to its inner backend as a
//! fusion custom op, and `Autodiff<B>` differentiates them with `B::warp_backward`.
//!
//! The image gradient of the CubeCL backward is deterministic (same inputs, same bits); see
//! `cube::kernel` for how.

use burn::tensor::{
    Bool, IndexingUpdateOp, Int, Tensor, TensorPrimitive, backend::Backend, ops::FloatTensor,
};

pub mod adam;
mod autodiff;
#[cfg(any(feature = "tch", feature = "cuda"))]
mod batch_norm;
#[cfg(any(feature = "tch", feature = "cuda"))]
mod bias_act;
pub mod bench;
pub mod channels_last;
pub mod conv;
pub mod conv_grad;
#[cfg(any(feature = "tch", feature = "cuda"))]
mod conv_shape;
#[cfg(feature = "cubecl")]
pub mod cube;
#[cfg(feature = "tch")]
mod few_input_channel_conv;
pub mod fixed_point;
#[cfg(feature = "tch")]
mod libtorch;
#[cfg(any(feature = "tch", feature = "cuda"))]
pub mod nvrtc;
#[cfg(any(feature = "tch", feature = "cuda"))]
mod one_channel_conv;
#[cfg(any(feature = "tch", feature = "cuda"))]
mod one_input_channel_conv;
pub mod readback;
#[cfg(any(feature = "tch", feature = "cuda"))]
mod tensor_core_conv;
mod setting;
pub mod upload;

/// A backend that can warp an image by a flow field.
pub trait WarpBackend: Backend {
    /// Bilinear warp with border clamping; see the crate docs.
    fn warp(img: FloatTensor<Self>, flow: FloatTensor<Self>) -> FloatTensor<Self> {
        let img = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(img));
        let flow = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(flow));
        warp_reference(img, flow).into_primitive().tensor()
    }

    /// Gradients of `sum(warp(img, flow) * grad_out)`: `(grad_img, grad_flow)`, shaped like `img`
    /// and `flow`. The provided implementation is [`warp_backward_reference`] (tensor ops).
    fn warp_backward(
        img: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let img = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(img));
        let flow = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(flow));
        let grad_out = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(grad_out));
        let (gi, gf) = warp_backward_reference(img, flow, grad_out);
        (gi.into_primitive().tensor(), gf.into_primitive().tensor())
    }
}

/// Warps `img` (B,C,H,W) by `flow` (B,2,H,W, pixels) on any backend; see the crate docs.
///
/// # Panics
/// If the shapes disagree (callers validate user input before this point).
pub fn warp<B: WarpBackend>(img: Tensor<B, 4>, flow: Tensor<B, 4>) -> Tensor<B, 4> {
    check_shapes(&img.dims(), &flow.dims());
    let out = B::warp(
        img.into_primitive().tensor(),
        flow.into_primitive().tensor(),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `(grad_img, grad_flow)` of `sum(warp(img, flow) * grad_out)` with the backend's implementation
/// (kernels on CubeCL backends), without an autodiff backend.
///
/// # Panics
/// If the shapes disagree.
pub fn warp_backward<B: WarpBackend>(
    img: Tensor<B, 4>,
    flow: Tensor<B, 4>,
    grad_out: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    check_shapes(&img.dims(), &flow.dims());
    assert_eq!(
        img.dims(),
        grad_out.dims(),
        "warp_backward: grad_out must be shaped like img"
    );
    let (gi, gf) = B::warp_backward(
        img.into_primitive().tensor(),
        flow.into_primitive().tensor(),
        grad_out.into_primitive().tensor(),
    );
    (
        Tensor::from_primitive(TensorPrimitive::Float(gi)),
        Tensor::from_primitive(TensorPrimitive::Float(gf)),
    )
}

fn check_shapes(img: &[usize; 4], flow: &[usize; 4]) {
    assert!(
        flow[0] == img[0] && flow[1] == 2 && flow[2] == img[2] && flow[3] == img[3],
        "warp: flow must be (B,2,H,W) = ({},2,{},{}), got {:?}",
        img[0],
        img[2],
        img[3],
        flow
    );
}

/// Sample geometry shared by the reference forward and backward.
struct Footprint<B: Backend> {
    /// Flat indices (y*W + x) of the four corners, [b, h*w]: (y0,x0), (y0,x1), (y1,x0), (y1,x1).
    idx: [Tensor<B, 2, Int>; 4],
    /// Fractional parts, [b, 1, h, w].
    wx: Tensor<B, 4>,
    wy: Tensor<B, 4>,
    /// Derivative of the clamped coordinate w.r.t. the flow (1 strictly inside, else 0), [b,1,h,w].
    mx: Tensor<B, 4>,
    my: Tensor<B, 4>,
}

/// `pos + d` clamped to `[0, size-1]`, with PyTorch's gradient (0 on and beyond the border; Burn's
/// `clamp` passes the gradient on the border). Returns the clamped value and the gradient mask.
fn clamp_coord<B: Backend>(raw: Tensor<B, 3>, size: usize) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let hi = (size - 1) as f32;
    let inside: Tensor<B, 3, Bool> = raw
        .clone()
        .greater_elem(0.0)
        .bool_and(raw.clone().lower_elem(hi));
    let mask = inside.float().cast(raw.dtype());
    let clamped = raw.clone().detach().clamp(0.0, hi);
    // inside: raw (gradient 1); on/outside: the clamped constant (gradient 0). Same value.
    let x = raw * mask.clone() + clamped * (mask.clone().neg() + 1.0);
    (x, mask)
}

fn footprint<B: Backend>(flow: Tensor<B, 4>) -> Footprint<B> {
    let [b, _, h, w] = flow.dims();
    let device = flow.device();
    let dtype = flow.dtype();
    let xs = Tensor::<B, 1, Int>::arange(0..w as i64, &device)
        .float()
        .cast(dtype)
        .reshape([1, 1, w]);
    let ys = Tensor::<B, 1, Int>::arange(0..h as i64, &device)
        .float()
        .cast(dtype)
        .reshape([1, h, 1]);
    let (x, mx) = clamp_coord(flow.clone().narrow(1, 0, 1).reshape([b, h, w]) + xs, w);
    let (y, my) = clamp_coord(flow.narrow(1, 1, 1).reshape([b, h, w]) + ys, h);
    let x0 = x.clone().detach().floor();
    let y0 = y.clone().detach().floor();
    let wx = (x - x0.clone()).unsqueeze_dim::<4>(1);
    let wy = (y - y0.clone()).unsqueeze_dim::<4>(1);
    let x0i = x0.int().clamp(0, w as i64 - 1);
    let y0i = y0.int().clamp(0, h as i64 - 1);
    let x1i = (x0i.clone() + 1).clamp_max(w as i64 - 1);
    let y1i = (y0i.clone() + 1).clamp_max(h as i64 - 1);
    let flat =
        |yi: Tensor<B, 3, Int>, xi: Tensor<B, 3, Int>| (yi * w as i64 + xi).reshape([b, h * w]);
    Footprint {
        idx: [
            flat(y0i.clone(), x0i.clone()),
            flat(y0i, x1i.clone()),
            flat(y1i.clone(), x0i),
            flat(y1i, x1i),
        ],
        wx,
        wy,
        mx: mx.unsqueeze_dim(1),
        my: my.unsqueeze_dim(1),
    }
}

/// The four corner values of every output pixel, [b, c, h, w] each.
fn corners<B: Backend>(img: &Tensor<B, 4>, idx: &[Tensor<B, 2, Int>; 4]) -> [Tensor<B, 4>; 4] {
    let [b, c, h, w] = img.dims();
    let flat = img.clone().reshape([b, c, h * w]);
    idx.clone().map(|i| {
        let i = i.reshape([b, 1, h * w]).expand([b, c, h * w]);
        flat.clone().gather(2, i).reshape([b, c, h, w])
    })
}

/// The warp in plain tensor ops: four gathers and a bilinear blend. Differentiable through any
/// autodiff backend (the gathers' backward is a scatter-add) with the same gradients as PyTorch,
/// so it is the reference that kernels are tested against.
pub fn warp_reference<B: Backend>(img: Tensor<B, 4>, flow: Tensor<B, 4>) -> Tensor<B, 4> {
    check_shapes(&img.dims(), &flow.dims());
    let f = footprint(flow);
    let [v00, v01, v10, v11] = corners(&img, &f.idx);
    let (wx, wy) = (f.wx, f.wy);
    let top = v00 * (wx.clone().neg() + 1.0) + v01 * wx.clone();
    let bottom = v10 * (wx.clone().neg() + 1.0) + v11 * wx;
    top * (wy.clone().neg() + 1.0) + bottom * wy
}

/// `(grad_img, grad_flow)` of `sum(warp(img, flow) * grad_out)` in plain tensor ops (gathers for
/// the flow gradient, scatter-adds for the image gradient); the provided
/// [`WarpBackend::warp_backward`].
pub fn warp_backward_reference<B: Backend>(
    img: Tensor<B, 4>,
    flow: Tensor<B, 4>,
    grad_out: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    check_shapes(&img.dims(), &flow.dims());
    let [b, c, h, w] = img.dims();
    let f = footprint(flow.detach());
    let [v00, v01, v10, v11] = corners(&img, &f.idx);
    let (wx, wy) = (f.wx, f.wy);
    let one_wx = wx.clone().neg() + 1.0;
    let one_wy = wy.clone().neg() + 1.0;
    let dx =
        (v01.clone() - v00.clone()) * one_wy.clone() + (v11.clone() - v10.clone()) * wy.clone();
    let dy = (v10 - v00) * one_wx.clone() + (v11 - v01) * wx.clone();
    let gu = (grad_out.clone() * dx).sum_dim(1) * f.mx;
    let gv = (grad_out.clone() * dy).sum_dim(1) * f.my;
    let grad_flow = Tensor::cat(vec![gu, gv], 1);

    let weights = [
        one_wx.clone() * one_wy.clone(),
        wx.clone() * one_wy,
        one_wx * wy.clone(),
        wx * wy,
    ];
    let mut grad_img = img.zeros_like().reshape([b, c, h * w]);
    for (i, wk) in f.idx.into_iter().zip(weights) {
        let i = i.reshape([b, 1, h * w]).expand([b, c, h * w]);
        let v = (grad_out.clone() * wk).reshape([b, c, h * w]);
        grad_img = grad_img.scatter(2, i, v, IndexingUpdateOp::Add);
    }
    (grad_img.reshape([b, c, h, w]), grad_flow)
}

impl WarpBackend for burn::backend::Flex {}
