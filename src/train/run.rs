//! The training loop of the original's `main.py`, with checkpoints, resume and validation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;

use super::checkpoint::{self, Checkpoint, TrainState};
use super::log::{RunLog, StepLog};
use super::step::Trainer;
use super::validate::{Validation, validate};
use super::{CyclicLr, TrainConfig};
use crate::backend::VsrAutodiffBackend;
use crate::checkpoint::{gunzip_to, load_flownet, load_vsrnet, write_atomic};
use crate::data::{CropMode, Dataset, DeviceLoader, Loader, LoaderConfig, LoaderState, Split};
use crate::error::{Error, Result};
use crate::image::{RgbImage, colourise};
use crate::model::{FlowEstimator, FlowNetSD, VsrNetConfig};

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: u64,
    /// The newest checkpoint written (none if every write failed).
    pub checkpoint: Option<PathBuf>,
    /// Val PSNR and the bilinear baseline's, at the last validation.
    pub last_val: Option<(f64, f64)>,
    pub best_psnr: Option<(f64, u64)>,
    /// Stopped by Ctrl-C (after saving).
    pub interrupted: bool,
}

/// The run directory's checkpoint folder.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Trains from scratch (or from `config.init`) or, with `resume`, continues a run exactly where
/// its checkpoint left it. Logs under `run_dir`. `stop` (set by Ctrl-C) ends the run after the
/// current step with a checkpoint.
pub fn train<B: VsrAutodiffBackend>(
    config: TrainConfig,
    run_dir: &Path,
    resume: Option<Checkpoint<B>>,
    device: B::Device,
    stop: &AtomicBool,
) -> Result<RunSummary> {
    config.validate()?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let ckpt_dir = checkpoint_dir(run_dir);
    B::seed(&device, config.seed);

    // ---- model, frozen flow network, optimiser ----
    let net_config = VsrNetConfig::new().with_frames(config.frames).with_flow_input(config.flow_input);
    net_config.validate()?;
    let (model, resume) = match (resume, &config.init) {
        (Some(Checkpoint { path, state, model, optim }), _) => {
            (net_config.init::<B>(&device).load_record(model), Some((path, state, optim)))
        }
        (None, Some(path)) => (load_vsrnet::<B>(path, &net_config, &device)?, None),
        (None, None) => (net_config.init::<B>(&device), None),
    };
    let flownet = load_frozen_flownet::<B>(config.flownet.as_deref(), &device)?;
    let mut trainer = Trainer::new(model, flownet, config.precision, config.adam);
    let mut state = match resume {
        Some((path, state, optim)) => {
            trainer.optim = trainer.optim.clone().load_record(optim);
            trainer.scaler = state.scaler;
            println!("resuming from {} at step {}", path.display(), state.step);
            state
        }
        None => TrainState {
            format: checkpoint::FORMAT,
            step: 0,
            loader: LoaderState { epoch: 0, batch: 0 },
            scaler: trainer.scaler,
            best_psnr: None,
            epoch_loss: (0.0, 0),
            config: config.clone(),
        },
    };
    state.config = config.clone();

    // ---- data ----
    let train_set = Arc::new(Dataset::open(config.loader, &config.data, &config.resolution, Split::Train)?);
    let val_set = match Dataset::open(config.loader, &config.data, &config.resolution, Split::Val) {
        Ok(set) => Some(Arc::new(set)),
        Err(e) => {
            eprintln!("warning: no validation: {e}");
            None
        }
    };
    let mut loader_config = LoaderConfig::train(config.frames, config.batch, config.crop[0], config.crop[1], config.seed);
    loader_config.stride = config.stride;
    loader_config.workers = config.workers;
    loader_config.prefetch = config.prefetch;
    loader_config.initial_fill = config.shuffle_fill;
    let loader = Loader::new(train_set, loader_config, state.loader)?;
    let per_epoch = loader.batches_per_epoch() as u64;
    if per_epoch == 0 {
        return Err(Error::Invalid(format!(
            "{}: the training scenes hold fewer windows than one batch of {}",
            config.data.display(),
            config.batch
        )));
    }
    let mut loader = DeviceLoader::<B>::new(loader, device.clone());
    let schedule = CyclicLr::for_epoch(config.min_lr, config.max_lr, per_epoch as usize);
    let total = config.max_steps.unwrap_or(config.epochs as u64 * per_epoch);
    let epochs = total.div_ceil(per_epoch);

    // ---- logging ----
    let mut log = RunLog::create(run_dir)?;
    if state.step == 0 {
        let json = serde_json::to_string_pretty(&config).expect("config serialises");
        write_atomic(&run_dir.join("config.json"), json.as_bytes())?;
        log.events().text("config", 0, &format!("```\n{json}\n```"))?;
    }
    if trainer.flownet.is_none() {
        log.say("WARNING: training WITHOUT motion compensation (--flownet none): neighbour frames are used unwarped");
    }
    println!(
        "training {} steps ({} epochs of {per_epoch}) on {} ({}), batch {}, crop {}x{}, {}; logs in {}",
        total,
        epochs,
        config.data.display(),
        config.resolution,
        config.batch,
        config.crop[0],
        config.crop[1],
        config.precision,
        run_dir.display()
    );

    let mut summary = RunSummary { steps: state.step, checkpoint: None, last_val: None, best_psnr: state.best_psnr, interrupted: false };
    let mut epoch_started = false;
    while state.step < total {
        let epoch = state.loader.epoch;
        if !epoch_started {
            log.start_epoch(epoch, epochs, per_epoch.min(total - epoch * per_epoch), state.loader.batch as u64);
            epoch_started = true;
        }
        let batch = match loader.next() {
            Some(b) => b?,
            None => return Err(Error::Invalid("the training loader ended unexpectedly".into())),
        };
        debug_assert_eq!((batch.epoch, batch.index), (state.loader.epoch, state.loader.batch));
        let t = Instant::now();
        let lr = schedule.lr(state.step);
        let images = (state.step % config.image_every == 0).then(|| batch.frames.clone().narrow(0, 0, 1));
        let outcome = match trainer.step(batch.frames, lr) {
            Ok(o) => o,
            Err(e) => {
                let last = summary.checkpoint.as_ref().or(checkpoint::list(&ckpt_dir)?.first().map(|(_, p)| p)).cloned();
                let keep = match last {
                    Some(p) => format!("the last good checkpoint is {}", p.display()),
                    None => "no checkpoint was written yet".into(),
                };
                return Err(Error::Invalid(format!("step {}: {e}; {keep}", state.step)));
            }
        };
        let step_ms = t.elapsed().as_secs_f64() * 1e3;
        state.scaler = trainer.scaler;
        state.epoch_loss.0 += outcome.loss;
        state.epoch_loss.1 += 1;
        log.step(&StepLog {
            step: state.step,
            epoch,
            loss: outcome.loss,
            lr,
            scale: outcome.scale,
            skipped: trainer.scaler.skipped_steps,
            data_ms: batch.wait.as_secs_f64() * 1e3,
            step_ms,
        })?;
        if let Some(x) = images {
            log_images(&mut log, "train", state.step, &trainer, x)?;
        }
        state.step += 1;
        state.loader = if batch.index as u64 + 1 == per_epoch {
            LoaderState { epoch: epoch + 1, batch: 0 }
        } else {
            LoaderState { epoch, batch: batch.index + 1 }
        };
        summary.steps = state.step;

        let epoch_end = state.loader.batch == 0;
        let last = state.step == total;
        let interrupted = stop.load(Ordering::SeqCst);
        if epoch_end || last || interrupted {
            log.end_epoch();
            epoch_started = false;
        }
        if epoch_end {
            let (sum, n) = state.epoch_loss;
            log.events().scalar("train/epoch_loss", state.step, sum / n.max(1) as f64)?;
            log.say(&format!("epoch {}: mean training loss {:.5}", epoch + 1, sum / n.max(1) as f64));
            state.epoch_loss = (0.0, 0);
        }
        let validate_now = epoch_end || last || config.val_every.is_some_and(|n| state.step % n == 0);
        if let (true, Some(set)) = (validate_now && !interrupted, &val_set) {
            let v = run_validation::<B>(&trainer, set.clone(), &config, &device)?;
            let (psnr, bil) = (v.psnr.mean(), v.psnr_bilinear.mean());
            log_validation(&mut log, state.step, &v)?;
            summary.last_val = Some((psnr, bil));
            if state.best_psnr.is_none_or(|(best, _)| psnr > best) {
                state.best_psnr = Some((psnr, state.step));
                summary.best_psnr = state.best_psnr;
                save_checkpoint(&trainer, &state, &ckpt_dir.join("best.ckpt"), &log);
            }
        }
        if epoch_end || last || interrupted || state.step % config.checkpoint_every == 0 {
            let path = ckpt_dir.join(checkpoint::step_name(state.step));
            if save_checkpoint(&trainer, &state, &path, &log) {
                summary.checkpoint = Some(path);
                if let Err(e) = checkpoint::prune(&ckpt_dir, config.keep) {
                    log.say(&format!("warning: pruning old checkpoints: {e}"));
                }
            } else if last || interrupted {
                return Err(Error::Invalid(format!(
                    "the final checkpoint could not be written (see the warning above); {} steps were trained",
                    state.step
                )));
            }
        }
        if interrupted {
            log.say(&format!(
                "interrupted at step {}: saved; continue with `vsr train --resume {}`",
                state.step,
                run_dir.display()
            ));
            summary.interrupted = true;
            break;
        }
    }
    Ok(summary)
}

