//! One optimisation step: VSRNet forward (frozen FlowNetSD for the flow), MSE against the true
//! HR frame, backward, (fp16: unscale and check the gradients), Adam with weight decay.
//!
//! Steps are queued back to back ([`Trainer::queue`]): the step's check (its loss and, in fp16,
//! whether any gradient overflowed) gates the update on the device (the Adam kernels skip a step
//! whose check is not finite) and is copied to the host in the background; the host reads it
//! during the next step, after that step's forward is queued, and only then decides what the
//! check decides on the host (the loss scale for the next backward, the step counts, an fp32
//! error). The host never waits for the GPU to drain, so it queues a step while the GPU still runs
//! the previous one. The decisions are those of a step that read its check at once (PyTorch's
//! GradScaler with a fused Adam takes its `found_inf` on the device the same way).

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{DType, Tensor};
use burn::tensor::backend::AutodiffBackend;

use super::LossScaler;
use vsr_kernels::readback::{PendingValues, ReadbackBackend};
use super::adam::{AdamSettings, VsrOptimizer};
use super::collective::{self, GradSync};
use crate::backend::VsrAutodiffBackend;
use crate::error::{Error, Result};
use crate::model::vsrnet::mse;
use crate::model::{FlowEstimator, FlowNetSD, Frozen, VsrNet};
use crate::precision::Precision;

/// What a step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The (unscaled) training loss.
    pub loss: f64,
    /// Whether the update was applied (fp16: not when the gradients overflowed).
    pub applied: bool,
    /// Loss scale used for this step (1 in fp32).
    pub scale: f64,
}

/// The trainable model, its frozen flow network and the optimiser state.
pub struct Trainer<B: VsrAutodiffBackend> {
    pub model: VsrNet<B>,
    pub optim: VsrOptimizer<B>,
    pub flownet: Option<Frozen<FlowNetSD<B::InnerBackend>>>,
    pub scaler: LossScaler,
    pub precision: Precision,
    /// Data-parallel training: this worker's end of the gradient all-reduce; `None`: one device.
    pub sync: Option<GradSync>,
    /// The last queued step, until [`Trainer::settle`] reads its outcome.
    pending: Option<Pending>,
}

/// A queued step whose outcome the host has not read yet.
enum Pending {
    /// Its check (`[loss, sum of |g|]` in fp16, `[loss]` in fp32) on its way to the host, and the
    /// loss scale it used.
    Check(PendingValues, f64),
    /// A step that read its outcome at once (data-parallel).
    Known(StepOutcome),
}

impl<B: VsrAutodiffBackend> Trainer<B> {
    /// A trainer for `model` (its weights in fp32: the master weights) and an optional FlowNetSD,
    /// converted once to the compute precision.
    pub fn new(model: VsrNet<B>, flownet: Option<FlowNetSD<B::InnerBackend>>, precision: Precision, adam: AdamSettings) -> Self {
        let mut model = model;
        model.precision = precision;
        let flownet = flownet.map(|net| Frozen(net.for_inference(precision.dtype())));
        let scaler = LossScaler::for_precision(precision);
        Self { model, optim: adam.init(), flownet, scaler, precision, sync: None, pending: None }
    }

    fn flow(&self) -> Option<&dyn FlowEstimator<B>> {
        self.flownet.as_ref().map(|f| f as &dyn FlowEstimator<B>)
    }

    /// Precise BatchNorm statistics (as detectron2's PreciseBN): replaces VSRNet's running mean
    /// and variance by the average of the batch statistics of `batches` (B, 3, F, H, W), each
    /// forwarded as in training with the current weights. The running averages that training
    /// keeps (momentum 0.1) mix statistics of weights that have since moved; at a high learning
    /// rate validation then sees activations shifted from what the network was trained on.
    /// Weights, gradients and the optimiser are untouched. Returns the number of batches used.
    pub fn recalibrate_batch_norm(&self, batches: impl IntoIterator<Item = Result<Tensor<B, 5>>>) -> Result<usize> {
        // A clone shares the running statistics (Burn's RunningState), not the momentum. Without
        // gradients: the forward records no autodiff graph (Burn frees one only in a backward, so
        // N recorded forwards would hold N batches of activations), and BatchNorm still runs in
        // training mode (batch statistics) under the autodiff backend.
        let mut model = self.model.clone().no_grad();
        let mut n = 0;
        for x in batches {
            let x = x?;
            n += 1;
            // The n-th batch enters with weight 1/n: a plain average, the old statistics gone.
            for bn in model.batch_norms_mut() {
                if n == 1 {
                    // Zero mean and unit variance first: momentum 1 still multiplies the old
                    // value by 0, and 0 * NaN is NaN.
                    let (mean, var) = (bn.running_mean.value_sync(), bn.running_var.value_sync());
                    bn.running_mean.update(mean.zeros_like());
                    bn.running_var.update(var.ones_like());
                }
                bn.momentum = 1.0 / n as f64;
            }
            drop(model.forward(x, self.flow()));
        }
        Ok(n)
    }

