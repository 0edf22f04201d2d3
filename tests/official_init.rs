//! The text zoo's fresh parameters follow the official NVAE's initialisation
//! (`nvib_transformers/train.py::initialisation`, docs/nvib-math.md §D): Xavier-uniform for
//! every parameter with more than one dimension under torch's shapes (the NVIB projections and
//! both attention projections included), U(±1e-4) for the shared token embedding, PyTorch's
//! defaults elsewhere (Linear biases U(±1/√fan_in), zero attention biases, LayerNorm 1 and 0).
//! Each tensor's values must lie within its bound and reach close to it.

use std::collections::BTreeMap;
use std::path::Path;

use vaezoo::model::Model;
use vaezoo::registry;
use vaezoo::spec_file::read_spec;
use vaezoo_core::params::HostParam;
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::seeded;

/// What the official recipe draws a parameter from.
#[derive(Debug, PartialEq)]
enum Expected {
    /// Uniform in ±bound.
    Uniform(f64),
    /// Every value equal to this.
    Constant(f32),
}

fn xavier(fan_in: usize, fan_out: usize) -> Expected {
    Expected::Uniform((6.0 / (fan_in + fan_out) as f64).sqrt())
}

/// The official init of parameter `p`, with `all` to find a bias's weight.
fn expected(p: &HostParam, all: &BTreeMap<&str, &HostParam>) -> Expected {
    let name = p.name.as_str();
    let last = name.rsplit('.').next().unwrap_or(name);
    let owner = name.rsplit_once('.').map_or("", |(o, _)| o);
    let width = |n: &str| all.get(n).map(|w| w.shape.clone());
    match (last, p.shape.as_slice()) {
        _ if name == "embedding.weight" => Expected::Uniform(1e-4),
        // Not in the official code, ours: a class-conditional decoder's class vectors and the
        // learned conditional prior N(μ_c, σ²_c) start at zero (the unconditional model).
        _ if matches!(
            name,
            "decoder.class_embedding" | "prior.mean" | "prior.log_var"
        ) =>
        {
            Expected::Constant(0.0)
        }
        // nn.MultiheadAttention's packed in-projection [3d, d].
        ("in_proj_weight", [rows, d]) => xavier(*d, *rows),
        ("in_proj_bias", _) => Expected::Constant(0.0),
        // The attention plugins' q/k/v are slices of the packed [3d, d] in-projection.
        ("weight", [d, _])
            if ["q", "k", "v"]
                .iter()
                .any(|s| owner.ends_with(&format!("multihead_attn.{s}"))) =>
        {
            xavier(*d, 3 * d)
        }
        ("bias", _)
            if owner.contains("multihead_attn") || owner.ends_with("self_attn.out_proj") =>
        {
            Expected::Constant(0.0)
        }
        // LayerNorm.
        ("weight", [_])
            if owner
                .rsplit('.')
                .next()
                .is_some_and(|l| l.starts_with("norm")) =>
        {
            Expected::Constant(1.0)
        }
        ("bias", [_])
            if owner
                .rsplit('.')
                .next()
                .is_some_and(|l| l.starts_with("norm")) =>
        {
            Expected::Constant(0.0)
        }
        // NVIB v1's α projection: torch's `nn.Linear(d, 1)`, weight [1, d].
        ("weight", [d]) if owner.ends_with("alpha") => xavier(*d, 1),
        (_, [a, b]) => xavier(*a, *b),
        // A Linear bias: U(±1/√fan_in), fan_in from its weight (torch [out, in]; NVIB's μ and
        // logσ² projections are stored [in, out] and square in these models).
        ("bias", _) => {
            let fan_in = match width(&format!("{owner}.weight")).as_deref() {
                Some([_, i]) => *i,
                Some([i]) => *i,
                other => panic!("{name}: no weight beside the bias ({other:?})"),
            };
            Expected::Uniform(1.0 / (fan_in as f64).sqrt())
        }
        _ => panic!("{name} {:?}: no rule of the official init", p.shape),
    }
}

fn check(p: &HostParam, want: &Expected) -> Result<(), String> {
    match *want {
        Expected::Constant(c) => match p.values.iter().find(|&&v| v != c) {
            Some(v) => Err(format!("{}: {v} where {c} is expected", p.name)),
            None => Ok(()),
        },
        Expected::Uniform(bound) => {
            let max = p
                .values
                .iter()
                .fold(0f64, |m, &v| m.max(f64::from(v).abs()));
            let reach = if p.values.len() >= 16 { 0.8 } else { 0.0 };
            if max > bound * (1.0 + 1e-6) || max < reach * bound {
                Err(format!(
                    "{}: max |value| {max:.4}, bound {bound:.4}",
                    p.name
                ))
            } else {
                Ok(())
            }
        }
    }
}

#[test]
fn the_text_zoo_initialises_as_the_official_nvae() {
    let entries = [
        "t-wiki",
        "vtv-wiki",
        "vts-wiki",
        "vtp-wiki",
        "nvae-wiki",
        "lm-wiki",
        "cvae-sotu",
    ];
    let dims = DataDims {
        features: 0,
        classes: 2,
        vocab: 2000,
    };
    let mut failures = Vec::new();
    for id in entries {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("zoo/{id}.json"));
        let spec = read_spec(&path).unwrap();
        let (_, params) = Model::build(registry().unwrap(), &spec, dims, &mut seeded(0)).unwrap();
        let by_name: BTreeMap<&str, &HostParam> =
            params.iter().map(|p| (p.name.as_str(), p)).collect();
        let embeddings: Vec<&str> = by_name
            .keys()
            .copied()
            .filter(|n| n.ends_with("embedding.weight") && !n.contains("class"))
            .collect();
        assert_eq!(
            embeddings,
            ["embedding.weight"],
            "{id}: one token embedding shared by encoder and decoder"
        );
        for p in &params {
            if let Err(e) = check(p, &expected(p, &by_name)) {
                failures.push(format!("{id}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A decoder with `shared_embedding: false` owns its table, as before the option existed.
#[test]
fn shared_embedding_false_gives_each_plugin_its_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/nvae-wiki-tiny.json");
    let mut spec = read_spec(&path).unwrap();
    spec.encoder.config["shared_embedding"] = false.into();
    spec.decoder.config["shared_embedding"] = false.into();
    let dims = DataDims {
        features: 0,
        classes: 0,
        vocab: 600,
    };
    let (_, params) = Model::build(registry().unwrap(), &spec, dims, &mut seeded(0)).unwrap();
    let names: Vec<&str> = params
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| n.ends_with("embedding.weight"))
        .collect();
    assert_eq!(
        names,
        ["encoder.embedding.weight", "decoder.embedding.weight"]
    );
}
