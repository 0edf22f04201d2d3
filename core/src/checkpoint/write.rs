//! Writing a checkpoint: from borrowed weights and moments ([`CheckpointRef`]), converted to
//! PyTorch's layout and written a tensor at a time, so that saving holds no copy of the
//! model's state; the bytes are those safetensors would write, with a sorted header.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{
    bad, hex, metadata_digest, sorted_keys, StoredLayout, FORMAT, FORMAT_VERSION, PREFIXES,
};
use crate::error::{Error, Result};
use crate::optim::AdamState;
use crate::rng::HostRng;
use crate::torch_layout::TorchView;

/// A parameter as a checkpoint is written from it: borrowed from wherever it lives.
#[derive(Clone, Copy, Debug)]
pub struct ParamRef<'a> {
    /// Dotted name, e.g. `encoder.layers.0.weight`.
    pub name: &'a str,
    /// vaezoo's row-major shape.
    pub shape: &'a [usize],
    /// Row-major values.
    pub values: &'a [f32],
}

/// A [`Checkpoint`] borrowed from a training session, so that saving one copies nothing but
/// a tensor at a time (a checkpoint of the model's whole state would otherwise be held two or
/// three times over while it is written).
#[derive(Clone, Debug)]
pub struct CheckpointRef<'a> {
    /// Optimiser steps done.
    pub step: u64,
    /// The model's parameters, in declaration order.
    pub params: Vec<ParamRef<'a>>,
    /// Adam's state; `m[i]` and `v[i]` belong to `params[i]`.
    pub optimizer: &'a AdamState,
    /// The host RNG.
    pub rng: &'a HostRng,
    /// The resolved spec.
    pub spec: &'a serde_json::Value,
    /// Trainer-specific state.
    pub trainer: &'a serde_json::Value,
    /// Versions of the crates and plugins.
    pub versions: &'a BTreeMap<String, String>,
    /// How the parameters map onto PyTorch's layout (see [`Checkpoint::torch_views`]).
    pub torch_views: &'a BTreeMap<String, TorchView>,
}

