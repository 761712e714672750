//! The one place that maps a backend name to Burn backend types.
//!
//! Models, training and data code are generic over [`VsrBackend`] / [`VsrAutodiffBackend`];
//! [`dispatch`] instantiates a [`BackendTask`] with the concrete type chosen at run time.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::{AutodiffBackend, Backend};
use vsr_kernels::WarpBackend;
use vsr_kernels::adam::AdamBackend;
use vsr_kernels::conv::ConvBackend;
use vsr_kernels::readback::ReadbackBackend;
use vsr_kernels::upload::UploadBackend;

use crate::error::{Error, Result};

/// What the model code needs of a backend: Burn's ops plus our warp, convolutions whose
/// precision can be chosen (`vsr_kernels::conv`), a one-pass Adam where there is one
/// (`vsr_kernels::adam`) and reading a step's outcome back without draining the device
/// (`vsr_kernels::readback`).
pub trait VsrBackend: Backend + WarpBackend + ConvBackend + AdamBackend + ReadbackBackend + UploadBackend {}
impl<B: Backend + WarpBackend + ConvBackend + AdamBackend + ReadbackBackend + UploadBackend> VsrBackend for B {}

/// A backend with autodiff whose inner backend is also a [`VsrBackend`].
pub trait VsrAutodiffBackend: AutodiffBackend<InnerBackend: VsrBackend> + VsrBackend {}
impl<B: AutodiffBackend<InnerBackend: VsrBackend> + VsrBackend> VsrAutodiffBackend for B {}

/// The pure-Rust CPU backend, always compiled in.
pub type Cpu = burn::backend::Flex;
/// NVIDIA GPUs through CubeCL (with fusion and autotune).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;
/// LibTorch (PyTorch's C++ library, cuDNN on GPU).
#[cfg(feature = "tch")]
pub type Tch = burn::backend::LibTorch<f32>;
/// wgpu (Vulkan, Metal, ...): used to run the CubeCL kernels without an NVIDIA GPU.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;

/// A backend the user can ask for with `--backend` or `VSR_BACKEND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Pure-Rust CPU backend (burn-flex).
    Cpu,
    /// NVIDIA GPU through CubeCL (burn-cuda).
    Cuda,
    /// LibTorch (burn-tch), CUDA when a GPU is present.
    Tch,
    /// wgpu/Vulkan through CubeCL (burn-wgpu).
    Wgpu,
}

impl BackendKind {
    /// Every backend, compiled in or not.
    pub const ALL: [BackendKind; 4] = [Self::Cpu, Self::Cuda, Self::Tch, Self::Wgpu];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Tch => "tch",
            Self::Wgpu => "wgpu",
        }
    }

    /// Whether this build contains the backend.
    pub fn compiled(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Cuda => cfg!(feature = "cuda"),
            Self::Tch => cfg!(feature = "tch"),
            Self::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// Backends compiled into this binary.
    pub fn compiled_in() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.compiled()).collect()
    }

    fn not_available(self, why: &str) -> Error {
        let names: Vec<_> = Self::compiled_in().iter().map(|k| k.name()).collect();
        Error::Backend(format!(
            "backend `{}` is not available: {why}; available in this build: {}",
            self.name(),
            names.join(", ")
        ))
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s.to_ascii_lowercase()).ok_or_else(|| {
            let names: Vec<_> = Self::compiled_in().iter().map(|k| k.name()).collect();
            Error::Backend(format!("unknown backend `{s}`; available in this build: {}", names.join(", ")))
        })
    }
}