/// Writes a checkpoint; a failure (disk full, ...) is a loud warning and leaves the previous
/// checkpoints intact. Returns whether it was written.
fn save_checkpoint<B: VsrAutodiffBackend>(trainer: &Trainer<B>, state: &TrainState, path: &Path, log: &RunLog) -> bool {
    match checkpoint::save(trainer, state, path) {
        Ok(()) => true,
        Err(e) => {
            log.say(&format!("WARNING: could not write checkpoint {}: {e}; the previous checkpoints are intact", path.display()));
            false
        }
    }
}

/// FlowNetSD on the inner backend (frozen), from a checkpoint (`.gz` accepted), or none.
fn load_frozen_flownet<B: VsrAutodiffBackend>(
    path: Option<&Path>,
    device: &B::Device,
) -> Result<Option<FlowNetSD<B::InnerBackend>>> {
    let Some(path) = path else { return Ok(None) };
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "{}: FlowNetSD checkpoint not found. Download FlowNet2-SD_checkpoint.pth.tar (see README) and pass \
             --flownet <path>, or train without motion compensation with --flownet none",
            path.display()
        )));
    }
    let net = if path.extension().is_some_and(|e| e == "gz") {
        let tmp = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let plain = gunzip_to(path, tmp.path())?;
        load_flownet::<B::InnerBackend>(&plain, device)?
    } else {
        load_flownet::<B::InnerBackend>(path, device)?
    };
    Ok(Some(net))
}

