//! `vsr train`: train VSRNet (with a frozen FlowNetSD) on prepared data, or `--resume` a run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

use super::BackendArgs;
use super::demo::parse_size;
use crate::backend::{MultiDeviceTask, VsrAutodiffBackend, dispatch_devices};
use crate::data::{DecoderChoice, SourceKind};
use crate::model::FlowInput;
use crate::precision::Precision;
use crate::train::{self, TrainConfig, checkpoint};

/// Flags left out take the defaults of the original's `run.sh` (fresh run) or the run's saved
/// settings (`--resume`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Prepared data directory (`vsr prep`) [default: data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Resolution folder of the data to train on [default: 720p].
    #[arg(long)]
    pub resolution: Option<String>,
    /// Read the transcoded videos or the PNG frames [default: video].
    #[arg(long, value_enum)]
    pub loader: Option<SourceKind>,
    /// Frames per window (odd) [default: 3].
    #[arg(long)]
    pub frames: Option<usize>,
    /// Distance between window starts in a scene [default: frames].
    #[arg(long)]
    pub stride: Option<usize>,
    /// Windows per batch [default: 2]; with several GPUs (--gpus, --nodes) the global batch,
    /// split evenly across them.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Gradient accumulation: cut each GPU's share of the batch into N micro-batches, each with
    /// its own BatchNorm statistics, one optimiser step for all [default: 1]. One GPU with
    /// --accumulate N computes the step of N GPUs; may change on --resume.
    #[arg(long)]
    pub accumulate: Option<usize>,
    /// Random training crop HxW, multiples of 64 [default: 512x960].
    #[arg(long)]
    pub crop: Option<String>,
    /// Validation centre crop HxW [default: whole frames floored to multiples of 64].
    #[arg(long)]
    pub val_crop: Option<String>,
    /// Decoding threads [default: cores minus one].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Batches prepared ahead [default: 4].
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// Shuffle buffer initial fill, as DALI's `initial_fill` [default: 16].
    #[arg(long)]
    pub shuffle_fill: Option<usize>,
    /// Video decoder: the training GPU's NVDEC, or FFmpeg on the CPU; the same pixels either way
    /// [default: auto: NVDEC where the training GPU has it]. May change on --resume.
    #[arg(long, value_enum)]
    pub decoder: Option<DecoderChoice>,
    /// FlowNetSD checkpoint (FlowNet2-SD_checkpoint.pth.tar, may be gzipped), or `none` for no
    /// motion compensation [default: flownet2-pytorch/networks/FlowNet2-SD_checkpoint.pth.tar].
    #[arg(long)]
    pub flownet: Option<String>,
    /// Frames FlowNetSD estimates motion from: degraded (lr) or full resolution as the original (hr) [default: lr].
    #[arg(long, value_enum)]
    pub flow_input: Option<FlowInput>,
    /// Start from these VSRNet weights (PyTorch state dict, safetensors or Burn record).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Epochs [default: 100].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many steps in all (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Lowest learning rate of the cycle [default: 1e-4].
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Highest learning rate of the cycle [default: 1e-3].
    #[arg(long)]
    pub max_lr: Option<f64>,
    /// Adam's L2 weight decay [default: 4e-4].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// fp32, or fp16 with fp32 master weights and dynamic loss scaling [default: fp32].
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Seed of the initialisation, the window order and the crops [default: 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also validate every N steps (always at the end of each epoch).
    #[arg(long)]
    pub val_every: Option<u64>,
    /// Precise BatchNorm: before each validation (and so in every checkpoint after one),
    /// recompute VSRNet's BatchNorm statistics over N fixed training windows with the current
    /// weights, instead of the running averages, which lag behind the weights at high learning
    /// rates; 0: off [default: 0].
    #[arg(long)]
    pub precise_bn: Option<usize>,
    /// Images to TensorBoard every N steps [default: 100].
    #[arg(long)]
    pub image_every: Option<u64>,
    /// Checkpoint every N steps (always at the end of each epoch) [default: 1000].
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Step checkpoints kept besides the best one [default: 3].
    #[arg(long)]
    pub keep: Option<usize>,
    /// Run name: logs and checkpoints go to <runs-dir>/<name> [default: the start time].
    #[arg(long)]
    pub name: Option<String>,
    /// Where runs are kept.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Continue a run: its directory (newest good checkpoint) or a checkpoint file.
    #[arg(long, conflicts_with = "name")]
    pub resume: Option<PathBuf>,
    /// The warp kernel's image gradient on CubeCL backends (cuda, wgpu): `deterministic` (the
    /// same bits every run) or `atomic` (float atomics: about 2x faster backward at 720p on an
    /// H100, docs/benchmarks.md, not bit-reproducible). Other backends ignore it [default:
    /// deterministic, or atomic when VSR_WARP_ATOMIC=1].
    #[arg(long, value_enum)]
    pub warp_grad: Option<WarpGrad>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

/// Data-parallel training: several devices, several nodes. `--batch` is the global batch,
/// split evenly across all workers.
#[derive(Debug, Clone, clap::Args)]
pub struct ParallelArgs {
    /// Train data-parallel on N GPUs of this machine: devices --device .. --device + N - 1, one
    /// worker each (with --backend cpu: N workers sharing the CPU) [default: 1].
    #[arg(long, conflicts_with = "devices")]
    pub gpus: Option<usize>,
    /// Train data-parallel on these GPUs, e.g. 0,2.
    #[arg(long, value_delimiter = ',', conflicts_with = "gpus")]
    pub devices: Option<Vec<usize>>,
    /// Nodes (machines, or processes) in the run; each runs this command with the same settings
    /// and number of workers, and its own --node-rank.
    #[arg(long, env = "NNODES", default_value_t = 1)]
    pub nodes: usize,
    /// This node's index, 0..--nodes; node 0 hosts the rendezvous and logs, validates and writes
    /// checkpoints.
    #[arg(long, env = "NODE_RANK", default_value_t = 0)]
    pub node_rank: usize,
    /// Node 0's host name or IP address, as every node reaches it.
    #[arg(long, env = "MASTER_ADDR", default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Port of the rendezvous (burn-collective's orchestrator) on node 0.
    #[arg(long, env = "MASTER_PORT", default_value_t = crate::train::collective::DEFAULT_MASTER_PORT)]
    pub master_port: u16,
    /// This node's host name or IP address, as the other nodes reach it [default: the host name].
    #[arg(long)]
    pub node_addr: Option<String>,
    /// Port of this node's tensor service, reached by the other nodes [default: --master-port + 1 + --node-rank].
    #[arg(long)]
    pub node_port: Option<u16>,
    /// Seconds a worker may wait for the others in a collective (all-reduce, joining) before
    /// the run ends with an error naming the workers that did not come.
    #[arg(long, default_value_t = crate::train::run::DEFAULT_TIMEOUT.as_secs())]
    pub collective_timeout: u64,
}

impl ParallelArgs {
    /// Device indices of this node's workers.
    pub fn device_indices(&self, first: usize) -> anyhow::Result<Vec<usize>> {
        match (&self.devices, self.gpus) {
            (Some(list), _) if list.is_empty() => bail!("--devices: give at least one device index"),
            (Some(list), _) => Ok(list.clone()),
            (None, Some(0)) => bail!("--gpus must be at least 1"),
            (None, Some(n)) => Ok((first..first + n).collect()),
            (None, None) => Ok(vec![first]),
        }
    }

    pub fn parallel(&self) -> anyhow::Result<train::Parallel> {
        let node_addr = match &self.node_addr {
            Some(a) => a.clone(),
            None if self.nodes > 1 => host_name().context("finding this machine's host name: pass --node-addr")?,
            None => "127.0.0.1".into(),
        };
        let node_port = match self.node_port {
            Some(p) => p,
            None => self
                .master_port
                .checked_add(1 + self.node_rank as u16)
                .context("--master-port + 1 + --node-rank is above 65535: pass --node-port")?,
        };
        let cluster = train::Cluster {
            nodes: self.nodes,
            node_rank: self.node_rank,
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
            node_addr,
            node_port,
        };
        cluster.validate()?;
        if self.collective_timeout == 0 {
            bail!("--collective-timeout must be at least 1 second");
        }
        Ok(train::Parallel { cluster, timeout: std::time::Duration::from_secs(self.collective_timeout), gpus: Vec::new() })
    }
}

/// This machine's host name.
fn host_name() -> anyhow::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        bail!("gethostname: {}", std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

impl Args {
    /// Settings that may change when a run is resumed.
    fn apply_resumable(&self, c: &mut TrainConfig) {
        if let Some(v) = self.epochs {
            c.epochs = v;
        }
        if let Some(v) = self.max_steps {
            c.max_steps = Some(v);
        }
        if let Some(v) = self.val_every {
            c.val_every = Some(v);
        }
        if let Some(v) = self.image_every {
            c.image_every = v;
        }
        if let Some(v) = self.precise_bn {
            c.precise_bn = v;
        }
        if let Some(v) = self.checkpoint_every {
            c.checkpoint_every = v;
        }
        if let Some(v) = self.keep {
            c.keep = v;
        }
        if let Some(v) = self.workers {
            c.workers = v;
        }
        if let Some(v) = self.prefetch {
            c.prefetch = v;
        }
        if let Some(v) = self.decoder {
            c.decoder = v;
        }
        if let Some(v) = self.accumulate {
            c.accumulate = v;
        }
    }

    /// Flags that define what is trained: fixed once a run has started.
    fn fixed_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--data", self.data.is_some()),
            ("--resolution", self.resolution.is_some()),
            ("--loader", self.loader.is_some()),
            ("--frames", self.frames.is_some()),
            ("--stride", self.stride.is_some()),
            ("--batch", self.batch.is_some()),
            ("--crop", self.crop.is_some()),
            ("--val-crop", self.val_crop.is_some()),
            ("--shuffle-fill", self.shuffle_fill.is_some()),
            ("--flownet", self.flownet.is_some()),
            ("--flow-input", self.flow_input.is_some()),
            ("--init", self.init.is_some()),
            ("--min-lr", self.min_lr.is_some()),
            ("--max-lr", self.max_lr.is_some()),
            ("--weight-decay", self.weight_decay.is_some()),
            ("--precision", self.precision.is_some()),
            ("--seed", self.seed.is_some()),
        ];
        given.into_iter().filter(|(_, g)| *g).map(|(n, _)| n).collect()
    }

    /// The settings of a fresh run.
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        let mut c = TrainConfig::default();
        if let Some(v) = &self.data {
            c.data = v.clone();
        }
        if let Some(v) = &self.resolution {
            c.resolution = v.clone();
        }
        if let Some(v) = self.loader {
            c.loader = v;
        }
        if let Some(v) = self.frames {
            c.frames = v;
            c.stride = v;
        }
        if let Some(v) = self.stride {
            c.stride = v;
        }
        if let Some(v) = self.batch {
            c.batch = v;
        }
        if let Some(v) = &self.crop {
            let (h, w) = parse_size(v).context("--crop")?;
            c.crop = [h, w];
        }
        if let Some(v) = &self.val_crop {
            let (h, w) = parse_size(v).context("--val-crop")?;
            c.val_crop = Some([h, w]);
        }
        if let Some(v) = self.shuffle_fill {
            c.shuffle_fill = v;
        }
        if let Some(v) = &self.flownet {
            c.flownet = (v != "none").then(|| PathBuf::from(v));
        }
        if let Some(v) = self.flow_input {
            c.flow_input = v;
        }
        c.init = self.init.clone();
        if let Some(v) = self.min_lr {
            c.min_lr = v;
        }
        if let Some(v) = self.max_lr {
            c.max_lr = v;
        }
        if let Some(v) = self.weight_decay {
            c.adam.weight_decay = v;
        }
        if let Some(v) = self.precision {
            c.precision = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        self.apply_resumable(&mut c);
        c.validate()?;
        Ok(c)
    }
}

