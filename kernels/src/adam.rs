//! Adam's update of a model's parameters in one pass per parameter, where the backend has a kernel
//! for it ([`AdamBackend::adam_steps`]): on LibTorch's CUDA f32 tensors and the CUDA (CubeCL)
//! backend's f32 buffers, `adam.cu` (compiled and launched as [`crate::nvrtc`] says; on CubeCL all
//! of a step's updates are one Fusion custom operation and one call on CubeCL's device thread);
//! elsewhere the updates come back, and the caller runs Burn's `Adam`.
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

/// One parameter's Adam update, for [`AdamBackend::adam_steps`].
pub struct AdamUpdate<B: Backend> {
    pub param: FloatTensor<B>,
    pub grad: FloatTensor<B>,
    /// The moments of the previous step; `None`: the first step (moments 0).
    pub moments: Option<[FloatTensor<B>; 2]>,
    pub step: AdamStep,
}

impl<B: Backend> Clone for AdamUpdate<B> {
    fn clone(&self) -> Self {
        Self { param: self.param.clone(), grad: self.grad.clone(), moments: self.moments.clone(), step: self.step }
    }
}

impl<B: Backend> AdamUpdate<B> {
    /// The parameter, the gradient, then the moments if any.
    pub fn tensors(&self) -> impl Iterator<Item = &FloatTensor<B>> {
        [&self.param, &self.grad].into_iter().chain(self.moments.iter().flatten())
    }

    /// Whether one call of the kernels takes `updates`: every tensor f32 of its parameter's shape,
    /// all on one device (the first parameter's).
    pub fn one_call_takes(updates: &[Self]) -> bool {
        use burn::tensor::{DType, TensorMetadata};
        let Some(first) = updates.first() else { return true };
        let device = B::float_device(&first.param);
        updates.iter().all(|u| {
            let shape = u.param.shape();
            u.tensors().all(|t| t.dtype() == DType::F32 && t.shape() == shape && B::float_device(t) == device)
        })
    }
}

/// A step's updates, issued together by [`AdamBackend::adam_steps`].
pub struct AdamBatch<B: Backend> {
    pub updates: Vec<AdamUpdate<B>>,
    /// A value (f32, one) that is not finite where the step must be skipped (its loss or gradients
    /// overflowed): the kernels then leave every parameter and moment as it was (moments of a
    /// first step: 0), on the device, so that the host need not read the check before the update.
    /// `None`: always applied.
    pub gate: Option<FloatTensor<B>>,
}

impl<B: Backend> AdamBatch<B> {
    /// `updates`, always applied.
    pub fn new(updates: Vec<AdamUpdate<B>>) -> Self {
        Self { updates, gate: None }
    }

    /// Whether one call of the kernels takes the batch: [`AdamUpdate::one_call_takes`] of the
    /// updates, and a gate of one f32 value on their device.
    pub fn one_call_takes(&self) -> bool {
        use burn::tensor::{DType, TensorMetadata};
        let gate_ok = match (&self.gate, self.updates.first()) {
            (Some(g), Some(first)) => g.dtype() == DType::F32 && g.shape().num_elements() == 1 && B::float_device(g) == B::float_device(&first.param),
            _ => true,
        };
        gate_ok && AdamUpdate::one_call_takes(&self.updates)
    }
}

/// A backend that may update parameters by Adam in kernels of its own. The provided methods
/// decline (Burn's `Adam` runs); LibTorch's CUDA and the CUDA (CubeCL) backend override them.
pub trait AdamBackend: Backend {
    /// Whether [`AdamBackend::adam_steps`] runs a kernel for f32 tensors of this backend's devices
    /// (`Fusion<B>` registers its operation only then).
    fn adam_kernel() -> bool {
        false
    }

    /// `[param, moment_1, moment_2]` of every update after its step (or as they were, where the
    /// batch's gate says skip), in its order, all issued together (on the CUDA backend one
    /// operation: one hop to CubeCL's device thread for all of a model's parameters instead of
    /// one each). `Err` gives the batch back where the backend has no kernel for all of it
    /// ([`AdamBatch::one_call_takes`]).
    fn adam_steps(batch: AdamBatch<Self>) -> Result<Vec<[FloatTensor<Self>; 3]>, AdamBatch<Self>> {
        Err(batch)
    }

