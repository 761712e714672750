//! Timing of the warp: the backend's implementation (the kernels on CubeCL backends) against
//! [`warp_reference`](crate::warp_reference) (Burn tensor ops), used by `vsr bench warp`.

use crate::{WarpBackend, warp, warp_reference};
use burn::backend::Autodiff;
use burn::tensor::{DType, Distribution, Tensor, backend::Backend};
use std::time::Instant;

/// Timings of one shape; times are medians over the timed runs, in milliseconds.
#[derive(Clone, Debug)]
pub struct WarpBench {
    /// (B, C, H, W) of the image.
    pub shape: [usize; 4],
    /// Storage type of the tensors.
    pub dtype: DType,
    /// Timed runs per measurement (after the warm-up).
    pub runs: usize,
    /// Forward: `WarpBackend::warp` (the kernel on CubeCL backends).
    pub kernel_forward_ms: f64,
    /// Forward: `warp_reference`.
    pub reference_forward_ms: f64,
    /// Forward + backward through `Autodiff<B>` with `warp` (kernel backward).
    pub kernel_forward_backward_ms: f64,
    /// Forward + backward through `Autodiff<B>` with `warp_reference` (autodiff of the tensor ops).
    pub reference_forward_backward_ms: f64,
    /// Bytes a forward must move at least: reads img + flow, writes out.
    pub forward_bytes: u64,
    /// Bytes forward + backward must move at least: the forward's, plus the backward reading
    /// grad_out, img, flow and writing grad_img, grad_flow.
    pub forward_backward_bytes: u64,
}

impl WarpBench {
    fn gbps(bytes: u64, ms: f64) -> f64 {
        bytes as f64 / (ms * 1e-3) / 1e9
    }
    /// Achieved GB/s of the kernel forward.
    pub fn kernel_forward_gbps(&self) -> f64 {
        Self::gbps(self.forward_bytes, self.kernel_forward_ms)
    }
    /// Achieved GB/s of the reference forward.
    pub fn reference_forward_gbps(&self) -> f64 {
        Self::gbps(self.forward_bytes, self.reference_forward_ms)
    }
    /// Achieved GB/s of the kernel forward + backward.
    pub fn kernel_forward_backward_gbps(&self) -> f64 {
        Self::gbps(self.forward_backward_bytes, self.kernel_forward_backward_ms)
    }
    /// Achieved GB/s of the reference forward + backward.
    pub fn reference_forward_backward_gbps(&self) -> f64 {
        Self::gbps(
            self.forward_backward_bytes,
            self.reference_forward_backward_ms,
        )
    }
}

impl std::fmt::Display for WarpBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [b, c, h, w] = self.shape;
        writeln!(
            f,
            "warp {b}x{c}x{h}x{w} {:?}, per call, {} calls queued back to back",
            self.dtype, self.runs
        )?;
        writeln!(
            f,
            "  forward           kernel {:9.3} ms {:8.1} GB/s | reference {:9.3} ms {:8.1} GB/s | x{:.2}",
            self.kernel_forward_ms,
            self.kernel_forward_gbps(),
            self.reference_forward_ms,
            self.reference_forward_gbps(),
            self.reference_forward_ms / self.kernel_forward_ms
        )?;
        write!(
            f,
            "  forward+backward  kernel {:9.3} ms {:8.1} GB/s | reference {:9.3} ms {:8.1} GB/s | x{:.2}",
            self.kernel_forward_backward_ms,
            self.kernel_forward_backward_gbps(),
            self.reference_forward_backward_ms,
            self.reference_forward_backward_gbps(),
            self.reference_forward_backward_ms / self.kernel_forward_backward_ms
        )
    }
}

