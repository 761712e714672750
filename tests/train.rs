//! Training step, optimiser semantics, fp16 loss scaling and checkpoints, on the CPU backend.

mod common;

use burn::module::Module;
use burn::tensor::{DType, Distribution, Tensor};
use common::CpuAd;
use vsr::data::LoaderState;
use vsr::model::{VsrNet, VsrNetConfig};
use vsr::precision::Precision;
use vsr::train::checkpoint::{self, TrainState};
use vsr::train::{AdamSettings, TrainConfig, Trainer};

type B = CpuAd;

/// The backend's random generator is global: tests running in parallel must not interleave a
/// seed and the draws that depend on it.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn input(seed: u64) -> Tensor<B, 5> {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
    Tensor::random([2, 3, 3, 64, 64], Distribution::Uniform(0.0, 255.0), &Default::default())
}

fn model(seed: u64) -> VsrNet<B> {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
    VsrNetConfig::new().init::<B>(&Default::default())
}

fn values(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// The first Adam step, worked out from PyTorch's definition: with g' = g + wd p,
/// m = (1-b1) g', v = (1-b2) g'^2, and bias corrections m/(1-b1), v/(1-b2),
/// p1 = p - lr g' / (|g'| + eps).
#[test]
fn first_adam_step_has_pytorch_semantics() {
    let adam = AdamSettings::default();
    let net = model(7);
    let x = input(3);
    let p: Vec<f32> = values(net.conv2.conv.weight.val());
    // The gradient the trainer will see: same forward, same batch statistics.
    let out = net.forward(x.clone(), None);
    let grads = vsr::model::vsrnet::mse(out.pred, out.target).backward();
    let g: Vec<f32> = net.conv2.conv.weight.val().grad(&grads).unwrap().into_data().convert::<f32>().to_vec().unwrap();

    let lr = 1e-3;
    let mut trainer = Trainer::new(net, None, Precision::Fp32, adam);
    let outcome = trainer.step(x, lr).unwrap();
    assert!(outcome.applied && outcome.loss.is_finite());
    let p1 = values(trainer.model.conv2.conv.weight.val());
    let mut worst = 0f64;
    for i in 0..p.len() {
        let gd = g[i] as f64 + adam.weight_decay as f64 * p[i] as f64;
        let want = p[i] as f64 - lr * gd / (gd.abs() + adam.epsilon as f64);
        worst = worst.max((p1[i] as f64 - want).abs());
    }
    assert!(worst < 2e-7, "max deviation from PyTorch's Adam step: {worst}");
}

#[test]
fn fp16_overflow_skips_the_step_and_halves_the_scale() {
    let x = input(5);
    let mut trainer = Trainer::new(model(11), None, Precision::Fp16, AdamSettings::default());
    let before = values(trainer.model.conv1.conv.weight.val());
    // 2^32 times the gradients overflows fp16: skipped, scale halved, weights untouched.
    let o = trainer.step(x.clone(), 1e-3).unwrap();
    assert!(!o.applied);
    assert_eq!(o.scale, 2f64.powi(32));
    assert_eq!(trainer.scaler.scale, 2f64.powi(31));
    assert_eq!(trainer.scaler.skipped_steps, 1);
    assert_eq!(values(trainer.model.conv1.conv.weight.val()), before);

    // A scale that fits: the step is applied to the fp32 master weights.
    trainer.scaler.scale = 256.0;
    let o = trainer.step(x.clone(), 1e-3).unwrap();
    assert!(o.applied, "a loss scale of 256 should not overflow");
    let w = trainer.model.conv1.conv.weight.val();
    assert_eq!(w.dtype(), DType::F32, "master weights stay fp32");
    assert_ne!(values(w), before);

    // fp16 computes the same loss as fp32, to fp16's precision.
    let mut fp32 = Trainer::new(model(11), None, Precision::Fp32, AdamSettings::default());
    let l32 = fp32.step(x, 1e-3).unwrap().loss;
    let mut fp16 = Trainer::new(model(11), None, Precision::Fp16, AdamSettings::default());
    let l16 = fp16.step(input(5), 1e-3).unwrap().loss;
    assert!((l16 - l32).abs() / l32 < 5e-3, "fp16 loss {l16} vs fp32 {l32}");
}

#[test]
fn fp32_nan_loss_is_an_error_and_keeps_the_weights() {
    let mut trainer = Trainer::new(model(2), None, Precision::Fp32, AdamSettings::default());
    let before = values(trainer.model.conv2.conv.weight.val());
    let x = input(1).mul_scalar(f32::NAN);
    let err = trainer.step(x, 1e-3).unwrap_err().to_string();
    assert!(err.contains("NaN") && err.contains("diverged"), "{err}");
    assert_eq!(values(trainer.model.conv2.conv.weight.val()), before);
}

#[path = "common/queued.rs"]
mod queued;

/// Steps queued back to back (each outcome read during the next step) equal steps read at once:
/// outcomes, skips, loss scales, weights (fp16), and a NaN step's error (fp32).
#[test]
fn queued_steps_equal_steps_read_at_once() {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    queued::check_queued_steps_equal_steps::<B>(&Default::default());
}

fn state(step: u64) -> TrainState {
    TrainState {
        format: checkpoint::FORMAT,
        step,
        loader: LoaderState { epoch: 1, batch: 4 },
        scaler: vsr::train::LossScaler::default(),
        best_psnr: Some((31.5, 2)),
        epoch_loss: (0.5, 3),
        config: TrainConfig::default(),
    }
}

/// Two steps, save, load into a fresh trainer, one more step on each: bit-identical weights.
#[test]
fn checkpoint_round_trip_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let mut a = Trainer::new(model(21), None, Precision::Fp32, AdamSettings::default());
    a.step(input(1), 1e-3).unwrap();
    a.step(input(2), 5e-4).unwrap();
    let path = dir.path().join(checkpoint::step_name(2));
    checkpoint::save(&a, &state(2), &path).unwrap();

    let ckpt = checkpoint::load::<B>(&path, &device).unwrap();
    assert_eq!(ckpt.state, state(2));
    let mut b = Trainer::new(model(99).load_record(ckpt.model), None, Precision::Fp32, AdamSettings::default());
    b.optim = burn::optim::Optimizer::load_record(b.optim.clone(), ckpt.optim);

    let oa = a.step(input(3), 2e-4).unwrap();
    let ob = b.step(input(3), 2e-4).unwrap();
    assert_eq!(oa.loss.to_bits(), ob.loss.to_bits());
    for (wa, wb) in [
        (a.model.conv1.conv.weight.val(), b.model.conv1.conv.weight.val()),
        (a.model.conv2.conv.weight.val(), b.model.conv2.conv.weight.val()),
        (a.model.conv3.weight.val(), b.model.conv3.weight.val()),
    ] {
        assert_eq!(wa.into_data(), wb.into_data());
    }
    let rm = |t: &Trainer<B>| t.model.conv2.bn.as_ref().unwrap().running_var.value().into_data();
    assert_eq!(rm(&a), rm(&b), "BatchNorm statistics restored");
}

