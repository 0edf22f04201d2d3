//! The conformance kit's fixed test model: the partner plugins around the plugin under test,
//! the fixed batch (features, labels and tokens), one pass's loss terms, and the checkpoint
//! round trip.

use std::fs;
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use vaezoo_core::axes::{Batch, Feature, Seq};
use vaezoo_core::checkpoint::Checkpoint;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Observation, TokenBatch};
use vaezoo_core::registry::{DataDims, PluginEntry, PluginKind, Registry};
use vaezoo_core::rng::seeded;

use super::CheckResult;
use crate::model::{Losses, Model};

/// The plugins filling the slots not under test: `(slot, name, config)`. The config is used
/// only when the partner is not registered; otherwise its registered `example` is.
pub const PARTNERS: [(PluginKind, &str, &str); 4] = [
    (
        PluginKind::Encoder,
        "mlp_encoder",
        r#"{"hidden": [5, 4], "activation": "tanh"}"#,
    ),
    (
        PluginKind::Bottleneck,
        "gaussian_vib",
        r#"{"latent_dim": 3}"#,
    ),
    (PluginKind::Prior, "standard_normal", "{}"),
    (
        PluginKind::Decoder,
        "mlp_decoder",
        r#"{"hidden": [5], "activation": "tanh", "likelihood": {"type": "bernoulli"}}"#,
    ),
];

pub(super) const FEATURES: usize = 6;
pub(super) const BATCH: usize = 4;
/// Token vocabulary of the text part of the batch (vector plugins ignore it).
pub(super) const VOCAB: usize = 11;
/// Positions per row of the token batch.
pub(super) const SEQ: usize = 5;
pub(super) const DIMS: DataDims = DataDims {
    features: FEATURES,
    classes: 3,
    vocab: VOCAB,
};
/// Seed of the parameters (the reloaded model of the checkpoint check is built from another).
pub(super) const INIT_SEED: u64 = 1;
/// Seed of the noise of training passes.
pub(super) const NOISE_SEED: u64 = 7;

/// The spec JSON of the test model: the plugin under test in its slot, partners elsewhere.
pub(super) fn spec_json(registry: &Registry, entry: &PluginEntry) -> Value {
    let mut spec = json!({"name": "conformance", "data": {"format": "idx", "dir": "."}});
    for (kind, partner, fallback) in PARTNERS {
        let declared = entry
            .partners
            .iter()
            .find_map(|name| registry.get(kind, name).ok());
        let (name, config) = match (declared, registry.get(kind, partner)) {
            _ if kind == entry.kind => (entry.name.as_str(), entry.example.clone()),
            (Some(declared), _) => (declared.name.as_str(), declared.example.clone()),
            (None, Ok(registered)) => (partner, registered.example.clone()),
            (None, Err(_)) => (partner, serde_json::from_str(fallback).expect("valid JSON")),
        };
        spec[kind.as_str()] = json!({"kind": name, "config": config});
    }
    spec
}

/// The fixed batch: `x = (i·7 mod 10)/10 + 0.05`, label `i mod 3`, and for text plugins row i
/// holds `SEQ − i mod 2` tokens `1 + (j·3 + i) mod (VOCAB − 1)`, then padding.
pub(super) fn observation(dev: &Cpu) -> Observation<Cpu> {
    let x = (0..BATCH * FEATURES).map(|i| (i * 7 % 10) as f32 / 10.0 + 0.05);
    Observation {
        x: dev.tensor_from_vec(x.collect(), (Batch(BATCH), Feature(FEATURES))),
        labels: Some((0..BATCH).map(|i| i % DIMS.classes).collect()),
        tokens: Some(token_batch()),
    }
}

pub(super) fn token_batch() -> TokenBatch {
    let (mut ids, mut keep) = (Vec::new(), Vec::new());
    for i in 0..BATCH {
        for j in 0..SEQ {
            let real = j < SEQ - i % 2;
            ids.push(if real {
                1 + (j * 3 + i) % (VOCAB - 1)
            } else {
                0
            });
            keep.push(real);
        }
    }
    TokenBatch::new(ids, keep, Seq(SEQ)).expect("whole rows")
}

/// `("rec", values)`, then `(name, values)` of each KL term.
pub(super) type Terms = Vec<(String, Vec<f32>)>;

/// Compares two [`Terms`] bit for bit; `what` names the two passes.
pub(super) fn same_bits(a: &Terms, b: &Terms, what: &str) -> CheckResult {
    let bits = |t: &Terms| -> Vec<(String, Vec<u32>)> {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect();
        t.iter().map(|(n, v)| (n.clone(), bits(v))).collect()
    };
    if bits(a) != bits(b) {
        return Err(format!("{what} differ: {a:?} vs {b:?}"));
    }
    Ok(format!("rec and {} KL term(s) bit-identical", a.len() - 1))
}

/// The losses of one pass over the fixed batch.
pub(super) fn losses(
    model: &Model,
    params: &ParamStore<Cpu>,
    mode: Mode,
    seed: u64,
) -> Result<Losses<Cpu>, String> {
    let mut rng = seeded(seed);
    let mut ctx = Ctx {
        params,
        mode,
        rng: &mut rng,
    };
    let losses = model.losses(&mut ctx, &observation(params.device()));
    losses.map_err(|e| format!("forward ({mode:?}): {e}"))
}

/// The [`Terms`] of one pass over the fixed batch.
pub(super) fn terms(
    model: &Model,
    params: &ParamStore<Cpu>,
    mode: Mode,
    seed: u64,
) -> Result<Terms, String> {
    let l = losses(model, params, mode, seed)?;
    let kl = l.kl.iter().map(|t| (t.name.clone(), t.value.as_vec()));
    Ok(std::iter::once(("rec".into(), l.rec.as_vec()))
        .chain(kl)
        .collect())
}

/// Saves `saved` to a temporary file and reads it back; it must read back equal.
pub(super) fn round_trip(saved: &Checkpoint) -> Result<Checkpoint, String> {
    // No plugin code runs while the folder exists, so a panic cannot leave it behind.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vaezoo-conformance-{}-{n}", process::id()));
    let path = dir.join("conformance.safetensors");
    let loaded = fs::create_dir_all(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
        .and_then(|()| saved.save(&path).map_err(|e| e.to_string()))
        .and_then(|()| Checkpoint::load(&path).map_err(|e| e.to_string()));
    let _ = fs::remove_dir_all(&dir);
    let loaded = loaded?;
    if loaded != *saved {
        return Err("the checkpoint reads back different from what was saved".into());
    }
    Ok(loaded)
}
