//! Fixture helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::TensorData;

pub type Cpu = vsr::backend::Cpu;
pub type CpuAd = burn::backend::Autodiff<Cpu>;

/// The repository root: `VSR_REPO_DIR` when set (test binaries copied to another machine), else
/// where the tests were built.
pub fn repo_dir() -> PathBuf {
    std::env::var_os("VSR_REPO_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixture(name: &str) -> PathBuf {
    repo_dir().join("tests/fixtures").join(name)
}

pub fn golden() -> &'static BTreeMap<String, TensorData> {
    static G: OnceLock<BTreeMap<String, TensorData>> = OnceLock::new();
    G.get_or_init(|| vsr::tensors::read_safetensors(&fixture("golden.safetensors")).expect("golden fixture"))
}

/// A temporary directory for the whole test binary, removed when the process exits. (A
/// `TempDir` in a static is never dropped: each run of a test binary left its copy in /tmp,
/// 174 MB with the FlowNetSD checkpoint.)
pub fn process_tempdir() -> PathBuf {
    static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_all() {
        for dir in DIRS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    // SAFETY: registers a plain function with no arguments, once.
    AT_EXIT.call_once(|| assert_eq!(unsafe { libc::atexit(remove_all) }, 0, "atexit"));
    let dir = tempfile::tempdir().expect("tempdir").keep();
    DIRS.lock().unwrap_or_else(|e| e.into_inner()).push(dir.clone());
    dir
}

/// The FlowNetSD fixture checkpoint (legacy torch.save), decompressed once per test binary.
pub fn flownet_checkpoint() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| vsr::checkpoint::gunzip_to(&fixture("flownet_sd.pth.tar.gz"), &process_tempdir()).expect("gunzip")).clone()
}

/// Asserts `actual` is within `rel` of `expected` relative to max|expected|; returns (abs, rel).
pub fn assert_close(name: &str, actual: &TensorData, expected: &TensorData, rel: f32) -> (f32, f32) {
    assert_eq!(actual.shape, expected.shape, "{name}: shape");
    let (abs, r) = vsr::tensors::max_errors(actual, expected);
    println!("{name}: max abs err {abs:.3e}, rel {r:.3e}");
    assert!(r <= rel, "{name}: max abs error {abs} (relative {r}) exceeds {rel}");
    (abs, r)
}

/// LibTorch's device for the GPU tests: `VSR_TEST_GPU=tch` is its CUDA device 0, which must
/// exist (no silent fall-back to the CPU); `VSR_TEST_GPU=tch-cpu` is its CPU. `None` for other
/// values. Also reports whether convolutions may use TF32 (CUDA).
#[cfg(feature = "tch")]
pub fn tch_test_device(which: &str) -> Option<(burn::backend::libtorch::LibTorchDevice, bool)> {
    use burn::backend::libtorch::LibTorchDevice;
    match which {
        "tch" => {
            let device = vsr::backend::tch_device(0).expect("LibTorch device");
            assert!(matches!(device, LibTorchDevice::Cuda(0)), "VSR_TEST_GPU=tch: LibTorch sees no CUDA device");
            Some((device, true))
        }
        "tch-cpu" => Some((LibTorchDevice::Cpu, false)),
        _ => None,
    }
}
