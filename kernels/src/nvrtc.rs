//! Our CUDA C kernels on LibTorch's CUDA tensors: compiled by NVRTC for the device's
//! architecture when first used, launched on LibTorch's current stream of the device (so that
//! they are ordered with LibTorch's own kernels and with its caching allocator's reuse of
//! memory), on raw pointers of contiguous tensors. The CUDA (CubeCL) backend launches some of
//! them too ([`Kernels::launch_on`]), on the stream of CubeCL's queue.
//!
//! Each program's source is `storage.cuh` (the f32 / f16 storage types all of them use) followed
//! by its own `.cu` file.
//!
//! A [`Program`] that cannot be compiled or loaded on a device (no NVRTC or driver library, an
//! architecture NVRTC does not know) says why once on stderr, and its callers take LibTorch's
//! own path instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, LaunchConfig, PushKernelArg};

use crate::setting::Setting;

/// Whether LibTorch's training layers on CUDA run vsr's own kernels where it has them
/// ([`crate::batch_norm`]: BatchNorm + LeakyReLU; [`crate::one_channel_conv`]: convolutions to
/// one output channel; [`crate::one_input_channel_conv`]: convolutions from one input channel,
/// f16 and (TF32 allowed) f32; [`crate::tensor_core_conv`]: f16 and TF32 weight gradients to 32
/// channels; [`crate::few_input_channel_conv`]: FlowNetSD's first layer with its bias and
/// activation; [`crate::adam`]: Adam's update;
/// [`crate::bias_act`]: bias + LeakyReLU) or LibTorch's (cuDNN) everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TchKernels {
    /// vsr's kernels where it has them (the default).
    Own,
    /// LibTorch's everywhere.
    Libtorch,
}

impl std::str::FromStr for TchKernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "own" => Ok(Self::Own),
            "libtorch" | "cudnn" => Ok(Self::Libtorch),
            other => Err(format!("LibTorch kernels `{other}`: expected `own` or `libtorch`")),
        }
    }
}

static CHOICE: Setting<TchKernels> = Setting::new("VSR_TCH_KERNELS", TchKernels::Own);

/// Sets [`TchKernels`] for the whole process.
pub fn set_tch_kernels(choice: TchKernels) {
    CHOICE.set(choice);
}

/// What [`set_tch_kernels`] set, else `VSR_TCH_KERNELS` (`own` or `libtorch`), else
/// [`TchKernels::Own`].
///
/// # Panics
/// If `VSR_TCH_KERNELS` holds anything else.
pub fn tch_kernels() -> TchKernels {
    CHOICE.get()
}

/// One CUDA C source and its entry points, compiled per device on first use.
pub(crate) struct Program {
    name: &'static str,
    source: &'static str,
    entries: &'static [&'static str],
    /// What the kernels are and what runs without them, for the note on stderr.
    what: &'static str,
    instead: &'static str,
    loaded: Mutex<Vec<(usize, Result<Arc<Kernels>, String>)>>,
}

/// A [`Program`]'s kernels, loaded on one device.
pub(crate) struct Kernels {
    ctx: Arc<CudaContext>,
    functions: HashMap<&'static str, CudaFunction>,
}