/// Set by Ctrl-C: the loop saves and stops after the current step.
static STOP: AtomicBool = AtomicBool::new(false);

/// How the warp kernel sums its image gradient (`--warp-grad`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WarpGrad {
    Deterministic,
    Atomic,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let kind = args.backend.kind();
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(w) = args.warp_grad {
        vsr_kernels::cube::set_atomic_grad_img(w == WarpGrad::Atomic);
    }
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    if args.warp_grad == Some(WarpGrad::Atomic) {
        anyhow::bail!("--warp-grad atomic: this build has no CubeCL backend (features cuda or wgpu)");
    }
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond Ctrl-C: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: finishing the current step, saving a checkpoint (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    let devices = args.parallel.device_indices(args.backend.device)?;
    if devices.len() > 1 || args.parallel.nodes > 1 {
        println!("backend: {kind}, devices {devices:?}, node {} of {}", args.parallel.node_rank, args.parallel.nodes);
    } else {
        println!("backend: {kind}");
    }
    let summary = dispatch_devices(kind, &devices, Train(args))??;
    match summary.last_val {
        Some((psnr, bil)) => println!(
            "done: {} steps; validation PSNR {psnr:.2} dB (bilinear {bil:.2} dB, {:+.2} dB)",
            summary.steps,
            psnr - bil
        ),
        None => println!("done: {} steps", summary.steps),
    }
    if let Some(p) = &summary.checkpoint {
        println!("checkpoint: {}", p.display());
    }
    if let Some((best, step)) = summary.best_psnr {
        println!("best validation PSNR {best:.2} dB at step {step}");
    }
    Ok(())
}

