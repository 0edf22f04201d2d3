//! Helpers shared by the `mlp` plugin tests: fixed data, an independent f64 host MLP, and
//! tolerance checks.

#![allow(dead_code)] // each test binary uses its own subset

use vaezoo_core::axes::{Batch, Feature};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::ParamStore;
use vaezoo_core::registry::DataDims;

pub const BATCH: usize = 3;
pub const FEATURES: usize = 6;
pub const LATENT: usize = 2;

/// Observations in [0, 1], `(BATCH, FEATURES)` row-major, the end points included.
pub const X: [f32; 18] = [
    0.0, 0.1, 0.25, 0.5, 0.8, 1.0, 0.9, 0.35, 0.05, 0.6, 0.15, 0.7, 0.45, 1.0, 0.0, 0.3, 0.95, 0.2,
];

/// The activations whose derivatives are continuous: finite differences hold everywhere.
pub const SMOOTH: [Activation; 4] = [
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Gelu,
    Activation::Identity,
];

pub const DATA: DataDims = DataDims {
    features: FEATURES,
    classes: 0,
    vocab: 0,
};

pub fn x_tensor(dev: &Cpu) -> Tensor<(Batch, Feature), f32, Cpu> {
    dev.tensor_from_vec(X.to_vec(), (Batch(BATCH), Feature(FEATURES)))
}

pub fn param(p: &ParamStore<Cpu>, name: &str) -> Vec<f64> {
    let i = (0..p.len())
        .find(|&i| p.name(i) == name)
        .unwrap_or_else(|| panic!("no parameter `{name}`"));
    p.host(i).iter().map(|&v| v as f64).collect()
}

pub fn act_f64(act: Activation, v: f64) -> f64 {
    match act {
        Activation::Relu => v.max(0.0),
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Gelu => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        }
        Activation::LeakyRelu => {
            if v > 0.0 {
                v
            } else {
                0.01 * v
            }
        }
        Activation::Identity => v,
    }
}

/// What a host MLP computed.
pub struct HostMlp {
    /// `(batch, out)` row-major.
    pub out: Vec<f64>,
    /// The smallest |pre-activation| over every activated layer (for kinks).
    pub min_pre: f64,
}

/// An independent f64 MLP over the parameters `layers.{i}.weight` `(in, out)` and
/// `layers.{i}.bias` `(out,)`, `layers` of them, the activation after every layer but the last
/// (and after the last too when `activate_output`).
pub fn host_mlp(
    p: &ParamStore<Cpu>,
    input: &[f64],
    batch: usize,
    layers: usize,
    act: Activation,
    activate_output: bool,
) -> HostMlp {
    let mut h = input.to_vec();
    let mut width = input.len() / batch;
    let mut min_pre = f64::INFINITY;
    for layer in 0..layers {
        let w = param(p, &format!("layers.{layer}.weight"));
        let b = param(p, &format!("layers.{layer}.bias"));
        let out = b.len();
        assert_eq!(w.len(), width * out, "layers.{layer}.weight");
        let activate = activate_output || layer + 1 < layers;
        let mut next = Vec::with_capacity(batch * out);
        for r in 0..batch {
            for o in 0..out {
                let pre = b[o]
                    + (0..width)
                        .map(|i| h[r * width + i] * w[i * out + o])
                        .sum::<f64>();
                if activate {
                    min_pre = min_pre.min(pre.abs());
                    next.push(act_f64(act, pre));
                } else {
                    next.push(pre);
                }
            }
        }
        h = next;
        width = out;
    }
    HostMlp { out: h, min_pre }
}

pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

pub fn host_x() -> Vec<f64> {
    X.iter().map(|&v| v as f64).collect()
}