fn run_validation<B: VsrAutodiffBackend>(
    trainer: &Trainer<B>,
    set: Arc<Dataset>,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<Validation> {
    let mut cfg = LoaderConfig::val(config.frames, config.batch);
    cfg.workers = config.workers;
    cfg.prefetch = config.prefetch;
    if let Some([h, w]) = config.val_crop {
        cfg.crop = CropMode::Centre { h, w };
    }
    let loader = Loader::new(set, cfg, LoaderState { epoch: 0, batch: 0 })?;
    let mut loader = DeviceLoader::<B::InnerBackend>::new(loader, device.clone());
    let model = trainer.model.valid();
    let flownet = trainer.flownet.as_ref().map(|f| &f.0 as &dyn FlowEstimator<B::InnerBackend>);
    validate(&model, flownet, &mut loader)
}

fn log_validation(log: &mut RunLog, step: u64, v: &Validation) -> Result<()> {
    let (psnr, bil) = (v.psnr.mean(), v.psnr_bilinear.mean());
    let ev = log.events();
    ev.scalar("val/loss", step, v.loss)?;
    ev.scalar("val/psnr", step, psnr)?;
    ev.scalar("val/psnr_bilinear", step, bil)?;
    for (clip, p, _) in v.psnr.per_clip() {
        ev.scalar(&format!("val_clip/{clip}"), step, p)?;
    }
    if let Some([lr, bilinear, pred, target]) = &v.images {
        for (tag, img) in [("lr_input", lr), ("bilinear", bilinear), ("prediction", pred), ("target", target)] {
            log.image(&format!("val/{tag}"), step, img)?;
        }
    }
    log.say(&format!(
        "validation at step {step}: loss {:.5}, PSNR {psnr:.2} dB (bilinear {bil:.2} dB) over {} windows",
        v.loss,
        v.samples()
    ));
    Ok(())
}

/// The training images of the original: input (low resolution), bilinear, prediction, target.
fn log_images<B: VsrAutodiffBackend>(
    log: &mut RunLog,
    prefix: &str,
    step: u64,
    trainer: &Trainer<B>,
    x: burn::tensor::Tensor<B, 5>,
) -> Result<()> {
    let model = trainer.model.valid();
    let x = x.inner();
    let centre = x.clone().narrow(2, model.centre(), 1).squeeze_dim::<4>(2);
    let flownet = trainer.flownet.as_ref().map(|f| &f.0 as &dyn FlowEstimator<B::InnerBackend>);
    let out = model.forward(x, flownet);
    let lr = crate::image::rgb_to_images(crate::model::vsrnet::avg_pool_x4(centre.clone())).remove(0);
    let images: [(&str, RgbImage); 4] = [
        ("lr_input", lr),
        ("bilinear", colourise(out.bilinear, centre.clone()).remove(0)),
        ("prediction", colourise(out.pred, centre.clone()).remove(0)),
        ("target", crate::image::rgb_to_images(centre).remove(0)),
    ];
    for (tag, img) in &images {
        log.image(&format!("{prefix}/{tag}"), step, img)?;
    }
    Ok(())
}
