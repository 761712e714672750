//! Parity with PyTorch on the golden fixtures (tests/fixtures/README.md): FlowNetSD's flow2,
//! VSRNet's prediction for both flow inputs, the warp and its gradients.

mod common;

use burn::tensor::Tensor;
use common::*;
use vsr::backend::VsrBackend;
use vsr::checkpoint;
use vsr::model::vsrnet::mse;
use vsr::model::warp::{WarpBackend, warp};
use vsr::model::{FlowInput, VsrNetConfig};

fn g(name: &str) -> &'static burn::tensor::TensorData {
    golden().get(name).unwrap_or_else(|| panic!("golden tensor {name}"))
}

/// Relative tolerance of FlowNetSD's and VSRNet's outputs: the fixtures' 1e-3, which covers TF32
/// convolutions (CUDA's default), or `F32_TOLERANCE` when every convolution runs in f32 (CPU
/// backends always; GPU backends with `ConvPrecision::F32`). The golden outputs are PyTorch's on
/// CPU, in f32.
const TOLERANCE: f32 = 1e-3;
const F32_TOLERANCE: f32 = 1e-4;

fn run_flownet<B: VsrBackend>(device: &B::Device, rtol: f32) {
    let net = checkpoint::load_flownet::<B>(&flownet_checkpoint(), device).expect("load FlowNetSD");
    let x = vsr::tensors::to_tensor::<B, 4>(g("flownet.input"), device);
    let flow2 = net.clone().forward(x.clone());
    assert_close("flownet.flow2", &flow2.into_data(), g("flownet.flow2"), rtol);
    // as training and inference run it: widened flows, weights in the convolution layout
    let flow2 = net.for_inference(burn::tensor::DType::F32).forward(x);
    assert_close("flownet.flow2 (for_inference)", &flow2.into_data(), g("flownet.flow2"), rtol);
}

fn run_vsrnet<B: VsrBackend>(device: &B::Device, rtol: f32) {
    let flownet = checkpoint::load_flownet::<B>(&flownet_checkpoint(), device).unwrap();
    let x = vsr::tensors::to_tensor::<B, 5>(g("vsrnet.input"), device);
    for (input, key) in [(FlowInput::Lr, "vsrnet.pred_lr"), (FlowInput::Hr, "vsrnet.pred_hr")] {
        let config = VsrNetConfig::new().with_flow_input(input);
        let net = checkpoint::load_vsrnet::<B>(&fixture("vsrnet_zip.pth"), &config, device).unwrap();
        let out = net.forward(x.clone(), Some(&flownet));
        assert_close("vsrnet.target", &out.target.clone().into_data(), g("vsrnet.target"), 1e-6);
        assert_close(key, &out.pred.clone().into_data(), g(key), rtol);
        if input == FlowInput::Lr {
            let loss = mse(out.pred, out.target).into_data();
            assert_close("vsrnet.loss_lr", &loss, g("vsrnet.loss_lr"), rtol);
        }
    }
}

/// Warp output and both gradients through autodiff, for any implementation `warp_fn`.
fn run_warp<B>(device: &B::Device, warp_fn: fn(Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>)
where
    B: burn::tensor::backend::AutodiffBackend + WarpBackend,
{
    let img = vsr::tensors::to_tensor::<B, 4>(g("warp.img"), device).require_grad();
    let flow = vsr::tensors::to_tensor::<B, 4>(g("warp.flow"), device).require_grad();
    let up = vsr::tensors::to_tensor::<B, 4>(g("warp.upstream"), device);
    let out = warp_fn(img.clone(), flow.clone());
    assert_close("warp.out", &out.clone().into_data(), g("warp.out"), 1e-4);
    let grads = (out * up).sum().backward();
    let gi = img.grad(&grads).expect("grad img").into_data();
    let gf = flow.grad(&grads).expect("grad flow").into_data();
    assert_close("warp.grad_img", &gi, g("warp.grad_img"), 1e-4);
    assert_close("warp.grad_flow", &gf, g("warp.grad_flow"), 1e-4);
}

#[test]
fn flownet_flow2_matches_pytorch_cpu() {
    run_flownet::<Cpu>(&Default::default(), F32_TOLERANCE);
}

#[test]
fn vsrnet_prediction_matches_pytorch_cpu() {
    run_vsrnet::<Cpu>(&Default::default(), F32_TOLERANCE);
}

#[test]
fn warp_matches_pytorch_cpu() {
    run_warp::<CpuAd>(&Default::default(), warp);
}

#[test]
fn warp_reference_matches_pytorch_cpu() {
    run_warp::<CpuAd>(&Default::default(), vsr::model::warp::warp_reference);
}

#[test]
fn flownet_has_published_parameter_count() {
    use burn::module::Module;
    let net = vsr::model::FlowNetSDConfig::new().init::<Cpu>(&Default::default());
    assert_eq!(net.num_params(), vsr::model::FlowNetSD::<Cpu>::NUM_PARAMS);
}

/// The same checks on a GPU backend: `VSR_TEST_GPU=cuda cargo test --test parity -- --ignored`
/// (`tch`: LibTorch on CUDA, `tch-cpu`: LibTorch on its CPU, in f32).
/// Ignored by default (CI has no GPU); when run, a missing GPU or variable fails it.
#[test]
#[ignore = "needs a GPU: set VSR_TEST_GPU=cuda|wgpu|tch|tch-cpu and pass --ignored"]
fn parity_on_requested_gpu() {
    let _gpu = GPU_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let which = std::env::var("VSR_TEST_GPU").expect("set VSR_TEST_GPU=cuda, wgpu, tch or tch-cpu");
    match which.as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => {
            let device = burn::backend::cuda::CudaDevice::new(0);
            run_flownet::<vsr::backend::Cuda>(&device, TOLERANCE);
            run_vsrnet::<vsr::backend::Cuda>(&device, TOLERANCE);
            run_warp::<burn::backend::Autodiff<vsr::backend::Cuda>>(&device, warp);
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            let device = Default::default();
            run_flownet::<vsr::backend::Wgpu>(&device, TOLERANCE);
            run_vsrnet::<vsr::backend::Wgpu>(&device, TOLERANCE);
            run_warp::<burn::backend::Autodiff<vsr::backend::Wgpu>>(&device, warp);
        }
        #[cfg(feature = "tch")]
        tch if tch_test_device(tch).is_some() => {
            let (device, tf32) = tch_test_device(tch).unwrap();
            let rtol = if tf32 { TOLERANCE } else { F32_TOLERANCE };
            run_flownet::<vsr::backend::Tch>(&device, rtol);
            run_vsrnet::<vsr::backend::Tch>(&device, rtol);
            run_warp::<burn::backend::Autodiff<vsr::backend::Tch>>(&device, warp);
        }
        other => panic!("VSR_TEST_GPU={other}: backend not compiled into this test build"),
    }
}

