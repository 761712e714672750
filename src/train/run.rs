//! The training loop of the original's `main.py`, with checkpoints, resume and validation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, RunningState};
use burn::optim::Optimizer;
use burn::tensor::Tensor;

use super::checkpoint::{self, Checkpoint, TrainState};
use super::collective::{self, Cluster, GradSync, check_port_free, start_orchestrator};
use super::log::{RunLog, StepLog};
use super::parallel::{InjectedFailure, Progress, WorkerInput, run_workers};
use super::adam::OptimizerRecord;
use super::step::{StepOutcome, Trainer};
use super::validate::{Validation, validate};
use super::{CyclicLr, LossScaler, TrainConfig};
use crate::backend::VsrAutodiffBackend;
use crate::checkpoint::{gunzip_to, load_flownet, load_vsrnet, write_atomic};
use crate::data::{CropMode, Dataset, DeviceLoader, Loader, LoaderConfig, LoaderState, Shard, SourceKind, Split, VideoDecoder};
use crate::error::{Error, Result};
use crate::image::{RgbImage, colourise};
use crate::model::{FlowEstimator, FlowNetSD, VsrNet, VsrNetConfig};

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
    train_on::<B>(config, run_dir, resume, vec![device], &Parallel::single(), stop)
}

/// How a run is spread over devices and nodes (data-parallel training).
#[derive(Debug, Clone)]
pub struct Parallel {
    pub cluster: Cluster,
    /// The longest a worker may wait in a collective (for the others to reach the all-reduce,
    /// for the other nodes to join) before the run is declared stuck and ends with an error.
    pub timeout: Duration,
    /// CUDA device index of each of this process's devices, None where it is not an NVIDIA GPU
    /// (NVDEC decodes each worker's video there, see [`crate::data::VideoDecoder::resolve`]);
    /// empty: none is.
    pub gpus: Vec<Option<usize>>,
}

impl Parallel {
    /// This process only, no data parallelism across nodes.
    pub fn single() -> Parallel {
        Parallel { cluster: Cluster::single(), timeout: DEFAULT_TIMEOUT, gpus: Vec::new() }
    }
}

