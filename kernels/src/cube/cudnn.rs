//! cuDNN's convolutions on the CUDA backend's own (CubeCL) buffers.
//!
//! Burn 0.21's CubeCL convolutions ran this model's training step at 359 ms (fp32) and 231 ms
//! (fp16) on an H100, against 24.7 and 13.5 ms on LibTorch, and FlowNetSD's forward alone took
//! longer than LibTorch's whole step (docs/benchmarks.md, session 12). The CUDA backend therefore
//! runs every convolution (forward, input and weight gradient, transposed) through cuDNN, loaded at
//! run time (`libcudnn.so.9`, as PyTorch ships it) and called on the device pointers of the
//! `CubeTensor`s; everything else stays on CubeCL. Without cuDNN, or with `VSR_CUDNN=0`, the
//! convolutions stay on Burn's kernels.
//!
//! How it meets CubeCL: `ComputeClient::get_resource` gives a buffer's device pointer (offset
//! included), in CubeCL's primary context, and (vsr's patch of cubecl-cuda, vendor/README.md) the
//! stream on which the calling thread's CubeCL work is queued, the inputs' producers ordered
//! before it. cuDNN runs on that stream: it follows the kernels that made its inputs and precedes
//! those that read its output, with no host synchronisation, so the host keeps queueing ahead of
//! the GPU as it does between CubeCL's own kernels. (Session 13 ran cuDNN on a stream of its own
//! and waited on the host before and after each call: FlowNetSD's forward took 31-37 ms in fp32
//! and fp16 alike, against 3-4 ms on LibTorch.) Buffers freed after a call go back to the same
//! stream's pool, so their reuse is ordered after it too.
//!
//! Operands and results are dense NCHW buffers, or dense NHWC ones where the caller keeps its
//! tensors channels-last ([`Geometry::nhwc`]: the frozen FlowNetSD): the patched runtime
//! allocates dense tensors (it padded rows to 512-byte pitches, and cuDNN's backward passes
//! reject padded rows: every algorithm `NOT_SUPPORTED`, measured), and views of another layout (a
//! permutation, a slice) are copied by CubeCL first.
//!
//! Arithmetic follows PyTorch: f32 under [`ConvPrecision::Tf32`] with `CUDNN_DEFAULT_MATH`
//! (TF32 allowed, `allow_tf32`), under [`ConvPrecision::F32`] with `CUDNN_FMA_MATH`; f16 and
//! bf16 with tensor-core math and f32 accumulation. Algorithms are chosen as PyTorch's benchmark
//! mode chooses them (`cudnnFind*`: all timed once per shape, the fastest that needs at most
//! [`MAX_WORKSPACE`] bytes of workspace), restricted to deterministic ones so that two runs of
//! the same seed give the same bits (the same algorithm being chosen).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock};

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cudarc::cudnn::sys;
use cudarc::driver::{result as drv, sys as dsys};

use crate::conv::{ConvPrecision, conv_precision};

type Tensor = CubeTensor<CudaRuntime>;
type ComputeClient = cubecl::client::ComputeClient<CudaRuntime>;

/// Most workspace an algorithm may ask for (bytes). cuDNN's NCHW convolutions on tensor cores
/// transpose their operands into the workspace: VSRNet's conv2 in f32 at batch 3, 512x960 needs
/// more than 1 GiB for its fastest forward (6.3 ms, against 19.8 ms for the fastest within 1 GiB)
/// and input gradient (2.5 against 22.5 ms; H100, timed by cuDNN).
pub const MAX_WORKSPACE: usize = 4 << 30;

/// Whether the CUDA backend's convolutions run on cuDNN: `libcudnn` 9 loads and `VSR_CUDNN` is
/// not `0` / `off`. Says why on stderr once when not.
pub fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        if matches!(std::env::var("VSR_CUDNN").as_deref(), Ok("0" | "off" | "false")) {
            return false;
        }
        // SAFETY: only loads the library (no cuDNN call).
        if !unsafe { sys::is_culib_present() } {
            eprintln!(
                "note: cuDNN (libcudnn.so.9) was not found on the library path: the CUDA backend's \
                 convolutions run on CubeCL's kernels, an order of magnitude slower (README: GPU set-up)"
            );
            return false;
        }
        // (cudarc's `version_check` compares the sub-libraries with the version its bindings were
        // generated for and fails on PyTorch's cuDNN 9 builds; PyTorch does not check either.)
        let v = cudarc::cudnn::result::get_version();
        if v / 10000 != 9 {
            eprintln!("note: cuDNN {v} loaded; vsr's bindings are cuDNN 9's: convolutions run on CubeCL's kernels");
            return false;
        }
        true
    })
}

