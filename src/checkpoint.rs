//! Weights in and out: PyTorch checkpoints (flownet2-pytorch's `FlowNet2-SD_checkpoint.pth.tar`,
//! VSRNet state dicts), our own Burn records, and safetensors export.
//!
//! PyTorch files are parsed by burn-store's pickle reader (legacy and zip `torch.save` formats),
//! straight into Burn modules at load time. Around it this module adds what a user needs when a
//! file is wrong: zip entries are CRC-checked, every tensor is materialised and checked to be
//! finite, key prefixes (`state_dict.`, `module.`, `FlowNetSD_network.`) are normalised, and all
//! missing, unexpected and wrong-shaped tensors are reported at once, by their PyTorch names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use burn::module::{Module, ParamId};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::{TensorData, backend::Backend};
use burn_store::pytorch::PytorchReader;
use burn_store::{ModuleSnapshot, TensorSnapshot};

use crate::error::{Error, Result};
use crate::model::{FlowNetSD, FlowNetSDConfig, VsrNet, VsrNetConfig};

/// Tensors of a checkpoint, by normalised PyTorch name.
pub type StateDict = BTreeMap<String, TensorData>;

/// Formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `torch.save`, zip (PyTorch >= 1.6).
    TorchZip,
    /// `torch.save`, legacy pickle (`_use_new_zipfile_serialization=False`).
    TorchLegacy,
    /// safetensors (our export, or a user's).
    Safetensors,
    /// Burn's named MessagePack record (our native format).
    BurnRecord,
}

fn format_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::CheckpointFormat { path: path.to_path_buf(), reason: reason.into() }
}

/// Recognises a checkpoint by its first bytes.
pub fn sniff(path: &Path) -> Result<FileKind> {
    if !path.exists() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
    }
    let mut head = [0u8; 16];
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        Ok(FileKind::TorchZip)
    } else if head.starts_with(&[0x80]) && n >= 2 {
        Ok(FileKind::TorchLegacy)
    } else if n >= 9 && head[8] == b'{' {
        Ok(FileKind::Safetensors)
    } else if path.extension().is_some_and(|e| e == "mpk") {
        Ok(FileKind::BurnRecord)
    } else if n == 0 {
        Err(format_err(path, "the file is empty"))
    } else {
        Err(format_err(
            path,
            "not a PyTorch (torch.save), safetensors or Burn record file (unrecognised header)",
        ))
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads every tensor of a PyTorch or safetensors checkpoint, with normalised names
/// (`state_dict.` and `module.` prefixes removed). Fails, naming the file, on anything
/// unreadable: truncation, corruption (zip CRCs), non-finite values.
pub fn read_state_dict(path: &Path) -> Result<StateDict> {
    let raw = match sniff(path)? {
        FileKind::TorchZip => {
            verify_zip(path)?;
            read_torch(path)?
        }
        FileKind::TorchLegacy => read_torch(path)?,
        FileKind::Safetensors => read_safetensors(path)?,
        FileKind::BurnRecord => {
            return Err(format_err(path, "a Burn record holds no PyTorch state dict; load it as a model"));
        }
    };
    let mut out = StateDict::new();
    for (name, data) in raw {
        let key = normalise_key(&name);
        if let Some(bad) = first_non_finite(&data) {
            return Err(format_err(path, format!("tensor `{name}` holds a non-finite value ({bad}): the file is corrupt")));
        }
        out.insert(key, data);
    }
    if out.is_empty() {
        return Err(format_err(path, "it holds no tensors"));
    }
    Ok(out)
}

/// Removes wrappers around a state dict's keys: a checkpoint dict's `state_dict.` (or
/// `model_state_dict.`) and nn.DataParallel's `module.`.
pub fn normalise_key(name: &str) -> String {
    let mut key = name;
    for prefix in ["state_dict.", "model_state_dict.", "module."] {
        if let Some(rest) = key.strip_prefix(prefix) {
            key = rest;
        }
    }
    key.strip_prefix("module.").unwrap_or(key).to_string()
}

fn read_torch(path: &Path) -> Result<Vec<(String, TensorData)>> {
    let owned = path.to_path_buf();
    // The pickle reader can panic on malformed input: contain it and report the file.
    let parsed = crate::backend::quiet_panics(|| {
        std::panic::catch_unwind(move || -> std::result::Result<_, String> {
            let reader = PytorchReader::new(&owned).map_err(|e| e.to_string())?;
            let meta = reader.metadata();
            let data_region = if meta.is_legacy_format() { meta.total_data_size } else { None };
            let mut tensors = Vec::new();
            for (name, snap) in reader.into_tensors() {
                let data = snap.to_data().map_err(|e| format!("tensor `{name}`: {e:?}"))?;
                tensors.push((name, data));
            }
            Ok((tensors, data_region))
        })
    });
    let (tensors, data_region) = match parsed {
        Ok(Ok(t)) => t,
        Ok(Err(reason)) => return Err(format_err(path, reason)),
        Err(_) => return Err(format_err(path, "malformed torch.save data (truncated or corrupted)")),
    };
    // burn-store 0.21 fills tensors whose bytes are missing with zeros instead of failing. In a
    // legacy file every storage is an 8-byte count and its bytes, one storage per tensor in the
    // state dicts we load (no tied weights): the data region must hold them all.
    if let Some(region) = data_region {
        let needed: usize = tensors.iter().map(|(_, d)| 8 + d.num_elements() * d.dtype.size()).sum();
        if region < needed {
            return Err(format_err(
                path,
                format!("truncated: tensor data needs {needed} bytes, the file holds {region}"),
            ));
        }
    }
    Ok(tensors)
}

/// Reads every zip entry to its end so that the zip crate checks its CRC-32.
fn verify_zip(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format_err(path, format!("broken zip container: {e}")))?;
    let mut sink = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| format_err(path, format!("zip entry {i}: {e}")))?;
        let name = entry.name().to_string();
        sink.clear();
        entry
            .read_to_end(&mut sink)
            .map_err(|e| format_err(path, format!("zip entry `{name}`: {e} (corrupted data)")))?;
    }
    Ok(())
}

