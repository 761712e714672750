//! Adam's update of one parameter in one pass where the backend has a kernel for it
//! ([`AdamBackend`]): on LibTorch's CUDA f32 tensors and the CUDA (CubeCL) backend's f32 buffers,
//! `adam.cu` (compiled and launched as [`crate::nvrtc`] says; on CubeCL also as a Fusion custom
//! operation); elsewhere `None`, and the caller runs Burn's `Adam`.
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
    /// Whether [`AdamBackend::adam_step`] runs a kernel for f32 tensors of this backend's devices
    /// (`Fusion<B>` registers its operation only then).
    fn adam_kernel() -> bool {
        false
    }

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

    fn adam_step(
        param: &FloatTensor<Self>,
        grad: &FloatTensor<Self>,
        moments: Option<[&FloatTensor<Self>; 2]>,
        step: AdamStep,
    ) -> Option<[FloatTensor<Self>; 3]> {
        #[cfg(feature = "cuda")]
        {
            use crate::cube::conv::cuda::{from_cuda, is_cuda, to_cuda};
            if !is_cuda::<R>() {
                return None;
            }
            let moments = moments.map(|[m, v]| [to_cuda(m.clone()), to_cuda(v.clone())]);
            let out = cube::step(to_cuda(param.clone()), to_cuda(grad.clone()), moments, step)?;
            Some(out.map(from_cuda))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (param, grad, moments, step);
            None
        }
    }
}

/// Fusion: the inner backend's kernel as a custom operation, where it has one
/// ([`AdamBackend::adam_kernel`]) and the tensors are f32 of one shape.
#[cfg(feature = "cubecl")]
impl<B: burn_fusion::FusionBackend + AdamBackend> AdamBackend for burn_fusion::Fusion<B> {
    fn adam_kernel() -> bool {
        B::adam_kernel()
    }

    fn adam_step(
        param: &FloatTensor<Self>,
        grad: &FloatTensor<Self>,
        moments: Option<[&FloatTensor<Self>; 2]>,
        step: AdamStep,
    ) -> Option<[FloatTensor<Self>; 3]> {
        use burn::tensor::DType;
        let same = |t: &FloatTensor<Self>| t.dtype == DType::F32 && t.shape == param.shape;
        if !B::adam_kernel() || !same(param) || !same(grad) || moments.is_some_and(|m| !m.iter().all(|t| same(t))) {
            return None;
        }
        let mut inputs = vec![param.clone(), grad.clone()];
        inputs.extend(moments.into_iter().flatten().cloned());
        Some(fusion::register::<B>(inputs, step))
    }
}

/// The Fusion custom operation of [`AdamBackend::adam_step`].
#[cfg(feature = "cubecl")]
mod fusion {
    use burn::tensor::DType;
    use burn::tensor::ops::FloatTensor;
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

    use super::{AdamBackend, AdamStep};

    #[derive(Clone, Debug)]
    struct AdamOp<B> {
        desc: CustomOpIr,
        step: AdamStep,
        _b: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + AdamBackend> Operation<B::FusionRuntime> for AdamOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let t: Vec<_> = self.desc.inputs.iter().map(|t| handles.get_float_tensor::<B>(t)).collect();
            let moments = (t.len() == 4).then(|| [&t[2], &t[3]]);
            let outs = B::adam_step(&t[0], &t[1], moments, self.step)
                .unwrap_or_else(|| panic!("Adam kernel: the backend declined tensors it declared it takes ({:?})", self.desc));
            for (desc, out) in self.desc.outputs.iter().zip(outs) {
                handles.register_float_tensor::<B>(&desc.id, out);
            }
        }
    }

    /// Registers the update of `inputs` (param, grad, then the moments if any): `[param,
    /// moment_1, moment_2]`, f32 of the parameter's shape.
    pub(super) fn register<B: FusionBackend + AdamBackend>(inputs: Vec<FloatTensor<Fusion<B>>>, step: AdamStep) -> [FloatTensor<Fusion<B>>; 3] {
        let client = inputs[0].client.clone();
        let shape = inputs[0].shape.clone();
        let streams = OperationStreams::with_inputs(inputs.iter());
        let outs: Vec<_> = (0..3).map(|_| TensorIr::uninit(client.create_empty_handle(), shape.clone(), DType::F32)).collect();
        let inputs: Vec<_> = inputs.into_iter().map(|t| t.into_ir()).collect();
        let desc = CustomOpIr::new("vsr_adam", &inputs, &outs);
        let outs = client.register(streams, OperationIr::Custom(desc.clone()), AdamOp::<B> { desc, step, _b: core::marker::PhantomData });
        <[_; 3]>::try_from(outs).unwrap_or_else(|_| unreachable!("three outputs registered"))
    }
}

/// `adam.cu` on the CUDA (CubeCL) backend's buffers, launched on the stream of CubeCL's queue from
/// its device thread (as `crate::cube::own_conv`'s kernels). Measured on an H100 (fp16 training
/// step, batch 3): Burn's `Adam` took 1.3-1.5 ms a step, issued after the loss is read back.
#[cfg(feature = "cuda")]
mod cube {
    use burn::tensor::DType;
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::cuda::CudaRuntime;

    use super::{AdamStep, PROGRAM, THREADS};
    use crate::cube::cudnn::on_device_thread;
    use crate::cube::own_conv::pointers;
    use crate::nvrtc::Arg;

    type Tensor = CubeTensor<CudaRuntime>;

    /// Whether the kernel loads (on device 0; NVRTC and the driver are the process's).
    pub(super) fn available() -> bool {
        PROGRAM.kernels(0).is_ok()
    }

    /// `[param, moment_1, moment_2]` after one step, or `None` where the tensors are not f32 of
    /// one shape or the kernel does not load.
    pub(super) fn step(p: Tensor, g: Tensor, moments: Option<[Tensor; 2]>, step: AdamStep) -> Option<[Tensor; 3]> {
        let same = |t: &Tensor| t.dtype == DType::F32 && t.meta.shape() == p.meta.shape();
        if !same(&p) || !same(&g) || moments.as_ref().is_some_and(|m| !m.iter().all(same)) {
            return None;
        }
        let kernels = PROGRAM.kernels(p.device.index).ok()?;
        let client = p.client.clone();
        Some(on_device_thread(&client, move || {
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
                    Arg::F32(ec), Arg::F32(step.weight_decay), Arg::I32(first as i32),
                ]);
            }
            [po, mo, vo]
        }))
    }
}

#[cfg(feature = "tch")]
mod libtorch {
    use burn::backend::LibTorch;
    use burn::backend::libtorch::TchTensor;
    use burn::tensor::backend::Backend;
    use tch::{Device, Kind, Tensor};

    use super::{AdamBackend, AdamStep, PROGRAM, THREADS};
    use crate::nvrtc::{Arg, TchKernels, ptr, tch_kernels};

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