/// cuDNN's version (major * 10000 + minor * 100 + patch), where [`available`].
pub fn version() -> Option<usize> {
    available().then(cudarc::cudnn::result::get_version)
}

/// Bytes of cuDNN workspace held on CUDA device `index`: kept between calls and grown to the
/// largest need among the algorithms chosen so far (at most [`MAX_WORKSPACE`]); 0 without cuDNN.
pub fn workspace_bytes(index: usize) -> usize {
    if !available() {
        return 0;
    }
    gpu(index).lock().unwrap_or_else(|e| e.into_inner()).workspace_size
}

/// One device's cuDNN handle, in CubeCL's (primary) context, and the stream it was last set to.
struct Gpu {
    ctx: dsys::CUcontext,
    stream: dsys::CUstream,
    handle: sys::cudnnHandle_t,
    /// cuDNN's workspace, kept and grown as needed (up to [`MAX_WORKSPACE`]): taking it from
    /// CubeCL's pool per call allocated and freed large blocks on every convolution.
    workspace: dsys::CUdeviceptr,
    workspace_size: usize,
}

impl Gpu {
    /// Points the handle at `stream`. The workspace is shared by the calls of every stream: when
    /// the stream changes (another thread's CubeCL stream), the last one's calls are waited for.
    fn use_stream(&mut self, stream: dsys::CUstream) {
        if stream == self.stream {
            return;
        }
        // SAFETY: a stream of this context (CubeCL's), or null before the first call.
        unsafe {
            if !self.stream.is_null() {
                drv::stream::synchronize(self.stream).expect("cuStreamSynchronize (cuDNN's last stream)");
            }
            cudarc::cudnn::result::set_stream(self.handle, stream as sys::cudaStream_t).expect("cudnnSetStream");
        }
        self.stream = stream;
    }

    /// A workspace of at least `size` bytes (null for 0). Calls on the stream may still be
    /// using the old one, so a larger one first waits for them (rare: sizes settle in the first
    /// step).
    fn workspace(&mut self, size: usize) -> *mut c_void {
        if size > self.workspace_size {
            // SAFETY: the old block is ours and idle once its stream is; the context is current.
            unsafe {
                if self.workspace_size > 0 {
                    drv::stream::synchronize(self.stream).expect("cuStreamSynchronize (cuDNN workspace)");
                    drv::free_sync(self.workspace).expect("cuMemFree (cuDNN workspace)");
                }
                self.workspace = drv::malloc_sync(size)
                    .unwrap_or_else(|e| panic!("cuDNN workspace of {size} bytes: {e:?}"));
            }
            self.workspace_size = size;
        }
        if size == 0 { std::ptr::null_mut() } else { self.workspace as *mut c_void }
    }
}

// SAFETY: the handle and stream are used under the device's mutex only.
unsafe impl Send for Gpu {}

fn gpu(index: usize) -> &'static Mutex<Gpu> {
    static GPUS: Mutex<Vec<(usize, &'static Mutex<Gpu>)>> = Mutex::new(Vec::new());
    let mut gpus = GPUS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, g)) = gpus.iter().find(|(i, _)| *i == index) {
        return g;
    }
    let fail = |what: &str, e: &dyn std::fmt::Debug| -> ! {
        panic!("cuDNN on CUDA device {index}: {what} failed: {e:?}")
    };
    // SAFETY: plain driver and cuDNN set-up calls; CubeCL already initialised the driver.
    let g = unsafe {
        let dev = drv::device::get(index as i32).unwrap_or_else(|e| fail("cuDeviceGet", &e));
        let ctx = drv::primary_ctx::retain(dev).unwrap_or_else(|e| fail("cuDevicePrimaryCtxRetain", &e));
        drv::ctx::set_current(ctx).unwrap_or_else(|e| fail("cuCtxSetCurrent", &e));
        let handle = cudarc::cudnn::result::create_handle().unwrap_or_else(|e| fail("cudnnCreate", &e));
        Gpu { ctx, stream: std::ptr::null_mut(), handle, workspace: 0, workspace_size: 0 }
    };
    let g: &'static Mutex<Gpu> = Box::leak(Box::new(Mutex::new(g)));
    gpus.push((index, g));
    g
}

