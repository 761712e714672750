//! NVDEC: H.264 decoding on an NVIDIA GPU's video engines, for the video loader.
//!
//! Decoding is what the video loader's CPU time goes to (87% of it on the CPU decoder); the GPU
//! has dedicated decode engines that cost the training kernels nothing. Decoding goes through
//! FFmpeg's `h264_cuvid` decoder, so demuxing, seeking and timestamps are the CPU decoder's: a
//! [`FrameReader`](crate::prep::media::FrameReader) opened with [`Nvdec`] reads the same frames,
//! bit for bit (H.264 decoding is exact), as NV12 pictures copied to host memory; the loader
//! converts only the crop to RGB, as it does for the CPU decoder's frames.
//!
//! * **One CUDA context.** FFmpeg's CUDA device is built on the GPU's primary context, the one
//!   LibTorch and CubeCL train on (FFmpeg's own `primary_ctx` option refuses a primary context
//!   already active with other flags, as it is once training runs: so vsr retains the primary
//!   context itself and hands it to FFmpeg).
//! * **A stream per worker.** Each loader worker has its own [`Nvdec`]: mapping decoded pictures
//!   and copying them out run on its own non-blocking stream. On CUDA's legacy default stream
//!   (FFmpeg's default) every copy would wait for the training kernels queued before it, and
//!   they for it; on one shared stream each worker's copy would wait for the others'. FFmpeg
//!   5.1's `h264_cuvid` maps pictures on the legacy default stream whatever the device's stream
//!   is, and a non-blocking stream does not wait for that one: the FFmpeg that
//!   `scripts/gpu/build_ffmpeg.sh` builds for GPU machines carries the one-line fix of later
//!   releases and says so in its version (`+vsr`); with any other FFmpeg the stream is a
//!   blocking one, correct but waiting for the training kernels queued before each copy.
//! * **Errors.** NVDEC conceals damaged pictures instead of flagging them: strict detection of
//!   corrupt data is the CPU decoder's. A file NVDEC cannot open (not H.264, not 8-bit 4:2:0, too
//!   large for the engine) is read with the CPU decoder, with a note on standard error.

use std::sync::Mutex;

use video_rs::ffmpeg as ff;

use ff::ffi;

use crate::error::{Error, Result};
use crate::prep::media;

/// libavutil's `AVCUDADeviceContext` (hwcontext_cuda.h; not in ffmpeg-sys's bindings).
#[repr(C)]
struct CudaDeviceContext {
    cuda_ctx: *mut std::ffi::c_void,
    stream: *mut std::ffi::c_void,
    internal: *mut std::ffi::c_void,
}

/// FFmpeg's CUDA device for one GPU: its primary context and a non-blocking stream of its own
/// (destroyed with the device context, when its last decoder is gone).
#[derive(Debug)]
pub struct Nvdec {
    gpu: usize,
    device: *mut ffi::AVBufferRef,
}

// SAFETY: the device context is immutable once initialised and reference-counted by FFmpeg;
// decoders take their own references (av_buffer_ref is thread-safe).
unsafe impl Send for Nvdec {}
unsafe impl Sync for Nvdec {}

impl Drop for Nvdec {
    fn drop(&mut self) {
        // SAFETY: our reference, released once (decoders hold their own).
        unsafe { ffi::av_buffer_unref(&mut self.device) }
    }
}

impl Nvdec {
    /// NVDEC on CUDA device `gpu` with a stream of its own; why not when it cannot be used (no
    /// driver or GPU, an FFmpeg without `h264_cuvid`).
    pub fn new(gpu: usize) -> Result<Nvdec> {
        Nvdec::create(gpu).map_err(|why| Error::Invalid(format!("NVDEC on GPU {gpu} cannot be used: {why}")))
    }