fn read_safetensors(path: &Path) -> Result<Vec<(String, TensorData)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format_err(path, format!("safetensors: {e}")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(format_err(path, format!("tensor `{name}` is {:?}; only F32 is supported", view.dtype())));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push((name, TensorData::new(values, view.shape().to_vec())));
    }
    Ok(out)
}

fn first_non_finite(data: &TensorData) -> Option<f32> {
    if !data.dtype.is_float() {
        return None;
    }
    let values = data.clone().convert::<f32>();
    values.as_slice::<f32>().ok()?.iter().copied().find(|v| !v.is_finite())
}

/// PyTorch key of a Burn parameter path: `x.conv.` -> `x.0.`, `x.bn.gamma` -> `x.1.weight`.
pub fn burn_to_torch(path: &str) -> String {
    let mut parts: Vec<&str> = path.split('.').collect();
    let n = parts.len();
    if n >= 3 {
        match parts[n - 2] {
            "conv" => parts[n - 2] = "0",
            "bn" => {
                parts[n - 2] = "1";
                parts[n - 1] = match parts[n - 1] {
                    "gamma" => "weight",
                    "beta" => "bias",
                    other => other,
                };
            }
            _ => {}
        }
    }
    parts.join(".")
}

/// Burn path of a PyTorch key (inverse of [`burn_to_torch`] on our modules' keys).
fn torch_to_burn(key: &str, burn_paths: &BTreeMap<String, String>) -> Option<String> {
    burn_paths.get(key).cloned()
}

/// Loads `state` into `module`: every parameter of `module` must be present with its shape, and
/// nothing else may be (BatchNorm's `num_batches_tracked` aside). All problems are reported in
/// one error.
fn apply_state<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: M,
    state: StateDict,
    path: &Path,
    model: &'static str,
) -> Result<M> {
    let expected = module.collect(None, None, true);
    // torch key -> (burn path segments, shape)
    let mut by_torch: BTreeMap<String, (Vec<String>, Vec<usize>)> = BTreeMap::new();
    let mut burn_paths = BTreeMap::new();
    for snap in &expected {
        let burn = snap.full_path();
        let torch = burn_to_torch(&burn);
        burn_paths.insert(torch.clone(), burn.clone());
        by_torch.insert(torch, (snap.path_stack.clone().unwrap_or_default(), snap.shape.to_vec()));
    }
    let mut problems = Vec::new();
    let present: BTreeSet<&String> = state.keys().collect();
    let missing: Vec<_> = by_torch.keys().filter(|k| !present.contains(k)).cloned().collect();
    if !missing.is_empty() {
        problems.push(format!("missing tensors: {}", missing.join(", ")));
    }
    let unexpected: Vec<_> = state
        .keys()
        .filter(|k| !by_torch.contains_key(*k) && !k.ends_with("num_batches_tracked"))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        problems.push(format!("unexpected tensors: {}", unexpected.join(", ")));
    }
    for (key, data) in &state {
        if let Some((_, shape)) = by_torch.get(key)
            && data.shape.to_vec() != *shape
        {
            problems.push(format!("`{key}` has shape {:?}, expected {:?}", data.shape.to_vec(), shape));
        }
    }
    if !problems.is_empty() {
        return Err(Error::CheckpointMismatch { path: path.to_path_buf(), model, problems });
    }
    let snapshots: Vec<TensorSnapshot> = state
        .into_iter()
        .filter_map(|(key, data)| {
            let burn = torch_to_burn(&key, &burn_paths)?;
            let stack = burn.split('.').map(str::to_string).collect();
            Some(TensorSnapshot::from_data(data.convert::<f32>(), stack, Vec::new(), ParamId::new()))
        })
        .collect();
    let mut module = module;
    let result = module.apply(snapshots, None, None, true);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        let mut problems: Vec<String> = result.errors.iter().map(|e| format!("{e:?}")).collect();
        problems.extend(result.missing.iter().map(|(p, _)| format!("not applied: {}", burn_to_torch(p))));
        return Err(Error::CheckpointMismatch { path: path.to_path_buf(), model, problems });
    }
    Ok(module)
}