impl Program {
    pub(crate) const fn new(
        name: &'static str,
        source: &'static str,
        entries: &'static [&'static str],
        what: &'static str,
        instead: &'static str,
    ) -> Self {
        Self { name, source, entries, what, instead, loaded: Mutex::new(Vec::new()) }
    }

    /// The kernels on CUDA device `device`, compiled and loaded on first use (an error says why
    /// they cannot be, once per device, and stays).
    pub(crate) fn kernels(&self, device: usize) -> Result<Arc<Kernels>, String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, k)) = loaded.iter().find(|(d, _)| *d == device) {
            return k.clone();
        }
        // cudarc panics where it finds no NVRTC or driver library: an error here.
        let k = std::panic::catch_unwind(|| self.load(device))
            .unwrap_or_else(|_| Err("the CUDA driver or NVRTC library could not be loaded".into()))
            .map(Arc::new);
        if let Err(e) = &k {
            eprintln!("vsr: {} kernels ({}) unavailable on cuda:{device} ({e}); {} runs instead", self.what, self.name, self.instead);
        }
        loaded.push((device, k.clone()));
        k
    }

    fn load(&self, device: usize) -> Result<Kernels, String> {
        let ctx = CudaContext::new(device).map_err(|e| format!("CUDA context: {e}"))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("compute capability: {e}"))?;
        let options = cudarc::nvrtc::CompileOptions {
            options: vec![format!("--gpu-architecture=compute_{major}{minor}"), "-std=c++17".into()],
            name: Some(self.name.into()),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(self.source, options).map_err(|e| format!("NVRTC: {e:?}"))?;
        let module = ctx.load_module(ptx).map_err(|e| format!("loading the module: {e}"))?;
        let functions = self
            .entries
            .iter()
            .map(|&name| module.load_function(name).map(|f| (name, f)).map_err(|e| format!("{name}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Kernels { ctx, functions })
    }
}

#[cfg(feature = "tch")]
unsafe extern "C" {
    /// csrc/cuda.cpp: LibTorch's current CUDA stream of `device`; non-zero with a message in
    /// `error` on failure.
    fn vsr_tch_current_stream(device: i32, stream: *mut *mut std::ffi::c_void, error: *mut std::ffi::c_char, error_len: i32) -> i32;
    /// csrc/cuda.cpp: the caching allocator's peak of allocated bytes on `device` since the last
    /// reset, then a reset if `reset` is non-zero; non-zero with a message in `error` on failure.
    fn vsr_tch_peak_allocated(device: i32, reset: i32, bytes: *mut u64, error: *mut std::ffi::c_char, error_len: i32) -> i32;
}

/// LibTorch's peak of allocated bytes on CUDA device `device` since the last reset (what
/// PyTorch's `torch.cuda.max_memory_allocated` reports: tensors only, not the allocator's cached
/// blocks nor the CUDA context); with `reset`, a new period starts from the current allocation.
#[cfg(feature = "tch")]
pub fn tch_peak_allocated(device: usize, reset: bool) -> Result<u64, String> {
    let mut bytes = 0u64;
    let mut error = [0 as std::ffi::c_char; 512];
    // SAFETY: out-pointers valid for the call; the C++ side NUL-terminates `error`.
    let rc = unsafe { vsr_tch_peak_allocated(device as i32, reset as i32, &mut bytes, error.as_mut_ptr(), error.len() as i32) };
    if rc != 0 {
        // SAFETY: NUL-terminated by the C++ side.
        let msg = unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) };
        return Err(format!("LibTorch's allocator statistics: {}", msg.to_string_lossy()));
    }
    Ok(bytes)
}

#[cfg(feature = "tch")]
pub(crate) fn current_stream(device: usize) -> Result<cudarc::driver::sys::CUstream, String> {
    let mut stream = std::ptr::null_mut();
    let mut error = [0 as std::ffi::c_char; 512];
    // SAFETY: out-pointers valid for the call; the C++ side NUL-terminates `error`.
    let rc = unsafe { vsr_tch_current_stream(device as i32, &mut stream, error.as_mut_ptr(), error.len() as i32) };
    if rc != 0 {
        // SAFETY: NUL-terminated by the C++ side.
        let msg = unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) };
        return Err(format!("LibTorch's current stream: {}", msg.to_string_lossy()));
    }
    Ok(stream.cast())
}

/// One launch argument, in the kernel's order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

/// Whether the data of `t` starts at a multiple of `bytes`.
#[cfg(feature = "tch")]
pub(crate) fn aligned(t: &tch::Tensor, bytes: usize) -> bool {
    (t.data_ptr() as usize) % bytes == 0
}

/// The device pointer of a (contiguous) tensor.
#[cfg(feature = "tch")]
pub(crate) fn ptr(t: &tch::Tensor) -> Arg {
    Arg::Ptr(t.data_ptr() as u64)
}

