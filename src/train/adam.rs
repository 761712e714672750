//! The optimiser: Adam with L2 weight decay (PyTorch's `torch.optim.Adam`, as the original
//! trains). Each step gathers every parameter's update and issues them together: in kernels of
//! the backend's where it has them (`vsr_kernels::adam`: LibTorch's CUDA, and the CUDA backend,
//! where all of VSRNet's updates are one operation), else Burn's `Adam` per parameter. The values
//! and the state are the same either way, so that checkpoints do not depend on which ran.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::{GradAdaptor, OptimizerAdaptor};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, GradientsParams, LearningRate, MultiGradientsParams, Optimizer,
    SimpleOptimizer,
};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata, TensorPrimitive};
use vsr_kernels::adam::{AdamBackend, AdamBatch, AdamStep, AdamUpdate};

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
    pub fn init<B: AutodiffBackend<InnerBackend: AdamBackend>>(&self) -> VsrOptimizer<B> {
        let burn = AdamConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(self.epsilon)
            .with_weight_decay((self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay)))
            .build();
        VsrOptimizer { adam: VsrAdam { burn, settings: *self }, records: Default::default(), before_gated: None }
    }

    /// The settings of a step at learning rate `lr`, after `previous` steps (`None`: the first).
    fn step(&self, lr: LearningRate, previous: Option<usize>) -> AdamStep {
        AdamStep {
            lr: lr as f32,
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay.max(0.0),
            time: previous.map_or(1, |t| t + 1),
        }
    }
}

/// Its state, as saved in checkpoints: Burn's `AdamState` (moments and step count) per parameter,
/// in the record of Burn's `OptimizerAdaptor` (which earlier versions stepped with: their
/// checkpoints load).
pub type OptimizerRecord<B> = <OptimizerAdaptor<VsrAdam, VsrNet<B>, B> as Optimizer<VsrNet<B>, B>>::Record;

/// Adam over VSRNet's parameters, all of a step's updates issued together
/// ([`AdamBackend::adam_steps`]). Burn's `OptimizerAdaptor` updates one parameter at a time: on the
/// CUDA backend each was a Fusion operation and a hop to CubeCL's device thread, for 27 us of
/// kernels in all (H100, fp16; the update alone, synchronised: 1.08-1.28 ms, 0.71 ms as one
/// operation on the same machine).
#[derive(Clone)]
pub struct VsrOptimizer<B: AutodiffBackend<InnerBackend: AdamBackend>> {
    adam: VsrAdam,
    records: OptimizerRecord<B>,
    /// The records before a gated step ([`VsrOptimizer::step_gated`]) whose outcome is not known
    /// yet ([`VsrOptimizer::resolve`]).
    before_gated: Option<OptimizerRecord<B>>,
}

impl<B: AutodiffBackend<InnerBackend: AdamBackend>> VsrOptimizer<B> {
    /// A step that the device skips where `gate` (one f32) is not finite: every parameter and
    /// moment stays as it was, without the host reading `gate` first (on backends without the
    /// kernels, it is read here). The step counts are recorded as if it was applied until
    /// [`VsrOptimizer::resolve`] says whether it was, which must come before the next step.
    pub fn step_gated(&mut self, lr: LearningRate, module: VsrNet<B>, grads: GradientsParams, gate: Tensor<B::InnerBackend, 1>) -> VsrNet<B> {
        assert!(self.before_gated.is_none(), "a gated step's outcome must be resolved before the next step");
        self.before_gated = Some(self.records.clone());
        self.update(lr, module, grads.into(), Some(gate.into_primitive().tensor()))
    }

    /// Whether the last gated step was applied (its gate finite): if not, its step counts and
    /// moments are undone (the device left the values as they were).
    pub fn resolve(&mut self, applied: bool) {
        if let Some(before) = self.before_gated.take()
            && !applied
        {
            self.records = before;
        }
    }