struct Train(Args);

impl MultiDeviceTask for Train {
    type Output = anyhow::Result<train::RunSummary>;
    fn run<B: VsrAutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let args = self.0;
        let mut parallel = args.parallel.parallel()?;
        let kind = args.backend.kind();
        parallel.gpus = args.parallel.device_indices(args.backend.device)?.into_iter().map(|i| crate::backend::cuda_gpu_of(kind, i)).collect();
        let device = devices[0].clone();
        let (config, run_dir, resume) = match &args.resume {
            Some(target) => {
                let (run_dir, ckpt) = resolve_resume::<B>(target, &device)?;
                let fixed = args.fixed_flags();
                if !fixed.is_empty() {
                    bail!(
                        "{} cannot change when resuming: the run keeps the settings it started with (see {}/config.json)",
                        fixed.join(", "),
                        run_dir.display()
                    );
                }
                let mut config = ckpt.state.config.clone();
                args.apply_resumable(&mut config);
                (config, run_dir, Some(ckpt))
            }
            None => {
                let name = args.name.clone().unwrap_or_else(timestamp_name);
                let run_dir = args.runs_dir.join(name);
                if checkpoint_exists(&run_dir) {
                    bail!(
                        "{} already holds a run: continue it with --resume {0}, or choose another --name",
                        run_dir.display()
                    );
                }
                (args.config()?, run_dir, None)
            }
        };
        Ok(train::train_on::<B>(config, &run_dir, resume, devices, &parallel, &STOP)?)
    }
}

fn checkpoint_exists(run_dir: &Path) -> bool {
    checkpoint::list(&train::run::checkpoint_dir(run_dir)).is_ok_and(|l| !l.is_empty())
}

/// `--resume <run dir | checkpoint>` -> (run directory, checkpoint).
fn resolve_resume<B: VsrAutodiffBackend>(
    target: &Path,
    device: &B::Device,
) -> anyhow::Result<(PathBuf, checkpoint::Checkpoint<B>)> {
    if target.is_dir() {
        let dir = train::run::checkpoint_dir(target);
        let ckpt = checkpoint::latest_good::<B>(&dir, device)?
            .with_context(|| format!("{}: no checkpoint to resume from", dir.display()))?;
        return Ok((target.to_path_buf(), ckpt));
    }
    let ckpt = checkpoint::load::<B>(target, device)?;
    // runs/<name>/checkpoints/<file>: the run directory is two levels up.
    let parent = target.parent().unwrap_or(Path::new("."));
    let run_dir = if parent.file_name().is_some_and(|n| n == "checkpoints") {
        parent.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        parent.to_path_buf()
    };
    Ok((run_dir, ckpt))
}

/// `2026-11-25T23-04-05` (UTC): a default run name that sorts by time.
fn timestamp_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