    /// [`AdamBackend::adam_steps`] of one parameter, or `None` where the backend declines it.
    fn adam_step(
        param: &FloatTensor<Self>,
        grad: &FloatTensor<Self>,
        moments: Option<[&FloatTensor<Self>; 2]>,
        step: AdamStep,
    ) -> Option<[FloatTensor<Self>; 3]> {
        let update = AdamUpdate { param: param.clone(), grad: grad.clone(), moments: moments.map(|m| m.map(Clone::clone)), step };
        Self::adam_steps(AdamBatch::new(vec![update])).ok()?.pop()
    }
}

impl AdamBackend for burn::backend::Flex {}

impl<B: AdamBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> AdamBackend
    for burn::backend::Autodiff<B, C>
{
}

#[cfg(any(feature = "tch", feature = "cuda"))]
const THREADS: u32 = 256;

#[cfg(any(feature = "tch", feature = "cuda"))]
static PROGRAM: crate::nvrtc::Program =
    crate::nvrtc::Program::new("adam.cu", include_str!("adam.cu"), &["adam_f32"], "one-pass Adam", "Burn's Adam");

/// CubeCL: `adam.cu` on the CUDA runtime's f32 buffers ([`cube`]); Burn's `Adam` elsewhere.
#[cfg(feature = "cubecl")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::FloatElement, I: burn_cubecl::IntElement, BT: burn_cubecl::BoolElement>
    AdamBackend for burn_cubecl::CubeBackend<R, F, I, BT>
{
    fn adam_kernel() -> bool {
        #[cfg(feature = "cuda")]
        return crate::cube::conv::cuda::is_cuda::<R>() && cube::available();
        #[cfg(not(feature = "cuda"))]
        false
    }

    fn adam_steps(batch: AdamBatch<Self>) -> Result<Vec<[FloatTensor<Self>; 3]>, AdamBatch<Self>> {
        #[cfg(feature = "cuda")]
        {
            use crate::cube::conv::cuda::{from_cuda, is_cuda, to_cuda};
            let Some(first) = batch.updates.first() else { return Ok(Vec::new()) };
            if !is_cuda::<R>() || !batch.one_call_takes() {
                return Err(batch);
            }
            let Ok(kernels) = PROGRAM.kernels(to_cuda(first.param.clone()).device.index) else { return Err(batch) };
            let updates = batch
                .updates
                .into_iter()
                .map(|u| cube::Update { p: to_cuda(u.param), g: to_cuda(u.grad), moments: u.moments.map(|m| m.map(to_cuda)), step: u.step })
                .collect();
            Ok(cube::steps(kernels, updates, batch.gate.map(to_cuda)).into_iter().map(|out| out.map(from_cuda)).collect())
        }
        #[cfg(not(feature = "cuda"))]
        Err(batch)
    }
}

/// Fusion: the inner backend's kernel as one custom operation for all the updates, where it has
/// one ([`AdamBackend::adam_kernel`]) and the tensors are f32 of one shape per parameter.
#[cfg(feature = "cubecl")]
impl<B: burn_fusion::FusionBackend + AdamBackend> AdamBackend for burn_fusion::Fusion<B> {
    fn adam_kernel() -> bool {
        B::adam_kernel()
    }

    fn adam_steps(batch: AdamBatch<Self>) -> Result<Vec<[FloatTensor<Self>; 3]>, AdamBatch<Self>> {
        if batch.updates.is_empty() {
            return Ok(Vec::new());
        }
        // (one operation runs on one device: its client's)
        if !B::adam_kernel() || !batch.one_call_takes() {
            return Err(batch);
        }
        Ok(fusion::register::<B>(batch))
    }
}

/// The Fusion custom operation of [`AdamBackend::adam_steps`].
#[cfg(feature = "cubecl")]
mod fusion {
    use burn::tensor::DType;
    use burn::tensor::ops::FloatTensor;
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

    use super::{AdamBackend, AdamBatch, AdamStep, AdamUpdate};

