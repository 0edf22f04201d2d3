//! Golden cases of the NVIB layer: forward in train (with the official noise) and eval mode for
//! both versions, gradients, and HEAD's initialisation.

use vaezoo_core::axes::{Batch, Latent, Model, Seq};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_nvib::init::{head_init, Taus};
use vaezoo_nvib::layer::{
    forward, AlphaWeights, DirichletNoise, Noise, Output, PriorComponent, Version, Weights,
};

use crate::harness::{batch_to_seq, seq_to_batch, Golden, Produced};

/// The port's outputs for the layer cases.
pub fn run(g: &Golden) -> Option<Result<Produced, String>> {
    let result = match g.case.as_str() {
        "nvib_v1_eval_forward" => layer_case(g, Version::V1, false),
        "nvib_v1_train_forward_supplied_noise" => layer_case(g, Version::V1, true),
        "nvib_head_eval_forward" => layer_case(g, Version::Head, false),
        "nvib_head_train_forward_supplied_noise" => layer_case(g, Version::Head, true),
        "nvib_head_init_default" | "nvib_head_init_custom" => init_case(g),
        _ => return None,
    };
    Some(result)
}

/// `[out, in]` (torch) → `(in, out)` (ours), and back (the same operation).
pub fn transpose(w: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols)
        .flat_map(|j| (0..rows).map(move |i| w[i * cols + j]))
        .collect()
}

type Leaf = Tensor<(usize,), f64, Cpu>;

/// A parameter as a traced leaf, returned with its flat tensor to read its gradient.
fn leaf(dev: &Cpu, values: Vec<f64>) -> Leaf {
    let n = values.len();
    dev.tensor_from_vec(values, (n,))
}

fn layer_case(g: &Golden, version: Version, train: bool) -> Result<Produced, String> {
    let dev = Cpu::default();
    let enc = g.input("encoder_output")?;
    let (ns, b, p) = (enc.shape[0], enc.shape[1], enc.shape[2]);
    let nl = ns + 1;
    let mask_name = if g.inputs.contains_key("mask") {
        "mask"
    } else {
        "src_key_padding_mask"
    };
    let keep: Vec<bool> = g.input(mask_name)?.bools().iter().map(|m| !m).collect();
    let prior = match version {
        Version::V1 => PriorComponent {
            mu: vec![g.input("prior_mu")?.scalar()],
            var: vec![g.input("prior_var")?.scalar()],
            alpha: g.input("prior_alpha")?.scalar(),
        },
        Version::Head => PriorComponent {
            mu: g.input("prior_mu")?.f64s(),
            var: g.input("prior_var")?.f64s(),
            alpha: g.input("prior_log_alpha")?.scalar().exp(),
        },
    };
    let kappa = match g.inputs.get("kappa") {
        Some(k) => k.scalar() as usize,
        None => 1,
    };
    let x_leaf = leaf(&dev, seq_to_batch(&enc.f64s(), ns, b, p));
    let w = |name: &str| -> Result<Leaf, String> {
        let a = g.input(name)?;
        let values = if a.shape.len() == 2 && a.shape[0] > 1 {
            transpose(&a.f64s(), a.shape[0], a.shape[1])
        } else {
            a.f64s()
        };
        Ok(leaf(&dev, values))
    };
    let names: Vec<&str> = match version {
        Version::V1 => vec![
            "mu_proj_weight",
            "mu_proj_bias",
            "logvar_proj_weight",
            "logvar_proj_bias",
            "alpha_proj_weight",
            "alpha_proj_bias",
        ],
        Version::Head => vec![
            "mu_proj_weight",
            "mu_proj_bias",
            "logvar_proj_weight",
            "logvar_proj_bias",
            "alpha_proj_weight_linear",
            "alpha_proj_bias",
            "alpha_proj_weight_quadratic",
        ],
    };
    let leaves: Vec<Leaf> = names.iter().map(|n| w(n)).collect::<Result<_, _>>()?;
    let t = |l: &Leaf| l.leaky_trace();
    let (m, l) = (Model(p), Latent(p));
    let weights = Weights {
        mu_w: t(&leaves[0]).reshape_like(&(m, l)),
        mu_b: t(&leaves[1]).reshape_like(&(l,)),
        log_var_w: t(&leaves[2]).reshape_like(&(m, l)),
        log_var_b: t(&leaves[3]).reshape_like(&(l,)),
        alpha: match version {
            Version::V1 => AlphaWeights::V1 {
                w: t(&leaves[4]).reshape_like(&(m,)),
                b: t(&leaves[5]).reshape_like(&()),
            },
            Version::Head => AlphaWeights::Head {
                w_lin: t(&leaves[4]).reshape_like(&(m,)),
                b: t(&leaves[5]).reshape_like(&()),
                w_quad: t(&leaves[6]).reshape_like(&(m,)),
            },
        },
    };
    let col = |name: &str, n: usize| -> Result<Vec<f64>, String> {
        Ok(seq_to_batch(&g.input(name)?.f64s(), n, b, 1))
    };
    let noise = if train {
        let eps_name = if version == Version::V1 {
            "eps_z"
        } else {
            "eps"
        };
        let eps_z = seq_to_batch(&g.input(eps_name)?.f64s(), kappa * nl, b, p);
        let dirichlet = match version {
            Version::V1 => DirichletNoise::V1 {
                eps_rho: col("eps_rho", nl)?,
                u_rho: col("u_rho", nl)?,
                eps_sub: col("eps_sub", kappa * nl)?,
                u_sub: col("u_sub", kappa * nl)?,
            },
            Version::Head => DirichletNoise::Head {
                gamma: col("gamma_samples", nl)?,
                gamma_sub: match kappa {
                    1 => Vec::new(),
                    _ => col("gamma_samples_sub", kappa * nl)?,
                },
            },
        };
        Some(Noise::Given { eps_z, dirichlet })
    } else {
        None
    };
    let x = x_leaf
        .leaky_trace()
        .reshape_like(&(Batch(b), Seq(ns), Model(p)));
    let out = forward(x, &keep, weights, &prior, version, kappa, noise);
    let n = kappa * nl;
    let mut produced = Produced::new().with(
        "memory_key_padding_mask",
        out.keep.iter().map(|&k| f64::from(u8::from(!k))).collect(),
    );
    let seq3 = |v: Vec<f64>| batch_to_seq(&v, b, n, p);
    let seq1 = |v: Vec<f64>| batch_to_seq(&v, b, n, 1);
    produced = produced
        .with("z", seq3(out.z.as_vec()))
        .with("mu", seq3(out.mu.as_vec()))
        .with("logvar", seq3(out.log_var.as_vec()))
        .with("alpha", seq1(out.alpha.as_vec()))
        .with("pi", seq1(out.pi.as_vec()));
    if g.outputs.contains_key("log_alpha") {
        let la = out.log_alpha.as_ref().ok_or("no log_alpha")?.as_vec();
        produced = produced.with("log_alpha", seq1(la));
    }
    if g.outputs.contains_key("avg_num_vec") {
        produced = produced
            .with("avg_num_vec", vec![out.stats.avg_num_vec])
            .with("avg_prop_vec", vec![out.stats.avg_prop_vec])
            .with("avg_alpha0", vec![out.stats.avg_alpha0]);
    }
    if g.outputs.contains_key("grad_encoder_output") {
        let grads = gradients(g, out, b, n, p)?;
        produced = produced.with(
            "grad_encoder_output",
            batch_to_seq(&grads.get(&x_leaf).as_vec(), b, ns, p),
        );
        for (name, l) in names.iter().zip(&leaves) {
            let a = g.input(name)?;
            let gv = grads.get(l).as_vec();
            let gv = if a.shape.len() == 2 && a.shape[0] > 1 {
                transpose(&gv, a.shape[1], a.shape[0])
            } else {
                gv
            };
            produced = produced.with(&format!("grad_{name}"), gv);
        }
    }
    Ok(produced)
}