/// Work to run on whichever backend the user chose.
pub trait BackendTask {
    type Output;
    /// Runs with the backend `B` on `device`. `B` has autodiff; use `B::InnerBackend` (or
    /// `module.valid()`) for inference.
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Work to run on several devices of one backend (data-parallel training).
pub trait MultiDeviceTask {
    type Output;
    /// Runs with the backend `B` on `devices` (at least one).
    fn run<B: VsrAutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

static KERNEL_CACHE_DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Where CubeCL backends keep autotune results and compiled kernels (see [`dispatch`]); the
/// first call wins.
pub fn set_kernel_cache_dir(dir: Option<std::path::PathBuf>) {
    let _ = KERNEL_CACHE_DIR.set(dir);
}

/// `$XDG_CACHE_HOME/vsr/cubecl`, else `~/.cache/vsr/cubecl`.
pub fn default_kernel_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    Some(base.join("vsr").join("cubecl"))
}

/// Points CubeCL's caches at the kernel cache directory, once, before a CubeCL device is used.
#[allow(dead_code)]
fn configure_cubecl() {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    {
        static DONE: std::sync::Once = std::sync::Once::new();
        DONE.call_once(|| {
            match KERNEL_CACHE_DIR.get() {
                Some(Some(dir)) => {
                    if !vsr_kernels::cube::set_cache_dir(dir) {
                        eprintln!("warning: CubeCL was configured before vsr could set its kernel cache to {}", dir.display());
                    } else if !has_tuning_results(dir) {
                        eprintln!(
                            "note: the kernel cache {} holds no tuning results yet: the first batches time the candidate \
                             kernels of every new convolution and matrix shape (seconds each, minutes for a whole network \
                             on a GPU) and keep the fastest there for later runs (--cache-dir, VSR_CACHE_DIR)",
                            dir.display()
                        );
                    }
                }
                Some(None) => eprintln!(
                    "note: no kernel cache directory (no HOME or XDG_CACHE_HOME, no --cache-dir): kernel tuning results \
                     are not kept, every run tunes again"
                ),
                None => {}
            }
        });
    }
}

/// Whether the kernel cache `dir` holds any autotune result (CubeCL writes them as files under
/// `autotune/`).
pub fn has_tuning_results(dir: &std::path::Path) -> bool {
    fn any_file(dir: &std::path::Path, depth: usize) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else { return false };
        entries.flatten().any(|e| {
            let path = e.path();
            path.is_file() || (depth > 0 && path.is_dir() && any_file(&path, depth - 1))
        })
    }
    any_file(&dir.join("autotune"), 8)
}

/// Runs `task` on backend `kind`, device index `index` (GPU backends), or says why it can't.
pub fn dispatch<T: BackendTask>(kind: BackendKind, index: usize, task: T) -> Result<T::Output> {
    use burn::backend::Autodiff;
    if matches!(kind, BackendKind::Cuda | BackendKind::Wgpu) {
        configure_cubecl();
    }
    match kind {
        BackendKind::Cpu => Ok(task.run::<Autodiff<Cpu>>(Default::default())),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let count = cuda_device_count().map_err(|why| kind.not_available(&why))?;
            if index >= count {
                return Err(kind.not_available(&format!(
                    "no CUDA device with index {index} ({count} found)"
                )));
            }
            Ok(task.run::<Autodiff<Cuda>>(burn::backend::cuda::CudaDevice::new(index)))
        }
        #[cfg(feature = "tch")]
        BackendKind::Tch => {
            let device = tch_device(index).map_err(|why| kind.not_available(&why))?;
            Ok(task.run::<Autodiff<Tch>>(device))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(task.run::<Autodiff<Wgpu>>(Default::default())),
        #[allow(unreachable_patterns)]
        other => Err(other.not_available("not compiled into this build (see the README's cargo features)")),
    }
}

/// Runs `task` on backend `kind` with the devices of indices `indices` (GPU backends: each index
/// once; the CPU and wgpu backends, and LibTorch without a CUDA device, have one device, which
/// every index names: the workers then share it), or says why it can't.
pub fn dispatch_devices<T: MultiDeviceTask>(kind: BackendKind, indices: &[usize], task: T) -> Result<T::Output> {
    use burn::backend::Autodiff;
    if indices.is_empty() {
        return Err(Error::Invalid("no device given".into()));
    }
    let mut seen = indices.to_vec();
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::Invalid(format!("device list {indices:?} names a device twice")));
    }
    if matches!(kind, BackendKind::Cuda | BackendKind::Wgpu) {
        configure_cubecl();
    }
    let n = indices.len();
    match kind {
        BackendKind::Cpu => Ok(task.run::<Autodiff<Cpu>>(vec![Default::default(); n])),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let count = cuda_device_count().map_err(|why| kind.not_available(&why))?;
            if let Some(bad) = indices.iter().find(|&&i| i >= count) {
                return Err(kind.not_available(&format!("no CUDA device with index {bad} ({count} found)")));
            }
            Ok(task.run::<Autodiff<Cuda>>(indices.iter().map(|&i| burn::backend::cuda::CudaDevice::new(i)).collect()))
        }
        #[cfg(feature = "tch")]
        BackendKind::Tch => {
            // Each index chosen (and cuDNN's benchmark mode set) as `dispatch` does, so that one
            // device behaves as there; several without a CUDA device share LibTorch's CPU, which
            // every index then names (as on the cpu backend).
            let devices = if n > 1 && tch::Cuda::device_count() == 0 {
                vec![tch_device(0).map_err(|why| kind.not_available(&why))?; n]
            } else {
                indices
                    .iter()
                    .map(|&i| tch_device(i))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|why| kind.not_available(&why))?
            };
            Ok(task.run::<Autodiff<Tch>>(devices))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(task.run::<Autodiff<Wgpu>>(vec![Default::default(); n])),
        #[allow(unreachable_patterns)]
        other => Err(other.not_available("not compiled into this build (see the README's cargo features)")),
    }
}