    /// One step on a batch `x` (B, 3, F, H, W) of RGB windows in [0, 255], at learning rate `lr`.
    ///
    /// fp32: a non-finite loss is an error (the weights are left as they were). fp16: the loss is
    /// multiplied by the scale before the backward pass, the gradients are divided by it; if any
    /// is inf/NaN the step is skipped and the scale halved ([`LossScaler`]).
    ///
    /// With [`Trainer::sync`] (data-parallel), `x` is this worker's share of the batch and the
    /// step is [`Trainer::step_micro`]'s with one micro-batch.
    pub fn step(&mut self, x: Tensor<B, 5>, lr: f64) -> Result<StepOutcome> {
        self.queue(x, lr)?;
        Ok(self.settle()?.expect("a step was queued"))
    }

    /// Queues a step on `x` at learning rate `lr` and returns the outcome of the step queued
    /// before it, if any (read now: its check was copied in the background). That outcome is the
    /// one [`Trainer::step`] would have returned; an error (fp32: a non-finite loss) is that
    /// step's, and this one is then not queued. Call [`Trainer::settle`] for the last step's, and
    /// before using the scaler or the optimiser's state (checkpoints).
    pub fn queue(&mut self, x: Tensor<B, 5>, lr: f64) -> Result<Option<StepOutcome>> {
        if self.sync.is_some() {
            let previous = self.settle()?;
            let (outcome, _) = self.step_micro(vec![x], lr, &[])?;
            self.pending = Some(Pending::Known(outcome));
            return Ok(previous);
        }
        let out = self.model.forward(x, self.flow());
        let loss = mse(out.pred, out.target);
        // The previous step's check, copied while this forward was queued: its outcome decides
        // this step's loss scale and Adam's step count.
        let previous = self.settle()?;
        let scale = self.scaler.scale;
        let scaled = if scale == 1.0 { loss.clone() } else { loss.clone() * scale };
        let grads = scaled.backward();
        let mut grads = GradientsParams::from_grads(grads, &self.model);
        // The check: the loss and, in fp16, the sum of |g| over the unscaled gradients (finite
        // iff every one is); its sum gates the update on the device.
        let mut check = vec![loss.inner().cast(DType::F32).reshape([1])];
        if self.precision == Precision::Fp16 {
            check.extend(unscale(&self.model, &mut grads, scale).map(|t| t.reshape([1])));
        }
        let check = Tensor::cat(check, 0);
        let gate = check.clone().sum();
        let values = <B::InnerBackend as ReadbackBackend>::read_later(check.into_primitive().tensor());
        let model = self.model.clone();
        self.model = self.optim.step_gated(lr, model, grads, gate);
        self.pending = Some(Pending::Check(values, scale));
        Ok(previous)
    }

    /// The outcome of the last queued step, read now (waiting for its check only, not for the
    /// work queued after it); `None` if there is none. Updates the loss scaler and resolves the
    /// optimiser's step counts; fp32: a non-finite loss is an error (the update was skipped on the
    /// device: the weights are those before that step).
    pub fn settle(&mut self) -> Result<Option<StepOutcome>> {
        let (values, scale) = match self.pending.take() {
            None => return Ok(None),
            Some(Pending::Known(outcome)) => return Ok(Some(outcome)),
            Some(Pending::Check(values, scale)) => (values, scale),
        };
        let values = values.wait().map_err(|e| Error::Invalid(format!("reading the step's loss back: {e}")))?;
        let loss_value = values[0] as f64;
        let finite = values.iter().all(|v| v.is_finite());
        if self.precision == Precision::Fp32 && !finite {
            self.optim.resolve(false);
            check_loss(loss_value)?;
        }
        let applied = self.scaler.update(finite);
        self.optim.resolve(applied);
        Ok(Some(StepOutcome { loss: loss_value, applied, scale }))
    }

