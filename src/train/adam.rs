//! The optimiser: Adam with L2 weight decay (PyTorch's `torch.optim.Adam`, as the original
//! trains), Burn's `Adam` per parameter, or one kernel per parameter where the backend has one
//! (`vsr_kernels::adam`: LibTorch's CUDA), with the same values and the same state, so that
//! checkpoints do not depend on which ran.

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::{Tensor, TensorPrimitive};
use vsr_kernels::adam::{AdamBackend, AdamStep};

use crate::model::VsrNet;

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
    /// The optimiser over a VSRNet's parameters.
    pub fn init<B: burn::tensor::backend::AutodiffBackend<InnerBackend: AdamBackend>>(&self) -> VsrOptimizer<B> {
        let burn = AdamConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(self.epsilon)
            .with_weight_decay((self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay)))
            .build();
        OptimizerAdaptor::from(VsrAdam { burn, settings: *self })
    }
}

/// Adam over VSRNet's parameters.
pub type VsrOptimizer<B> = OptimizerAdaptor<VsrAdam, VsrNet<B>, B>;

/// Its state, as saved in checkpoints: Burn's `Adam` state per parameter (moments and step count).
pub type OptimizerRecord<B> = <VsrOptimizer<B> as burn::optim::Optimizer<VsrNet<B>, B>>::Record;

/// Adam with L2 weight decay: the backend's one-pass kernel where it has one
/// ([`AdamBackend::adam_step`]), else Burn's `Adam`; both keep Burn's `AdamState`.
#[derive(Clone)]
pub struct VsrAdam {
    burn: Adam,
    settings: AdamSettings,
}

impl<B: AdamBackend> SimpleOptimizer<B> for VsrAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let s = &self.settings;
        let previous = state.as_ref().map(|st| &st.momentum);
        let step = AdamStep {
            lr: lr as f32,
            beta1: s.beta1,
            beta2: s.beta2,
            epsilon: s.epsilon,
            weight_decay: s.weight_decay.max(0.0),
            time: previous.map_or(1, |m| m.time + 1),
        };
        let prim = |t: &Tensor<B, D>| t.clone().into_primitive().tensor();
        let moments = previous.map(|m| [prim(&m.moment_1), prim(&m.moment_2)]);
        let fused = B::adam_step(&prim(&tensor), &prim(&grad), moments.as_ref().map(|[m, v]| [m, v]), step);
        match fused {
            Some([p, m, v]) => {
                let t = |x| Tensor::<B, D>::from_primitive(TensorPrimitive::Float(x));
                (t(p), Some(AdamState::new(AdaptiveMomentumState::new(step.time, t(m), t(v)))))
            }
            None => self.burn.step(lr, tensor, grad, state),
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <Adam as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::GradientsParams;
    use burn::optim::Optimizer;
    use burn::tensor::Distribution;

    type A = burn::backend::Autodiff<burn::backend::Flex>;

    /// Three steps of our optimiser over a VSRNet equal three of Burn's `Adam` configured the
    /// same way, every parameter to the bit (on the CPU, where ours runs Burn's: this checks the
    /// settings, the step count and the state it keeps, which checkpoints save; the GPU kernel is
    /// held against Burn's by vsr-kernels' `own_adam_matches_burn`).
    #[test]
    fn equals_burn_adam() {
        let device = Default::default();
        let settings = AdamSettings::default();
        let model = crate::model::VsrNetConfig::new().init::<A>(&device);
        let mut ours = settings.init::<A>();
        let mut burn = AdamConfig::new()
            .with_beta_1(settings.beta1)
            .with_beta_2(settings.beta2)
            .with_epsilon(settings.epsilon)
            .with_weight_decay(Some(WeightDecayConfig::new(settings.weight_decay)))
            .init::<A, VsrNet<A>>();
        let (mut a, mut b) = (model.clone(), model);
        for i in 0..3 {
            let x = Tensor::<A, 5>::random([1, 3, 3, 16, 16], Distribution::Uniform(0.0, 255.0), &device);
            let grads = |m: &VsrNet<A>| {
                let out = m.forward(x.clone(), None);
                GradientsParams::from_grads(crate::model::vsrnet::mse(out.pred, out.target).backward(), m)
            };
            let lr = 1e-3 * (i + 1) as f64;
            let (ga, gb) = (grads(&a), grads(&b));
            a = ours.step(lr, a, ga);
            b = burn.step(lr, b, gb);
        }
        // every parameter (weights, biases, BatchNorm's gamma and beta), bit for bit
        let params = |m: &VsrNet<A>| {
            let mut v = Vec::new();
            for block in [&m.conv1, &m.conv2] {
                v.push(block.conv.weight.val().into_data());
                v.extend(block.conv.bias.as_ref().map(|p| p.val().into_data()));
                v.extend(block.bn.iter().flat_map(|bn| [bn.gamma.val().into_data(), bn.beta.val().into_data()]));
            }
            v.push(m.conv3.weight.val().into_data());
            v.extend(m.conv3.bias.as_ref().map(|p| p.val().into_data()));
            v
        };
        let (pa, pb) = (params(&a), params(&b));
        assert_eq!(pa.len(), 8, "VSRNet's 8 parameters");
        for (x, y) in pa.iter().zip(&pb) {
            x.assert_eq(y, true);
        }
        let record = ours.to_record();
        assert_eq!(record.len(), burn.to_record().len(), "one state per parameter");
    }
}
