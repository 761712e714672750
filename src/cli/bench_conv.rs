//! `vsr bench conv`: VSRNet's convolutions at training shapes, pass by pass: forward, input
//! gradient, weight gradient (Burn's and the tap products), and the training convolution's
//! forward + backward as `vsr train` runs it (LibTorch: its own graph, cuDNN's backward).

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{ConvOptions, ModuleOps};
use burn::tensor::{Distribution, Tensor};
use vsr_kernels::conv::ConvBackend;
use serde::Serialize;

use super::BackendArgs;
use super::demo::parse_size;
use crate::backend::{BackendTask, VsrAutodiffBackend, dispatch};
use crate::precision::Precision;

#[derive(Debug, Clone, clap::Args)]
pub struct ConvArgs {
    #[command(flatten)]
    pub shape: super::bench_step::BatchShape,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Timed repetitions of each pass (after one untimed call).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Skip Burn's weight gradient (slow on some backends: a convolution by the whole output
    /// gradient).
    #[arg(long)]
    pub skip_burn_wgrad: bool,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// One layer's timings, medians in ms.
#[derive(Debug, Serialize)]
pub struct ConvRow {
    pub layer: String,
    /// (N, Cin, H, W) -> Cout, kernel.
    pub input: [usize; 4],
    pub out_channels: usize,
    pub kernel: usize,
    /// Multiply-adds x 2 of the forward, GFLOP (each backward pass does as many).
    pub gflop: f64,
    pub forward_ms: f64,
    pub input_grad_ms: f64,
    pub weight_grad_burn_ms: Option<f64>,
    pub weight_grad_taps_ms: f64,
    /// Forward + backward (input gradient where the layer needs one, weight gradient) of the
    /// training convolution, as `vsr train` runs it.
    pub train_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ConvResult {
    pub backend: String,
    pub precision: Precision,
    /// The weight gradient of `train_ms`: `VSR_WGRAD` (burn or taps), else the backend's default
    /// (taps on CubeCL, burn elsewhere), the backend's own graph (LibTorch), or the vendor
    /// library's (cuDNN on CUDA).
    pub weight_grad: String,
    pub rows: Vec<ConvRow>,
}

pub fn run(a: ConvArgs) -> anyhow::Result<()> {
    let r = dispatch(a.backend.kind(), a.backend.device, Bench(a.clone()))??;
    let mut table = format!(
        "{} {}, training convolution's weight gradient: {}\n\n| layer | input | out | k | GFLOP | forward ms | input grad ms | weight grad (Burn) ms | weight grad (taps) ms | train fwd+bwd ms |\n|---|---|---|---|---|---|---|---|---|---|\n",
        r.backend, r.precision, r.weight_grad
    );
    for row in &r.rows {
        let [n, c, h, w] = row.input;
        table += &format!(
            "| {} | {n}x{c}x{h}x{w} | {} | {} | {:.1} | {:.2} | {:.2} | {} | {:.2} | {:.2} |\n",
            row.layer,
            row.out_channels,
            row.kernel,
            row.gflop,
            row.forward_ms,
            row.input_grad_ms,
            row.weight_grad_burn_ms.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
            row.weight_grad_taps_ms,
            row.train_ms
        );
    }
    super::bench::report(&table, &r, a.json.as_deref())
}

struct Bench(ConvArgs);

impl BackendTask for Bench {
    type Output = anyhow::Result<ConvResult>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let a = self.0;
        let (h, w) = parse_size(&a.shape.crop)?;
        anyhow::ensure!(
            a.shape.batch >= 1 && a.shape.frames >= 1 && h >= 1 && w >= 1,
            "--batch, --frames and both sides of --crop must be at least 1"
        );
        let dtype = a.precision.dtype();
        let time = |f: &mut dyn FnMut()| super::bench_step::time_synced::<I<B>>(&device, a.iters, f);
        let random = |shape: [usize; 4]| Tensor::<I<B>, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), &device).cast(dtype);
        let prim = |t: &Tensor<I<B>, 4>| t.clone().into_primitive().tensor();
        // (name, input, out channels, kernel, needs an input gradient): VSRNet's layers.
        let (b, f) = (a.shape.batch, a.shape.frames);
        let layers = [
            ("VSRNet conv1", [b * f, 1, h, w], 64, 9, false),
            ("VSRNet conv2", [b, 64 * f, h, w], 32, 5, true),
            ("VSRNet conv3", [b, 32, h, w], 1, 5, true),
        ];
        let mut rows = Vec::new();
        for (name, input, co, k, need_x) in layers {
            let options = ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], 1);
            let x = random(input);
            let wt = random([co, input[1], k, k]);
            let dy = random([input[0], co, h, w]);
            // Forward and input gradient as training runs them (the vendor library's where the
            // backend has one: cuDNN on CUDA).
            let forward_ms = time(&mut || drop(vsr_kernels::conv::conv2d(x.clone(), wt.clone(), None, options.clone())))?;
            let input_grad_ms = if <I<B> as ConvBackend>::vendor_conv() {
                time(&mut || drop(I::<B>::vendor_conv2d_backward(prim(&x), prim(&wt), prim(&dy), options.clone(), [true, false])))?
            } else {
                time(&mut || drop(I::<B>::conv2d_x_backward(prim(&x), prim(&wt), prim(&dy), options.clone())))?
            };
            let weight_grad_burn_ms = if a.skip_burn_wgrad {
                None
            } else {
                Some(time(&mut || drop(I::<B>::conv2d_weight_backward(prim(&x), prim(&wt), prim(&dy), options.clone())))?)
            };
            let weight_grad_taps_ms = time(&mut || {
                drop(vsr_kernels::conv_grad::conv2d_weight_grad_taps::<I<B>>(prim(&x), prim(&wt), prim(&dy), options.clone()))
            })?;
            let xa = Tensor::<B, 4>::from_inner(x.clone());
            let xa = if need_x { xa.require_grad() } else { xa };
            let wa = Tensor::<B, 4>::from_inner(wt.clone()).require_grad();
            let dya = Tensor::<B, 4>::from_inner(dy.clone());
            let train_ms = time(&mut || {
                let y = vsr_kernels::conv::conv2d(xa.clone(), wa.clone(), None, options.clone());
                // d(sum(y * dy))/dy = dy: the backward receives dy as its output gradient.
                drop((y * dya.clone()).sum().backward());
            })?;
            rows.push(ConvRow {
                layer: name.into(),
                input,
                out_channels: co,
                kernel: k,
                gflop: 2.0 * (input[0] * h * w * co * input[1] * k * k) as f64 / 1e9,
                forward_ms,
                input_grad_ms,
                weight_grad_burn_ms,
                weight_grad_taps_ms,
                train_ms,
            });
        }
        Ok(ConvResult {
            backend: crate::backend::device_name::<I<B>>(&device),
            precision: a.precision,
            weight_grad: if <I<B> as ConvBackend>::CONV_GRAPH {
                "the backend's own graph".into()
            } else if <I<B> as ConvBackend>::vendor_conv() {
                "the vendor library's (cuDNN)".into()
            } else {
                format!("{:?}", vsr_kernels::conv_grad::weight_grad_for::<I<B>>()).to_lowercase()
            },
            rows,
        })
    }
}