impl CheckpointRef<'_> {
    /// Writes the checkpoint atomically: to a hidden `.tmp` file in the same directory, synced,
    /// then renamed over `path` (and the directory synced where the platform allows). On error
    /// the temporary file is removed and `path` is untouched. Tensors are converted to
    /// PyTorch's layout and written one at a time.
    pub fn save(&self, path: &Path) -> Result<()> {
        let plan = self
            .plan()
            .map_err(|e| bad(path, format!("cannot save: {e}")))?;
        let name = path
            .file_name()
            .ok_or_else(|| bad(path, "cannot save: the path does not name a file".into()))?;
        let dir = crate::process::folder_of(path);
        let name = name.to_string_lossy();
        let tmp = crate::process::temp_file_for(dir, &name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let written = self
            .write_planned(&plan, &mut out)
            .and_then(|()| out.flush())
            .and_then(|()| out.get_ref().sync_all())
            .map_err(|e| Error::io(&tmp, e));
        drop(out);
        if let Err(e) =
            written.and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e)))
        {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Makes the rename durable; some platforms cannot open or sync a directory.
        let _ = File::open(dir).and_then(|d| d.sync_all());
        // The temporary files of saves killed before their rename.
        crate::process::remove_temp_files_left_by_exited(dir, &name);
        Ok(())
    }

    /// The whole file as bytes (for tests).
    #[cfg(test)]
    pub(super) fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let plan = self.plan()?;
        let mut bytes = Vec::new();
        self.write_planned(&plan, &mut bytes)
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// Checks that the pieces fit together and lays the file out: its header (with the
    /// checksums, so every tensor is converted once here) and its tensors in file order.
    fn plan(&self) -> Result<FilePlan, String> {
        let (params, m, v) = (&self.params, &self.optimizer.m, &self.optimizer.v);
        if m.len() != params.len() || v.len() != params.len() {
            let counts = (params.len(), m.len(), v.len());
            return Err(format!("(params, m, v) counts differ: {counts:?}"));
        }
        let mut seen = HashSet::new();
        let mut tensors = Vec::with_capacity(3 * params.len());
        let mut layouts = BTreeMap::new();
        let mut hasher = Sha256::new();
        let mut bytes = Vec::new();
        for (i, p) in params.iter().enumerate() {
            if !seen.insert(p.name) {
                return Err(format!("parameter `{}` appears twice", p.name));
            }
            let view = self.torch_views.get(p.name).cloned().unwrap_or_default();
            for (which, prefix) in PREFIXES.iter().enumerate() {
                let (shape, values) = self.stored(i, which)?;
                le_chunks(&values, &mut bytes, |chunk| {
                    hasher.update(chunk);
                    Ok::<(), std::convert::Infallible>(())
                })
                .unwrap_or_else(|never| match never {});
                tensors.push((format!("{prefix}/{}", p.name), shape, (i, which)));
            }
            if view != TorchView::Same {
                let shape = p.shape.to_vec();
                layouts.insert(p.name, StoredLayout { view, shape });
            }
        }
        if let Some(name) = self.torch_views.keys().find(|n| !seen.contains(n.as_str())) {
            return Err(format!(
                "a PyTorch layout for `{name}`, which is no parameter"
            ));
        }
        let order: Vec<&str> = params.iter().map(|p| p.name).collect();
        let mut metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".into(), FORMAT_VERSION.into()),
            ("step".into(), self.step.to_string()),
            ("adam_step".into(), self.optimizer.step.to_string()),
            ("payload_sha256".into(), hex(&hasher.finalize())),
        ]);
        for (key, text) in [
            ("param_order", serde_json::to_string(&order)),
            ("rng", serde_json::to_string(self.rng)),
            ("spec", serde_json::to_string(self.spec)),
            ("trainer", serde_json::to_string(self.trainer)),
            ("versions", serde_json::to_string(self.versions)),
            ("torch_layout", serde_json::to_string(&layouts)),
        ] {
            metadata.insert(
                key.into(),
                text.map_err(|e| format!("encoding {key}: {e}"))?,
            );
        }
        let digest = metadata_digest(&metadata);
        metadata.insert("metadata_sha256".into(), digest);
        // As safetensors lays a file out: tensors by name, back to back; the header's keys
        // sorted so that the same checkpoint is the same bytes.
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!(metadata));
        let mut offset = 0u64;
        for (name, shape, _) in &tensors {
            let len = shape.iter().product::<usize>() as u64 * 4;
            let entry = serde_json::json!({
                "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len],
            });
            header.insert(name.clone(), entry);
            offset += len;
        }
        let mut header =
            serde_json::to_vec(&sorted_keys(header.into())).map_err(|e| e.to_string())?;
        // The data starts on an 8-byte boundary, as safetensors pads it.
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let order = tensors.into_iter().map(|(_, _, at)| at).collect();
        Ok(FilePlan { header, order })
    }

    /// Tensor `which` (0 the parameter, 1 Adam's m, 2 its v) of parameter `i` in PyTorch's
    /// layout: its shape and values (borrowed where the layout is the same).
    fn stored(&self, i: usize, which: usize) -> Result<(Vec<usize>, Cow<'_, [f32]>), String> {
        let p = &self.params[i];
        let values = [p.values, &self.optimizer.m[i], &self.optimizer.v[i]][which];
        if values.len() != p.shape.iter().product::<usize>() {
            return Err(format!(
                "parameter `{}` has {} values for its shape {:?}",
                p.name,
                values.len(),
                p.shape
            ));
        }
        let shaped = |e: String| format!("parameter `{}`: {e}", p.name);
        match self.torch_views.get(p.name) {
            None | Some(TorchView::Same) => Ok((p.shape.to_vec(), Cow::Borrowed(values))),
            Some(view) => {
                let (shape, values) = view.to_torch(p.shape, values).map_err(shaped)?;
                Ok((shape, Cow::Owned(values)))
            }
        }
    }

    /// Writes the file that `plan` lays out to `out`.
    fn write_planned(&self, plan: &FilePlan, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(&(plan.header.len() as u64).to_le_bytes())?;
        out.write_all(&plan.header)?;
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let mut bytes = Vec::new();
        for &(i, which) in &plan.order {
            let (_, values) = self.stored(i, which).map_err(invalid)?;
            le_chunks(&values, &mut bytes, |chunk| out.write_all(chunk))?;
        }
        Ok(())
    }
}

/// How a checkpoint file is laid out: its padded JSON header, and which tensor (parameter,
/// and 0 value, 1 m, 2 v) comes next in its data.
struct FilePlan {
    header: Vec<u8>,
    order: Vec<(usize, usize)>,
}

/// Passes the little-endian bytes of `values` to `sink` a chunk at a time, through `bytes`
/// (so that neither hashing nor writing holds a tensor's bytes whole).
fn le_chunks<E>(
    values: &[f32],
    bytes: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    for chunk in values.chunks(1 << 14) {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        sink(bytes)?;
    }
    Ok(())
}
