//! `vaezoo export RUN --format pytorch`: a run's weights alone, as PyTorch modules hold them.
//!
//! The export folder (default `RUN/export/pytorch/`) gets `model.safetensors`, the latest
//! checkpoint's parameters without the optimiser's state, laid out as the equivalent PyTorch
//! module's `state_dict()` entries ([`TorchView`], the layout checkpoints store too): a matrix
//! vaezoo computes with as `(in, out)` is written `(out, in)` as `nn.Linear` holds it, and a
//! map to one output (NVIB's α) as `nn.Linear(d, 1)`'s `(1, d)` and `(1,)`. Tensors keep the
//! checkpoint's names, except a Transformer encoder-decoder's, which take the names of the
//! official `nvib_transformers` NVAE ([`official`]; the cross-attention's query, key and value
//! maps stacked into its `in_proj_weight` as `nn.MultiheadAttention` holds them). Beside it,
//! `spec.json` (the run's resolved spec, for the sizes): with both, `python/vaezoo_torch.py`
//! rebuilds the MLP VAE family in plain torch.
//!
//! [`TorchView`]: vaezoo_core::torch_layout::TorchView

mod official;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use vaezoo_core::dfdx::prelude::Cpu;

use crate::run::{write_atomic, write_json};
use crate::session::restore;
use crate::{Error, Result};
use official::{official, Official};
use vaezoo_core::checkpoint::with_sorted_header;

/// What [`export_pytorch`] wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The export folder.
    pub dir: PathBuf,
    /// The number of tensors in `model.safetensors`.
    pub tensors: usize,
    /// The training step of the checkpoint they came from.
    pub step: u64,
}

/// Writes the weights of `run`'s latest checkpoint to `out` (default `RUN/export/pytorch/`):
/// `model.safetensors` in PyTorch's layouts and `spec.json` (see the module documentation).
/// Nothing is written unless every tensor converts; `out` may not be one of the run's records.
pub fn export_pytorch(run: &Path, out: Option<&Path>) -> Result<Exported> {
    let restored = restore(&Cpu::default(), run)?;
    let default = || restored.run.root().join("export").join("pytorch");
    let dir = out.map_or_else(default, Path::to_path_buf);
    restored.run.check_output(&dir)?;
    let spec = &restored.spec;
    let kinds = [
        &spec.encoder.kind,
        &spec.bottleneck.kind,
        &spec.decoder.kind,
    ]
    .map(String::as_str);
    // Official name → its parts (index, shape, values); a whole tensor is the one part 0 of 1.
    let mut named: BTreeMap<String, Vec<(usize, usize, Tensor)>> = BTreeMap::new();
    for p in &restored.checkpoint.params {
        let view = restored.model.torch_view(&p.name);
        let tensor = view
            .to_torch(&p.shape, &p.values)
            .map_err(|e| Error::Usage(format!("cannot export `{}`: {e}", p.name)))?;
        let Official { name, part } = official(&p.name, kinds);
        let (i, n) = part.unwrap_or((0, 1));
        named.entry(name).or_default().push((i, n, tensor));
    }
    let tensors = named
        .into_iter()
        .map(|(name, parts)| Ok((stacked(&name, parts)?, name)))
        .collect::<Result<Vec<_>>>()?;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|((_, values), _)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for (((shape, _), name), data) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| Error::Run {
            path: run.to_path_buf(),
            message: format!("cannot export tensor `{name}`: {e}"),
        })?;
        views.push((name.as_str(), view));
    }
    let step = restored.checkpoint.step;
    // `format: pt` is how Hugging Face's loaders recognise PyTorch weights.
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("vaezoo_step".to_string(), step.to_string()),
        (
            "vaezoo_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    let file = safetensors::serialize(views, Some(metadata))
        .map_err(|e| e.to_string())
        .and_then(with_sorted_header)
        .map_err(|e| Error::Run {
            path: run.to_path_buf(),
            message: format!("cannot export: {e}"),
        })?;
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let spec = serde_json::to_value(&restored.spec).expect("a spec serialises");
    write_json(&dir.join("spec.json"), &spec)?;
    write_atomic(&dir.join("model.safetensors"), &file)?;
    Ok(Exported {
        dir,
        tensors: tensors.len(),
        step,
    })
}

/// A tensor's shape and values.
type Tensor = (Vec<usize>, Vec<f32>);

/// The tensor `name` made of `parts` (index, count, tensor): the one whole tensor, or the
/// parts stacked along their rows in index order (all present, all of one shape).
fn stacked(name: &str, mut parts: Vec<(usize, usize, Tensor)>) -> Result<Tensor> {
    parts.sort_by_key(|(i, ..)| *i);
    let count = parts[0].1;
    let shape = parts[0].2 .0.clone();
    let complete = parts.len() == count
        && parts
            .iter()
            .enumerate()
            .all(|(k, (i, n, (s, _)))| *i == k && *n == count && *s == shape);
    if !complete || shape.is_empty() {
        return Err(Error::Usage(format!(
            "cannot export `{name}`: its {count} parts do not stack"
        )));
    }
    let mut stacked_shape = shape;
    stacked_shape[0] *= count;
    let values = parts.into_iter().flat_map(|(.., (_, v))| v).collect();
    Ok((stacked_shape, values))
}