    /// One step on the mean loss of several micro-batches, each with its own BatchNorm batch
    /// statistics (gradient accumulation), averaged with the other workers' when data-parallel
    /// ([`Trainer::sync`]). `signals` (e.g. a stop request) are averaged across workers with the
    /// gradients, in the same all-reduce, and returned.
    ///
    /// The gradients of the micro-batches and of the workers are summed as flat f32 buckets and
    /// divided by their number: N workers of one micro-batch each and one worker of N
    /// micro-batches compute the same sums. The overflow check (fp16) and the loss check (fp32)
    /// see the averaged values: every worker takes the same decision.
    pub fn step_micro(&mut self, micro: Vec<Tensor<B, 5>>, lr: f64, signals: &[f32]) -> Result<(StepOutcome, Vec<f32>)> {
        if micro.is_empty() {
            return Err(Error::Invalid("a training step needs at least one micro-batch".into()));
        }
        assert!(!matches!(self.pending, Some(Pending::Check(..))), "settle the queued step before a step of micro-batches");
        let scale = self.scaler.scale;
        let factor = (scale != 1.0).then(|| 1.0 / scale);
        let count = micro.len();
        let mut sum: Option<Tensor<B::InnerBackend, 1>> = None;
        let mut layout = Vec::new();
        let mut grads = GradientsParams::new();
        for x in micro {
            let out = self.model.forward(x, self.flow());
            let loss = mse(out.pred, out.target);
            let scaled = if scale == 1.0 { loss.clone() } else { loss.clone() * scale };
            grads = GradientsParams::from_grads(scaled.backward(), &self.model);
            let (mut parts, l) = collective::flatten::<B, _>(&self.model, &mut grads, factor);
            layout = l;
            parts.push(loss.inner().cast(DType::F32).reshape([1]));
            let bucket = Tensor::cat(parts, 0);
            sum = Some(match sum {
                Some(s) => s + bucket,
                None => bucket,
            });
        }
        let mut bucket = sum.expect("at least one micro-batch");
        if count > 1 {
            bucket = bucket.div_scalar(count as f32);
        }
        let n = collective::layout_len(&layout);
        let device = bucket.device();
        if !signals.is_empty() {
            bucket = Tensor::cat(vec![bucket, Tensor::from_floats(signals, &device)], 0);
        }
        if let Some(sync) = self.sync.as_mut() {
            bucket = sync.all_reduce_mean(bucket)?;
        }
        // One read-back: [sum of |g| (fp16), loss, signals...].
        let tail = bucket.clone().slice([n..n + 1 + signals.len()]);
        let check = match self.precision {
            Precision::Fp32 => tail,
            Precision::Fp16 => Tensor::cat(vec![bucket.clone().slice([0..n]).abs().sum(), tail], 0),
        };
        let values = read_back(check)?;
        let (grad_abs, rest) = match self.precision {
            Precision::Fp32 => (0.0, &values[..]),
            Precision::Fp16 => (values[0], &values[1..]),
        };
        let loss_value = rest[0] as f64;
        let signals = rest[1..].to_vec();
        let finite = match self.precision {
            Precision::Fp32 => {
                check_loss(loss_value)?;
                true
            }
            Precision::Fp16 => grad_abs.is_finite() && loss_value.is_finite(),
        };
        let applied = self.scaler.update(finite);
        if applied {
            collective::unflatten::<B, _>(&self.model, &mut grads, bucket, &layout);
            let model = self.model.clone();
            self.model = self.optim.step(lr, model, grads);
        }
        Ok((StepOutcome { loss: loss_value, applied, scale }, signals))
    }
}

/// fp32: a non-finite loss ends the run.
fn check_loss(loss: f64) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "the training loss is {loss} (fp32): the run diverged; lower --max-lr, or resume from the last good checkpoint"
    )))
}

/// The values of `t` on the host, read now.
fn read_back<B: burn::tensor::backend::Backend>(t: Tensor<B, 1>) -> Result<Vec<f32>> {
    PendingValues::now::<B>(t.into_primitive().tensor()).wait().map_err(|e| Error::Invalid(format!("reading the loss back: {e}")))
}

/// Divides every gradient of `model`'s parameters by `scale`; returns the sum of their absolute
/// values (f32, finite iff every gradient is), `None` where there are none.
fn unscale<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams, scale: f64) -> Option<Tensor<B::InnerBackend, 1>> {
    struct Unscale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        inv: f64,
        /// The unscaled gradients, flattened.
        flat: Vec<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let g = g.cast(DType::F32) * self.inv;
                self.flat.push(g.clone().reshape([-1]));
                self.grads.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    let mut v = Unscale::<B> { grads, inv: 1.0 / scale, flat: Vec::new() };
    model.visit(&mut v);
    // (one sum over all of them: three launches, not three per parameter)
    (!v.flat.is_empty()).then(|| Tensor::cat(v.flat, 0).abs().sum())
}
