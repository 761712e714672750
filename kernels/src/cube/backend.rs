//! `WarpBackend` for `CubeBackend`: launches the kernels of [`super::kernel`].

use super::kernel::{
    warp_backward_flow_kernel, warp_backward_img_atomic_kernel, warp_backward_img_resolve_kernel,
    warp_backward_img_scatter_kernel, warp_forward_kernel,
};
use crate::{WarpBackend, fixed_point::headroom_bits};
use burn::tensor::{DType, Shape, TensorMetadata, ops::FloatTensor};
use burn_cubecl::{
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement,
    kernel::{cast, into_contiguous},
    ops::{
        numeric::{empty_device_contiguous_dtype, zeros_client},
        reshape,
    },
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

/// Whether the backward kernels run (the default) or the tensor-op backward
/// (`VSR_WARP_BACKWARD_KERNEL=0`, for comparison). History: on CUDA (H100, 2026-11-25) the
/// fixed-point image-gradient passes first gave wrong, run-to-run different values: their
/// scratch buffers came from Burn's `zeros_client` with the image's 4-D shape, which CUDA
/// allocates with padded rows and zeroes only the logical elements, while the kernels index them
/// linearly (see `zeros_linear`). With rank-1 buffers all 21 kernel tests, determinism included,
/// pass on an H100 (2026-11-26, `scripts/gpu/run_k.sh`).
fn backward_kernel_verified<R: CubeRuntime>(_client: &cubecl::prelude::ComputeClient<R>) -> bool {
    std::env::var("VSR_WARP_BACKWARD_KERNEL").map_or(true, |v| v != "0")
}

/// Contiguous, and in `dtype` (the kernels have one storage type for all their float tensors).
fn prepare<R: CubeRuntime>(t: CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    let t = if t.dtype != dtype { cast(t, dtype) } else { t };
    into_contiguous(t)
}

/// A zero-filled buffer of `len` elements, contiguous on every runtime.
///
/// The backward kernels index their scratch buffers linearly. Burn's `zeros_client` with a
/// multi-dimensional shape asks CubeCL for an "optimized" layout, which on CUDA
/// (`PitchedMemoryLayoutPolicy`) pads every row of the last dimension to a power of two bytes
/// (16..512): its fill kernel then zeroes only the logical elements and leaves the padding with
/// whatever the memory pool held before. A rank-1 shape has no rows to pad.
fn zeros_linear<R: CubeRuntime>(
    client: &cubecl::prelude::ComputeClient<R>,
    device: &R::Device,
    len: usize,
    dtype: DType,
) -> CubeTensor<R> {
    let t = zeros_client(client.clone(), device.clone(), Shape::new([len]), dtype);
    debug_assert!(t.is_contiguous());
    t
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
    let addr = address_type(&[&img, &flow, &out]);
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
    let flow_dtype = flow.dtype;
    let use_atomic = atomic_grad_img()
        && img
            .client
            .properties()
            .atomic_type_usage(Type::new(StorageType::Atomic(FloatKind::F32.into())))
            .contains(AtomicUsage::Add);
    let (grad_img, grad_flow) = if use_atomic {
        warp_backward_atomic(img, flow, grad_out)
    } else {
        let s = warp_backward_stages(img, flow, grad_out);
        (s.grad_img, s.grad_flow)
    };
    let grad_flow = if grad_flow.dtype != flow_dtype {
        cast(grad_flow, flow_dtype)
    } else {
        grad_flow
    };
    (grad_img, grad_flow)
}

/// The inputs of the backward kernels, in one storage type and contiguous, and the launch grid
/// over the B*H*W output pixels.
struct BackwardInputs<R: CubeRuntime> {
    img: CubeTensor<R>,
    flow: CubeTensor<R>,
    grad_out: CubeTensor<R>,
    cube_dim: CubeDim,
    cube_count: cubecl::CubeCount,
}

fn backward_inputs<R: CubeRuntime>(
    img: CubeTensor<R>,
    flow: CubeTensor<R>,
    grad_out: CubeTensor<R>,
) -> BackwardInputs<R> {
    let dtype = img.dtype;
    let img = prepare(img, dtype);
    let flow = prepare(flow, dtype);
    let grad_out = prepare(grad_out, dtype);
    let [b, _c, h, w] = img.shape().dims();
    let n = b * h * w;
    let cube_dim = CubeDim::new(&img.client, n);
    let cube_count = calculate_cube_count_elemwise(&img.client, n, cube_dim);
    BackwardInputs {
        img,
        flow,
        grad_out,
        cube_dim,
        cube_count,
    }
}

/// Whether the backward has no element to compute (then both gradients are zeros).
fn is_empty<R: CubeRuntime>(img: &CubeTensor<R>) -> bool {
    img.shape().num_elements() == 0
}

/// Zero gradients shaped like `img` and `flow`, in `img`'s storage type. (Burn's own zeros:
/// nothing indexes them linearly.)
fn zero_grads<R: CubeRuntime>(img: &CubeTensor<R>, flow: &CubeTensor<R>) -> [CubeTensor<R>; 2] {
    [img.shape(), flow.shape()]
        .map(|shape| zeros_client(img.client.clone(), img.device.clone(), shape, img.dtype))
}

/// The deterministic backward with the buffers of its three passes (see [`super::kernel`]);
/// `emax`, `acc` are what passes 1 and 2 leave for the next one. For tests and diagnostics
/// (`crate::fixed_point` models every pass on the host); [`warp_backward`] returns its gradients.
pub struct BackwardStages<R: CubeRuntime> {
    /// Pass 1: per element of `img`, the largest contribution magnitude as f32 bits (u32,
    /// contiguous, `numel` elements).
    pub emax: CubeTensor<R>,
    /// Pass 2: per element, a 64-bit fixed-point sum as (low, high) u32 words (`2 * numel`).
    pub acc: CubeTensor<R>,
    /// Pass 3: the image gradient, shaped and typed like `img`.
    pub grad_img: CubeTensor<R>,
    /// Pass 1: the flow gradient, shaped like `flow`, in `img`'s storage type.
    pub grad_flow: CubeTensor<R>,
    /// Bits of headroom `T` of the fixed point ([`crate::fixed_point::headroom_bits`]).
    pub t_bits: u32,
}

/// Runs the three passes of the deterministic backward and returns their buffers.
pub fn warp_backward_stages<R: CubeRuntime>(
    img: CubeTensor<R>,
    flow: CubeTensor<R>,
    grad_out: CubeTensor<R>,
) -> BackwardStages<R> {
    let [_b, _c, h, w] = img.shape().dims();
    let t_bits = headroom_bits(h, w);
    let numel = img.shape().num_elements();
    let (client, device, dtype) = (img.client.clone(), img.device.clone(), img.dtype);
    let emax = zeros_linear(&client, &device, numel, DType::U32);
    let acc = zeros_linear(&client, &device, 2 * numel, DType::U32);
    if is_empty(&img) {
        let [grad_img, grad_flow] = zero_grads(&img, &flow);
        return BackwardStages {
            emax,
            acc,
            grad_img,
            grad_flow,
            t_bits,
        };
    }
    let BackwardInputs {
        img,
        flow,
        grad_out,
        cube_dim,
        cube_count,
    } = backward_inputs(img, flow, grad_out);
    let grad_flow =
        empty_device_contiguous_dtype(client.clone(), device.clone(), flow.shape(), dtype);
    let grad_img = empty_device_contiguous_dtype(client.clone(), device, img.shape(), dtype);
    let addr = address_type(&[&img, &flow, &grad_out, &grad_flow, &emax, &acc, &grad_img]);
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
        emax.clone().into_tensor_arg(),
        acc.clone().into_tensor_arg(),
        grad_img.clone().into_tensor_arg(),
        t_bits,
        dtype.into(),
    );
    BackwardStages {
        emax,
        acc,
        grad_img,
        grad_flow,
        t_bits,
    }
}

