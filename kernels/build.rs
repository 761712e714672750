//! With the `tch` feature: compiles `csrc/backward.cpp` (LibTorch's autograd with explicit output
//! gradients) and `csrc/cuda.cpp` (LibTorch's current CUDA stream, its allocator's peak) against the LibTorch that torch-sys links, found as torch-sys finds it: `LIBTORCH`
//! (or `LIBTORCH_INCLUDE`), else the PyTorch of `python3` (`LIBTORCH_USE_PYTORCH`'s way).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/backward.cpp");
    println!("cargo:rerun-if-changed=csrc/cuda.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let root = std::env::var_os("LIBTORCH_INCLUDE").or_else(|| std::env::var_os("LIBTORCH")).map(PathBuf::from).or_else(|| {
        let out = Command::new("python3")
            .args(["-c", "import os, torch; print(os.path.dirname(torch.__file__))"])
            .output()
            .ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    let Some(root) = root else {
        panic!("the tch feature needs LibTorch: set LIBTORCH to a libtorch or <site-packages>/torch folder");
    };
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/backward.cpp")
        .file("csrc/cuda.cpp")
        .compile("vsr_tch_shim");
}
