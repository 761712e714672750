//! Adam's update of one parameter in one pass where the backend has a kernel for it
//! ([`AdamBackend`]): on LibTorch's CUDA f32 tensors, `adam.cu` (compiled and launched as
//! [`crate::nvrtc`] says); elsewhere `None`, and the caller runs Burn's `Adam`.
//!
//! Why: Burn's `Adam` is about 15 element-wise tensor operations per parameter (weight decay, two
//! moments, bias corrections, the update), each a kernel launch through LibTorch. VSRNet has 8
//! parameter tensors of 160 k values in all, so the update is some 120 launches of a few
//! microseconds of work each, issued after the step has read its loss back (a synchronisation):
//! the GPU waits on the host for all of them. The kernel computes the same f32 operations in the
//! same order, each rounded as Burn's kernels round it, so the results equal Burn's.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

/// One Adam step's settings (PyTorch's `Adam` with L2 weight decay; no AMSGrad).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// L2 penalty added to the gradient (`weight_decay * param`); 0 for none.
    pub weight_decay: f32,
    /// The step's number, from 1, as Burn's `AdaptiveMomentumState::time` after the update.
    pub time: usize,
}

impl AdamStep {
    /// `(sqrt(1 - beta2^t) / (1 - beta1^t), epsilon sqrt(1 - beta2^t))`, in f32 as Burn's `Adam`
    /// computes them.
    pub fn factors(&self) -> (f32, f32) {
        let t = self.time as i32;
        let bias_correction2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        (bias_correction2_sqrt / (1.0 - self.beta1.powi(t)), self.epsilon * bias_correction2_sqrt)
    }
}

/// A backend that may update a parameter by Adam in one kernel. The provided method says `None`
/// (Burn's `Adam` runs); LibTorch's CUDA overrides it.
pub trait AdamBackend: Backend {
    /// `[param, moment_1, moment_2]` after one step of `param` by `grad`, from the moments of the
    /// previous step (`None`: the first step, moments 0), or `None` where the backend has no
    /// kernel for these tensors.
    fn adam_step(
        _param: &FloatTensor<Self>,
        _grad: &FloatTensor<Self>,
        _moments: Option<[&FloatTensor<Self>; 2]>,
        _step: AdamStep,
    ) -> Option<[FloatTensor<Self>; 3]> {
        None
    }
}

impl AdamBackend for burn::backend::Flex {}

impl<B: AdamBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> AdamBackend
    for burn::backend::Autodiff<B, C>
{
}

#[cfg(feature = "cubecl")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::FloatElement, I: burn_cubecl::IntElement, BT: burn_cubecl::BoolElement>
    AdamBackend for burn_cubecl::CubeBackend<R, F, I, BT>
{
}

#[cfg(feature = "cubecl")]
impl<B: burn_fusion::FusionBackend> AdamBackend for burn_fusion::Fusion<B> {}

#[cfg(feature = "tch")]
mod libtorch {
    use burn::backend::LibTorch;
    use burn::backend::libtorch::TchTensor;
    use burn::tensor::backend::Backend;
    use tch::{Device, Kind, Tensor};

    use super::{AdamBackend, AdamStep};
    use crate::nvrtc::{Arg, Program, TchKernels, ptr, tch_kernels};

    const THREADS: u32 = 256;

    static PROGRAM: Program = Program::new("adam.cu", include_str!("adam.cu"), &["adam_f32"], "one-pass Adam", "Burn's Adam");

    impl<E> AdamBackend for LibTorch<E>
    where
        LibTorch<E>: Backend<FloatTensorPrimitive = TchTensor>,
    {
        /// `adam.cu` for f32 CUDA tensors of one size ([`crate::adam`]).
        fn adam_step(param: &TchTensor, grad: &TchTensor, moments: Option<[&TchTensor; 2]>, step: AdamStep) -> Option<[TchTensor; 3]> {
            let (p, g) = (&param.tensor, &grad.tensor);
            let Device::Cuda(device) = p.device() else { return None };
            let same = |t: &Tensor| t.kind() == Kind::Float && t.device() == p.device() && t.size() == p.size();
            if tch_kernels() != TchKernels::Own || !same(p) || !same(g) || moments.is_some_and(|m| !m.iter().all(|t| same(&t.tensor))) {
                return None;
            }
            let kernels = PROGRAM.kernels(device).ok()?;
            let (pc, gc) = (p.contiguous(), g.contiguous());
            let (mc, vc) = match moments {
                Some([m, v]) => (m.tensor.contiguous(), v.tensor.contiguous()),
                // (not read on the first step)
                None => (pc.shallow_clone(), pc.shallow_clone()),
            };
            let [po, mo, vo] = [(); 3].map(|_| Tensor::empty(p.size().as_slice(), (Kind::Float, p.device())));
            let n = p.numel() as i64;
            let (cf, ec) = step.factors();
            let blocks = ((n + THREADS as i64 - 1) / THREADS as i64).clamp(1, 65535 * 4) as u32;
            kernels.launch(device, (THREADS, 1, 1), "adam_f32", (blocks, 1, 1), &[
                ptr(&pc),
                ptr(&gc),
                ptr(&mc),
                ptr(&vc),
                ptr(&po),
                ptr(&mo),
                ptr(&vo),
                Arg::I64(n),
                Arg::F32(step.lr),
                Arg::F32(step.beta1),
                Arg::F32(step.beta2),
                Arg::F32(cf),
                Arg::F32(ec),
                Arg::F32(step.weight_decay),
                Arg::I32(moments.is_none() as i32),
            ]);
            Some([po, mo, vo].map(TchTensor::new))
        }
    }
}
