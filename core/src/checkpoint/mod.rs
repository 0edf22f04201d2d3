//! Training checkpoints: parameters, Adam's moments, the host RNG, the resolved spec and the
//! trainer's own state in one safetensors file, written atomically and checked on load so a
//! resumed run continues bit for bit or fails with a one-line error.
//!
//! Layout: F32 tensors `param/<name>`, `adam.m/<name>` and `adam.v/<name>`, each in PyTorch's
//! layout (`nn.Linear`'s `(out, in)` weights: [`TorchView`]); the `__metadata__` strings
//! `format`, `format_version`, `step`, `adam_step`, `param_order`, `rng`, `spec`, `trainer`,
//! `versions`, `torch_layout` (for each tensor stored otherwise than vaezoo computes with it:
//! its view and vaezoo's shape), `payload_sha256` (the SHA-256 of every tensor's bytes in
//! `param_order`: param, then m, then v for each name) and `metadata_sha256` (the SHA-256 of
//! every other entry, see [`metadata_digest`]), so that no byte of the file can change
//! unnoticed. Older files are still read: format version 2 (tensors in vaezoo's layouts, no
//! `torch_layout`) and 1 (no `metadata_sha256` either).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::optim::AdamState;
use crate::params::HostParam;
use crate::rng::HostRng;
use crate::torch_layout::TorchView;

const FORMAT: &str = "vaezoo-checkpoint";
const FORMAT_VERSION: &str = "3";
/// The format version of checkpoints written before tensors were stored in PyTorch's layouts:
/// read, each tensor as vaezoo computes with it.
const FORMAT_VERSION_OWN_LAYOUTS: &str = "2";
/// The format version of checkpoints written before the metadata was checksummed: read, with
/// only the tensors checked.
const FORMAT_VERSION_UNCHECKED_METADATA: &str = "1";
/// Tensor-name prefixes of one parameter's three tensors, in checksum order (used on save).
const PREFIXES: [&str; 3] = ["param", "adam.m", "adam.v"];

/// Everything needed to resume training bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Optimiser steps done.
    pub step: u64,
    /// The model's parameters, in declaration order.
    pub params: Vec<HostParam>,
    /// Adam's state; `m[i]` and `v[i]` belong to `params[i]`.
    pub optimizer: AdamState,
    /// The host RNG, exactly where training left it.
    pub rng: HostRng,
    /// The resolved spec.
    pub spec: serde_json::Value,
    /// Trainer-specific state (epoch, position, ...), opaque here.
    pub trainer: serde_json::Value,
    /// Versions of the crates and plugins that wrote the checkpoint.
    pub versions: BTreeMap<String, String>,
    /// How the parameters map onto PyTorch's layout, the one the file stores (the model's,
    /// `Model::torch_views`; those not listed are [`TorchView::Same`]). Empty when read from a
    /// file of format version 1 or 2, which store vaezoo's layouts.
    pub torch_views: BTreeMap<String, TorchView>,
}

/// How a tensor of the file relates to vaezoo's: the view, and vaezoo's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredLayout {
    view: TorchView,
    shape: Vec<usize>,
}