    /// Whether NVDEC on `gpu` can be used ([`Nvdec::new`]'s error if not): a CUDA device, and an
    /// `h264_cuvid` decoder that opens on it (libnvcuvid loads, the GPU has a decode engine:
    /// containers without the driver's video capability and MIG slices without a decoder have
    /// CUDA but no NVDEC). Asked once per process and GPU.
    pub fn check(gpu: usize) -> Result<()> {
        static CHECKED: Mutex<Vec<(usize, std::result::Result<(), String>)>> = Mutex::new(Vec::new());
        let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
        if !checked.iter().any(|(g, _)| *g == gpu) {
            let r = Nvdec::new(gpu).and_then(|n| n.probe()).map_err(|e| e.to_string());
            checked.push((gpu, r));
        }
        let (_, r) = checked.iter().find(|(g, _)| *g == gpu).expect("just added");
        r.clone().map_err(Error::Invalid)
    }

    /// Opens and closes an `h264_cuvid` decoder (64x64 H.264) on this device.
    fn probe(&self) -> Result<()> {
        let fail = |why: String| Error::Invalid(format!("NVDEC on GPU {} cannot be used: {why}", self.gpu));
        let codec = ff::decoder::find_by_name("h264_cuvid").ok_or_else(|| fail("this FFmpeg has no h264_cuvid decoder".into()))?;
        let mut ctx = ff::codec::context::Context::new_with_codec(codec);
        let device = self.device_ref();
        if device.is_null() {
            return Err(fail("cannot reference FFmpeg's CUDA device".into()));
        }
        // SAFETY: a valid, not yet opened context; it owns the device reference from here on.
        unsafe {
            let c = ctx.as_mut_ptr();
            (*c).hw_device_ctx = device;
            (*c).get_format = Some(host_nv12);
            (*c).width = 64;
            (*c).height = 64;
            (*c).coded_width = 64;
            (*c).coded_height = 64;
        }
        ctx.decoder().open_as(codec).map(drop).map_err(|e| fail(format!("h264_cuvid does not open ({e}): no NVDEC here (a container without the driver's video capability, a GPU or MIG slice without a decoder?)")))
    }

    /// The GPU's index.
    pub fn gpu(&self) -> usize {
        self.gpu
    }

    /// A new reference to FFmpeg's device context, for a decoder's `hw_device_ctx`.
    pub(crate) fn device_ref(&self) -> *mut ffi::AVBufferRef {
        // SAFETY: a valid buffer reference held by self.
        unsafe { ffi::av_buffer_ref(self.device) }
    }

    fn create(gpu: usize) -> std::result::Result<Nvdec, String> {
        media::init();
        if ff::decoder::find_by_name("h264_cuvid").is_none() {
            return Err("this FFmpeg has no NVDEC decoder (h264_cuvid); scripts/gpu/build_ffmpeg.sh builds one".into());
        }
        let (ctx, stream) = primary_context_and_stream(gpu)?;
        // SAFETY: a CUDA device context allocated by FFmpeg, filled in before its init, as
        // hwcontext_cuda.h documents for user-supplied contexts (FFmpeg does not destroy them).
        unsafe {
            let mut device = ffi::av_hwdevice_ctx_alloc(ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA);
            if device.is_null() {
                return Err("FFmpeg cannot allocate a CUDA device (built without CUDA?)".into());
            }
            let hw = (*device).data as *mut ffi::AVHWDeviceContext;
            let cuda = (*hw).hwctx as *mut CudaDeviceContext;
            (*cuda).cuda_ctx = ctx;
            (*cuda).stream = stream;
            (*hw).user_opaque = stream;
            (*hw).free = Some(destroy_stream);
            let ret = ffi::av_hwdevice_ctx_init(device);
            if ret < 0 {
                ffi::av_buffer_unref(&mut device);
                return Err(format!("FFmpeg's CUDA device: {}", ff::Error::from(ret)));
            }
            Ok(Nvdec { gpu, device })
        }
    }
}