    fn update(&mut self, lr: LearningRate, module: VsrNet<B>, mut grads: GradAdaptor, gate: Option<FloatTensor<B::InnerBackend>>) -> VsrNet<B> {
        let mut gather = Gather::<B> { adam: &self.adam, lr, grads: &mut grads, records: &mut self.records, ids: Vec::new(), updates: Vec::new() };
        module.visit(&mut gather);
        let (ids, updates) = (gather.ids, gather.updates);
        let times: Vec<usize> = updates.iter().map(|u| u.step.time).collect();
        let outs = self.adam.apply(lr, AdamBatch { updates, gate });
        let new = ids.into_iter().zip(outs.into_iter().zip(times)).collect();
        module.map(&mut Write::<B> { new, records: &mut self.records })
    }
}

impl<B: AutodiffBackend<InnerBackend: AdamBackend>> Optimizer<VsrNet<B>, B> for VsrOptimizer<B> {
    type Record = OptimizerRecord<B>;

    fn step(&mut self, lr: LearningRate, module: VsrNet<B>, grads: GradientsParams) -> VsrNet<B> {
        self.update(lr, module, grads.into(), None)
    }

    fn step_multi(&mut self, lr: LearningRate, module: VsrNet<B>, grads: MultiGradientsParams) -> VsrNet<B> {
        self.update(lr, module, grads.into(), None)
    }

    fn to_record(&self) -> Self::Record {
        debug_assert!(self.before_gated.is_none(), "the record of a step whose outcome is not resolved");
        self.records.clone()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.records = record;
        self.before_gated = None;
        self
    }
}

/// Collects the update of every parameter that has a gradient, in the module's order, taking its
/// state out of the records.
struct Gather<'a, B: AutodiffBackend<InnerBackend: AdamBackend>> {
    adam: &'a VsrAdam,
    lr: LearningRate,
    grads: &'a mut GradAdaptor,
    records: &'a mut OptimizerRecord<B>,
    ids: Vec<ParamId>,
    updates: Vec<AdamUpdate<B::InnerBackend>>,
}

impl<B: AutodiffBackend<InnerBackend: AdamBackend>> ModuleVisitor<B> for Gather<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((grad, device)) = self.grads.remove::<B::InnerBackend, D>(param.id) else { return };
        let tensor = param.val().inner().to_device(&device);
        let state = self.records.remove(&param.id).map(|r| <VsrAdam as SimpleOptimizer<B::InnerBackend>>::to_device(r.into_state::<D>(), &device));
        let previous = state.map(|s| s.momentum);
        let prim = |t: Tensor<B::InnerBackend, D>| t.into_primitive().tensor();
        self.ids.push(param.id);
        self.updates.push(AdamUpdate {
            step: self.adam.settings.step(self.lr, previous.as_ref().map(|m| m.time)),
            param: prim(tensor),
            grad: prim(grad),
            moments: previous.map(|m| [prim(m.moment_1), prim(m.moment_2)]),
        });
    }
}

/// Sets every updated parameter (keeping whether it requires a gradient) and records its state.
struct Write<'a, B: AutodiffBackend<InnerBackend: AdamBackend>> {
    /// `[param, moment_1, moment_2]` and the step count, per parameter.
    new: HashMap<ParamId, ([FloatTensor<B::InnerBackend>; 3], usize)>,
    records: &'a mut OptimizerRecord<B>,
}