/// What a call computes, in cuDNN's terms: the convolution `y = conv(x, w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pass {
    /// `y` from `x` and `w`.
    Forward,
    /// `dx` from `w` and `dy` (also a transposed convolution's forward).
    Data,
    /// `dw` from `x` and `dy`.
    Filter,
}

/// A convolution's geometry: `x` (N, C, H, W) by `w` (K, C / groups, R, S) to `y` (N, K, P, Q),
/// the dims always in that order; with `nhwc` the buffers are channels-last: `x` and `y` dense
/// (N, H, W, C) tensors, `w` a dense (K, R, S, C) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub x: [usize; 4],
    pub w: [usize; 4],
    pub y: [usize; 4],
    pub padding: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub nhwc: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    pass: Pass,
    geometry: Geometry,
    dtype: DType,
    math: u32,
}

/// A chosen algorithm, of its pass.
#[derive(Debug, Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// The chosen algorithm, the math type it was timed with (which the descriptor must then
/// carry: cuDNN reports per algorithm whether it ran on tensor cores) and the workspace it needs
/// with that math type.
#[derive(Debug, Clone, Copy)]
struct Choice {
    algo: Algo,
    math: sys::cudnnMathType_t,
    workspace: usize,
}

fn algorithms() -> &'static Mutex<HashMap<Key, Choice>> {
    static ALGOS: OnceLock<Mutex<HashMap<Key, Choice>>> = OnceLock::new();
    ALGOS.get_or_init(Default::default)
}

fn data_type(dtype: DType) -> sys::cudnnDataType_t {
    match dtype {
        DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        DType::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
        DType::BF16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
        other => panic!("cuDNN convolution: unsupported dtype {other:?}"),
    }
}

fn math(dtype: DType) -> sys::cudnnMathType_t {
    match (dtype, conv_precision()) {
        (DType::F32, ConvPrecision::Tf32) => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        (DType::F32, ConvPrecision::F32) => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        _ => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
    }
}

fn check(status: sys::cudnnStatus_t, what: &str, geometry: &Geometry, dtype: DType) {
    if status != sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        panic!("cuDNN {what} ({dtype:?}, {geometry:?}): {status:?}");
    }
}

struct TensorDesc(sys::cudnnTensorDescriptor_t);

impl TensorDesc {
    /// A dense tensor of `dims` (N, C, H, W), NCHW or (`nhwc`) NHWC in memory (every operand
    /// is dense: see [`dense`]).
    fn new(dtype: DType, dims: [usize; 4], nhwc: bool) -> Self {
        let d = cudarc::cudnn::result::create_tensor_descriptor().expect("cudnnCreateTensorDescriptor");
        let [_, c, h, w] = dims;
        let strides = if nhwc { [c * h * w, 1, w * c, c] } else { dense_strides(dims) };
        let strides = strides.map(|v| v as i32);
        let dims = dims.map(|v| v as i32);
        // SAFETY: `d` was just created; four dims and strides.
        unsafe { cudarc::cudnn::result::set_tensornd_descriptor(d, data_type(dtype), 4, dims.as_ptr(), strides.as_ptr()) }
            .unwrap_or_else(|e| panic!("cudnnSetTensorNdDescriptor({dims:?}, {strides:?}): {e:?}"));
        Self(d)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        let _ = unsafe { cudarc::cudnn::result::destroy_tensor_descriptor(self.0) };
    }
}

struct FilterDesc(sys::cudnnFilterDescriptor_t);