#[test]
fn damaged_checkpoints_are_refused_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let mut t = Trainer::new(model(4), None, Precision::Fp32, AdamSettings::default());
    t.step(input(1), 1e-3).unwrap();
    let older = dir.path().join(checkpoint::step_name(1));
    let newer = dir.path().join(checkpoint::step_name(2));
    checkpoint::save(&t, &state(1), &older).unwrap();
    checkpoint::save(&t, &state(2), &newer).unwrap();

    // One flipped bit in the middle of the weights.
    let mut bytes = std::fs::read(&newer).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&newer, &bytes).unwrap();
    let err = checkpoint::load::<B>(&newer, &device).err().expect("bit flip must be caught").to_string();
    assert!(err.contains(&newer.display().to_string()), "{err}");
    let found = checkpoint::latest_good::<B>(dir.path(), &device).unwrap().unwrap();
    assert_eq!(found.path, older);
    assert_eq!(found.state.step, 1);

    // Truncated, and not a checkpoint at all.
    std::fs::write(&newer, &bytes[..n / 3]).unwrap();
    assert!(checkpoint::load::<B>(&newer, &device).is_err());
    std::fs::write(&older, b"not a checkpoint").unwrap();
    let err = checkpoint::latest_good::<B>(dir.path(), &device).err().unwrap().to_string();
    assert!(err.contains("every checkpoint") && err.contains("step-00000001.ckpt"), "{err}");
}