/// Milliseconds per call of `f` on the device, as a training step sees it: calls are queued back
/// to back (no host synchronisation between them, as between the layers of a step), in `BATCHES`
/// groups of `runs / BATCHES` calls, each group timed from a synchronised device to the end of
/// its last call; the median group's time per call. `warmup` untimed calls first. (Synchronising
/// after every call adds the host's round trip to each, tens of microseconds, more than a
/// memory-bound kernel of a few megabytes takes.) The results of a group are kept until its end:
/// a lazy backend (Burn's fusion) may skip the work of a tensor dropped before it ran.
fn median_ms<B: Backend, T>(
    device: &B::Device,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> T,
) -> f64 {
    const BATCHES: usize = 5;
    let warm: Vec<T> = (0..warmup).map(|_| f()).collect();
    let _ = B::sync(device);
    drop(warm);
    let per = runs.div_ceil(BATCHES).max(1);
    let mut times: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            let kept: Vec<T> = (0..per).map(|_| f()).collect();
            let _ = B::sync(device);
            let ms = start.elapsed().as_secs_f64() * 1e3 / per as f64;
            drop(kept);
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Times forward and forward + backward of the warp on `device` for an image of `shape`
/// (B,C,H,W) in `dtype`, with random inputs (flow of a few pixels): `warmup` untimed runs, then
/// `runs` timed calls ([`median_ms`]: per call, queued back to back).
pub fn bench_warp<B: WarpBackend>(
    device: &B::Device,
    shape: [usize; 4],
    dtype: DType,
    warmup: usize,
    runs: usize,
) -> WarpBench {
    let [b, c, h, w] = shape;
    let img = Tensor::<B, 4>::random(shape, Distribution::Uniform(0.0, 1.0), device).cast(dtype);
    let flow =
        Tensor::<B, 4>::random([b, 2, h, w], Distribution::Uniform(-8.0, 8.0), device).cast(dtype);
    let upstream =
        Tensor::<B, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), device).cast(dtype);

    // Each figure on stderr as soon as it is measured: a first run on a GPU may spend minutes
    // in CubeCL's autotune (the reference's fused tensor ops), and a time limit would otherwise
    // leave nothing.
    let note = |what: &str, ms: f64| eprintln!("warp {b}x{c}x{h}x{w} {dtype:?}: {what} {ms:.3} ms");
    let kernel_forward_ms = median_ms::<B, _>(device, warmup, runs, || warp(img.clone(), flow.clone()));
    note("kernel forward", kernel_forward_ms);
    let reference_forward_ms =
        median_ms::<B, _>(device, warmup, runs, || warp_reference(img.clone(), flow.clone()));
    note("reference forward", reference_forward_ms);

    type A<B> = Autodiff<B>;
    let fwd_bwd = |kernel: bool| {
        let img = Tensor::<A<B>, 4>::from_inner(img.clone()).require_grad();
        let flow = Tensor::<A<B>, 4>::from_inner(flow.clone()).require_grad();
        let upstream = Tensor::<A<B>, 4>::from_inner(upstream.clone());
        let out = if kernel {
            warp(img.clone(), flow.clone())
        } else {
            warp_reference(img.clone(), flow.clone())
        };
        let grads = (out * upstream).sum().backward();
        (img.grad(&grads), flow.grad(&grads))
    };
    let kernel_forward_backward_ms = median_ms::<B, _>(device, warmup, runs, || fwd_bwd(true));
    note("kernel forward+backward", kernel_forward_backward_ms);
    let reference_forward_backward_ms = median_ms::<B, _>(device, warmup, runs, || fwd_bwd(false));
    note("reference forward+backward", reference_forward_backward_ms);

    let elem = dtype.size() as u64;
    let img_bytes = (b * c * h * w) as u64 * elem;
    let flow_bytes = (b * 2 * h * w) as u64 * elem;
    let forward_bytes = 2 * img_bytes + flow_bytes;
    let backward_bytes = 3 * img_bytes + 2 * flow_bytes;
    WarpBench {
        shape,
        dtype,
        runs: runs.max(1),
        kernel_forward_ms,
        reference_forward_ms,
        kernel_forward_backward_ms,
        reference_forward_backward_ms,
        forward_bytes,
        forward_backward_bytes: forward_bytes + backward_bytes,
    }
}
