//! `vaezoo export --format pytorch`: the weights of a trained run in PyTorch's layouts, checked
//! against the checkpoint tensor by tensor, and (where `torch` imports) an MLP VAE rebuilt in
//! plain PyTorch from the export that reproduces `vaezoo eval`'s deterministic numbers.

mod common;

use std::path::Path;

use common::{ok, repo, text, vaezoo};
use safetensors::SafeTensors;
use vaezoo_core::checkpoint::Checkpoint;

/// Trains `spec` into `run` (`stop_after` steps, or to the end) and exports it.
fn trained_and_exported(spec: &str, run: &Path, stop_after: Option<&str>) -> Checkpoint {
    let mut args = vec!["train", spec, "--out", run.to_str().unwrap()];
    args.extend(
        stop_after
            .map(|n| ["--stop-after", n])
            .into_iter()
            .flatten(),
    );
    ok(vaezoo(&args));
    let out = ok(vaezoo(&[
        "export",
        run.to_str().unwrap(),
        "--format",
        "pytorch",
    ]));
    assert!(out.contains("export/pytorch/model.safetensors"), "{out}");
    Checkpoint::load(&run.join("checkpoints/latest.safetensors")).unwrap()
}

/// Every exported tensor as (name, shape, values).
fn exported(run: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(run.join("export/pytorch/model.safetensors")).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["format"], "pt");
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The (in, out) matrix `values` transposed.
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| values[r * cols + c]))
        .collect()
}

#[test]
fn an_mlp_vae_exports_as_nn_linear_layers() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let checkpoint = trained_and_exported("zoo/vae-optdigits-tiny.json", &run, Some("7"));
    let tensors = exported(&run);
    assert_eq!(tensors.len(), checkpoint.params.len());
    for (name, shape, values) in tensors {
        let p = checkpoint.params.iter().find(|p| p.name == name).unwrap();
        if name.ends_with(".weight") {
            // vaezoo's (in, out), nn.Linear's (out, in).
            let (rows, cols) = (p.shape[0], p.shape[1]);
            assert_eq!(shape, [cols, rows], "{name}");
            assert_eq!(values, transposed(&p.values, rows, cols), "{name}");
        } else {
            assert_eq!((&shape, &values), (&p.shape, &p.values), "{name}");
        }
    }
    assert!(run.join("export/pytorch/spec.json").is_file());
}

/// The state_dict of the official NVAE with one layer each (golden `nvae_v1_eval_forward`).
const OFFICIAL_NVAE: [&str; 41] = [
    "encoder.layers.0.self_attn.in_proj_weight",
    "encoder.layers.0.self_attn.in_proj_bias",
    "encoder.layers.0.self_attn.out_proj.weight",
    "encoder.layers.0.self_attn.out_proj.bias",
    "encoder.layers.0.linear1.weight",
    "encoder.layers.0.linear1.bias",
    "encoder.layers.0.linear2.weight",
    "encoder.layers.0.linear2.bias",
    "encoder.layers.0.norm1.weight",
    "encoder.layers.0.norm1.bias",
    "encoder.layers.0.norm2.weight",
    "encoder.layers.0.norm2.bias",
    "encoder.norm.weight",
    "encoder.norm.bias",
    "decoder.layers.0.self_attn.in_proj_weight",
    "decoder.layers.0.self_attn.in_proj_bias",
    "decoder.layers.0.self_attn.out_proj.weight",
    "decoder.layers.0.self_attn.out_proj.bias",
    "decoder.layers.0.multihead_attn.in_proj_weight",
    "decoder.layers.0.multihead_attn.out_proj.weight",
    "decoder.layers.0.linear1.weight",
    "decoder.layers.0.linear1.bias",
    "decoder.layers.0.linear2.weight",
    "decoder.layers.0.linear2.bias",
    "decoder.layers.0.norm1.weight",
    "decoder.layers.0.norm1.bias",
    "decoder.layers.0.norm2.weight",
    "decoder.layers.0.norm2.bias",
    "decoder.layers.0.norm3.weight",
    "decoder.layers.0.norm3.bias",
    "decoder.norm.weight",
    "decoder.norm.bias",
    "embedding.weight",
    "output_proj.weight",
    "output_proj.bias",
    "nvib_layer.mu_proj.weight",
    "nvib_layer.mu_proj.bias",
    "nvib_layer.logvar_proj.weight",
    "nvib_layer.logvar_proj.bias",
    "nvib_layer.alpha_proj.weight",
    "nvib_layer.alpha_proj.bias",
];

