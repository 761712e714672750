//! The warp on LibTorch: PyTorch's `grid_sample` (bilinear, border padding, `align_corners`), with
//! the sampling grid built exactly as the reference builds it (`tests/fixtures/reference/vsrnet_ref.py`: `linspace(-1, 1)`
//! plus the flow divided by half the size less one), so results follow PyTorch's on the
//! same device; the gradients come from LibTorch's autograd (`grid_sampler_2d_backward`).
//! Images one pixel high or wide (where that grid divides by zero) use the tensor-op definition.

use burn::backend::LibTorch;
use burn::backend::libtorch::TchTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::WarpBackend;

impl<E> WarpBackend for LibTorch<E>
where
    LibTorch<E>: Backend<FloatTensorPrimitive = TchTensor>,
{
    fn warp(img: TchTensor, flow: TchTensor) -> TchTensor {
        if !grid_defined(&img.tensor) {
            let img = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(img));
            let flow = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(flow));
            return crate::warp_reference(img, flow).into_primitive().tensor();
        }
        TchTensor::new(tch::no_grad(|| grid_sample(&img.tensor, &flow.tensor)))
    }

    fn warp_backward(
        img: TchTensor,
        flow: TchTensor,
        grad_out: TchTensor,
    ) -> (TchTensor, TchTensor) {
        if !grid_defined(&img.tensor) {
            let t = |x: TchTensor| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
            let (gi, gf) = crate::warp_backward_reference(t(img), t(flow), t(grad_out));
            return (gi.into_primitive().tensor(), gf.into_primitive().tensor());
        }
        let (gi, gf) = tch::with_grad(|| {
            let img = img.tensor.detach().set_requires_grad(true);
            let flow = flow.tensor.detach().set_requires_grad(true);
            let out = grid_sample(&img, &flow);
            let kind = out.kind();
            let loss = (out * &grad_out.tensor).sum(kind);
            let mut g = tch::Tensor::run_backward(&[loss], &[&img, &flow], false, false);
            let gf = g.pop().expect("flow gradient");
            let gi = g.pop().expect("image gradient");
            (gi, gf)
        });
        (TchTensor::new(gi), TchTensor::new(gf))
    }
}

/// Whether the normalised grid exists (height and width at least 2).
fn grid_defined(img: &tch::Tensor) -> bool {
    let s = img.size();
    s[2] >= 2 && s[3] >= 2
}

/// `grid_sample(img, grid(flow), bilinear, border, align_corners=True)`, as `vsrnet_ref.py`, in
/// f32 whatever the dtype of `img` (the result has it), as PyTorch's autocast runs
/// `grid_sampler`: a half-precision grid resolves positions only in steps of (W - 1) / 2 * 2^-11
/// pixels near the edges (half a pixel at 2048 px wide).
fn grid_sample(img: &tch::Tensor, flow: &tch::Tensor) -> tch::Tensor {
    let kind = img.kind();
    let img = img.to_kind(tch::Kind::Float);
    let s = img.size();
    let (h, w) = (s[2], s[3]);
    let options = (tch::Kind::Float, img.device());
    let flow = flow.to_kind(tch::Kind::Float);
    let hor = tch::Tensor::linspace(-1.0, 1.0, w, options).view([1, 1, w]);
    let ver = tch::Tensor::linspace(-1.0, 1.0, h, options).view([1, h, 1]);
    let gx = hor + flow.select(1, 0) / ((w - 1) as f64 / 2.0);
    let gy = ver + flow.select(1, 1) / ((h - 1) as f64 / 2.0);
    let grid = tch::Tensor::stack(&[gx, gy], 3);
    // interpolation 0: bilinear; padding 1: border.
    img.grid_sampler_2d(&grid, 0, 1, true).to_kind(kind)
}