impl FilterDesc {
    /// A dense filter of `dims` (K, C, R, S), KCRS or (`nhwc`) KRSC in memory.
    fn new(dtype: DType, dims: [usize; 4], nhwc: bool) -> Self {
        let d = cudarc::cudnn::result::create_filter_descriptor().expect("cudnnCreateFilterDescriptor");
        let dims = dims.map(|v| v as i32);
        // SAFETY: `d` was just created; four dims.
        unsafe {
            cudarc::cudnn::result::set_filternd_descriptor(
                d,
                data_type(dtype),
                if nhwc { sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC } else { sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW },
                4,
                dims.as_ptr(),
            )
        }
        .unwrap_or_else(|e| panic!("cudnnSetFilterNdDescriptor({dims:?}): {e:?}"));
        Self(d)
    }
}

impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        let _ = unsafe { cudarc::cudnn::result::destroy_filter_descriptor(self.0) };
    }
}

struct ConvDesc(sys::cudnnConvolutionDescriptor_t);

impl ConvDesc {
    fn new(g: &Geometry, math: sys::cudnnMathType_t) -> Self {
        let d = cudarc::cudnn::result::create_convolution_descriptor().expect("cudnnCreateConvolutionDescriptor");
        let pad = g.padding.map(|v| v as i32);
        let stride = g.stride.map(|v| v as i32);
        let dilation = g.dilation.map(|v| v as i32);
        // SAFETY: `d` was just created; two spatial dims.
        unsafe {
            cudarc::cudnn::result::set_convolutionnd_descriptor(
                d,
                2,
                pad.as_ptr(),
                stride.as_ptr(),
                dilation.as_ptr(),
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
            .and_then(|_| cudarc::cudnn::result::set_convolution_math_type(d, math))
            .and_then(|_| cudarc::cudnn::result::set_convolution_group_count(d, g.groups as i32))
        }
        .unwrap_or_else(|e| panic!("cuDNN convolution descriptor {g:?}: {e:?}"));
        Self(d)
    }
}

impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        let _ = unsafe { cudarc::cudnn::result::destroy_convolution_descriptor(self.0) };
    }
}

pub(crate) fn dims(t: &Tensor) -> [usize; 4] {
    let s = t.meta.shape();
    assert_eq!(s.num_dims(), 4, "cuDNN convolution: a 4-d tensor, got {:?}", s);
    [s[0], s[1], s[2], s[3]]
}

fn strides(t: &Tensor) -> [usize; 4] {
    let s = t.meta.strides();
    [s[0], s[1], s[2], s[3]]
}

fn dense_strides([_, c, h, w]: [usize; 4]) -> [usize; 4] {
    [c * h * w, h * w, w, 1]
}

/// A new dense (N, C, H, W) tensor of `dims` on `like`'s device; its contents are undefined.
pub(crate) fn empty(like: &Tensor, dims: [usize; 4], dtype: DType) -> Tensor {
    let bytes = dims.iter().product::<usize>() * dtype.size();
    let handle = like.client.empty(bytes.max(1));
    Tensor::new_contiguous(like.client.clone(), like.device.clone(), dims.into(), handle, dtype)
}

/// `t`'s device pointer, the stream on which its producers (and the caller's next kernels) are
/// queued, and a guard that keeps the buffer.
pub(crate) fn ptr(t: &Tensor) -> (u64, dsys::CUstream, impl Sized + use<>) {
    let r = t
        .client
        .get_resource(t.handle.clone())
        .unwrap_or_else(|e| panic!("cuDNN convolution: CubeCL buffer: {e:?}"));
    let (ptr, stream) = (r.resource().ptr, r.resource().stream);
    assert!(!stream.is_null(), "cuDNN convolution: cubecl-cuda without vsr's stream patch (vendor/README.md)");
    (ptr, stream, r)
}

/// Runs `pass` of the convolution `geometry` in `dtype`: writes the pass's output (`y`, `dx` or
/// `dw`, a dense tensor it allocates) from the two inputs. `a`, `b` are (`x`, `w`) for
/// [`Pass::Forward`], (`w`, `dy`) for [`Pass::Data`], (`x`, `dy`) for [`Pass::Filter`].
pub fn convolve(pass: Pass, geometry: Geometry, a: Tensor, b: Tensor) -> Tensor {
    let client = a.client.clone();
    on_device_thread(&client, move || convolve_here(pass, geometry, a, b))
}

