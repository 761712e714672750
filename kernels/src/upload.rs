//! Copying a batch's bytes to the device without stalling the device's queue
//! ([`UploadBackend::upload_int`]).
//!
//! Why: Burn's `from_data` hands the CUDA backend (CubeCL) a pageable host buffer, and CubeCL
//! copies it with `cuMemcpyHtoDAsync` on its one device thread, the thread that queues every
//! thread's kernels. From pageable memory that copy is not asynchronous: CUDA first synchronises
//! the stream, then copies through its own staging buffers before it returns. Each training batch
//! (13 MB in fp16 at batch 3, 512x960, 3 frames) held that thread while the GPU ran dry:
//! `vsr train --backend cuda` took 45-49 ms a step on an H200 (46 on an H100) where `vsr bench
//! step`, with its input already on the device, took 12.
//!
//! Here the bytes are copied into page-locked memory on the caller's thread (the loader's upload
//! thread); the device thread only queues the DMA copy from it, which returns at once, and an event
//! after it. The page-locked buffers are kept and reused, each once its last copy has passed its
//! event (allocating and freeing page-locked memory is slow, and freeing synchronises the device).
//! `VSR_PINNED_UPLOAD=0` goes back to `from_data` (for measuring the difference).

use burn::tensor::backend::Backend;
use burn::tensor::ops::IntTensor;
use burn::tensor::{DType, Shape, TensorData};

/// A backend that can copy bytes to its device without waiting for the work queued there.
pub trait UploadBackend: Backend {
    /// `bytes` (little-endian elements) as an integer tensor of `shape` and `dtype` on `device`.
    /// The provided method is `int_from_data`.
    ///
    /// # Panics
    /// If `bytes` is not `shape`'s size in `dtype`, or `dtype` is not an integer type.
    fn upload_int(bytes: Vec<u8>, shape: Shape, dtype: DType, device: &Self::Device) -> IntTensor<Self> {
        from_data::<Self>(bytes, shape, dtype, device)
    }
}

fn check(bytes: &[u8], shape: &Shape, dtype: DType) {
    assert!(dtype.is_int() || dtype.is_uint(), "uploading {dtype:?}: an integer type is expected");
    assert_eq!(bytes.len(), shape.num_elements() * dtype.size(), "{} bytes do not fill {shape:?} of {dtype:?}", bytes.len());
}

/// The upload through `int_from_data` (pageable memory): [`UploadBackend::upload_int`]'s provided
/// method, and the backends' path where they have no page-locked one.
fn from_data<B: Backend>(bytes: Vec<u8>, shape: Shape, dtype: DType, device: &B::Device) -> IntTensor<B> {
    check(&bytes, &shape, dtype);
    B::int_from_data(TensorData::from_bytes_vec(bytes, shape, dtype), device)
}

/// Whether the CUDA backend uploads through page-locked memory (`VSR_PINNED_UPLOAD=0`: through
/// `from_data`, as before).
pub fn pinned_uploads() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VSR_PINNED_UPLOAD").map_or(true, |v| v != "0"))
}

impl UploadBackend for burn::backend::Flex {}

/// LibTorch: CUDA tensors through page-locked memory from PyTorch's caching host allocator and a
/// non-blocking copy on its current stream (PyTorch keeps the buffer until the copy has run, as
/// for `pin_memory=True` loaders); CPU tensors through `from_data`.
#[cfg(feature = "tch")]
impl<E> UploadBackend for burn::backend::LibTorch<E>
where
    burn::backend::LibTorch<E>: Backend<IntTensorPrimitive = burn::backend::libtorch::TchTensor, Device = burn::backend::libtorch::LibTorchDevice>,
{
    fn upload_int(bytes: Vec<u8>, shape: Shape, dtype: DType, device: &Self::Device) -> IntTensor<Self> {
        let kind = match dtype {
            DType::U8 => Some(tch::Kind::Uint8),
            DType::I32 => Some(tch::Kind::Int),
            DType::I64 => Some(tch::Kind::Int64),
            _ => None,
        };
        if let (burn::backend::libtorch::LibTorchDevice::Cuda(index), Some(kind)) = (*device, kind)
            && pinned_uploads()
        {
            check(&bytes, &shape, dtype);
            let cuda = tch::Device::Cuda(index);
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let host = tch::Tensor::empty(dims.as_slice(), (kind, tch::Device::Cpu)).pin_memory(cuda);
            // SAFETY: a fresh contiguous tensor of exactly `bytes.len()` bytes (checked above).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), host.data_ptr().cast::<u8>(), bytes.len()) };
            return burn::backend::libtorch::TchTensor::new(host.to_device_(cuda, kind, true, false));
        }
        from_data::<Self>(bytes, shape, dtype, device)
    }
}

impl<B: UploadBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> UploadBackend
    for burn::backend::Autodiff<B, C>
{
    fn upload_int(bytes: Vec<u8>, shape: Shape, dtype: DType, device: &Self::Device) -> IntTensor<Self> {
        B::upload_int(bytes, shape, dtype, device)
    }
}

/// Fusion: the inner backend's upload, registered as Fusion's `from_data` registers its tensor.
#[cfg(feature = "cubecl")]
impl<B: burn_fusion::FusionBackend + UploadBackend> UploadBackend for burn_fusion::Fusion<B> {
    fn upload_int(bytes: Vec<u8>, shape: Shape, dtype: DType, device: &Self::Device) -> IntTensor<Self> {
        use burn::tensor::TensorMetadata;
        use burn_fusion::stream::OperationStreams;
        use burn_ir::{InitOperationIr, OperationIr, OperationOutput};

        let client = burn_fusion::get_client::<B>(device);
        let tensor = B::upload_int(bytes, shape, dtype, device);
        let shape = tensor.shape();
        let handle = B::int_tensor_handle(tensor);
        let desc = InitOperationIr::create(shape, dtype, || client.register_tensor_handle(handle));
        client.register(OperationStreams::default(), OperationIr::Init(desc), burn_fusion::NoOp::<B>::new()).output()
    }
}