/// A write that fails (here: the temporary file cannot be created) leaves the previous
/// checkpoint as it was.
#[test]
fn failed_write_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let t = Trainer::new(model(4), None, Precision::Fp32, AdamSettings::default());
    let path = dir.path().join("best.ckpt");
    checkpoint::save(&t, &state(1), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Occupy the temporary name with a directory: creating the file fails, like a full disk.
    std::fs::create_dir(vsr::checkpoint::tmp_name(&path)).unwrap();
    let err = checkpoint::save(&t, &state(2), &path).unwrap_err().to_string();
    assert!(err.contains("best.ckpt"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(checkpoint::load::<B>(&path, &Default::default()).unwrap().state.step, 1);
}

#[test]
fn pruning_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let t = Trainer::new(model(4), None, Precision::Fp32, AdamSettings::default());
    for s in 1..=4 {
        checkpoint::save(&t, &state(s), &dir.path().join(checkpoint::step_name(s))).unwrap();
    }
    checkpoint::prune(dir.path(), 2).unwrap();
    let left: Vec<u64> = checkpoint::list(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(left, vec![4, 3]);
}

#[test]
fn config_refuses_what_cannot_train() {
    let ok = TrainConfig::default();
    ok.validate().unwrap();
    for (c, want) in [
        (TrainConfig { frames: 4, ..ok.clone() }, "odd"),
        (TrainConfig { crop: [500, 960], ..ok.clone() }, "multiples of 64"),
        (TrainConfig { min_lr: 1e-2, max_lr: 1e-3, ..ok.clone() }, "min-lr"),
        (TrainConfig { batch: 0, ..ok.clone() }, "batch"),
    ] {
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

/// Same seed, same weights; the same forward twice, the same loss and gradients, bit for bit.
/// (Burn creates parameters lazily: without `materialize` at init, every clone of a layer drew
/// its own random weights.)
#[test]
fn init_and_steps_are_reproducible() {
    let x = input(3);
    let (n1, n2) = (model(7), model(7));
    assert_eq!(n1.conv2.conv.weight.val().into_data(), n2.conv2.conv.weight.val().into_data());
    let run = |net: &VsrNet<B>| {
        let out = net.forward(x.clone(), None);
        let loss = vsr::model::vsrnet::mse(out.pred, out.target);
        let v: f32 = loss.clone().into_scalar();
        let grads = loss.backward();
        let g = net.conv2.conv.weight.val().grad(&grads).expect("conv2 has a gradient");
        (v.to_bits(), g.into_data())
    };
    let a = run(&n1);
    assert_eq!(a, run(&n1), "the same net twice");
    assert_eq!(a, run(&n2), "a second net from the same seed");
}

/// Precise BN: after recalibrating over batches x1 and x2, VSRNet's BatchNorm statistics are the
/// average of those over x1 alone and over x2 alone, whatever they were before (recalibrating
/// over x1 again gives the first result bit for bit); the weights are untouched.
#[test]
fn precise_bn_averages_batch_statistics_and_forgets_the_old_ones() {
    fn stats(t: &Trainer<B>) -> Vec<Vec<f32>> {
        let mut m = t.model.clone();
        let v = |t: Tensor<B, 1>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
        m.batch_norms_mut().flat_map(|bn| [v(bn.running_mean.value_sync()), v(bn.running_var.value_sync())]).collect()
    }
    let trainer = Trainer::new(model(3), None, Precision::Fp32, AdamSettings::default());
    let before = values(trainer.model.conv1.conv.weight.val());
    let (x1, x2) = (input(11), input(12).mul_scalar(0.5));
    let fresh = stats(&trainer);
    assert_eq!(trainer.recalibrate_batch_norm([Ok(x1.clone())]).unwrap(), 1);
    let s1 = stats(&trainer);
    trainer.recalibrate_batch_norm([Ok(x2.clone())]).unwrap();
    let s2 = stats(&trainer);
    trainer.recalibrate_batch_norm([Ok(x1.clone())]).unwrap();
    assert_eq!(stats(&trainer), s1, "recalibrating over x1 again depends on the statistics before");
    assert_eq!(trainer.recalibrate_batch_norm([Ok(x1), Ok(x2)]).unwrap(), 2);
    let s12 = stats(&trainer);
    assert_eq!(s12.len(), 4, "conv1's and conv2's mean and variance");
    for (k, (((a, b), ab), f)) in s1.iter().zip(&s2).zip(&s12).zip(&fresh).enumerate() {
        let spread = a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(spread > 1e-3, "statistic {k}: x1 and x2 give the same values, the test cannot tell them apart");
        assert!(a.iter().zip(f).any(|(a, f)| (a - f).abs() > 1e-3), "statistic {k}: unchanged by recalibration");
        for ((a, b), ab) in a.iter().zip(b).zip(ab) {
            let mean = (a + b) / 2.0;
            assert!((ab - mean).abs() <= 1e-5 * mean.abs().max(1.0), "statistic {k}: {ab} over x1 and x2, expected {mean}");
        }
    }
    assert_eq!(values(trainer.model.conv1.conv.weight.val()), before, "recalibration changed the weights");
    // Non-finite old statistics (an fp16 overflow) are forgotten too.
    let mut m = trainer.model.clone();
    for bn in m.batch_norms_mut() {
        let mean = bn.running_mean.value_sync();
        bn.running_mean.update(mean.full_like(f32::NAN));
    }
    trainer.recalibrate_batch_norm([Ok(input(11))]).unwrap();
    assert_eq!(stats(&trainer), s1, "NaN statistics before the recalibration survived it");
}