/// The CUDA device index behind `--backend kind --device index` when that is an NVIDIA GPU.
#[cfg_attr(not(any(feature = "cuda", feature = "tch")), allow(unused_variables))]
pub fn cuda_gpu_of(kind: BackendKind, index: usize) -> Option<usize> {
    match kind {
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => cuda_device_count().ok().filter(|&n| index < n).map(|_| index),
        #[cfg(feature = "tch")]
        BackendKind::Tch => (index < tch::Cuda::device_count().max(0) as usize).then_some(index),
        _ => None,
    }
}

/// Number of CUDA devices, or why none can be used (no driver, no GPU). Probed once per process.
#[cfg(feature = "cuda")]
pub fn cuda_device_count() -> std::result::Result<usize, String> {
    static PROBE: std::sync::OnceLock<std::result::Result<usize, String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            // cudarc loads libcuda at run time and panics when it cannot: turn that into an error,
            // without the panic message and backtrace the default hook would print.
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let probe = std::panic::catch_unwind(|| {
                cudarc::driver::result::init()
                    .and_then(|_| cudarc::driver::result::device::get_count())
                    .map_err(|e| format!("CUDA driver error: {e:?}"))
            });
            std::panic::set_hook(hook);
            match probe {
                Ok(Ok(0)) => Err("the CUDA driver found no GPU".into()),
                Ok(Ok(n)) => Ok(n as usize),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("no CUDA driver (libcuda) on this machine".into()),
            }
        })
        .clone()
}

/// GPU memory used by this process according to `nvidia-smi` (allocator pools included), bytes.
#[cfg(any(feature = "cuda", feature = "tch"))]
pub fn cuda_memory_in_use() -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    let me = std::process::id();
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (pid, mib) = l.split_once(',')?;
        (pid.trim().parse::<u32>().ok()? == me).then_some(mib.trim().parse::<u64>().ok()? << 20)
    })
}

/// LibTorch's device for `--backend tch --device index`: its CUDA device `index` when LibTorch
/// sees a GPU (with cuDNN's benchmark mode on, as PyTorch training scripts set it: the fastest
/// algorithm per convolution shape, timed on first use), else its CPU, which only index 0 names.
#[cfg(feature = "tch")]
pub fn tch_device(index: usize) -> std::result::Result<burn::backend::libtorch::LibTorchDevice, String> {
    use burn::backend::libtorch::LibTorchDevice;
    let count = tch::Cuda::device_count() as usize;
    if count == 0 {
        if index != 0 {
            return Err(format!("LibTorch sees no CUDA device, so no device with index {index}"));
        }
        if std::env::var_os("VSR_QUIET_TCH_CPU").is_none() {
            eprintln!("note: LibTorch sees no CUDA device; backend tch runs on LibTorch's CPU");
        }
        return Ok(LibTorchDevice::Cpu);
    }
    if index >= count {
        return Err(format!("no CUDA device with index {index} ({count} found by LibTorch)"));
    }
    vsr_kernels::conv::set_tch_cudnn_benchmark(true);
    Ok(LibTorchDevice::Cuda(index))
}