impl Checkpoint {
    /// The checkpoint, borrowed.
    pub fn borrowed(&self) -> CheckpointRef<'_> {
        CheckpointRef {
            step: self.step,
            params: (self.params.iter())
                .map(|p| ParamRef {
                    name: &p.name,
                    shape: &p.shape,
                    values: &p.values,
                })
                .collect(),
            optimizer: &self.optimizer,
            rng: &self.rng,
            spec: &self.spec,
            trainer: &self.trainer,
            versions: &self.versions,
            torch_views: &self.torch_views,
        }
    }

    /// Writes the checkpoint atomically ([`CheckpointRef::save`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.borrowed().save(path)
    }

    /// Reads and checks a checkpoint. A missing, truncated, corrupt or foreign file, or one with
    /// missing or inconsistent entries, is an [`Error::Checkpoint`] with a one-line message.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        fs::read(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|bytes| Self::from_bytes(&bytes))
            .map_err(|message| bad(path, message))
    }

    /// Parses and checks safetensors bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
        let corrupt = |e| format!("not a readable safetensors file: {e}");
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| format!("metadata entry `{key}` is missing"))
        };
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format!(
                "not a vaezoo checkpoint (no `format` = `{FORMAT}` marker)"
            ));
        }
        let version = get("format_version")?;
        if version == FORMAT_VERSION || version == FORMAT_VERSION_OWN_LAYOUTS {
            if &metadata_digest(meta) != get("metadata_sha256")? {
                return Err("checksum mismatch: the metadata was changed or is damaged".into());
            }
        } else if version != FORMAT_VERSION_UNCHECKED_METADATA {
            return Err(format!(
                "unsupported format_version `{version}` (expected `{FORMAT_VERSION}`)"
            ));
        }
        let layouts: BTreeMap<String, StoredLayout> = match version == FORMAT_VERSION {
            true => json_entry(meta, "torch_layout")?,
            false => BTreeMap::new(),
        };
        let parse = |key: &str| -> Result<u64, String> {
            get(key)?
                .parse()
                .map_err(|e| format!("metadata entry `{key}`: {e}"))
        };
        let (step, adam_step) = (parse("step")?, parse("adam_step")?);
        let order: Vec<String> = json_entry(meta, "param_order")?;
        if order.iter().collect::<HashSet<_>>().len() != order.len() {
            return Err("param_order repeats a name".into());
        }
        if tensors.len() != 3 * order.len() {
            let (found, n) = (tensors.len(), order.len());
            return Err(format!("{found} tensors for {n} parameters, not 3 each"));
        }
        let mut hasher = Sha256::new();
        let mut params = Vec::with_capacity(order.len());
        let (mut m, mut v) = (Vec::new(), Vec::new());
        if let Some(name) = layouts.keys().find(|n| !order.contains(n)) {
            return Err(format!(
                "torch_layout names `{name}`, which is no parameter"
            ));
        }
        for name in order {
            let param = f32_tensor(&tensors, &format!("param/{name}"), None)?;
            let stored = param.shape().to_vec();
            let m_i = f32_tensor(&tensors, &format!("adam.m/{name}"), Some(&stored))?;
            let v_i = f32_tensor(&tensors, &format!("adam.v/{name}"), Some(&stored))?;
            for view in [&param, &m_i, &v_i] {
                hasher.update(view.data());
            }
            // Back from the stored layout to vaezoo's.
            let (view, shape) = match layouts.get(&name) {
                Some(layout) => (layout.view.clone(), layout.shape.clone()),
                None => (TorchView::Same, stored.clone()),
            };
            let own = |tensor: &TensorView| {
                view.from_torch(&shape, (&stored, &f32s(tensor.data())))
                    .map_err(|e| format!("tensor of `{name}`: {e}"))
            };
            let (values, m_i, v_i) = (own(&param)?, own(&m_i)?, own(&v_i)?);
            m.push(m_i);
            v.push(v_i);
            params.push(HostParam {
                name,
                shape,
                values,
            });
        }
        if &hex(&hasher.finalize()) != get("payload_sha256")? {
            return Err("checksum mismatch: the tensor data is damaged".into());
        }
        Ok(Checkpoint {
            step,
            params,
            optimizer: AdamState {
                step: adam_step,
                m,
                v,
            },
            rng: json_entry(meta, "rng")?,
            spec: json_entry(meta, "spec")?,
            trainer: json_entry(meta, "trainer")?,
            versions: json_entry(meta, "versions")?,
            torch_views: layouts.into_iter().map(|(n, l)| (n, l.view)).collect(),
        })
    }
}

/// Safetensors `bytes` with the keys of their JSON header in sorted order (the tensors' data
/// untouched): safetensors writes the metadata map in hash order, which differs from process
/// to process, so the same checkpoint would otherwise not be the same bytes twice.
pub fn with_sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("no safetensors header")?;
    let len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|e| e.to_string())?;
    let header = bytes
        .get(8..8 + len)
        .ok_or("a safetensors header cut short")?;
    let header: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut text = serde_json::to_vec(&sorted_keys(header)).map_err(|e| e.to_string())?;
    // The data starts on an 8-byte boundary, as safetensors pads it.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// `value` with every object's keys in sorted order.
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sorted_keys(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        other => other,
    }
}

/// The SHA-256 (hex) of every metadata entry but `metadata_sha256`, in key order, each key
/// and value preceded by its length in bytes (8, little-endian), so that no two sets of
/// entries give the same bytes.
fn metadata_digest(meta: &HashMap<String, String>) -> String {
    let mut entries: Vec<(&String, &String)> = meta
        .iter()
        .filter(|(key, _)| *key != "metadata_sha256")
        .collect();
    entries.sort();
    let mut hasher = Sha256::new();
    for (key, value) in entries {
        for part in [key, value] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex(&hasher.finalize())
}

/// A checkpoint error about `path`, forced onto one line.
fn bad(path: &Path, message: String) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: crate::error::one_line(&message),
    }
}

/// The F32 tensor `key`, which must have shape `want` when one is given.
fn f32_tensor<'a>(
    tensors: &SafeTensors<'a>,
    key: &str,
    want: Option<&[usize]>,
) -> Result<TensorView<'a>, String> {
    let view = tensors
        .tensor(key)
        .map_err(|_| format!("tensor `{key}` is missing"))?;
    let got = view.shape();
    if view.dtype() != Dtype::F32 {
        Err(format!("tensor `{key}` is {}, not F32", view.dtype()))
    } else if want.is_some_and(|want| want != got) {
        Err(format!(
            "tensor `{key}` has shape {got:?}, unlike its parameter"
        ))
    } else {
        Ok(view)
    }
}

/// Decodes the JSON metadata entry `key`.
fn json_entry<T: DeserializeOwned>(meta: &HashMap<String, String>, key: &str) -> Result<T, String> {
    let text = meta
        .get(key)
        .ok_or_else(|| format!("metadata entry `{key}` is missing"))?;
    serde_json::from_str(text).map_err(|e| format!("metadata entry `{key}`: {e}"))
}

/// Little-endian bytes to f32s (safetensors validated the length against the shape).
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
mod write;

pub use write::{CheckpointRef, ParamRef};