thread_local! {
    /// Launches per kernel entry made by this thread (see [`launches`]).
    static LAUNCHES: std::cell::RefCell<Vec<(String, usize)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many launches of kernels of our own whose entry name starts with `prefix` (e.g.
/// `"bn_grad_stats_f16_v4_y"`, `"oicv_forward"`) the calling thread has made (LibTorch's
/// operations launch on the thread that calls them): tests check with it that a path they mean to
/// test ran (where LibTorch's would give the same values), unaffected by tests on other threads.
pub fn launches(prefix: &str) -> usize {
    LAUNCHES.with_borrow(|l| l.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, c)| c).sum())
}

/// Launches per kernel entry made by any thread (see [`launches_anywhere`]).
static ALL_LAUNCHES: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());

/// How many launches of kernels of our own whose entry name starts with `prefix` any thread of
/// the process has made: the CUDA (CubeCL) backend launches them on CubeCL's device thread, so
/// its tests count here (a count that only grows: a test checks that it grew).
pub fn launches_anywhere(prefix: &str) -> usize {
    let all = ALL_LAUNCHES.lock().unwrap_or_else(|e| e.into_inner());
    all.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, c)| c).sum()
}

fn count_launch(name: &str) {
    let bump = |l: &mut Vec<(String, usize)>| match l.iter_mut().find(|(n, _)| n == name) {
        Some((_, c)) => *c += 1,
        None => l.push((name.to_string(), 1)),
    };
    LAUNCHES.with_borrow_mut(bump);
    bump(&mut ALL_LAUNCHES.lock().unwrap_or_else(|e| e.into_inner()));
}

impl Kernels {
    /// Launches `name` with `block` threads per block on LibTorch's current stream of `device`.
    ///
    /// # Panics
    /// On a launch error (as tch's infallible calls do).
    #[cfg(feature = "tch")]
    pub(crate) fn launch(&self, device: usize, block: (u32, u32, u32), name: &str, grid: (u32, u32, u32), args: &[Arg]) {
        self.launch_shared(device, block, name, grid, 0, args);
    }

    /// [`Kernels::launch`] with `shared` bytes of dynamic shared memory a block (above 48 KiB the
    /// function's limit is raised to it first).
    ///
    /// # Panics
    /// On a launch error (as tch's infallible calls do).
    #[cfg(feature = "tch")]
    pub(crate) fn launch_shared(
        &self,
        device: usize,
        block: (u32, u32, u32),
        name: &str,
        grid: (u32, u32, u32),
        shared: u32,
        args: &[Arg],
    ) {
        let stream = current_stream(device).unwrap_or_else(|e| panic!("kernel {name}: {e}"));
        // SAFETY: LibTorch keeps its streams alive for the process; work is ordered with
        // LibTorch's by running on its current stream.
        unsafe { self.launch_on(stream, block, name, grid, shared, args) }
    }

    /// Launches `name` on `stream` (see [`Kernels::launch_shared`]).
    ///
    /// # Safety
    /// `stream` is a live stream of this device's primary context, and the arguments are what
    /// the kernel takes: pointers to live buffers of the extents it indexes, ordered on `stream`.
    ///
    /// # Panics
    /// On a launch error.
    pub(crate) unsafe fn launch_on(
        &self,
        stream: cudarc::driver::sys::CUstream,
        block: (u32, u32, u32),
        name: &str,
        grid: (u32, u32, u32),
        shared: u32,
        args: &[Arg],
    ) {
        count_launch(name);
        // SAFETY: the caller's.
        let stream = unsafe { self.ctx.wrap_borrowed_stream(stream) };
        let f = &self.functions[name];
        if shared > 48 * 1024 {
            use cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            f.set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)
                .unwrap_or_else(|e| panic!("kernel {name}: {shared} bytes of shared memory: {e}"));
        }
        let mut b = stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::I64(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
                Arg::F64(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: shared };
        // SAFETY: the callers pass the arguments of the kernel's signature (types and order),
        // pointers of live contiguous tensors of the sizes the kernel indexes, and the grid and
        // block the kernel expects.
        unsafe { b.launch(cfg) }.unwrap_or_else(|e| panic!("kernel {name}: {e}"));
    }
}
