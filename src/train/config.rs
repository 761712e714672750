//! Everything a training run is defined by. Saved in every checkpoint and as
//! `runs/<name>/config.json`; `--resume` continues with the saved one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::adam::AdamSettings;
use crate::data::{DecoderChoice, SourceKind};
use crate::error::{Error, Result};
use crate::model::FlowInput;
use crate::model::vsrnet::SIZE_MULTIPLE;
use crate::precision::Precision;

/// A training run's settings. Defaults are the original's `run.sh`: 720p data, batch 2, 3
/// frames, 512x960 crops, cyclic LR between 1e-4 and 1e-3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Prepared data (`vsr prep`): `<data>/<resolution>/{scenes,frames}/{train,val}`.
    pub data: PathBuf,
    pub resolution: String,
    pub loader: SourceKind,
    /// Frames per window F (odd).
    pub frames: usize,
    /// Distance between window starts inside a scene (default F).
    pub stride: usize,
    pub batch: usize,
    /// Micro-batches per worker and step (gradient accumulation): each worker's share of the
    /// batch is cut into this many parts, each forwarded with its own BatchNorm batch
    /// statistics, and their gradients averaged before the step. `--gpus N` and `--accumulate N`
    /// on one GPU compute the same step (the batch falls into the same N BatchNorm groups).
    #[serde(default = "one")]
    pub accumulate: usize,
    /// Training crop (H, W), multiples of 64.
    pub crop: [usize; 2],
    /// Validation: centre crop (H, W), or whole frames floored to multiples of 64.
    pub val_crop: Option<[usize; 2]>,
    /// Decode threads (default: cores minus one).
    pub workers: usize,
    /// Batches prepared ahead.
    pub prefetch: usize,
    /// Shuffle buffer initial fill (DALI's `initial_fill`).
    pub shuffle_fill: usize,
    /// Decoder of video scenes: NVDEC on the training GPU, or the CPU (same pixels either way).
    #[serde(default)]
    pub decoder: DecoderChoice,

    /// FlowNetSD checkpoint; `None`: no motion compensation.
    pub flownet: Option<PathBuf>,
    pub flow_input: FlowInput,
    /// VSRNet weights to start from (else a fresh initialisation from `seed`).
    pub init: Option<PathBuf>,

    pub epochs: usize,
    /// Stop after this many steps (overrides `epochs`).
    pub max_steps: Option<u64>,
    pub min_lr: f64,
    pub max_lr: f64,
    pub adam: AdamSettings,
    pub precision: Precision,
    pub seed: u64,

    /// Validate every N steps (besides every epoch end).
    pub val_every: Option<u64>,
    /// Precise BatchNorm: before each validation, VSRNet's BatchNorm statistics are recomputed
    /// over this many training windows (a fixed set, random crops drawn once from the seed) with
    /// the current weights, instead of the running averages; 0: the running averages.
    #[serde(default)]
    pub precise_bn: usize,
    /// Images to TensorBoard every N steps.
    pub image_every: u64,
    /// Checkpoint every N steps (besides every epoch end and the end of the run).
    pub checkpoint_every: u64,
    /// Step checkpoints kept (the best by val PSNR is kept besides).
    pub keep: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::from("data"),
            resolution: "720p".into(),
            loader: SourceKind::Video,
            frames: 3,
            stride: 3,
            batch: 2,
            accumulate: 1,
            crop: [512, 960],
            val_crop: None,
            workers: default_workers(),
            prefetch: 4,
            shuffle_fill: 16,
            decoder: DecoderChoice::Auto,
            flownet: Some(PathBuf::from("flownet2-pytorch/networks/FlowNet2-SD_checkpoint.pth.tar")),
            flow_input: FlowInput::Lr,
            init: None,
            epochs: 100,
            max_steps: None,
            min_lr: 1e-4,
            max_lr: 1e-3,
            adam: AdamSettings::default(),
            precision: Precision::Fp32,
            seed: 1,
            val_every: None,
            precise_bn: 0,
            image_every: 100,
            checkpoint_every: 1000,
            keep: 3,
        }
    }
}

fn one() -> usize {
    1
}

/// Cores minus one, at least one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get().saturating_sub(1)).unwrap_or(1).max(1)
}

impl TrainConfig {
    /// Refuses settings that cannot train, before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.frames == 0 || self.frames % 2 == 0 {
            return bad(format!("--frames must be odd and at least 1, got {}", self.frames));
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if self.accumulate == 0 || self.batch % self.accumulate != 0 {
            return bad(format!(
                "--batch {} cannot be cut into --accumulate {} equal micro-batches",
                self.batch, self.accumulate
            ));
        }
        if self.stride == 0 {
            return bad("--stride must be at least 1".into());
        }
        for (name, [h, w]) in [("--crop", Some(self.crop)), ("--val-crop", self.val_crop)]
            .into_iter()
            .filter_map(|(n, c)| c.map(|c| (n, c)))
        {
            if h == 0 || w == 0 || h % SIZE_MULTIPLE != 0 || w % SIZE_MULTIPLE != 0 {
                return bad(format!("{name} {h}x{w}: height and width must be positive multiples of {SIZE_MULTIPLE} (FlowNetSD needs it)"));
            }
        }
        if !(self.min_lr > 0.0 && self.max_lr >= self.min_lr && self.max_lr.is_finite()) {
            return bad(format!("learning rates must satisfy 0 < --min-lr <= --max-lr, got {} and {}", self.min_lr, self.max_lr));
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return bad("--epochs must be at least 1".into());
        }
        if self.checkpoint_every == 0 || self.image_every == 0 || self.val_every == Some(0) {
            return bad("--checkpoint-every, --image-every and --val-every must be at least 1".into());
        }
        if self.keep == 0 {
            return bad("--keep must be at least 1".into());
        }
        Ok(())
    }
}
