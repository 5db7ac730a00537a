//! State-dict files: PyTorch's `.pth` / `.pt` pickles (read through burn-store) and
//! safetensors (read and written with the `safetensors` crate).

use std::path::Path;

use burn::store::{ModuleStore, PytorchStore};
use burn::tensor::{DType, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::StateDict;
use crate::ModelError;

/// The error of file `path`.
fn bad(
    path: &Path,
    why: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> ModelError {
    ModelError::Weights {
        path: path.to_path_buf(),
        source: why.into(),
    }
}

/// The state dict in `path`: a safetensors file (`.safetensors`) or a PyTorch pickle of a
/// state dict (`.pth`, `.pt`, `.bin`; a checkpoint with the dict under `state_dict` or
/// `model` is read too).
pub fn read_state_dict(path: &Path) -> Result<StateDict, ModelError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "safetensors" {
        return read_safetensors(path);
    }
    if !matches!(ext, "pth" | "pt" | "bin") {
        return Err(bad(path, "not a .pth, .pt, .bin or .safetensors file"));
    }
    let mut last = None;
    for top in [None, Some("state_dict"), Some("model")] {
        let mut store = PytorchStore::from_file(path);
        if let Some(key) = top {
            store = store.with_top_level_key(key);
        }
        match store.get_all_tensors() {
            Ok(tensors) if !tensors.is_empty() => {
                let mut out = StateDict::new();
                for (key, tensor) in tensors {
                    let (_, dtype, shape, _, bytes) =
                        tensor.clone().into_parts().map_err(|e| bad(path, e))?;
                    out.insert(key.clone(), TensorData::from_bytes(bytes, shape, dtype));
                }
                return Ok(out);
            }
            Ok(_) => last = Some("no tensors".to_string()),
            Err(e) => last = Some(e.to_string()),
        }
    }
    Err(bad(path, last.unwrap_or_default()))
}

/// The tensors of safetensors file `path`.
fn read_safetensors(path: &Path) -> Result<StateDict, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(path, e))?;
    let mut out = StateDict::new();
    for (name, view) in file.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            other => {
                return Err(bad(
                    path,
                    format!("`{name}` is {other:?}, not a number type bnlab reads"),
                ));
            }
        };
        let data = TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
        out.insert(name, data);
    }
    Ok(out)
}

/// Writes `state` to safetensors file `path` (f32 tensors and int64 counts), atomically.
pub fn write_safetensors(state: &StateDict, path: &Path) -> Result<(), ModelError> {
    let mut buffers = Vec::with_capacity(state.len());
    for (name, data) in state {
        let dtype = match data.dtype() {
            DType::F32 => Dtype::F32,
            DType::I64 => Dtype::I64,
            other => {
                return Err(bad(
                    path,
                    format!("`{name}` is {other:?}: bnlab writes f32 and int64"),
                ));
            }
        };
        buffers.push((
            name.clone(),
            dtype,
            data.shape().to_vec(),
            data.as_bytes().to_vec(),
        ));
    }
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, e))?;
    let bytes = safetensors::serialize(views, None).map_err(|e| bad(path, e))?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| bad(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| bad(path, e))
}