/// The float-atomic backward (not bitwise reproducible): `(grad_img, grad_flow)`, both in
/// `img`'s storage type.
fn warp_backward_atomic<R: CubeRuntime>(
    img: CubeTensor<R>,
    flow: CubeTensor<R>,
    grad_out: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (client, device, dtype) = (img.client.clone(), img.device.clone(), img.dtype);
    let img_shape = img.shape();
    if is_empty(&img) {
        let [grad_img, grad_flow] = zero_grads(&img, &flow);
        return (grad_img, grad_flow);
    }
    let BackwardInputs {
        img,
        flow,
        grad_out,
        cube_dim,
        cube_count,
    } = backward_inputs(img, flow, grad_out);
    let grad_flow =
        empty_device_contiguous_dtype(client.clone(), device.clone(), flow.shape(), dtype);
    // Linear: the kernel indexes it as a contiguous (B,C,H,W) buffer (see `zeros_linear`).
    let acc = zeros_linear(&client, &device, img_shape.num_elements(), DType::F32);
    let dummy = zeros_linear(&client, &device, 1, DType::U32);
    let addr = address_type(&[&img, &flow, &grad_out, &grad_flow, &acc]);
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
    let grad_img = reshape(acc, img_shape);
    let grad_img = if dtype == DType::F32 {
        grad_img
    } else {
        cast(grad_img, dtype)
    };
    (grad_img, grad_flow)
}

/// The widest index type any of `tensors` needs.
fn address_type<R: CubeRuntime>(tensors: &[&CubeTensor<R>]) -> cubecl::prelude::AddressType {
    tensors
        .iter()
        .map(|t| t.required_address_type())
        .max()
        .unwrap_or_default()
}