    /// The updates' inputs in order (param, grad, then the moments if any, per update), then the
    /// gate if any, and three outputs per update.
    #[derive(Clone, Debug)]
    struct AdamOp<B> {
        desc: CustomOpIr,
        /// Each update's step, and whether it has moments.
        steps: Vec<(AdamStep, bool)>,
        gated: bool,
        _b: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + AdamBackend> Operation<B::FusionRuntime> for AdamOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let mut inputs = self.desc.inputs.iter().map(|t| handles.get_float_tensor::<B>(t));
            let mut next = || inputs.next().expect("the operation's inputs, as registered");
            let updates: Vec<AdamUpdate<B>> = self
                .steps
                .iter()
                .map(|&(step, has_moments)| AdamUpdate { param: next(), grad: next(), moments: has_moments.then(|| [next(), next()]), step })
                .collect();
            let gate = self.gated.then(next);
            let outs = B::adam_steps(AdamBatch { updates, gate })
                .unwrap_or_else(|_| panic!("Adam kernel: the backend declined tensors it declared it takes ({:?})", self.desc));
            for (desc, out) in self.desc.outputs.iter().zip(outs.into_iter().flatten()) {
                handles.register_float_tensor::<B>(&desc.id, out);
            }
        }
    }

    /// Registers the batch as one operation: `[param, moment_1, moment_2]` per update, f32 of its
    /// parameter's shape.
    pub(super) fn register<B: FusionBackend + AdamBackend>(batch: AdamBatch<Fusion<B>>) -> Vec<[FloatTensor<Fusion<B>>; 3]> {
        let AdamBatch { updates, gate } = batch;
        let gated = gate.is_some();
        let client = updates[0].param.client.clone();
        let steps = updates.iter().map(|u| (u.step, u.moments.is_some())).collect();
        let outs: Vec<_> = updates
            .iter()
            .flat_map(|u| [(); 3].map(|_| TensorIr::uninit(client.create_empty_handle(), u.param.shape.clone(), DType::F32)))
            .collect();
        let inputs: Vec<FloatTensor<Fusion<B>>> = updates
            .into_iter()
            .flat_map(|u| [u.param, u.grad].into_iter().chain(u.moments.into_iter().flatten()))
            .chain(gate)
            .collect();
        let streams = OperationStreams::with_inputs(inputs.iter());
        let inputs: Vec<_> = inputs.into_iter().map(|t| t.into_ir()).collect();
        let desc = CustomOpIr::new("vsr_adam", &inputs, &outs);
        let outs = client.register(streams, OperationIr::Custom(desc.clone()), AdamOp::<B> { desc, steps, gated, _b: core::marker::PhantomData });
        let mut outs = outs.into_iter();
        std::iter::from_fn(|| Some([outs.next()?, outs.next()?, outs.next()?])).collect()
    }
}

/// `adam.cu` on the CUDA (CubeCL) backend's buffers, launched on the stream of CubeCL's queue from
/// its device thread (as `crate::cube::own_conv`'s kernels): one launch per parameter, all in one
/// call there. Measured on an H100 (fp16 training step, batch 3): Burn's `Adam` took 1.3-1.5 ms a
/// step, issued after the loss is read back; one call per parameter 0.74-1.39 ms.
#[cfg(feature = "cuda")]
mod cube {
    use burn::tensor::DType;
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::cuda::CudaRuntime;

    use super::{AdamStep, PROGRAM, THREADS};
    use crate::cube::cudnn::on_device_thread;
    use crate::cube::own_conv::pointers;
    use crate::nvrtc::{Arg, Kernels};
    use std::sync::Arc;

    type Tensor = CubeTensor<CudaRuntime>;

    /// One parameter's update: f32 tensors of one shape on one device.
    pub(super) struct Update {
        pub p: Tensor,
        pub g: Tensor,
        pub moments: Option<[Tensor; 2]>,
        pub step: AdamStep,
    }

    /// Whether the kernel loads (on device 0; NVRTC and the driver are the process's).
    pub(super) fn available() -> bool {
        PROGRAM.kernels(0).is_ok()
    }

    /// `[param, moment_1, moment_2]` after each update's step (skipped where `gate` is not finite).
    pub(super) fn steps(kernels: Arc<Kernels>, updates: Vec<Update>, gate: Option<Tensor>) -> Vec<[Tensor; 3]> {
        let client = updates[0].p.client.clone();
        on_device_thread(&client, move || {
            let gate = gate.map(|g| if g.is_contiguous() { g } else { burn_cubecl::kernel::into_contiguous(g) });
            let gate = gate.as_ref().map(crate::cube::cudnn::ptr);
            let gate_ptr = gate.as_ref().map_or(0, |g| g.0);
            updates.into_iter().map(|u| launch(&kernels, u, gate_ptr)).collect()
        })
    }