/// Runs `f` on CubeCL's device thread of `client` (CubeCL queues its work to one thread per
/// device), after the work queued there before it, and raises its panic on this thread.
/// `ComputeClient::get_resource` called from another thread is a round trip to that thread,
/// which first drains its queue: a convolution's three pointers cost about 165 us of host time
/// that way (FlowNetSD's forward: 9.5 of its 18 ms, measured on an H100); called on the device
/// thread itself, it runs inline. cuDNN is called there too.
pub(crate) fn on_device_thread<T: Send + 'static>(client: &ComputeClient, f: impl FnOnce() -> T + Send) -> T {
    let run = move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into())
        })
    };
    match client.exclusive(run) {
        Ok(Ok(t)) => t,
        Ok(Err(message)) => panic!("{message}"),
        Err(e) => panic!("CubeCL's device thread: {e:?}"),
    }
}

/// [`convolve`] on the calling thread (CubeCL's device thread).
pub(crate) fn convolve_here(pass: Pass, geometry: Geometry, a: Tensor, b: Tensor) -> Tensor {
    let dtype = a.dtype;
    assert_eq!(dtype, b.dtype, "cuDNN convolution: operands of one dtype");
    let g = geometry;
    let out_dims = match pass {
        Pass::Forward => g.y,
        Pass::Data => g.x,
        Pass::Filter => g.w,
    };
    let out_dims = if g.nhwc { super::nchw_to_nhwc(out_dims) } else { out_dims };
    // cuDNN's backward passes take packed operands only (every algorithm `NOT_SUPPORTED`
    // otherwise, measured): a view of another layout is copied by CubeCL first.
    let (a, b) = (dense(a), dense(b));
    let out = empty(&a, out_dims, dtype);
    let math = math(dtype);
    let key = Key { pass, geometry: g, dtype, math: math as u32 };

    // Device pointers, and CubeCL's stream with the inputs' producers ordered on it.
    let (pa, stream, _ra) = ptr(&a);
    let (pb, _, _rb) = ptr(&b);
    let (po, _, _ro) = ptr(&out);
    let index = a.device.index;

    let mut gpu = gpu(index).lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the context is CubeCL's primary context of this device.
    unsafe { drv::ctx::set_current(gpu.ctx) }.expect("cuCtxSetCurrent");
    gpu.use_stream(stream);
    let xd = TensorDesc::new(dtype, g.x, g.nhwc);
    let yd = TensorDesc::new(dtype, g.y, g.nhwc);
    let wd = FilterDesc::new(dtype, g.w, g.nhwc);
    let cd = ConvDesc::new(&g, math);
    let h = gpu.handle;
    let one = 1f32;
    let zero = 0f32;
    let (alpha, beta) = (&one as *const f32 as *const c_void, &zero as *const f32 as *const c_void);

    // SAFETY: every pointer is a live CubeCL buffer of at least the described extent; descriptors
    // match. The work is queued on the buffers' own stream: a buffer released after this call
    // is reused by CubeCL's pool only for work queued later on that stream.
    unsafe {
        let w_ptr = match pass {
            Pass::Forward => pb,
            Pass::Data => pa,
            Pass::Filter => 0,
        };
        let choice = choose(h, &key, &xd, &wd, &cd, &yd);
        // As PyTorch: the descriptor takes the math type the algorithm was timed with.
        check(sys::cudnnSetConvolutionMathType(cd.0, choice.math), "setting the math type", &g, dtype);
        let workspace_size = choice.workspace;
        let ws_ptr = gpu.workspace(workspace_size);
        let status = match choice.algo {
            Algo::Forward(algo) => sys::cudnnConvolutionForward(
                h, alpha, xd.0, pa as *const c_void, wd.0, w_ptr as *const c_void, cd.0, algo,
                ws_ptr, workspace_size, beta, yd.0, po as *mut c_void,
            ),
            Algo::Data(algo) => sys::cudnnConvolutionBackwardData(
                h, alpha, wd.0, w_ptr as *const c_void, yd.0, pb as *const c_void, cd.0, algo,
                ws_ptr, workspace_size, beta, xd.0, po as *mut c_void,
            ),
            Algo::Filter(algo) => sys::cudnnConvolutionBackwardFilter(
                h, alpha, xd.0, pa as *const c_void, yd.0, pb as *const c_void, cd.0, algo,
                ws_ptr, workspace_size, beta, wd.0, po as *mut c_void,
            ),
        };
        check(status, &format!("{pass:?} convolution"), &g, dtype);
    }
    out
}