/// What LibTorch this process loaded: its version (from the installation the shared library was
/// loaded from), CUDA devices, CUDA runtime and cuDNN versions.
#[cfg(feature = "tch")]
pub fn tch_summary() -> String {
    let version = libtorch_dir()
        .and_then(|lib| libtorch_version(&lib).map(|v| format!("libtorch {v} ({})", lib.display())))
        .unwrap_or_else(|| "libtorch (version unknown)".into());
    let cuda = tch::Cuda::device_count();
    if cuda == 0 {
        return format!("{version}; no CUDA device, runs on CPU ({} threads)", tch::get_num_threads());
    }
    // CUDART_VERSION is 1000 major + 10 minor; CUDNN_VERSION (9.x) 10000 major + 100 minor + patch.
    let cudart = tch::utils::version_cudart();
    let cudnn = tch::utils::version_cudnn();
    format!(
        "{version}; {cuda} CUDA device(s), CUDA runtime {}.{}, cuDNN {}",
        cudart / 1000,
        cudart % 1000 / 10,
        if tch::Cuda::cudnn_is_available() {
            format!("{}.{}.{}", cudnn / 10000, cudnn % 10000 / 100, cudnn % 100)
        } else {
            "unavailable".into()
        }
    )
}

/// The directory this process loaded `libtorch_cpu.so` from (`/proc/self/maps`).
#[cfg(feature = "tch")]
fn libtorch_dir() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let path = l.split_whitespace().nth(5)?;
        path.ends_with("/libtorch_cpu.so").then(|| std::path::Path::new(path).parent().map(|p| p.to_path_buf()))?
    })
}

/// The version of the LibTorch installation whose `lib` directory is `lib`: a pip install's
/// `torch/version.py`, or the `build-version` file of LibTorch's zip.
#[cfg(feature = "tch")]
fn libtorch_version(lib: &std::path::Path) -> Option<String> {
    let root = lib.parent()?;
    if let Ok(py) = std::fs::read_to_string(root.join("version.py")) {
        return py.lines().find_map(|l| {
            let v = l.strip_prefix("__version__")?.split(['\'', '"']).nth(1)?;
            Some(v.to_string())
        });
    }
    std::fs::read_to_string(root.join("build-version")).ok().map(|v| v.trim().to_string())
}

/// Silences the default panic message while `f` runs (for probes that may panic).
pub fn quiet_panics<R>(f: impl FnOnce() -> R) -> R {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = f();
    std::panic::set_hook(hook);
    r
}

/// [`name`] of the backend and, where one backend type serves several kinds of device (LibTorch),
/// the device's kind: `tch-cuda`, `tch-cpu`.
pub fn device_name<B: Backend>(device: &B::Device) -> String {
    let name = name::<B>();
    if name == "tch" {
        let full = B::name(device); // "libtorch<cuda>"
        if let Some(kind) = full.strip_prefix("libtorch<").and_then(|k| k.strip_suffix('>')) {
            return format!("tch-{kind}");
        }
    }
    name
}

/// GPU memory in use by this process on `device` (the whole process on CUDA, allocator pools
/// included), if the backend runs on an NVIDIA GPU and `nvidia-smi` can tell; bytes.
pub fn device_memory_in_use<B: Backend>(device: &B::Device) -> Option<u64> {
    #[cfg(any(feature = "cuda", feature = "tch"))]
    {
        let name = device_name::<B>(device);
        if name.starts_with("cuda") || name == "tch-cuda" {
            return cuda_memory_in_use();
        }
    }
    let _ = device;
    None
}

/// The CUDA backend's memory on GPU `index`: CubeCL's pool for the calling thread's stream (bytes
/// held by live buffers, bytes reserved from the driver) and cuDNN's workspace; `None` for other
/// backends.
pub fn cubecl_cuda_memory(kind: BackendKind, index: usize) -> Option<CudaMemory> {
    #[cfg(feature = "cuda")]
    if kind == BackendKind::Cuda {
        let (in_use, reserved) = vsr_kernels::cube::cuda_pool_usage(index)?;
        let workspace = vsr_kernels::cube::cudnn::workspace_bytes(index) as u64;
        return Some(CudaMemory { in_use, reserved, workspace });
    }
    let _ = (kind, index);
    None
}

/// See [`cubecl_cuda_memory`]; bytes.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CudaMemory {
    pub in_use: u64,
    pub reserved: u64,
    pub workspace: u64,
}