    /// One update's launch, on CubeCL's device thread; `gate`: the gate's pointer or 0.
    fn launch(kernels: &Kernels, Update { p, g, moments, step }: Update, gate: u64) -> [Tensor; 3] {
        let c = |t: Tensor| if t.is_contiguous() { t } else { burn_cubecl::kernel::into_contiguous(t) };
        let (p, g) = (c(p), c(g));
        let first = moments.is_none();
        // (not read on the first step)
        let [m, v] = moments.map_or_else(|| [p.clone(), p.clone()], |m| m.map(c));
        let n = p.meta.shape().num_elements();
        let new = || {
            let handle = p.client.empty((n * 4).max(4));
            Tensor::new_contiguous(p.client.clone(), p.device.clone(), p.meta.shape().clone(), handle, DType::F32)
        };
        let (po, mo, vo) = (new(), new(), new());
        let ([pp, pg, pm, pv, ppo, pmo, pvo], stream, _guards) = pointers([&p, &g, &m, &v, &po, &mo, &vo]);
        let (cf, ec) = step.factors();
        let blocks = (n as u64).div_ceil(THREADS as u64).clamp(1, 65535 * 4) as u32;
        // SAFETY: CubeCL's stream of these contiguous f32 buffers of n values, kept (guards)
        // until the launch is queued; the arguments as the LibTorch path passes them.
        unsafe {
            kernels.launch_on(stream, (THREADS, 1, 1), "adam_f32", (blocks, 1, 1), 0, &[
                Arg::Ptr(pp), Arg::Ptr(pg), Arg::Ptr(pm), Arg::Ptr(pv), Arg::Ptr(ppo), Arg::Ptr(pmo), Arg::Ptr(pvo),
                Arg::I64(n as i64), Arg::F32(step.lr), Arg::F32(step.beta1), Arg::F32(step.beta2), Arg::F32(cf),
                Arg::F32(ec), Arg::F32(step.weight_decay), Arg::Ptr(gate), Arg::I32(first as i32),
            ]);
        }
        [po, mo, vo]
    }
}

#[cfg(feature = "tch")]
mod libtorch {
    use burn::backend::LibTorch;
    use burn::backend::libtorch::TchTensor;
    use burn::tensor::backend::Backend;
    use tch::{Device, Kind, Tensor};

    use super::{AdamBackend, AdamBatch, AdamUpdate, PROGRAM, THREADS};
    use crate::nvrtc::{Arg, Kernels, TchKernels, ptr, tch_kernels};

    impl<E> AdamBackend for LibTorch<E>
    where
        LibTorch<E>: Backend<FloatTensorPrimitive = TchTensor>,
    {
        /// `adam.cu` for f32 CUDA tensors of one shape per parameter ([`crate::adam`]), one launch
        /// each (LibTorch's launches are direct calls: nothing to gain from batching them).
        fn adam_steps(batch: AdamBatch<Self>) -> Result<Vec<[TchTensor; 3]>, AdamBatch<Self>> {
            let Some(first) = batch.updates.first() else { return Ok(Vec::new()) };
            let Device::Cuda(device) = first.param.tensor.device() else { return Err(batch) };
            if tch_kernels() != TchKernels::Own || !batch.one_call_takes() {
                return Err(batch);
            }
            let Ok(kernels) = PROGRAM.kernels(device) else { return Err(batch) };
            let gate = batch.gate.as_ref().map(|g| g.tensor.contiguous());
            let gate_ptr = gate.as_ref().map_or(Arg::Ptr(0), ptr);
            Ok(batch.updates.iter().map(|u| launch(&kernels, device, u, gate_ptr)).collect())
        }
    }

    /// One update's launch on LibTorch's current stream.
    fn launch<B: Backend<FloatTensorPrimitive = TchTensor>>(kernels: &Kernels, device: usize, u: &AdamUpdate<B>, gate: Arg) -> [TchTensor; 3] {
        let AdamUpdate { param, grad, moments, step } = u;
        let (p, g) = (&param.tensor, &grad.tensor);
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
            gate,
            Arg::I32(moments.is_none() as i32),
        ]);
        [po, mo, vo].map(TchTensor::new)
    }
}
