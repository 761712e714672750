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

/// The FlowNetSD fixture checkpoint (legacy torch.save), decompressed once per test binary.
pub fn flownet_checkpoint() -> PathBuf {
    static P: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = vsr::checkpoint::gunzip_to(&fixture("flownet_sd.pth.tar.gz"), dir.path()).expect("gunzip");
        (dir, path)
    })
    .1
    .clone()
}

/// Asserts `actual` is within `rel` of `expected` relative to max|expected|; returns (abs, rel).
pub fn assert_close(name: &str, actual: &TensorData, expected: &TensorData, rel: f32) -> (f32, f32) {
    assert_eq!(actual.shape, expected.shape, "{name}: shape");
    let (abs, r) = vsr::tensors::max_errors(actual, expected);
    println!("{name}: max abs err {abs:.3e}, rel {r:.3e}");
    assert!(r <= rel, "{name}: max abs error {abs} (relative {r}) exceeds {rel}");
    (abs, r)
}