/// Starts (`true`) or stops CUDA's profiler capture (`cuProfilerStart` / `cuProfilerStop`) on
/// GPU `index` for a run under `nsys profile --capture-range=cudaProfilerApi` or `ncu
/// --profile-from-start off`; without a CUDA build an error says so.
pub fn cuda_profiler(index: usize, start: bool) -> anyhow::Result<()> {
    #[cfg(any(feature = "cuda", feature = "tch"))]
    {
        use cudarc::driver::{result, sys};
        // SAFETY: plain driver calls; the device's primary context is the one the backends use.
        let r = unsafe {
            result::init()
                .and_then(|_| result::device::get(index as i32))
                .and_then(|d| result::primary_ctx::retain(d))
                .and_then(|ctx| result::ctx::set_current(ctx))
                .and_then(|_| if start { sys::cuProfilerStart() } else { sys::cuProfilerStop() }.result())
        };
        return r.map_err(|e| anyhow::anyhow!("cuProfiler{} on GPU {index}: {e:?}", if start { "Start" } else { "Stop" }));
    }
    #[allow(unreachable_code)]
    {
        let _ = (index, start);
        anyhow::bail!("--profile needs a CUDA build of vsr")
    }
}

/// LibTorch's peak of allocated bytes on its CUDA device `index` since the last reset, then a
/// reset if `reset` ([`vsr_kernels::nvrtc::tch_peak_allocated`]); `None` for other backends and
/// devices.
pub fn tch_peak_allocated(kind: BackendKind, index: usize, reset: bool) -> Option<u64> {
    #[cfg(feature = "tch")]
    if kind == BackendKind::Tch && cuda_gpu_of(kind, index).is_some() {
        return vsr_kernels::nvrtc::tch_peak_allocated(index, reset).ok();
    }
    let _ = (kind, index, reset);
    None
}

/// Runs `f` with the CUDA backend's peak memory tracked: the most bytes in use in CubeCL's pool
/// (checked at each allocation: it sums the pool's pages each time, so `f` runs slower) plus
/// cuDNN's workspace, on GPU `index`; `None` for other backends.
pub fn cubecl_peak_in_use<T>(kind: BackendKind, index: usize, f: impl FnOnce() -> T) -> (T, Option<u64>) {
    #[cfg(feature = "cuda")]
    if kind == BackendKind::Cuda {
        vsr_kernels::cube::track_peak_memory(true);
        let out = f();
        let peak = vsr_kernels::cube::peak_memory_in_use();
        vsr_kernels::cube::track_peak_memory(false);
        return (out, Some(peak + vsr_kernels::cube::cudnn::workspace_bytes(index) as u64));
    }
    let _ = (kind, index);
    (f(), None)
}

/// Short name of a backend type for reports (`Fusion<CubeBackend<CudaRuntime, ..>>` -> `cuda`).
pub fn name<B: Backend>() -> String {
    let full = std::any::type_name::<B>();
    let kind = if full.contains("CudaRuntime") {
        "cuda"
    } else if full.contains("WgpuRuntime") {
        "wgpu"
    } else if full.contains("LibTorch") {
        "tch"
    } else if full.contains("Flex") {
        "cpu"
    } else {
        full
    };
    let fused = if full.contains("Fusion<") { "+fusion" } else { "" };
    format!("{kind}{fused}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty or missing cache has no tuning results; a result file anywhere under
    /// `autotune/` (where CubeCL writes `autotune/<version>/<device>/<op>.json.log`) counts, a
    /// compiled-kernel file alone does not.
    #[test]
    fn tuning_results_are_found_where_cubecl_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_tuning_results(&dir.path().join("missing")));
        assert!(!has_tuning_results(dir.path()));
        std::fs::create_dir_all(dir.path().join("kernels/cuda/0.10.0/ptx")).unwrap();
        std::fs::write(dir.path().join("kernels/cuda/0.10.0/ptx/chunk0.cbor"), b"x").unwrap();
        let device = dir.path().join("autotune/autotune/0.10.0/device-0-0-cuda");
        std::fs::create_dir_all(&device).unwrap();
        assert!(!has_tuning_results(dir.path()), "empty directories are no results");
        std::fs::write(device.join("burn_cubecl-kernel-conv-forward-tune.json.log"), b"{}").unwrap();
        assert!(has_tuning_results(dir.path()));
    }
}