#[test]
fn an_nvae_exports_the_official_names_and_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let checkpoint = trained_and_exported("zoo/nvae-wiki-tiny.json", &run, Some("1"));
    let tensors = exported(&run);
    let mut names: Vec<&str> = tensors.iter().map(|t| t.0.as_str()).collect();
    let mut official = OFFICIAL_NVAE.to_vec();
    names.sort();
    official.sort();
    assert_eq!(names, official);
    let ours = |name: &str| checkpoint.params.iter().find(|p| p.name == name).unwrap();
    let get = |name: &str| tensors.iter().find(|t| t.0 == name).unwrap();
    // NVIB's projections as nn.Linear: (out, in), and α as nn.Linear(d, 1).
    let mu = ours("bottleneck.mu.weight");
    let (rows, cols) = (mu.shape[0], mu.shape[1]);
    let want = (vec![cols, rows], transposed(&mu.values, rows, cols));
    assert_eq!(
        (
            get("nvib_layer.mu_proj.weight").1.clone(),
            get("nvib_layer.mu_proj.weight").2.clone()
        ),
        want
    );
    let alpha = ours("bottleneck.alpha.weight");
    assert_eq!(get("nvib_layer.alpha_proj.weight").1, [1, alpha.shape[0]]);
    assert_eq!(get("nvib_layer.alpha_proj.bias").1, [1]);
    // The cross-attention's q, k, v stacked row-wise as nn.MultiheadAttention's in_proj.
    let layer = "decoder.stack.layers.0.multihead_attn";
    let (_, shape, values) = get("decoder.layers.0.multihead_attn.in_proj_weight");
    let q = ours(&format!("{layer}.q.weight"));
    assert_eq!(*shape, [3 * q.shape[0], q.shape[1]]);
    let qkv: Vec<f32> = ["q", "k", "v"]
        .iter()
        .flat_map(|m| ours(&format!("{layer}.{m}.weight")).values.clone())
        .collect();
    assert_eq!(*values, qkv);
    // The Transformer's own weights are PyTorch's layout already.
    let ffn = ours("encoder.stack.layers.0.linear1.weight");
    let exported_ffn = get("encoder.layers.0.linear1.weight");
    assert_eq!(
        (&exported_ffn.1, &exported_ffn.2),
        (&ffn.shape, &ffn.values)
    );
}

/// Rebuilds the MLP VAE of `export` with python/vaezoo_torch.py and prints the test split's
/// mean -log p(x | z) at the posterior mean and the mean KL, as eval.json's `rec_at_mean` and
/// `neg_elbo_at_mean - rec_at_mean`.
const REBUILD: &str = r#"
import sys, struct, json
try:
    import torch
except ImportError as e:
    print("SKIP", e); sys.exit(0)
sys.path.insert(0, sys.argv[1])
from vaezoo_torch import load_mlp_vae
vae = load_mlp_vae(sys.argv[2])
spec = json.load(open(sys.argv[2] + "/spec.json"))
raw = open(spec["data"]["dir"] + "/t10k-images-idx3-ubyte", "rb").read()
n, rows, cols = struct.unpack(">III", raw[4:16])
n = min(n, spec["data"].get("test_limit") or n)
x = torch.tensor(list(raw[16:16 + n * rows * cols]), dtype=torch.float64)
x = (x / spec["data"]["pixel_max"]).reshape(n, rows * cols).float()
with torch.no_grad():
    rec, kl = vae.neg_elbo_at_mean(x)
print(json.dumps({"rec_at_mean": rec.double().mean().item(), "kl": kl.double().mean().item()}))
"#;

#[test]
fn an_mlp_vae_rebuilt_in_pytorch_from_the_export_matches_vaezoo_eval() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    trained_and_exported("zoo/vae-optdigits-tiny.json", &run, None);
    ok(vaezoo(&[
        "eval",
        run.to_str().unwrap(),
        "--iw-samples",
        "0",
    ]));
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg(REBUILD)
        .arg(repo().join("python"))
        .arg(run.join("export/pytorch"))
        .output();
    let Ok(out) = python else {
        eprintln!("skipped: no python3 to rebuild the model in PyTorch");
        return;
    };
    let stdout = text(&out);
    assert!(out.status.success(), "{stdout}");
    if stdout.starts_with("SKIP") {
        eprintln!("skipped: PyTorch does not import ({stdout})");
        return;
    }
    let torch: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let rec = eval["rec_at_mean"].as_f64().unwrap();
    let kl = eval["neg_elbo_at_mean"].as_f64().unwrap() - rec;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    assert!(
        close(torch["rec_at_mean"].as_f64().unwrap(), rec),
        "{torch} vs {eval}"
    );
    assert!(
        close(torch["kl"].as_f64().unwrap(), kl),
        "{torch} vs {eval}"
    );
}