/// One algorithm as cuDNN reports it.
#[derive(Debug, Clone, Copy)]
struct Perf {
    algo: Algo,
    status: sys::cudnnStatus_t,
    memory: usize,
    deterministic: bool,
    math: sys::cudnnMathType_t,
    /// Milliseconds, as cuDNN timed it (`cudnnFind*`; the heuristics report -1).
    time: f32,
}

/// Lists `key.pass`'s algorithms, fastest first: timed by cuDNN (`cudnnFind*`) with `timed`,
/// else ranked by its heuristics (`cudnnGet*_v7`).
///
/// # Safety
/// Descriptors and handle valid, the handle's context current.
unsafe fn list(
    h: sys::cudnnHandle_t,
    key: &Key,
    [xd, yd]: [&TensorDesc; 2],
    wd: &FilterDesc,
    cd: &ConvDesc,
    timed: bool,
) -> (sys::cudnnStatus_t, Vec<Perf>) {
    const N: usize = 16;
    let mut count = 0i32;
    let det = sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC;
    macro_rules! perfs {
        ($ty:ty, $wrap:path, $find:path, $get:path, ($($args:expr),*)) => {{
            let mut r = [unsafe { std::mem::zeroed::<$ty>() }; N];
            let s = unsafe {
                if timed {
                    $find(h, $($args),*, N as i32, &mut count, r.as_mut_ptr())
                } else {
                    $get(h, $($args),*, N as i32, &mut count, r.as_mut_ptr())
                }
            };
            let v = r[..count.clamp(0, N as i32) as usize]
                .iter()
                .map(|p| Perf {
                    algo: $wrap(p.algo),
                    status: p.status,
                    memory: p.memory,
                    deterministic: p.determinism == det,
                    math: p.mathType,
                    time: p.time,
                })
                .collect();
            (s, v)
        }};
    }
    match key.pass {
        Pass::Forward => perfs!(
            sys::cudnnConvolutionFwdAlgoPerf_t,
            Algo::Forward,
            sys::cudnnFindConvolutionForwardAlgorithm,
            sys::cudnnGetConvolutionForwardAlgorithm_v7,
            (xd.0, wd.0, cd.0, yd.0)
        ),
        Pass::Data => perfs!(
            sys::cudnnConvolutionBwdDataAlgoPerf_t,
            Algo::Data,
            sys::cudnnFindConvolutionBackwardDataAlgorithm,
            sys::cudnnGetConvolutionBackwardDataAlgorithm_v7,
            (wd.0, yd.0, cd.0, xd.0)
        ),
        Pass::Filter => perfs!(
            sys::cudnnConvolutionBwdFilterAlgoPerf_t,
            Algo::Filter,
            sys::cudnnFindConvolutionBackwardFilterAlgorithm,
            sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7,
            (xd.0, yd.0, cd.0, wd.0)
        ),
    }
}

