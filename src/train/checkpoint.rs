//! Training checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint is one zip file (`runs/<name>/checkpoints/step-00001000.ckpt`) holding
//! `state.json` ([`TrainState`]: step, loader position, loss scaler, best PSNR, the run's
//! [`TrainConfig`]), `vsrnet.mpk` (VSRNet's weights and BatchNorm statistics, a Burn record) and
//! `adam.mpk` (Adam's moments and step counts). Zip's CRC-32 of every entry is checked on load, so
//! a damaged file is refused instead of resuming from garbage; [`latest_good`] then falls back to
//! the previous one. Files are written atomically (temporary name, fsync, rename): a crash or a
//! full disk while writing leaves the previous checkpoints as they were. The last `keep` step
//! checkpoints are kept, and `best.ckpt` holds the one with the best validation PSNR.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use serde::{Deserialize, Serialize};

use super::TrainConfig;
use super::scaler::LossScaler;
use super::adam::OptimizerRecord;
use super::step::Trainer;
use crate::backend::VsrAutodiffBackend;
use crate::checkpoint::write_atomic;
use crate::data::LoaderState;
use crate::error::{Error, Result};
use crate::model::VsrNet;

/// Format version of `state.json`.
pub const FORMAT: u32 = 1;

/// The run's position and bookkeeping, beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    /// Optimisation steps taken (the next step's index).
    pub step: u64,
    /// Where the training loader continues.
    pub loader: LoaderState,
    pub scaler: LossScaler,
    /// Best validation PSNR so far and its step.
    pub best_psnr: Option<(f64, u64)>,
    /// Sum of the training loss over the current epoch and its step count (epoch averages
    /// survive a resume).
    pub epoch_loss: (f64, u64),
    pub config: TrainConfig,
}

/// A checkpoint read back: state, weights and optimiser state, not yet on a device's model.
pub struct Checkpoint<B: VsrAutodiffBackend> {
    pub path: PathBuf,
    pub state: TrainState,
    pub model: <VsrNet<B> as Module<B>>::Record,
    pub optim: OptimizerRecord<B>,
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::CheckpointFormat { path: path.to_path_buf(), reason: reason.to_string() }
}

/// The file name of the checkpoint after `step` steps.
pub fn step_name(step: u64) -> String {
    format!("step-{step:08}.ckpt")
}

/// Serialises a checkpoint (zip, stored entries: the records do not compress).
pub fn encode<B: VsrAutodiffBackend>(trainer: &Trainer<B>, state: &TrainState) -> Result<Vec<u8>> {
    let err = |e: &dyn std::fmt::Display| Error::Invalid(format!("encoding a checkpoint: {e}"));
    let model = Recorder::<B>::record(&recorder(), trainer.model.clone().into_record(), ()).map_err(|e| err(&e))?;
    let optim = Recorder::<B>::record(&recorder(), trainer.optim.to_record(), ()).map_err(|e| err(&e))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| err(&e))?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, bytes) in [("state.json", &json), ("vsrnet.mpk", &model), ("adam.mpk", &optim)] {
        zip.start_file(name, opts).map_err(|e| err(&e))?;
        zip.write_all(bytes).map_err(|e| err(&e))?;
    }
    Ok(zip.finish().map_err(|e| err(&e))?.into_inner())
}

/// Writes a checkpoint atomically.
pub fn save<B: VsrAutodiffBackend>(trainer: &Trainer<B>, state: &TrainState, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(path, &encode(trainer, state)?)
}

/// Reads and verifies a checkpoint (every entry's CRC, the state's format, both records).
pub fn load<B: VsrAutodiffBackend>(path: &Path, device: &B::Device) -> Result<Checkpoint<B>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| corrupt(path, format!("not a vsr training checkpoint ({e})")))?;
    let mut entry = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).map_err(|e| corrupt(path, format!("entry `{name}`: {e}")))?;
        let mut bytes = Vec::new();
        // Reading to the end checks the entry's CRC-32.
        f.read_to_end(&mut bytes).map_err(|e| corrupt(path, format!("entry `{name}`: {e}")))?;
        Ok(bytes)
    };
    let state: TrainState = serde_json::from_slice(&entry("state.json")?)
        .map_err(|e| corrupt(path, format!("state.json: {e}")))?;
    if state.format != FORMAT {
        return Err(corrupt(path, format!("checkpoint format {} (this vsr reads {FORMAT})", state.format)));
    }
    let model_bytes = entry("vsrnet.mpk")?;
    let optim_bytes = entry("adam.mpk")?;
    let model = quiet_catch(|| Recorder::<B>::load(&recorder(), model_bytes, device))
        .map_err(|e| corrupt(path, format!("vsrnet.mpk: {e}")))?;
    let optim = quiet_catch(|| Recorder::<B>::load(&recorder(), optim_bytes, device))
        .map_err(|e| corrupt(path, format!("adam.mpk: {e}")))?;
    Ok(Checkpoint { path: path.to_path_buf(), state, model, optim })
}

/// Runs a decoder that may panic on malformed input; a panic becomes an error.
fn quiet_catch<T, E: std::fmt::Display>(f: impl FnOnce() -> std::result::Result<T, E>) -> std::result::Result<T, String> {
    match crate::backend::quiet_panics(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("malformed record".into()),
    }
}

/// Step checkpoints in `dir`, newest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.strip_suffix(".ckpt")).and_then(|s| s.parse().ok()) {
            found.push((step, e.path()));
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found)
}

/// The newest checkpoint of `dir` that reads back whole. Damaged ones are skipped with a
/// warning naming them; `Ok(None)` if there is none at all, an error if all are damaged.
pub fn latest_good<B: VsrAutodiffBackend>(dir: &Path, device: &B::Device) -> Result<Option<Checkpoint<B>>> {
    let all = list(dir)?;
    let mut problems = Vec::new();
    for (_, path) in &all {
        match load::<B>(path, device) {
            Ok(c) => {
                for p in &problems {
                    eprintln!("warning: {p}; resuming from the previous good checkpoint {}", path.display());
                }
                return Ok(Some(c));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if all.is_empty() {
        Ok(None)
    } else {
        Err(Error::Invalid(format!("every checkpoint in {} is damaged: {}", dir.display(), problems.join("; "))))
    }
}

/// Deletes all but the newest `keep` step checkpoints.
pub fn prune(dir: &Path, keep: usize) -> Result<()> {
    for (_, path) in list(dir)?.into_iter().skip(keep) {
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