/// Loads FlowNetSD from a flownet2-pytorch checkpoint (`FlowNet2-SD_checkpoint.pth.tar`), a bare
/// state dict, a DataParallel one, or a whole-VSRNet state dict (keys under `FlowNetSD_network.`).
pub fn load_flownet<B: Backend>(path: &Path, device: &B::Device) -> Result<FlowNetSD<B>> {
    let mut state = read_state_dict(path)?;
    let nested: Vec<String> = state.keys().filter(|k| k.starts_with("FlowNetSD_network.")).cloned().collect();
    if !nested.is_empty() {
        state = nested
            .into_iter()
            .filter_map(|k| {
                let v = state.remove(&k)?;
                Some((k["FlowNetSD_network.".len()..].to_string(), v))
            })
            .collect();
    }
    let model = FlowNetSDConfig::new().init::<B>(device);
    apply_state(model, state, path, "FlowNetSD")
}

/// Loads VSRNet's own weights (conv1, conv2, conv3 with BatchNorm statistics) from a PyTorch
/// state dict or our safetensors export into a model built from `config`. FlowNetSD's keys in a
/// whole-VSRNet state dict are ignored here (see [`load_flownet`]).
pub fn load_vsrnet_torch<B: Backend>(path: &Path, config: &VsrNetConfig, device: &B::Device) -> Result<VsrNet<B>> {
    let state: StateDict = read_state_dict(path)?
        .into_iter()
        .filter(|(k, _)| !k.starts_with("FlowNetSD_network."))
        .collect();
    apply_state(config.init::<B>(device), state, path, "VSRNet")
}

/// Loads VSRNet from any supported file: a Burn record (`.mpk`, with its config beside it as
/// `<file>.json`, see [`save_vsrnet`]), safetensors, or a PyTorch state dict.
pub fn load_vsrnet<B: Backend>(path: &Path, config: &VsrNetConfig, device: &B::Device) -> Result<VsrNet<B>> {
    match sniff(path)? {
        FileKind::BurnRecord => {
            let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
            let model = config.init::<B>(device);
            let owned = path.to_path_buf();
            crate::backend::quiet_panics(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    model.load_file(owned.clone(), &recorder, device)
                }))
            })
            .map_err(|_| format_err(path, "malformed Burn record"))?
            .map_err(|e| format_err(path, format!("Burn record: {e}")))
        }
        _ => load_vsrnet_torch(path, config, device),
    }
}

/// Saves VSRNet as a Burn record (`<path>` with extension `.mpk`), atomically (temporary file,
/// fsync, rename). Returns the path written.
pub fn save_vsrnet<B: Backend>(model: &VsrNet<B>, path: &Path) -> Result<PathBuf> {
    let final_path = path.with_extension("mpk");
    let stem = final_path.file_stem().map(|s| s.to_string_lossy().replace('.', "_")).unwrap_or_default();
    // Burn's recorder sets the extension itself: give it a dot-free temporary stem.
    let tmp = final_path.with_file_name(format!(".{stem}-tmp-{}", std::process::id()));
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    model
        .clone()
        .save_file(tmp.clone(), &recorder)
        .map_err(|e| format_err(&final_path, format!("writing Burn record: {e}")))?;
    commit(&tmp.with_extension("mpk"), &final_path)?;
    Ok(final_path)
}

/// Exports VSRNet's weights to safetensors with PyTorch's key names (`conv1.0.weight`,
/// `conv1.1.running_mean`, ...), loadable by `load_state_dict` after `safetensors.torch.load_file`.
pub fn export_safetensors<B: Backend>(model: &VsrNet<B>, path: &Path) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for snap in model.collect(None, None, true) {
        let name = burn_to_torch(&snap.full_path());
        let data = snap
            .to_data()
            .map_err(|e| format_err(path, format!("reading `{name}`: {e:?}")))?
            .convert::<f32>();
        let bytes = data.as_slice::<f32>().map_err(|e| format_err(path, format!("{e:?}")))?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        tensors.push((name, data.shape.to_vec(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("sizes match"))
        })
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("vsr.frames".to_string(), model.frames.to_string());
    let bytes = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| format_err(path, format!("safetensors: {e}")))?;
    write_atomic(path, &bytes)
}

/// A sibling temporary name for atomic writes.
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    commit(&tmp, path)
}

/// Makes `tmp` (fully written) durable and renames it to `path`.
pub(crate) fn commit(tmp: &Path, path: &Path) -> Result<()> {
    File::open(tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        Error::io(path, e)
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename durable; not every filesystem supports fsync on directories.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Decompresses a `.gz` checkpoint (as the fixtures ship) into `dir`, returning the new path.
pub fn gunzip_to(path: &Path, dir: &Path) -> Result<PathBuf> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let name = path.file_stem().map(|s| s.to_owned()).unwrap_or_else(|| "checkpoint".into());
    let out = dir.join(name);
    let mut dst = File::create(&out).map_err(|e| Error::io(&out, e))?;
    std::io::copy(&mut decoder, &mut dst).map_err(|e| Error::io(path, e))?;
    Ok(out)
}
