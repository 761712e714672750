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
            "warp {b}x{c}x{h}x{w} {:?}, median of {} runs",
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

fn median_ms<B: Backend>(
    device: &B::Device,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut(),
) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let _ = B::sync(device);
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            let _ = B::sync(device);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Times forward and forward + backward of the warp on `device` for an image of `shape`
/// (B,C,H,W) in `dtype`, with random inputs (flow of a few pixels): `warmup` untimed runs, then
/// the median of `runs`. Every run ends with `B::sync`.
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

    let kernel_forward_ms = median_ms::<B>(device, warmup, runs, || {
        let _ = warp(img.clone(), flow.clone());
    });
    let reference_forward_ms = median_ms::<B>(device, warmup, runs, || {
        let _ = warp_reference(img.clone(), flow.clone());
    });

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
        let gi = img.grad(&grads);
        let gf = flow.grad(&grads);
        drop((gi, gf));
    };
    let kernel_forward_backward_ms = median_ms::<B>(device, warmup, runs, || fwd_bwd(true));
    let reference_forward_backward_ms = median_ms::<B>(device, warmup, runs, || fwd_bwd(false));

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