/// The algorithm for `key`, chosen on first use: the fastest deterministic one within
/// [`MAX_WORKSPACE`] as cuDNN times them (`cudnnFind*`), else as its heuristics rank them, else
/// the fastest at all (said once on stderr: results may then differ in the last bits from run
/// to run).
///
/// # Safety
/// Descriptors and handle valid, the handle's context current.
unsafe fn choose(
    h: sys::cudnnHandle_t,
    key: &Key,
    xd: &TensorDesc,
    wd: &FilterDesc,
    cd: &ConvDesc,
    yd: &TensorDesc,
) -> Choice {
    if let Some(c) = algorithms().lock().unwrap_or_else(|e| e.into_inner()).get(key) {
        return *c;
    }
    let ok = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
    // Full f32 (`ConvPrecision::F32`, FMA math) admits no algorithm that cuDNN timed on tensor
    // cores, and runs the chosen one with FMA math (below): the descriptor would otherwise carry
    // the reported math type, and TF32 with it.
    let fma = key.math == sys::cudnnMathType_t::CUDNN_FMA_MATH as u32;
    let tensor_op = |m| {
        matches!(m, sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH | sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
    };
    let math_ok = |p: &Perf| !fma || !tensor_op(p.math);
    let usable = |p: &&Perf| p.status == ok && p.memory <= MAX_WORKSPACE && math_ok(p);
    let timed = unsafe { list(h, key, [xd, yd], wd, cd, true) };
    let deterministic = |v: &[Perf]| v.iter().filter(usable).find(|p| p.deterministic).copied();
    // The heuristics only where timing found no deterministic algorithm.
    let mut ranked = (ok, Vec::new());
    let pick = deterministic(&timed.1)
        .or_else(|| {
            ranked = unsafe { list(h, key, [xd, yd], wd, cd, false) };
            deterministic(&ranked.1)
        })
        .or_else(|| {
            let p = [&timed.1, &ranked.1].into_iter().find_map(|v| v.iter().find(usable)).copied();
            if p.is_some() {
                eprintln!(
                    "note: cuDNN has no deterministic {:?} algorithm for {:?}: a non-deterministic one runs",
                    key.pass, key.geometry
                );
            }
            p
        })
        .unwrap_or_else(|| {
            panic!(
                "cuDNN: no {:?} algorithm for {:?} within {MAX_WORKSPACE} bytes of workspace (timed: {:?}; heuristics: {:?})",
                key.pass, key.geometry, timed, ranked
            )
        });
    let math = if fma { sys::cudnnMathType_t::CUDNN_FMA_MATH } else { pick.math };
    // The workspace of the algorithm with the math type it runs with.
    check(unsafe { sys::cudnnSetConvolutionMathType(cd.0, math) }, "setting the math type", &key.geometry, key.dtype);
    let mut workspace = 0usize;
    let status = unsafe {
        match pick.algo {
            Algo::Forward(algo) => sys::cudnnGetConvolutionForwardWorkspaceSize(h, xd.0, wd.0, cd.0, yd.0, algo, &mut workspace),
            Algo::Data(algo) => sys::cudnnGetConvolutionBackwardDataWorkspaceSize(h, wd.0, yd.0, cd.0, xd.0, algo, &mut workspace),
            Algo::Filter(algo) => sys::cudnnGetConvolutionBackwardFilterWorkspaceSize(h, xd.0, yd.0, cd.0, wd.0, algo, &mut workspace),
        }
    };
    check(status, "workspace size", &key.geometry, key.dtype);
    let c = Choice { algo: pick.algo, math, workspace };
    if log_choices() {
        let fastest = timed.1.iter().find(|p| p.status == ok);
        eprintln!(
            "cuDNN {:?} {:?} x {:?} w {:?} y {:?}: {:?} ({:?}) {:.3} ms, {} bytes of workspace; fastest timed: {:?}",
            key.pass,
            key.dtype,
            key.geometry.x,
            key.geometry.w,
            key.geometry.y,
            pick.algo,
            math,
            pick.time,
            workspace,
            fastest.map(|p| (p.algo, p.math, p.time, p.memory, p.deterministic)),
        );
    }
    algorithms().lock().unwrap_or_else(|e| e.into_inner()).insert(*key, c);
    c
}

/// Whether each algorithm choice is said on stderr (`VSR_CUDNN_LOG=1`): the convolution, the
/// algorithm, its math type and time as cuDNN timed it, and the fastest timed at all.
fn log_choices() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| matches!(std::env::var("VSR_CUDNN_LOG").as_deref(), Ok("1" | "on" | "true")))
}

/// `t` as a dense NCHW tensor (a copy where it is a view of another layout).
pub(crate) fn dense(t: Tensor) -> Tensor {
    let d = dims(&t);
    if strides(&t) == dense_strides(d) { t } else { burn_cubecl::kernel::into_contiguous(t) }
}

/// An f32 vector of `like`'s device, `c` long, contents undefined.
pub(crate) fn channels(like: &Tensor, c: usize) -> Tensor {
    let handle = like.client.empty(c * 4);
    Tensor::new_contiguous(like.client.clone(), like.device.clone(), [c].into(), handle, DType::F32)
}
