//! Reading a few values (a training step's loss and overflow check) back to the host without
//! waiting for the work queued after them ([`ReadbackBackend::read_later`]).
//!
//! Why: a plain read (`Tensor::into_data`) drains the device: it waits for everything queued
//! before it, and the device then idles until the host has queued the next work. A training step
//! that reads its loss before its update does that every step, and every step then starts on an
//! idle GPU with the host's latency of queuing its first kernels exposed. On the CUDA backends the
//! copy is instead queued on the stream behind the values' producers, into page-locked host
//! memory, with an event after it; [`PendingValues::wait`] waits for that event only, which by then
//! (a step later) has long passed while the GPU works on what was queued since.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata, TensorPrimitive};

/// The most values [`ReadbackBackend::read_later`] copies asynchronously (more: read at once).
pub const MAX_VALUES: usize = 64;

/// Values on their way from a device to the host.
pub struct PendingValues(Pending);

enum Pending {
    Ready(Result<Vec<f32>, String>),
    #[cfg(any(feature = "cuda", feature = "tch"))]
    Cuda(cuda::InFlight),
}

impl PendingValues {
    /// `t`'s values (as f32), read now: waits for the work queued before.
    pub fn now<B: Backend>(t: FloatTensor<B>) -> Self {
        let n = t.shape().num_elements();
        let t = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::float_reshape(t, Shape::new([n]))));
        Self(Pending::Ready(t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| format!("reading values back: {e:?}"))))
    }

    /// Whether the values are copied in the background (else they were read when requested).
    pub fn is_async(&self) -> bool {
        !matches!(self.0, Pending::Ready(_))
    }

    /// The values, once the work queued before the request has run.
    pub fn wait(self) -> Result<Vec<f32>, String> {
        match self.0 {
            Pending::Ready(values) => values,
            #[cfg(any(feature = "cuda", feature = "tch"))]
            Pending::Cuda(copy) => copy.wait(),
        }
    }
}

/// A backend that can start reading values back without draining its queue. The provided method
/// reads at once; the CUDA (CubeCL) backend and LibTorch's CUDA tensors copy in the background.
pub trait ReadbackBackend: Backend {
    /// Starts copying `t`'s values (f32) to the host behind the work queued so far.
    fn read_later(t: FloatTensor<Self>) -> PendingValues {
        PendingValues::now::<Self>(t)
    }
}

impl ReadbackBackend for burn::backend::Flex {}

impl<B: ReadbackBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> ReadbackBackend
    for burn::backend::Autodiff<B, C>
{
}

/// CubeCL: on the CUDA runtime, the copy is queued from CubeCL's device thread on the stream of
/// the values' producers.
#[cfg(feature = "cubecl")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::FloatElement, I: burn_cubecl::IntElement, BT: burn_cubecl::BoolElement>
    ReadbackBackend for burn_cubecl::CubeBackend<R, F, I, BT>
{
    fn read_later(t: FloatTensor<Self>) -> PendingValues {
        #[cfg(feature = "cuda")]
        {
            use crate::cube::conv::cuda::{is_cuda, to_cuda};
            let n = t.meta.shape().num_elements();
            if is_cuda::<R>() && t.dtype == burn::tensor::DType::F32 && n <= MAX_VALUES {
                let t = to_cuda(t);
                let t = if t.is_contiguous() { t } else { burn_cubecl::kernel::into_contiguous(t) };
                let (client, device) = (t.client.clone(), t.device.index);
                let started = crate::cube::cudnn::on_device_thread(&client, move || {
                    let (ptr, stream, guard) = crate::cube::cudnn::ptr(&t);
                    // SAFETY: a live contiguous f32 buffer of n values, its producers queued on
                    // `stream`; the tensor is kept until the copy has run.
                    let copy = unsafe { cuda::start(device, ptr, n, stream, Box::new(t)) };
                    drop(guard);
                    copy
                });
                return match started {
                    Ok(copy) => PendingValues(Pending::Cuda(copy)),
                    Err(e) => PendingValues(Pending::Ready(Err(e))),
                };
            }
        }
        PendingValues::now::<Self>(t)
    }
}

/// Fusion: the queued operations run (launched, not waited for), then the inner backend's read.
#[cfg(feature = "cubecl")]
impl<B: burn_fusion::FusionBackend + ReadbackBackend> ReadbackBackend for burn_fusion::Fusion<B> {
    fn read_later(t: FloatTensor<Self>) -> PendingValues {
        let client = t.client.clone();
        B::read_later(client.resolve_tensor_float::<B>(t))
    }
}

#[cfg(feature = "tch")]
impl<E> ReadbackBackend for burn::backend::LibTorch<E>
where
    burn::backend::LibTorch<E>: Backend<FloatTensorPrimitive = burn::backend::libtorch::TchTensor>,
{
    /// f32 CUDA tensors: the copy on LibTorch's current stream.
    fn read_later(t: FloatTensor<Self>) -> PendingValues {
        let n = t.tensor.numel();
        if let tch::Device::Cuda(device) = t.tensor.device()
            && t.tensor.kind() == tch::Kind::Float
            && n <= MAX_VALUES
        {
            let c = t.tensor.contiguous();
            let started = crate::nvrtc::current_stream(device).and_then(|stream| {
                let ptr = c.data_ptr() as u64;
                // SAFETY: a live contiguous f32 CUDA tensor of n values, its producers on
                // LibTorch's current stream; the tensor is kept until the copy has run.
                unsafe { cuda::start(device, ptr, n, stream, Box::new(c)) }
            });
            return match started {
                Ok(copy) => PendingValues(Pending::Cuda(copy)),
                Err(e) => PendingValues(Pending::Ready(Err(e))),
            };
        }
        PendingValues::now::<Self>(t)
    }
}