#[path = "common/queued.rs"]
mod queued;

/// Training steps queued back to back on the GPU backend (the Adam kernels skip a NaN step on the
/// device; the check is copied in the background) equal steps read at once, to the bit.
#[test]
#[ignore = "needs a GPU: set VSR_TEST_GPU=cuda|wgpu|tch|tch-cpu and pass --ignored"]
fn queued_steps_on_requested_gpu() {
    let _gpu = GPU_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let which = std::env::var("VSR_TEST_GPU").expect("set VSR_TEST_GPU=cuda, wgpu, tch or tch-cpu");
    match which.as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => queued::check_queued_steps_equal_steps::<burn::backend::Autodiff<vsr::backend::Cuda>>(&burn::backend::cuda::CudaDevice::new(0)),
        #[cfg(feature = "wgpu")]
        "wgpu" => queued::check_queued_steps_equal_steps::<burn::backend::Autodiff<vsr::backend::Wgpu>>(&Default::default()),
        #[cfg(feature = "tch")]
        tch if tch_test_device(tch).is_some() => {
            queued::check_queued_steps_equal_steps::<burn::backend::Autodiff<vsr::backend::Tch>>(&tch_test_device(tch).unwrap().0)
        }
        other => panic!("VSR_TEST_GPU={other}: backend not compiled into this test build"),
    }
}

/// The GPU tests one at a time: the convolution precision is process-wide.
static GPU_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// FlowNetSD and VSRNet on the GPU backend with every convolution in f32
/// (`ConvPrecision::F32`, no TF32 tensor cores): 10x tighter than the fixtures' tolerance.
#[test]
#[ignore = "needs a GPU: set VSR_TEST_GPU=cuda|wgpu|tch|tch-cpu and pass --ignored"]
fn parity_on_requested_gpu_f32_convolutions() {
    use vsr_kernels::conv::{ConvPrecision, set_conv_precision};
    let _gpu = GPU_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    /// Back to the default when the test ends, passed or not.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            set_conv_precision(ConvPrecision::Tf32);
        }
    }
    let _reset = Reset;
    let which = std::env::var("VSR_TEST_GPU").expect("set VSR_TEST_GPU=cuda, wgpu, tch or tch-cpu");
    set_conv_precision(ConvPrecision::F32);
    match which.as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => {
            let device = burn::backend::cuda::CudaDevice::new(0);
            run_flownet::<vsr::backend::Cuda>(&device, F32_TOLERANCE);
            run_vsrnet::<vsr::backend::Cuda>(&device, F32_TOLERANCE);
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            let device = Default::default();
            run_flownet::<vsr::backend::Wgpu>(&device, F32_TOLERANCE);
            run_vsrnet::<vsr::backend::Wgpu>(&device, F32_TOLERANCE);
        }
        #[cfg(feature = "tch")]
        tch if tch_test_device(tch).is_some() => {
            let (device, _) = tch_test_device(tch).unwrap();
            run_flownet::<vsr::backend::Tch>(&device, F32_TOLERANCE);
            run_vsrnet::<vsr::backend::Tch>(&device, F32_TOLERANCE);
        }
        other => panic!("VSR_TEST_GPU={other}: backend not compiled into this test build"),
    }
}