/// GPU `gpu`'s primary context (retained for the process's life) and a new non-blocking stream
/// on it.
#[cfg(feature = "cuda")]
fn primary_context_and_stream(gpu: usize) -> std::result::Result<(*mut std::ffi::c_void, *mut std::ffi::c_void), String> {
    use cudarc::driver::sys;
    let count = crate::backend::cuda_device_count()?;
    if gpu >= count {
        return Err(format!("the CUDA driver sees {count} GPU(s)"));
    }
    let check = |r: sys::CUresult, what: &str| if r == sys::CUresult::CUDA_SUCCESS { Ok(()) } else { Err(format!("{what}: {r:?}")) };
    // SAFETY: the driver is initialised (cuda_device_count); plain driver API calls with
    // out-pointers to locals.
    unsafe {
        let mut dev = 0;
        check(sys::cuDeviceGet(&mut dev, gpu as i32), "cuDeviceGet")?;
        let mut ctx = std::ptr::null_mut();
        check(sys::cuDevicePrimaryCtxRetain(&mut ctx, dev), "cuDevicePrimaryCtxRetain")?;
        check(sys::cuCtxPushCurrent_v2(ctx), "cuCtxPushCurrent")?;
        let mut stream = std::ptr::null_mut();
        let flags = if maps_on_device_stream() { sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32 } else { 0 };
        let made = check(sys::cuStreamCreate(&mut stream, flags), "cuStreamCreate");
        let mut popped = std::ptr::null_mut();
        sys::cuCtxPopCurrent_v2(&mut popped);
        made?;
        Ok((ctx as *mut std::ffi::c_void, stream as *mut std::ffi::c_void))
    }
}

/// Whether this FFmpeg's `h264_cuvid` maps pictures on the device context's stream (the build of
/// `scripts/gpu/build_ffmpeg.sh`, whose version ends in `+vsr`), so that a non-blocking stream
/// is safe.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn maps_on_device_stream() -> bool {
    // SAFETY: a static NUL-terminated string owned by libavutil.
    let version = unsafe { std::ffi::CStr::from_ptr(ffi::av_version_info()) };
    version.to_string_lossy().ends_with("+vsr")
}

/// The device context's `free`: its stream goes with it.
unsafe extern "C" fn destroy_stream(hw: *mut ffi::AVHWDeviceContext) {
    #[cfg(feature = "cuda")]
    // SAFETY: `user_opaque` is the stream created with this context, destroyed once, here.
    unsafe {
        let stream = (*hw).user_opaque as cudarc::driver::sys::CUstream;
        if !stream.is_null() {
            cudarc::driver::sys::cuStreamDestroy_v2(stream);
        }
    }
    #[cfg(not(feature = "cuda"))]
    let _ = hw;
}

#[cfg(not(feature = "cuda"))]
fn primary_context_and_stream(_gpu: usize) -> std::result::Result<(*mut std::ffi::c_void, *mut std::ffi::c_void), String> {
    Err("this vsr is built without the `cuda` feature".into())
}

/// `get_format` for `h264_cuvid`: decoded pictures copied to host memory as NV12 (8-bit 4:2:0);
/// other formats (10-bit, 4:4:4) are refused, and the file falls back to the CPU decoder.
pub(crate) unsafe extern "C" fn host_nv12(_: *mut ffi::AVCodecContext, formats: *const ffi::AVPixelFormat) -> ffi::AVPixelFormat {
    let mut p = formats;
    // SAFETY: FFmpeg passes a list terminated by AV_PIX_FMT_NONE.
    unsafe {
        while *p != ffi::AVPixelFormat::AV_PIX_FMT_NONE {
            if *p == ffi::AVPixelFormat::AV_PIX_FMT_NV12 {
                return *p;
            }
            p = p.add(1);
        }
    }
    ffi::AVPixelFormat::AV_PIX_FMT_NONE
}

/// Whether NVDEC hands pictures out as soon as they are decoded (FFmpeg's low-delay flag, the
/// default), or with `h264_cuvid`'s display delay of four pictures, which lets the engine work
/// on several pictures at once but decodes up to four beyond a window (`VSR_NVDEC_LOW_DELAY=0`:
/// for measuring the trade).
pub(crate) fn low_delay() -> bool {
    static LOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOW.get_or_init(|| super::switched_on("VSR_NVDEC_LOW_DELAY"))
}

/// Says once per process that a file is read with the CPU decoder instead of NVDEC.
pub(crate) fn note_fallback(path: &std::path::Path, why: &str) {
    static NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !NOTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("note: {}: NVDEC cannot decode it ({why}); reading it with the CPU decoder (later such files silently)", path.display());
    }
}
