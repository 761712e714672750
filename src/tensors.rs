//! Reading named fp32 tensors from safetensors files (golden outputs, exported weights).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::error::{Error, Result};

/// All tensors of a safetensors file, as fp32 [`TensorData`] by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, TensorData>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Tensors { path: path.to_path_buf(), reason: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(Error::Tensors {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}` is {:?}, expected F32", view.dtype()),
            });
        }
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, TensorData::new(values, view.shape().to_vec()));
    }
    Ok(out)
}

/// A tensor of rank `D` on `device` from fp32 data.
pub fn to_tensor<B: Backend, const D: usize>(data: &TensorData, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(data.clone(), device)
}

/// Largest absolute difference and largest difference relative to `max|reference|`.
pub fn max_errors(actual: &TensorData, reference: &TensorData) -> (f32, f32) {
    let a = actual.clone().convert::<f32>();
    let r = reference.clone().convert::<f32>();
    let a = a.as_slice::<f32>().expect("f32");
    let r = r.as_slice::<f32>().expect("f32");
    assert_eq!(a.len(), r.len(), "element counts differ");
    let scale = r.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    let abs = a.iter().zip(r).fold(0f32, |m, (x, y)| if (x - y).is_nan() { f32::INFINITY } else { m.max((x - y).abs()) });
    (abs, abs / scale)
}
