//! `WarpBackend` for `CubeBackend`: launches the kernels of [`super::kernel`].

use super::kernel::{
    warp_backward_flow_kernel, warp_backward_img_atomic_kernel, warp_backward_img_resolve_kernel,
    warp_backward_img_scatter_kernel, warp_forward_kernel,
};
use crate::WarpBackend;
use burn::tensor::{DType, Shape, TensorMetadata, ops::FloatTensor};
use burn_cubecl::{
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement,
    kernel::{cast, into_contiguous},
    ops::numeric::{empty_device_contiguous_dtype, zeros_client},
    tensor::CubeTensor,
};
use cubecl::{
    CubeDim, calculate_cube_count_elemwise,
    features::AtomicUsage,
    ir::{FloatKind, StorageType, Type},
};

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> WarpBackend
    for CubeBackend<R, F, I, BT>
{
    fn warp(img: FloatTensor<Self>, flow: FloatTensor<Self>) -> FloatTensor<Self> {
        warp_forward::<R>(img, flow)
    }

    fn warp_backward(
        img: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if backward_kernel_verified(&img.client) {
            return warp_backward::<R>(img, flow, grad_out);
        }
        // Tensor-op backward (see `backward_kernel_verified`).
        use burn::tensor::{Tensor, TensorPrimitive};
        let t = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let (gi, gf) = crate::warp_backward_reference(t(img), t(flow), t(grad_out));
        (gi.into_primitive().tensor(), gf.into_primitive().tensor())
    }
}

/// Whether the backward kernels may run on this runtime. On CUDA (H100, 2026-11-25) the
/// fixed-point image-gradient passes gave wrong and run-to-run different values while every
/// check passes on wgpu/lavapipe: until that is found and fixed, CUDA takes the tensor-op
/// backward (correct, slower). `VSR_WARP_BACKWARD_KERNEL=1` forces the kernels, for debugging.
fn backward_kernel_verified<R: CubeRuntime>(client: &cubecl::prelude::ComputeClient<R>) -> bool {
    if std::env::var("VSR_WARP_BACKWARD_KERNEL").is_ok_and(|v| v == "1") {
        return true;
    }
    !R::name(client).to_ascii_lowercase().contains("cuda")
}

/// Contiguous, and in `dtype` (the kernels have one storage type for all their float tensors).
fn prepare<R: CubeRuntime>(t: CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    let t = if t.dtype != dtype { cast(t, dtype) } else { t };
    into_contiguous(t)
}

/// Bits of fixed-point headroom: `ceil(log2(4*H*W + 1))` (the most contributions per element).
fn fixed_point_bits(h: usize, w: usize) -> u32 {
    let n = 4 * (h as u64) * (w as u64);
    63 - (64 - n.leading_zeros())
}

/// The forward kernel on CubeCL tensors.
pub fn warp_forward<R: CubeRuntime>(img: CubeTensor<R>, flow: CubeTensor<R>) -> CubeTensor<R> {
    img.assert_is_on_same_device(&flow);
    let dtype = img.dtype;
    let img = prepare(img, dtype);
    let flow = prepare(flow, dtype);
    let [b, _c, h, w] = img.shape().dims();
    let out =
        empty_device_contiguous_dtype(img.client.clone(), img.device.clone(), img.shape(), dtype);
    let n = b * h * w;
    if n == 0 || out.shape().num_elements() == 0 {
        return out;
    }
    let client = img.client.clone();
    let cube_dim = CubeDim::new(&client, n);
    let cube_count = calculate_cube_count_elemwise(&client, n, cube_dim);
    let addr = [&img, &flow, &out]
        .iter()
        .map(|t| t.required_address_type())
        .max()
        .unwrap_or_default();
    warp_forward_kernel::launch(
        &client,
        cube_count,
        cube_dim,
        addr,
        img.into_tensor_arg(),
        flow.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        dtype.into(),
    );
    out
}

/// Whether `grad_img` is computed with plain f32 atomics (faster, not bitwise reproducible)
/// instead of the deterministic fixed-point accumulation. Off unless the environment variable
/// `VSR_WARP_ATOMIC=1` is set or [`set_atomic_grad_img`] was called; ignored where the runtime has
/// no f32 atomic add.
static ATOMIC_GRAD_IMG: std::sync::OnceLock<std::sync::atomic::AtomicBool> =
    std::sync::OnceLock::new();

fn atomic_flag() -> &'static std::sync::atomic::AtomicBool {
    ATOMIC_GRAD_IMG.get_or_init(|| {
        let on = std::env::var("VSR_WARP_ATOMIC").is_ok_and(|v| v == "1" || v == "true");
        std::sync::atomic::AtomicBool::new(on)
    })
}