/// Makes device `device`'s primary context (shared with CubeCL and LibTorch) current on this thread.
#[cfg(feature = "cuda")]
pub(crate) fn bind_context(device: usize) -> Result<(), String> {
    cuda::context(device)?.bind_to_thread().map_err(|e| format!("CUDA context: {e}"))
}

/// The copy: page-locked host buffers (kept for reuse: allocating and freeing them synchronises)
/// and an event per copy.
#[cfg(any(feature = "cuda", feature = "tch"))]
mod cuda {
    use std::sync::{Arc, Mutex};

    use cudarc::driver::{CudaContext, result, sys};

    use super::MAX_VALUES;

    /// A page-locked buffer of [`MAX_VALUES`] f32.
    struct Pinned(*mut f32);
    // SAFETY: a process-wide allocation, used by one copy at a time (taken from the pool).
    unsafe impl Send for Pinned {}

    static POOL: Mutex<Vec<Pinned>> = Mutex::new(Vec::new());
    static CONTEXTS: Mutex<Vec<(usize, Arc<CudaContext>)>> = Mutex::new(Vec::new());

    pub(super) fn context(device: usize) -> Result<Arc<CudaContext>, String> {
        let mut contexts = CONTEXTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = contexts.iter().find(|(d, _)| *d == device) {
            return Ok(c.clone());
        }
        let c = CudaContext::new(device).map_err(|e| format!("CUDA context of device {device}: {e}"))?;
        contexts.push((device, c.clone()));
        Ok(c)
    }

    /// A copy queued on a stream, with the event after it.
    pub(super) struct InFlight {
        ctx: Arc<CudaContext>,
        event: sys::CUevent,
        host: Option<Pinned>,
        len: usize,
        /// The source tensor, kept alive until the copy has run.
        _source: Box<dyn Send>,
    }
    // SAFETY: the event and the buffer belong to this copy alone.
    unsafe impl Send for InFlight {}

    /// Queues the copy of `len` f32 at `ptr` on `stream` (of device `device`'s primary context).
    ///
    /// # Safety
    /// `ptr` is a live device buffer of at least `len` f32 whose producers are queued on `stream`.
    pub(super) unsafe fn start(device: usize, ptr: u64, len: usize, stream: sys::CUstream, source: Box<dyn Send>) -> Result<InFlight, String> {
        assert!(len <= MAX_VALUES, "at most {MAX_VALUES} values are read back at once");
        let ctx = context(device)?;
        ctx.bind_to_thread().map_err(|e| format!("CUDA context: {e}"))?;
        let taken = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let host = match taken {
            Some(p) => p,
            // SAFETY: a fresh page-locked allocation of MAX_VALUES f32.
            None => Pinned(unsafe { result::malloc_host(MAX_VALUES * 4, 0) }.map_err(|e| format!("page-locked host memory: {e}"))?.cast()),
        };
        // SAFETY: the buffer holds MAX_VALUES >= len f32 and is this copy's alone.
        let dst = unsafe { std::slice::from_raw_parts_mut(host.0, len) };
        let event = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).map_err(|e| format!("CUDA event: {e}"))?;
        let copy = InFlight { ctx, event, host: Some(host), len, _source: source };
        // SAFETY: the caller's buffer and stream; the event is live.
        unsafe {
            result::memcpy_dtoh_async(dst, ptr, stream).map_err(|e| format!("copying values to the host: {e}"))?;
            result::event::record(event, stream).map_err(|e| format!("CUDA event: {e}"))?;
        }
        Ok(copy)
    }

    impl InFlight {
        /// Waits for the copy and returns the values.
        pub(super) fn wait(mut self) -> Result<Vec<f32>, String> {
            self.finish()?;
            let host = self.host.as_ref().expect("the buffer until dropped");
            // SAFETY: the copy into it has completed (the event has passed).
            Ok(unsafe { std::slice::from_raw_parts(host.0, self.len) }.to_vec())
        }

        fn finish(&mut self) -> Result<(), String> {
            self.ctx.bind_to_thread().map_err(|e| format!("CUDA context: {e}"))?;
            // SAFETY: a live event, recorded after the copy.
            unsafe { result::event::synchronize(self.event) }.map_err(|e| format!("waiting for values copied to the host: {e}"))
        }
    }

    impl Drop for InFlight {
        fn drop(&mut self) {
            // The buffer goes back to the pool only once the copy into it has run.
            let done = self.finish().is_ok();
            // SAFETY: the event is this copy's; destroying it after a wait (or a failure).
            unsafe { result::event::destroy(self.event) }.ok();
            if let Some(host) = self.host.take()
                && done
            {
                POOL.lock().unwrap_or_else(|e| e.into_inner()).push(host);
            }
        }
    }
}
