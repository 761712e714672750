//! One optimisation step: VSRNet forward (frozen FlowNetSD for the flow), MSE against the true
//! HR frame, backward, (fp16: unscale and check the gradients), Adam with weight decay.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::LossScaler;
use crate::backend::VsrAutodiffBackend;
use crate::error::{Error, Result};
use crate::model::vsrnet::mse;
use crate::model::{FlowEstimator, FlowNetSD, Frozen, VsrNet};
use crate::precision::{Precision, cast_module};

/// Adam's settings (PyTorch's semantics: weight decay is an L2 term added to the gradient).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamSettings {
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Default for AdamSettings {
    /// The original's: betas (0.9, 0.999), eps 1e-8, weight decay 4e-4.
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 4e-4 }
    }
}

impl AdamSettings {
    fn config(&self) -> AdamConfig {
        AdamConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(self.epsilon)
            .with_weight_decay((self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay)))
    }
}

/// The Adam optimiser over VSRNet's parameters.
pub type VsrOptimizer<B> = OptimizerAdaptor<Adam, VsrNet<B>, B>;

/// Its state, as saved in checkpoints.
pub type OptimizerRecord<B> = <VsrOptimizer<B> as Optimizer<VsrNet<B>, B>>::Record;

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
}

impl<B: VsrAutodiffBackend> Trainer<B> {
    /// A trainer for `model` (its weights in fp32: the master weights) and an optional FlowNetSD,
    /// converted once to the compute precision.
    pub fn new(model: VsrNet<B>, flownet: Option<FlowNetSD<B::InnerBackend>>, precision: Precision, adam: AdamSettings) -> Self {
        let mut model = model;
        model.precision = precision;
        let flownet = flownet.map(|net| Frozen(cast_module(net, precision.dtype())));
        let scaler = match precision {
            Precision::Fp32 => LossScaler::disabled(),
            Precision::Fp16 => LossScaler::default(),
        };
        Self { model, optim: adam.config().init(), flownet, scaler, precision }
    }

    fn flow(&self) -> Option<&dyn FlowEstimator<B>> {
        self.flownet.as_ref().map(|f| f as &dyn FlowEstimator<B>)
    }

    /// One step on a batch `x` (B, 3, F, H, W) of RGB windows in [0, 255], at learning rate `lr`.
    ///
    /// fp32: a non-finite loss is an error (the weights are left as they were). fp16: the loss is
    /// multiplied by the scale before the backward pass, the gradients are divided by it; if any
    /// is inf/NaN the step is skipped and the scale halved ([`LossScaler`]).
    pub fn step(&mut self, x: Tensor<B, 5>, lr: f64) -> Result<StepOutcome> {
        let out = self.model.forward(x, self.flow());
        let loss = mse(out.pred, out.target);
        let scale = self.scaler.scale;
        let scaled = if scale == 1.0 { loss.clone() } else { loss.clone() * scale };
        let grads = scaled.backward();
        let mut grads = GradientsParams::from_grads(grads, &self.model);
        let loss_value: f64 = loss.into_scalar().to_string().parse().unwrap_or(f64::NAN);

        let finite = match self.precision {
            Precision::Fp32 => {
                if !loss_value.is_finite() {
                    return Err(Error::Invalid(format!(
                        "the training loss is {loss_value} (fp32): the run diverged; lower --max-lr, or resume from the last good checkpoint"
                    )));
                }
                true
            }
            Precision::Fp16 => unscale(&self.model, &mut grads, scale) && loss_value.is_finite(),
        };
        let applied = self.scaler.update(finite);
        if applied {
            let model = self.model.clone();
            self.model = self.optim.step(lr, model, grads);
        }
        Ok(StepOutcome { loss: loss_value, applied, scale })
    }
}

/// Divides every gradient of `model`'s parameters by `scale`; returns whether all are finite.
fn unscale<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams, scale: f64) -> bool {
    struct Unscale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        inv: f64,
        /// Sum of |g| over every gradient: finite iff every element is.
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let g = g.cast(burn::tensor::DType::F32) * self.inv;
                let s = g.clone().abs().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
                self.grads.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    let mut v = Unscale::<B> { grads, inv: 1.0 / scale, total: None };
    model.visit(&mut v);
    match v.total {
        Some(t) => t.into_scalar().to_string().parse::<f64>().is_ok_and(f64::is_finite),
        None => true,
    }
}