/// CubeCL: on CUDA's runtime, through page-locked memory; elsewhere `from_data`.
#[cfg(feature = "cubecl")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::FloatElement, I: burn_cubecl::IntElement, BT: burn_cubecl::BoolElement>
    UploadBackend for burn_cubecl::CubeBackend<R, F, I, BT>
{
    fn upload_int(bytes: Vec<u8>, shape: Shape, dtype: DType, device: &Self::Device) -> IntTensor<Self> {
        #[cfg(feature = "cuda")]
        {
            use crate::cube::conv::cuda::{from_cuda, is_cuda};
            if is_cuda::<R>() && pinned_uploads() {
                check(&bytes, &shape, dtype);
                let device = (device as &dyn std::any::Any)
                    .downcast_ref::<cubecl::cuda::CudaDevice>()
                    .expect("CUDA's runtime has CUDA's devices");
                return from_cuda(cuda::upload(&bytes, shape, dtype, device));
            }
        }
        from_data::<Self>(bytes, shape, dtype, device)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Mutex;

    use burn::tensor::{DType, Shape};
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::Runtime;
    use cubecl::cuda::{CudaDevice, CudaRuntime};
    use cudarc::driver::{result, sys};

    use crate::cube::cudnn::{on_device_thread, ptr};

    /// A page-locked host buffer, and the event recorded after its last copy to a device.
    struct Staging {
        ptr: *mut u8,
        capacity: usize,
        device: usize,
        event: sys::CUevent,
    }
    // SAFETY: a process-wide allocation and event, used by one upload at a time (taken from the
    // pool and put back).
    unsafe impl Send for Staging {}

    /// Buffers not in use. They stay allocated for the process's life: freeing page-locked memory
    /// synchronises the device.
    static POOL: Mutex<Vec<Staging>> = Mutex::new(Vec::new());

    impl Staging {
        /// The smallest free buffer of `device` that holds `n` bytes, once its last copy has run;
        /// else a new one.
        fn take(device: usize, n: usize) -> Result<Staging, String> {
            let taken = {
                let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
                let best = (0..pool.len())
                    .filter(|&i| pool[i].device == device && pool[i].capacity >= n)
                    .min_by_key(|&i| pool[i].capacity);
                best.map(|i| pool.swap_remove(i))
            };
            crate::readback::bind_context(device)?;
            match taken {
                Some(s) => {
                    // SAFETY: the buffer's event, recorded after its last copy (or never: done).
                    unsafe { result::event::synchronize(s.event) }.map_err(|e| format!("waiting for an earlier upload: {e}"))?;
                    Ok(s)
                }
                None => {
                    let capacity = n.max(1);
                    // SAFETY: a fresh page-locked allocation, owned by the new buffer.
                    let ptr = unsafe { result::malloc_host(capacity, 0) }
                        .map_err(|e| format!("{capacity} bytes of page-locked host memory: {e}"))?
                        .cast::<u8>();
                    let event = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                        .map_err(|e| format!("CUDA event: {e}"))?;
                    Ok(Staging { ptr, capacity, device, event })
                }
            }
        }
    }

    /// `bytes` as a dense tensor of `shape` and `dtype` on `device`: copied into a page-locked buffer here,
    /// then to the device on the caller's CubeCL stream (ordered before the caller's next work
    /// there; CubeCL orders other streams' use after it as for its own writes).
    ///
    /// # Panics
    /// Where CUDA refuses the page-locked memory, the event or the copy.
    pub(super) fn upload(bytes: &[u8], shape: Shape, dtype: DType, device: &CudaDevice) -> CubeTensor<CudaRuntime> {
        let n = bytes.len();
        let staging = Staging::take(device.index, n).unwrap_or_else(|e| panic!("uploading a batch to GPU {}: {e}", device.index));
        // SAFETY: the buffer holds `capacity >= n` bytes and is this upload's alone (its last copy
        // has run).
        unsafe { std::slice::from_raw_parts_mut(staging.ptr, n) }.copy_from_slice(bytes);
        let client = CudaRuntime::client(device);
        let handle = client.empty(n.max(1));
        let tensor = CubeTensor::new_contiguous(client.clone(), device.clone(), shape, handle, dtype);
        let dst = tensor.clone();
        let queued = on_device_thread(&client, move || {
            let (dst_ptr, stream, guard) = ptr(&dst);
            // SAFETY: `dst` is a live device buffer of n bytes (kept by `guard` until queued, then
            // by the returned tensor, whose later users CubeCL orders after this stream), the
            // source holds n bytes and is not reused before the event recorded after the copy.
            let queued = unsafe {
                result::memcpy_htod_async(dst_ptr, std::slice::from_raw_parts(staging.ptr, n), stream)
                    .and_then(|()| result::event::record(staging.event, stream))
            };
            drop(guard);
            POOL.lock().unwrap_or_else(|e| e.into_inner()).push(staging);
            queued.map_err(|e| format!("queuing the copy: {e}"))
        });
        if let Err(e) = queued {
            panic!("uploading a batch to GPU {}: {e}", device.index);
        }
        tensor
    }
}