/// Default of [`Parallel::timeout`] (PyTorch's default collective timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// [`train`] on one or several devices of this process (and, with [`Parallel::cluster`], of
/// other processes): data-parallel with one worker per device when there is more than one
/// worker in all.
///
/// Every worker starts from the same weights and optimiser state, reads its own share of every
/// batch ([`crate::data::Shard`]: `config.batch` is the global batch, split evenly), computes
/// its gradients with its own BatchNorm batch statistics (per GPU, as the original), and the
/// gradients are averaged across workers before every optimiser step ([`super::collective`]),
/// so that every replica applies the same update. Worker 0 (global rank 0) logs, validates and
/// writes checkpoints, which hold nothing per worker: a run resumes on any number of workers.
/// A worker that fails ends the run with its error ([`super::parallel`]).
pub fn train_on<B: VsrAutodiffBackend>(
    config: TrainConfig,
    run_dir: &Path,
    resume: Option<Checkpoint<B>>,
    devices: Vec<B::Device>,
    parallel: &Parallel,
    stop: &AtomicBool,
) -> Result<RunSummary> {
    config.validate()?;
    let cluster = &parallel.cluster;
    cluster.validate()?;
    if devices.is_empty() {
        return Err(Error::Invalid("training needs at least one device".into()));
    }
    let local = devices.len();
    let world = local * cluster.nodes;
    if config.batch % (world * config.accumulate) != 0 {
        return Err(Error::Invalid(format!(
            "--batch {} (the global batch) cannot be split evenly across {world} workers ({local} per node x {} node(s)) \
             and {} micro-batches each (--accumulate): make it a multiple of {}",
            config.batch,
            cluster.nodes,
            config.accumulate,
            world * config.accumulate
        )));
    }
    let leader = cluster.is_leader();
    if leader {
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    }
    let ckpt_dir = checkpoint_dir(run_dir);
    let device = devices[0].clone();
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
    let scaler = LossScaler::for_precision(config.precision);
    let (mut state, optim) = match resume {
        Some((path, state, optim)) => {
            if leader {
                println!("resuming from {} at step {}", path.display(), state.step);
            }
            (state, Some(optim))
        }
        None => (
            TrainState {
                format: checkpoint::FORMAT,
                step: 0,
                loader: LoaderState { epoch: 0, batch: 0 },
                scaler,
                best_psnr: None,
                epoch_loss: (0.0, 0),
                config: config.clone(),
            },
            None,
        ),
    };
    state.config = config.clone();

    // ---- data: every worker its share of each batch ----
    let train_set = Arc::new(Dataset::open(config.loader, &config.data, &config.resolution, Split::Train)?);
    let val_set = if !leader {
        None
    } else {
        match Dataset::open(config.loader, &config.data, &config.resolution, Split::Val) {
            Ok(set) => Some(Arc::new(set)),
            Err(e) => {
                eprintln!("warning: no validation: {e}");
                None
            }
        }
    };
    // Each worker's video is decoded on its own GPU's NVDEC (`--decoder auto|nvdec`) or on the CPU.
    let decoders = (0..local)
        .map(|i| match config.loader {
            SourceKind::Video => VideoDecoder::resolve(config.decoder, parallel.gpus.get(i).copied().flatten()),
            SourceKind::Png => Ok(VideoDecoder::Cpu),
        })
        .collect::<Result<Vec<_>>>()?;
    if leader && config.loader == SourceKind::Video {
        println!("video decoder: {}", decoders[0]);
    }
    let mut loaders = Vec::with_capacity(local);
    for (i, &decoder) in decoders.iter().enumerate() {
        let mut loader_config = LoaderConfig::train(config.frames, config.batch, config.crop[0], config.crop[1], config.seed);
        loader_config.decoder = decoder;
        loader_config.stride = config.stride;
        loader_config.workers = if local == 1 { config.workers } else { (config.workers / local).max(1) };
        loader_config.prefetch = config.prefetch;
        loader_config.initial_fill = config.shuffle_fill;
        loader_config.shard = Shard { rank: cluster.node_rank * local + i, count: world };
        loaders.push(Loader::new(train_set.clone(), loader_config, state.loader)?);
    }
    let per_epoch = loaders[0].batches_per_epoch() as u64;
    if per_epoch == 0 {
        return Err(Error::Invalid(format!(
            "{}: the training scenes hold fewer windows than one batch of {}",
            config.data.display(),
            config.batch
        )));
    }
    // Precise BN: a fixed set of training windows (random crops drawn once from the seed), in
    // batches of the size whose statistics training normalises with (one micro-batch).
    let calibration = (leader && config.precise_bn > 0).then(|| {
        let micro = (config.batch / world / config.accumulate).max(1);
        let mut c = LoaderConfig::train(config.frames, micro, config.crop[0], config.crop[1], config.seed ^ 0x9e37_79b9_7f4a_7c15);
        c.stride = config.stride;
        c.decoder = decoders[0];
        c.workers = config.workers;
        c.prefetch = config.prefetch;
        c.initial_fill = config.shuffle_fill;
        c.repeat = false;
        Calibration { set: train_set.clone(), config: c, batches: config.precise_bn.div_ceil(micro) }
    });
    let schedule = CyclicLr::for_epoch(config.min_lr, config.max_lr, per_epoch as usize);
    let total = config.max_steps.unwrap_or(config.epochs as u64 * per_epoch);
    let epochs = total.div_ceil(per_epoch);
    let plan = Plan { config: config.clone(), per_epoch, total, epochs, schedule };

    // ---- logging (global rank 0) ----
    let lead = if leader {
        let mut log = RunLog::create(run_dir)?;
        if state.step == 0 {
            let json = serde_json::to_string_pretty(&config).expect("config serialises");
            write_atomic(&run_dir.join("config.json"), json.as_bytes())?;
            log.events().text("config", 0, &format!("```\n{json}\n```"))?;
        }
        if let Some(c) = &calibration {
            log.say(&format!(
                "precise BN: BatchNorm statistics recomputed over {} training windows before each validation",
                c.batches * c.config.batch
            ));
        }
        if flownet.is_none() {
            log.say("WARNING: training WITHOUT motion compensation (--flownet none): neighbour frames are used unwarped");
        }
        let workers = if world > 1 {
            format!(
                ", data-parallel on {world} workers ({local} per node x {} node(s), {} windows each)",
                cluster.nodes,
                config.batch / world
            )
        } else {
            String::new()
        };
        println!(
            "training {} steps ({} epochs of {per_epoch}) on {} ({}), batch {}, crop {}x{}, {}{workers}; logs in {}",
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
        Some(Leader { log, val_set, val_decoder: decoders[0], calibration, ckpt_dir, run_dir: run_dir.to_path_buf() })
    } else {
        None
    };
    let fail = InjectedFailure::from_env()?;

    if world == 1 {
        let mut trainer = Trainer::new(model, flownet, config.precision, config.adam);
        if let Some(optim) = optim {
            trainer.optim = trainer.optim.clone().load_record(optim);
            trainer.scaler = state.scaler;
        }
        let loader = DeviceLoader::<B>::new(loaders.pop().expect("one loader"), device.clone());
        let mut replica = Replica { trainer, loader, device, rank: 0, watch: None, fail };
        return run_loop(&mut replica, state, lead, &plan, &|| stop.load(Ordering::SeqCst));
    }

    // ---- data-parallel: one worker thread per device ----
    if cluster.is_multi_node() {
        if leader {
            start_orchestrator(cluster.master_port)?;
        }
        check_port_free(cluster.node_port, "tensor service of this node (--node-port)")?;
        if leader {
            println!(
                "waiting for {} node(s) at ws://{}:{}",
                cluster.nodes,
                cluster.master_addr,
                cluster.master_port
            );
        }
    }
    let mut lead = lead;
    let inputs: Vec<WorkerInput<WorkerParts<B>>> = devices
        .into_iter()
        .zip(loaders)
        .enumerate()
        .map(|(i, (device, loader))| {
            let rank = cluster.node_rank * local + i;
            WorkerInput {
                rank,
                name: format!("{:?}", device),
                input: WorkerParts {
                    model: model.clone(),
                    flownet: flownet.clone(),
                    optim: optim.clone(),
                    state: state.clone(),
                    loader,
                    leader: if i == 0 { lead.take() } else { None },
                    device,
                },
            }
        })
        .collect();
    drop((model, flownet, optim));
    let cluster = cluster.clone();
    let plan = Arc::new(plan);
    let summaries = run_workers(inputs, parallel.timeout, stop, collective::reset::<B::InnerBackend>, move |local_index, parts, progress| {
        let WorkerParts { model, flownet, optim, state, loader, leader, device } = parts;
        let rank = cluster.node_rank * local + local_index;
        // Each replica its own BatchNorm running statistics (a fork shares Burn's RunningState):
        // as in the original, every GPU keeps the statistics of its own shard and rank 0's are
        // the ones validated and saved; shared, the other workers' updates would land in rank 0's
        // in the middle of a precise-BN recalibration.
        let mut model = model.fork(&device);
        for bn in model.batch_norms_mut() {
            bn.running_mean = RunningState::new(bn.running_mean.value_sync());
            bn.running_var = RunningState::new(bn.running_var.value_sync());
        }
        let mut trainer = Trainer::new(model, flownet.map(|f| f.fork(&device)), plan.config.precision, plan.config.adam);
        if let Some(optim) = optim {
            trainer.optim = trainer.optim.clone().load_record(optim);
        }
        trainer.scaler = state.scaler;
        let checksum = weights_checksum(&trainer.model);
        let mut sync = GradSync::join::<B::InnerBackend>(rank, world, local, &device, &cluster, Some((progress.clone(), local_index)))?;
        let c = &plan.config;
        sync.check_same::<B::InnerBackend>(
            &["the number of workers", "the step to start from", "the batch size", "the frames per window", "the crop", "the seed", "the precision", "the initial weights"],
            &[
                world as u64,
                state.step,
                c.batch as u64,
                c.frames as u64,
                (c.crop[0] * 4096 + c.crop[1]) as u64,
                c.seed,
                c.precision as u64,
                checksum,
            ],
            &device,
        )?;
        trainer.sync = Some(sync);
        let loader = DeviceLoader::<B>::new(loader, device.clone());
        let mut replica = Replica { trainer, loader, device, rank, watch: Some((progress.clone(), local_index)), fail };
        let summary = run_loop(&mut replica, state, leader, &plan, &|| progress.stop_requested())?;
        if let Some(sync) = replica.trainer.sync.take() {
            sync.leave::<B::InnerBackend>();
        }
        Ok(summary)
    })?;
    Ok(summaries.into_iter().next().expect("at least one worker"))
}

/// `x` cut along the batch into `n` equal parts (in order: part i holds windows
/// `i * B / n .. (i + 1) * B / n`, as [`Shard`] cuts a batch across workers).
fn micro_batches<B: VsrAutodiffBackend>(x: Tensor<B, 5>, n: usize) -> Vec<Tensor<B, 5>> {
    let b = x.dims()[0];
    if n <= 1 || b < n {
        return vec![x];
    }
    (0..n).map(|i| x.clone().narrow(0, i * b / n, (i + 1) * b / n - i * b / n)).collect()
}

/// What a data-parallel worker starts from (moved onto its thread).
struct WorkerParts<B: VsrAutodiffBackend> {
    model: VsrNet<B>,
    flownet: Option<FlowNetSD<B::InnerBackend>>,
    optim: Option<OptimizerRecord<B>>,
    state: TrainState,
    loader: Loader,
    leader: Option<Leader>,
    device: B::Device,
}

/// A hash of every weight of `model` (bit for bit), for the check that every worker starts
/// from the same weights.
fn weights_checksum<B: VsrAutodiffBackend>(model: &VsrNet<B>) -> u64 {
    struct Hash(u64);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Hash {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            for v in data.iter::<f32>() {
                self.0 = (self.0 ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Hash(0xcbf2_9ce4_8422_2325);
    model.visit(&mut h);
    h.0
}

/// What the loop runs: the settings and the step counts derived from the data.
struct Plan {
    config: TrainConfig,
    per_epoch: u64,
    total: u64,
    epochs: u64,
    schedule: CyclicLr,
}

/// One worker's model, optimiser and data.
struct Replica<B: VsrAutodiffBackend> {
    trainer: Trainer<B>,
    loader: DeviceLoader<B>,
    device: B::Device,
    /// Global rank (0: the worker that logs, validates and writes checkpoints).
    rank: usize,
    /// Data-parallel: the watchdog's view of this worker (progress, local index).
    watch: Option<(Arc<Progress>, usize)>,
    /// The failure test hook ([`InjectedFailure`]).
    fail: Option<InjectedFailure>,
}

/// What only global rank 0 has: the log, validation, the checkpoints.
struct Leader {
    log: RunLog,
    val_set: Option<Arc<Dataset>>,
    /// Decoder of the validation video (the leader's).
    val_decoder: VideoDecoder,
    /// Precise BN's windows (`--precise-bn`).
    calibration: Option<Calibration>,
    ckpt_dir: PathBuf,
    run_dir: PathBuf,
}

/// The training loop of one worker (the only one without data parallelism). `stop` tells
/// whether Ctrl-C was pressed; data-parallel workers vote on it in every step's all-reduce so
/// that all stop after the same step.
fn run_loop<B: VsrAutodiffBackend>(
    rep: &mut Replica<B>,
    mut state: TrainState,
    mut leader: Option<Leader>,
    plan: &Plan,
    stop: &dyn Fn() -> bool,
) -> Result<RunSummary> {
    let config = &plan.config;
    let (per_epoch, total, epochs) = (plan.per_epoch, plan.total, plan.epochs);
    let parallel = rep.trainer.sync.is_some();
    let mut summary = RunSummary { steps: state.step, checkpoint: None, last_val: None, best_psnr: state.best_psnr, interrupted: false };
    let mut epoch_started = false;
    // One device, one micro-batch: steps are queued (`Trainer::queue`), each outcome read during
    // the next; `queued` is the step whose outcome is not read yet. Otherwise resolved at once.
    let immediate = parallel || config.accumulate > 1;
    let mut queued: Option<StepInfo> = None;
    while state.step < total {
        if let Some((progress, local)) = &rep.watch {
            if progress.aborted() {
                return Err(Error::Collective("stopped because another worker failed".into()));
            }
            progress.set_step(*local, state.step);
        }
        if let Some(fail) = &rep.fail {
            fail.check(rep.rank, state.step)?;
        }
        let epoch = state.loader.epoch;
        if !epoch_started {
            if let Some(l) = leader.as_mut() {
                l.log.start_epoch(epoch, epochs, per_epoch.min(total - epoch * per_epoch), state.loader.batch as u64);
            }
            epoch_started = true;
        }
        let batch = match rep.loader.next() {
            Some(b) => b?,
            None => return Err(Error::Invalid("the training loader ended unexpectedly".into())),
        };
        if parallel && (batch.epoch, batch.index) != (state.loader.epoch, state.loader.batch) {
            return Err(Error::Invalid(format!(
                "step {}: no window of this worker's share of batch {} of epoch {} could be read (see the warnings \
                 above): the workers would go out of step",
                state.step,
                state.loader.batch,
                state.loader.epoch + 1
            )));
        }
        debug_assert_eq!((batch.epoch, batch.index), (state.loader.epoch, state.loader.batch));
        let t = Instant::now();
        let lr = plan.schedule.lr(state.step);
        let images = (leader.is_some() && state.step % config.image_every == 0).then(|| batch.frames.clone().narrow(0, 0, 1));
        let this = StepInfo {
            step: state.step,
            epoch,
            lr,
            data_ms: batch.wait.as_secs_f64() * 1e3,
            upload_ms: batch.upload.as_secs_f64() * 1e3,
            step_ms: 0.0,
        };
        // Single device, one micro-batch: queued behind the previous step, whose outcome comes
        // back now (its check was copied in the background); the others are resolved at once.
        let result = if parallel {
            let vote = if stop() { 1.0 } else { 0.0 };
            let micro = micro_batches(batch.frames, config.accumulate);
            rep.trainer.step_micro(micro, lr, &[vote]).map(|(o, signals)| (Some(o), Some(signals[0] > 0.0)))
        } else if config.accumulate > 1 {
            let micro = micro_batches(batch.frames, config.accumulate);
            rep.trainer.step_micro(micro, lr, &[]).map(|(o, _)| (Some(o), None))
        } else {
            rep.trainer.queue(batch.frames, lr).map(|previous| (previous, None))
        };
        let (outcome, voted_stop) = match result {
            Ok(o) => o,
            Err(e) => return Err(step_error(e, queued.map_or(state.step, |q| q.step), &leader, &summary)?),
        };
        let step_ms = t.elapsed().as_secs_f64() * 1e3;
        let this = StepInfo { step_ms, ..this };
        if let Some(o) = outcome {
            let info = if immediate { this } else { queued.expect("a step was queued before") };
            record_step(&rep.trainer, &mut state, &mut leader, info, o)?;
        }
        if !immediate {
            queued = Some(this);
        }
        if let (Some(l), Some(x)) = (leader.as_mut(), images) {
            log_images(&mut l.log, "train", state.step, &rep.trainer, x)?;
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
        let interrupted = voted_stop.unwrap_or_else(stop);
        let validate_now = epoch_end || last || config.val_every.is_some_and(|n| state.step % n == 0);
        let checkpoint_now = epoch_end || last || interrupted || state.step % config.checkpoint_every == 0;
        // The queued step's outcome before anything that reads the state it decides (the epoch's
        // loss, validation, checkpoints) or the run ends.
        if (validate_now || checkpoint_now)
            && let Some(info) = queued.take()
        {
            match rep.trainer.settle() {
                Ok(Some(o)) => record_step(&rep.trainer, &mut state, &mut leader, info, o)?,
                Ok(None) => {}
                Err(e) => return Err(step_error(e, info.step, &leader, &summary)?),
            }
        }
        if epoch_end || last || interrupted {
            if let Some(l) = leader.as_mut() {
                l.log.end_epoch();
            }
            epoch_started = false;
        }
        if epoch_end {
            let (sum, n) = state.epoch_loss;
            if let Some(l) = leader.as_mut() {
                l.log.events().scalar("train/epoch_loss", state.step, sum / n.max(1) as f64)?;
                l.log.say(&format!("epoch {}: mean training loss {:.5}", epoch + 1, sum / n.max(1) as f64));
            }
            state.epoch_loss = (0.0, 0);
        }
        let Some(l) = leader.as_mut() else {
            if interrupted {
                summary.interrupted = true;
                break;
            }
            continue;
        };
        if let (true, Some(set)) = (validate_now && !interrupted, &l.val_set) {
            if let Some(c) = &l.calibration {
                recalibrate::<B>(&rep.trainer, c, &rep.device)?;
            }
            let v = run_validation::<B>(&rep.trainer, set.clone(), config, l.val_decoder, &rep.device)?;
            let (psnr, bil) = (v.psnr.mean(), v.psnr_bilinear.mean());
            log_validation(&mut l.log, state.step, &v)?;
            summary.last_val = Some((psnr, bil));
            if state.best_psnr.is_none_or(|(best, _)| psnr > best) {
                state.best_psnr = Some((psnr, state.step));
                summary.best_psnr = state.best_psnr;
                save_checkpoint(&rep.trainer, &state, &l.ckpt_dir.join("best.ckpt"), &l.log);
            }
        }
        if checkpoint_now {
            let path = l.ckpt_dir.join(checkpoint::step_name(state.step));
            if save_checkpoint(&rep.trainer, &state, &path, &l.log) {
                summary.checkpoint = Some(path);
                if let Err(e) = checkpoint::prune(&l.ckpt_dir, config.keep) {
                    l.log.say(&format!("warning: pruning old checkpoints: {e}"));
                }
            } else if last || interrupted {
                return Err(Error::Invalid(format!(
                    "the final checkpoint could not be written (see the warning above); {} steps were trained",
                    state.step
                )));
            }
        }
        if interrupted {
            l.log.say(&format!(
                "interrupted at step {}: saved; continue with `vsr train --resume {}`",
                state.step,
                l.run_dir.display()
            ));
            summary.interrupted = true;
            break;
        }
    }
    if let Some(l) = &leader
        && let Some(t) = l.log.timing()
    {
        l.log.say(&format!("timing: {t}"));
    }
    Ok(summary)
}

/// A step's log entry but its outcome, kept until the outcome is read.
#[derive(Clone, Copy)]
struct StepInfo {
    step: u64,
    epoch: u64,
    lr: f64,
    data_ms: f64,
    upload_ms: f64,
    step_ms: f64,
}

/// A step's outcome into the state (the scaler, the epoch's loss) and the log.
fn record_step<B: VsrAutodiffBackend>(trainer: &Trainer<B>, state: &mut TrainState, leader: &mut Option<Leader>, info: StepInfo, outcome: StepOutcome) -> Result<()> {
    state.scaler = trainer.scaler;
    state.epoch_loss.0 += outcome.loss;
    state.epoch_loss.1 += 1;
    if let Some(l) = leader.as_mut() {
        l.log.step(&StepLog {
            step: info.step,
            epoch: info.epoch,
            loss: outcome.loss,
            lr: info.lr,
            scale: outcome.scale,
            skipped: trainer.scaler.skipped_steps,
            data_ms: info.data_ms,
            upload_ms: info.upload_ms,
            step_ms: info.step_ms,
        })?;
    }
    Ok(())
}

/// The error that ends the run at step `step`, naming the last good checkpoint.
fn step_error(e: Error, step: u64, leader: &Option<Leader>, summary: &RunSummary) -> Result<Error> {
    let keep = match leader {
        Some(l) => {
            let last = summary.checkpoint.as_ref().or(checkpoint::list(&l.ckpt_dir)?.first().map(|(_, p)| p)).cloned();
            match last {
                Some(p) => format!("; the last good checkpoint is {}", p.display()),
                None => "; no checkpoint was written yet".into(),
            }
        }
        None => String::new(),
    };
    Ok(match e {
        Error::Collective(_) => e,
        e => Error::Invalid(format!("step {step}: {e}{keep}")),
    })
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

/// The windows of precise BN (`--precise-bn`): the same ones at every validation.
struct Calibration {
    set: Arc<Dataset>,
    config: LoaderConfig,
    batches: usize,
}

/// Recomputes the trainer's BatchNorm statistics over the calibration windows
/// ([`Trainer::recalibrate_batch_norm`]).
fn recalibrate<B: VsrAutodiffBackend>(trainer: &Trainer<B>, c: &Calibration, device: &B::Device) -> Result<()> {
    let loader = Loader::new(c.set.clone(), c.config.clone(), LoaderState { epoch: 0, batch: 0 })?;
    let mut loader = DeviceLoader::<B>::new(loader, device.clone());
    let batches = std::iter::from_fn(|| loader.next()).take(c.batches).map(|b| b.map(|b| b.frames));
    trainer.recalibrate_batch_norm(batches)?;
    Ok(())
}

fn run_validation<B: VsrAutodiffBackend>(
    trainer: &Trainer<B>,
    set: Arc<Dataset>,
    config: &TrainConfig,
    decoder: VideoDecoder,
    device: &B::Device,
) -> Result<Validation> {
    let mut cfg = LoaderConfig::val(config.frames, config.batch);
    cfg.decoder = decoder;
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