/// Gradients of L = Σ wz·z + Σ wpi·π, with every output's history merged.
fn gradients(
    g: &Golden,
    out: Output<f64, Cpu>,
    b: usize,
    n: usize,
    p: usize,
) -> Result<Gradients<f64, Cpu>, String> {
    let dev = out.z.device().clone();
    let wz = dev.tensor_from_vec(
        seq_to_batch(&g.input("wz")?.f64s(), n, b, p),
        *out.z.shape(),
    );
    let wpi = dev.tensor_from_vec(
        seq_to_batch(&g.input("wpi")?.f64s(), n, b, 1),
        *out.pi.shape(),
    );
    let mut tape = out
        .mu
        .split_tape()
        .1
        .merge(out.log_var.split_tape().1)
        .merge(out.alpha.split_tape().1);
    if let Some(la) = out.log_alpha {
        tape = tape.merge(la.split_tape().1);
    }
    let loss = (out.z * wz).sum::<(), _>() + (out.pi * wpi).sum::<(), _>();
    let (loss, t) = loss.split_tape();
    Ok(loss.put_tape(t.merge(tape)).backward())
}

fn init_case(g: &Golden) -> Result<Produced, String> {
    let size = g.input("size")?.scalar() as usize;
    let heads = g.input("nheads")?.scalar() as usize;
    let get = |name: &str, default: f64| g.inputs.get(name).map_or(default, |a| a.scalar());
    let vec_or = |name: &str, default: f64| g.inputs.get(name).map_or(vec![default], |a| a.f64s());
    let taus = Taus {
        mu_tau: get("mu_tau", 1.0),
        stdev_tau: get("stdev_tau", 1.0),
        alpha_tau: get("alpha_tau", 1.0),
    };
    let init = head_init(
        size,
        size,
        heads,
        &vec_or("prior_mu", 0.0),
        &vec_or("prior_var", 1.0),
        get("prior_log_alpha_stdev", 1.0),
        taus,
        f64::MIN_POSITIVE,
    );
    Ok(Produced::new()
        .with("mu_proj_weight", transpose(&init.mu_w, size, size))
        .with("mu_proj_bias", init.mu_b)
        .with("logvar_proj_weight", transpose(&init.log_var_w, size, size))
        .with("logvar_proj_bias", init.log_var_b)
        .with("alpha_proj_weight_linear", init.alpha_lin)
        .with("alpha_proj_weight_quadratic", init.alpha_quad)
        .with("alpha_proj_bias", vec![init.alpha_b]))
}
