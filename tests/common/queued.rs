//! `Trainer::queue` (steps back to back, each outcome read during the next step) against
//! `Trainer::step` (each outcome read at once): the same outcomes, loss scales, skips and weights.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use vsr::backend::VsrAutodiffBackend;
use vsr::model::{VsrNet, VsrNetConfig};
use vsr::precision::Precision;
use vsr::train::{AdamSettings, StepOutcome, Trainer};

/// Steps 2 and 4 have a NaN input: their loss and gradients are NaN, the update is skipped (on
/// CUDA backends by the Adam kernels on the device, before the host has read the check).
fn input<B: Backend>(device: &B::Device, i: u64) -> Tensor<B, 5> {
    B::seed(device, 100 + i);
    let x = Tensor::random([2, 3, 3, 64, 64], Distribution::Uniform(0.0, 255.0), device);
    if i == 2 || i == 4 { x.mul_scalar(f32::NAN) } else { x }
}

fn trainer<B: VsrAutodiffBackend>(device: &B::Device, precision: Precision) -> Trainer<B> {
    B::seed(device, 7);
    let mut t = Trainer::new(VsrNetConfig::new().init::<B>(device), None, precision, AdamSettings::default());
    if precision == Precision::Fp16 {
        t.scaler.scale = 256.0;
    }
    t
}

fn weights<B: VsrAutodiffBackend>(m: &VsrNet<B>) -> Vec<Vec<u32>> {
    let bits = |t: Tensor<B, 4>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let bits1 = |t: Tensor<B, 1>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let mut v = vec![bits(m.conv1.conv.weight.val()), bits(m.conv2.conv.weight.val()), bits(m.conv3.weight.val())];
    for block in [&m.conv1, &m.conv2] {
        v.extend(block.bn.iter().flat_map(|bn| [bits1(bn.gamma.val()), bits1(bn.beta.val())]));
    }
    v
}

fn same(a: &StepOutcome, b: &StepOutcome) -> bool {
    a.applied == b.applied && a.scale == b.scale && (a.loss.to_bits() == b.loss.to_bits() || (a.loss.is_nan() && b.loss.is_nan()))
}

/// fp16: six steps each way (two skipped), and a reference that never runs the NaN steps (its
/// scaler told they overflowed: the optimiser never sees them), then one more step each (which
/// shows any difference in Adam's step counts or moments): all equal to the bit. fp32: a NaN step
/// queued is an error at the next queue, and the weights are those before it.
pub fn check_queued_steps_equal_steps<B: VsrAutodiffBackend>(device: &B::Device) {
    let lr = |i: u64| 1e-3 / (i + 1) as f64;
    let [mut reference, mut a, mut b] = [(); 3].map(|_| trainer::<B>(device, Precision::Fp16));
    for i in 0..6 {
        if i == 2 || i == 4 {
            reference.scaler.update(false);
        } else {
            reference.step(input(device, i), lr(i)).unwrap();
        }
    }
    let at_once: Vec<StepOutcome> = (0..6).map(|i| a.step(input(device, i), lr(i)).unwrap()).collect();
    let mut queued = Vec::new();
    for i in 0..6 {
        let previous = b.queue(input(device, i), lr(i)).unwrap();
        assert_eq!(previous.is_some(), i > 0, "step {i}: the previous step's outcome");
        queued.extend(previous);
    }
    queued.extend(b.settle().unwrap());
    assert!(b.settle().unwrap().is_none(), "nothing left to settle");
    assert_eq!(queued.len(), 6);
    let applied: Vec<bool> = at_once.iter().map(|o| o.applied).collect();
    assert_eq!(applied, [true, true, false, true, false, true], "the NaN steps are skipped: {at_once:?}");
    for (i, (x, y)) in at_once.iter().zip(&queued).enumerate() {
        assert!(same(x, y), "step {i}: at once {x:?}, queued {y:?}");
    }
    assert_eq!(a.scaler, reference.scaler);
    assert_eq!(b.scaler, reference.scaler);
    let want = weights(&reference.model);
    assert!(weights(&a.model) == want, "weights after six steps, read at once");
    assert!(weights(&b.model) == want, "weights after six steps, queued");
    let r = reference.step(input(device, 9), 1e-3).unwrap();
    let (x, y) = (a.step(input(device, 9), 1e-3).unwrap(), b.step(input(device, 9), 1e-3).unwrap());
    assert!(same(&x, &r) && same(&y, &r), "a seventh step: {x:?} {y:?}, reference {r:?}");
    let want = weights(&reference.model);
    assert!(weights(&a.model) == want && weights(&b.model) == want, "weights after a seventh step");

    let mut c = trainer::<B>(device, Precision::Fp32);
    c.queue(input(device, 0), 1e-3).unwrap();
    c.settle().unwrap();
    let before = weights(&c.model);
    assert!(c.queue(input(device, 2), 1e-3).unwrap().is_none());
    let err = c.queue(input(device, 3), 1e-3).unwrap_err().to_string();
    assert!(err.contains("NaN") && err.contains("diverged"), "{err}");
    assert!(weights(&c.model) == before, "fp32: the weights before the NaN step");
}