impl<B: AutodiffBackend<InnerBackend: AdamBackend>> ModuleMapper<B> for Write<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(([p, m, v], time)) = self.new.remove(&param.id) else { return param };
        let (id, tensor, mapper) = param.consume();
        let inner = |t| Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(t));
        self.records.insert(id, AdaptorRecord::from_state(AdamState::new(AdaptiveMomentumState::new(time, inner(m), inner(v)))));
        let mut updated = Tensor::from_inner(inner(p));
        if tensor.is_require_grad() {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// Adam with L2 weight decay: the backend's kernels where it has them, else Burn's `Adam`; both
/// keep Burn's `AdamState`. (As Burn's `SimpleOptimizer`, it names the state of the record.)
#[derive(Clone)]
pub struct VsrAdam {
    burn: Adam,
    settings: AdamSettings,
}

impl VsrAdam {
    /// `[param, moment_1, moment_2]` after each update: all in the backend's kernels if it takes
    /// them, else each by Burn's `Adam` (element-wise: on the flattened tensors). A gated batch
    /// whose gate is not finite: the values as they were (the first step's moments 0), as the
    /// kernels leave them; where they do not run, the gate is read here.
    fn apply<B: AdamBackend>(&self, lr: LearningRate, batch: AdamBatch<B>) -> Vec<[FloatTensor<B>; 3]> {
        let AdamBatch { updates, gate } = match B::adam_steps(batch) {
            Ok(outs) => return outs,
            Err(batch) => batch,
        };
        let skip = gate.is_some_and(|g| vsr_kernels::readback::PendingValues::now::<B>(g).wait().is_ok_and(|v| !v[0].is_finite()));
        if skip {
            return updates
                .into_iter()
                .map(|u| {
                    let [m, v] = u.moments.unwrap_or_else(|| [(); 2].map(|_| B::float_zeros(u.param.shape(), &B::float_device(&u.param), burn::tensor::FloatDType::F32)));
                    [u.param, m, v]
                })
                .collect();
        }
        updates.into_iter().map(|u| self.burn_step(lr, u)).collect()
    }

    fn burn_step<B: AdamBackend>(&self, lr: LearningRate, u: AdamUpdate<B>) -> [FloatTensor<B>; 3] {
        let shape = u.param.shape();
        let flat = |t: FloatTensor<B>| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::float_reshape(t, Shape::new([shape.num_elements()]))));
        let back = |t: Tensor<B, 1>| B::float_reshape(t.into_primitive().tensor(), shape.clone());
        let state = u.moments.map(|[m, v]| AdamState::new(AdaptiveMomentumState::new(u.step.time - 1, flat(m), flat(v))));
        let (p, state) = self.burn.step(lr, flat(u.param), flat(u.grad), state);
        let m = state.expect("Adam keeps a state").momentum;
        debug_assert_eq!(m.time, u.step.time, "Burn's step count");
        [back(p), back(m.moment_1), back(m.moment_2)]
    }
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
        let previous = state.map(|s| s.momentum);
        let step = self.settings.step(lr, previous.as_ref().map(|m| m.time));
        let prim = |t: Tensor<B, D>| t.into_primitive().tensor();
        let update = AdamUpdate::<B> { param: prim(tensor), grad: prim(grad), moments: previous.map(|m| [prim(m.moment_1), prim(m.moment_2)]), step };
        let [p, m, v] = self.apply(lr, AdamBatch::new(vec![update])).pop().expect("one update, one result");
        let t = |x| Tensor::<B, D>::from_primitive(TensorPrimitive::Float(x));
        (t(p), Some(AdamState::new(AdaptiveMomentumState::new(step.time, t(m), t(v)))))
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
    /// same way, every parameter to the bit (on the CPU, where the backend declines the updates
    /// and ours runs Burn's on each: this checks the gathering of the updates and their writing
    /// back, the settings, the step count and the state it keeps, which checkpoints save; the GPU
    /// kernels are held against Burn's by vsr-kernels' `own_adam_matches_burn` and `adam`).
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

        // The record is Burn's `OptimizerAdaptor`'s (which earlier versions stepped with): a fourth
        // step from it by the adaptor equals ours, and ours from the adaptor's record equals both.
        let mut adaptor = OptimizerAdaptor::<VsrAdam, VsrNet<A>, A>::from(ours.adam.clone()).load_record(record);
        let mut reloaded = settings.init::<A>().load_record(adaptor.to_record());
        let x = Tensor::<A, 5>::random([1, 3, 3, 16, 16], Distribution::Uniform(0.0, 255.0), &device);
        let grads = |m: &VsrNet<A>| {
            let out = m.forward(x.clone(), None);
            GradientsParams::from_grads(crate::model::vsrnet::mse(out.pred, out.target).backward(), m)
        };
        let next = [ours.step(4e-3, a.clone(), grads(&a)), adaptor.step(4e-3, a.clone(), grads(&a)), reloaded.step(4e-3, a.clone(), grads(&a))];
        let [p0, p1, p2] = next.each_ref().map(params);
        for ((x, y), z) in p0.iter().zip(&p1).zip(&p2) {
            x.assert_eq(y, true);
            x.assert_eq(z, true);
        }
    }
}