/// Chooses between the deterministic (default) and the float-atomic image gradient; see
/// [`super`]'s docs. Process-wide.
pub fn set_atomic_grad_img(enabled: bool) {
    atomic_flag().store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the float-atomic image gradient is requested (see [`set_atomic_grad_img`]).
pub fn atomic_grad_img() -> bool {
    atomic_flag().load(std::sync::atomic::Ordering::Relaxed)
}

/// The backward kernels on CubeCL tensors: `(grad_img, grad_flow)`.
pub fn warp_backward<R: CubeRuntime>(
    img: CubeTensor<R>,
    flow: CubeTensor<R>,
    grad_out: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    img.assert_is_on_same_device(&flow);
    img.assert_is_on_same_device(&grad_out);
    let dtype = img.dtype;
    let flow_dtype = flow.dtype;
    let img = prepare(img, dtype);
    let flow = prepare(flow, dtype);
    let grad_out = prepare(grad_out, dtype);
    let [b, _c, h, w] = img.shape().dims();
    let client = img.client.clone();
    let device = img.device.clone();
    let grad_flow =
        empty_device_contiguous_dtype(client.clone(), device.clone(), flow.shape(), dtype);
    let numel = img.shape().num_elements();
    let n = b * h * w;
    if n == 0 || numel == 0 {
        let grad_img = zeros_client(client.clone(), device.clone(), img.shape(), dtype);
        let grad_flow = zeros_client(client, device, flow.shape(), flow_dtype);
        return (grad_img, grad_flow);
    }
    let cube_dim = CubeDim::new(&client, n);
    let cube_count = calculate_cube_count_elemwise(&client, n, cube_dim);

    let use_atomic = atomic_grad_img()
        && client
            .properties()
            .atomic_type_usage(Type::new(StorageType::Atomic(FloatKind::F32.into())))
            .contains(AtomicUsage::Add);

    let grad_img = if use_atomic {
        let acc = zeros_client(client.clone(), device.clone(), img.shape(), DType::F32);
        let dummy = zeros_client(client.clone(), device.clone(), Shape::new([1]), DType::U32);
        let addr = [&img, &flow, &grad_out, &grad_flow, &acc]
            .iter()
            .map(|t| t.required_address_type())
            .max()
            .unwrap_or_default();
        warp_backward_flow_kernel::launch(
            &client,
            cube_count.clone(),
            cube_dim,
            addr,
            img.into_tensor_arg(),
            flow.clone().into_tensor_arg(),
            grad_out.clone().into_tensor_arg(),
            grad_flow.clone().into_tensor_arg(),
            dummy.into_tensor_arg(),
            false,
            dtype.into(),
        );
        warp_backward_img_atomic_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            addr,
            flow.into_tensor_arg(),
            grad_out.into_tensor_arg(),
            acc.clone().into_tensor_arg(),
            dtype.into(),
        );
        if dtype == DType::F32 {
            acc
        } else {
            cast(acc, dtype)
        }
    } else {
        let t_bits = fixed_point_bits(h, w);
        let emax = zeros_client(client.clone(), device.clone(), img.shape(), DType::U32);
        let acc = zeros_client(
            client.clone(),
            device.clone(),
            Shape::new([2 * numel]),
            DType::U32,
        );
        let grad_img =
            empty_device_contiguous_dtype(client.clone(), device.clone(), img.shape(), dtype);
        let addr = [&img, &flow, &grad_out, &grad_flow, &emax, &acc, &grad_img]
            .iter()
            .map(|t| t.required_address_type())
            .max()
            .unwrap_or_default();
        warp_backward_flow_kernel::launch(
            &client,
            cube_count.clone(),
            cube_dim,
            addr,
            img.into_tensor_arg(),
            flow.clone().into_tensor_arg(),
            grad_out.clone().into_tensor_arg(),
            grad_flow.clone().into_tensor_arg(),
            emax.clone().into_tensor_arg(),
            true,
            dtype.into(),
        );
        warp_backward_img_scatter_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            addr,
            flow.into_tensor_arg(),
            grad_out.into_tensor_arg(),
            emax.clone().into_tensor_arg(),
            acc.clone().into_tensor_arg(),
            t_bits,
            dtype.into(),
        );
        let cube_dim = CubeDim::new(&client, numel);
        let cube_count = calculate_cube_count_elemwise(&client, numel, cube_dim);
        warp_backward_img_resolve_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            addr,
            emax.into_tensor_arg(),
            acc.into_tensor_arg(),
            grad_img.clone().into_tensor_arg(),
            t_bits,
            dtype.into(),
        );
        grad_img
    };
    let grad_flow = if flow_dtype != dtype {
        cast(grad_flow, flow_dtype)
    } else {
        grad_flow
    };
    (grad_img, grad_flow)
}

#[cfg(test)]
mod tests {
    #[test]
    fn headroom() {
        // 4*24*40 = 3840 < 2^12
        assert_eq!(super::fixed_point_bits(24, 40), 51);
        assert_eq!(super::fixed_point_bits(1, 1), 60);
        assert_eq!(super::fixed_point_bits(1080, 1920), 40);
    }
}
