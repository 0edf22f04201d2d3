//! Finite-difference gradient tests of the NVIB layer, both versions, in training (fixed noise)
//! and evaluation, with respect to the encoder states and every parameter, in f64.

use vaezoo_core::axes::{Batch, Latent, Model, Seq};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::rng::{normal_vec, seeded, uniform_vec};
use vaezoo_nvib::layer::{
    forward, AlphaWeights, DirichletNoise, Noise, PriorComponent, Version, Weights,
};

const B: usize = 2;
const NS: usize = 4;
const P: usize = 3;
const NL: usize = NS + 1;

fn draws(seed: u64, n: usize, scale: f64) -> Vec<f64> {
    normal_vec(&mut seeded(seed), n)
        .into_iter()
        .map(|v| f64::from(v) * scale)
        .collect()
}

/// The inputs of the loss: encoder states, then the parameters (flat, our `(in, out)` layout).
fn inputs(version: Version) -> Vec<Vec<f64>> {
    let mut v = vec![
        draws(1, B * NS * P, 1.0),
        draws(2, P * P, 0.5),
        draws(3, P, 0.5),
        draws(4, P * P, 0.3),
        draws(5, P, 0.3),
        draws(6, P, 0.3),
        // α's bias: v1 keeps α = ReLU(·) well above 0 so that no ReLU kink is near.
        vec![2.0],
    ];
    if version == Version::Head {
        v[6] = vec![0.3];
        v.push(draws(7, P, 0.2));
    }
    v
}

/// The layer's weights as traced views of `leaves` (inputs 1.. of [`inputs`]).
fn weights(version: Version, leaves: &[Tensor<(usize,), f64, Cpu>]) -> Weights<f64, Cpu> {
    let t = |i: usize| leaves[i].leaky_trace();
    let (m, l) = (Model(P), Latent(P));
    let alpha = match version {
        Version::V1 => AlphaWeights::V1 {
            w: t(5).reshape_like(&(m,)),
            b: t(6).reshape_like(&()),
        },
        Version::Head => AlphaWeights::Head {
            w_lin: t(5).reshape_like(&(m,)),
            b: t(6).reshape_like(&()),
            w_quad: t(7).reshape_like(&(m,)),
        },
    };
    Weights {
        mu_w: t(1).reshape_like(&(m, l)),
        mu_b: t(2).reshape_like(&(l,)),
        log_var_w: t(3).reshape_like(&(m, l)),
        log_var_b: t(4).reshape_like(&(l,)),
        alpha,
    }
}

/// Σ wz·z + Σ wπ·π + Σ wμ·μ + Σ wσ·logσ² + Σ wα·α, with the given inputs as traced leaves.
fn loss(version: Version, train: bool, values: &[Vec<f64>]) -> (f64, Vec<Vec<f64>>) {
    let dev = Cpu::default();
    let leaves: Vec<Tensor<(usize,), f64, Cpu>> = values
        .iter()
        .map(|v| dev.tensor_from_vec(v.clone(), (v.len(),)))
        .collect();
    let weights = weights(version, &leaves);
    let keep: Vec<bool> = (0..B * NS).map(|i| i != B * NS - 1).collect();
    let noise = train.then(|| Noise::Given {
        eps_z: draws(20, B * NL * P, 1.0),
        dirichlet: match version {
            Version::V1 => DirichletNoise::V1 {
                eps_rho: draws(21, B * NL, 1.0),
                u_rho: uniform_vec(&mut seeded(22), B * NL, 0.05, 0.95)
                    .into_iter()
                    .map(f64::from)
                    .collect(),
                eps_sub: draws(23, B * NL, 1.0),
                u_sub: uniform_vec(&mut seeded(24), B * NL, 0.05, 0.95)
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            },
            // γ = F⁻¹(u; α): the samples move with α as a reparameterised draw does.
            Version::Head => DirichletNoise::Head {
                gamma: gamma_draws(values),
                gamma_sub: Vec::new(),
            },
        },
    });
    let prior = PriorComponent {
        mu: vec![0.0],
        var: vec![1.0],
        alpha: 1.0,
    };
    let x = leaves[0]
        .leaky_trace()
        .reshape_like(&(Batch(B), Seq(NS), Model(P)));
    let out = forward(x, &keep, weights, &prior, version, 1, noise);
    let (s3, s2) = (*out.z.shape(), *out.pi.shape());
    let w3 = |s| dev.tensor_from_vec(draws(s, B * NL * P, 1.0), s3);
    let w2 = |s| dev.tensor_from_vec(draws(s, B * NL, 1.0), s2);
    let mut total = (out.z * w3(30)).sum::<(), _>()
        + (out.pi * w2(31)).sum::<(), _>()
        + (out.mu * w3(32)).sum::<(), _>()
        + (out.log_var * w3(33)).sum::<(), _>()
        + (out.alpha * w2(34)).sum::<(), _>();
    if let Some(la) = out.log_alpha {
        total = total + (la * w2(35)).sum::<(), _>();
    }
    let value = total.as_vec()[0];
    let grads = total.backward();
    (
        value,
        leaves.iter().map(|l| grads.get(l).as_vec()).collect(),
    )
}

/// Regularised lower incomplete gamma P(a, x) (series, or continued fraction for x > a + 1).
fn gamma_p(a: f64, x: f64) -> f64 {
    let lg = vaezoo_nvib::special::lgamma_f64(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        sum * (-x + a * x.ln() - lg).exp()
    } else {
        let (mut b, mut c, mut d) = (x + 1.0 - a, 1e300, 1.0 / (x + 1.0 - a));
        let mut h = d;
        for i in 1..500 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = 1.0 / (an * d + b);
            c = b + an / c;
            h *= d * c;
            if (d * c - 1.0).abs() < 1e-17 {
                break;
            }
        }
        1.0 - (-x + a * x.ln() - lg).exp() * h
    }
}

/// The Gamma(α, 1) quantile of u, by bisection.
fn gamma_quantile(a: f64, u: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 100.0 + 10.0 * a);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if gamma_p(a, mid) < u {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// head's α for these inputs (the prior component's is 1), and the quantiles of fixed uniforms.
fn gamma_draws(values: &[Vec<f64>]) -> Vec<f64> {
    let u = uniform_vec(&mut seeded(25), B * NL, 0.1, 0.9);
    let (x, w_lin, b, w_quad) = (&values[0], &values[5], values[6][0], &values[7]);
    (0..B * NL)
        .map(|r| {
            let (bi, i) = (r / NL, r % NL);
            let alpha = if i == 0 {
                1.0
            } else {
                let row = &x[(bi * NS + i - 1) * P..(bi * NS + i) * P];
                (b + (0..P)
                    .map(|p| row[p] * w_lin[p] + row[p] * row[p] * w_quad[p])
                    .sum::<f64>())
                .exp()
            };
            gamma_quantile(alpha, f64::from(u[r]))
        })
        .collect()
}

fn check(version: Version, train: bool) {
    let values = inputs(version);
    let (_, tape) = loss(version, train, &values);
    let h = 1e-6;
    let mut checked = 0;
    for (i, v) in values.iter().enumerate() {
        for j in 0..v.len() {
            let mut plus = values.clone();
            plus[i][j] += h;
            let mut minus = values.clone();
            minus[i][j] -= h;
            let fd = (loss(version, train, &plus).0 - loss(version, train, &minus).0) / (2.0 * h);
            let got = tape[i][j];
            // Through Gamma samples the tape uses torch's approximate implicit gradient
            // (≲ 1e-3 relative, `docs/nvib-math.md` §C); everything else is exact.
            let tol = if version == Version::Head && train {
                2e-3
            } else {
                1e-6
            };
            assert!(
                (got - fd).abs() <= tol * fd.abs().max(1.0),
                "{version:?} train={train}: input {i}[{j}]: tape {got} vs finite difference {fd}"
            );
            checked += 1;
        }
    }
    assert!(checked > 50);
    assert!(
        tape.iter().all(|g| g.iter().any(|&x| x != 0.0)),
        "every input gets a gradient"
    );
}

#[test]
fn v1_train_gradients_match_finite_differences() {
    check(Version::V1, true);
}

#[test]
fn v1_eval_gradients_match_finite_differences() {
    check(Version::V1, false);
}

#[test]
fn head_train_gradients_match_finite_differences() {
    check(Version::Head, true);
}

#[test]
fn head_eval_gradients_match_finite_differences() {
    check(Version::Head, false);
}

/// With κ samples per component, training has κ·Nl rows and evaluation Nl, in both versions.
#[test]
fn kappa_copies_in_training_and_means_in_evaluation() {
    let kappa = 3;
    for version in [Version::V1, Version::Head] {
        for train in [true, false] {
            let values = inputs(version);
            let dev = Cpu::default();
            let leaves: Vec<Tensor<(usize,), f64, Cpu>> = values
                .iter()
                .map(|v| dev.tensor_from_vec(v.clone(), (v.len(),)))
                .collect();
            let weights = weights(version, &leaves);
            let keep: Vec<bool> = (0..B * NS).map(|i| i != B * NS - 1).collect();
            let mut rng = seeded(9);
            let noise = train.then_some(Noise::Host(&mut rng));
            let prior = PriorComponent {
                mu: vec![0.0],
                var: vec![1.0],
                alpha: 1.0,
            };
            let x = leaves[0]
                .leaky_trace()
                .reshape_like(&(Batch(B), Seq(NS), Model(P)));
            let out = forward(x, &keep, weights, &prior, version, kappa, noise);
            let rows = if train { kappa * NL } else { NL };
            assert_eq!(out.z.shape().1 .0, rows, "{version:?} train={train}");
            assert_eq!(out.pi.shape().1 .0, rows);
            assert_eq!(out.alpha.shape().1 .0, rows);
            assert_eq!(out.keep.len(), B * rows);
            let pi = out.pi.as_vec();
            for row in pi.chunks(rows) {
                let total: f64 = row.iter().sum();
                assert!(
                    (total - 1.0).abs() < 1e-9 && row.iter().all(|p| p.is_finite()),
                    "{row:?}"
                );
            }
        }
    }
}

/// The `nvib` + `dirichlet_process` pair with HEAD and κ = 2, the prior component stated once
/// (in `nvib`), gives finite KL terms in both modes; a prior built beside a bottleneck that
/// shares no prior component is a clear error.
#[test]
fn the_dirichlet_process_prior_reads_the_bottleneck_settings_with_kappa_copies() {
    use vaezoo_core::params::{ParamBuilder, ParamStore};
    use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, Mode, Prior};
    use vaezoo_core::registry::{LatentInfo, Shared};
    use vaezoo_nvib::bottleneck::{Nvib, NvibConfig};
    use vaezoo_nvib::prior::{DirichletProcess, DirichletProcessConfig};

    let cfg: NvibConfig = serde_json::from_value(
        serde_json::json!({"version": "head", "kappa": 2, "prior_alpha": 1.0}),
    )
    .unwrap();
    let mut rng = seeded(1);
    let mut pb = ParamBuilder::new(&mut rng);
    let nvib = Nvib::new(&cfg, &mut pb, P);
    let states = pb.declare("x", &[B, NS, P], normal_vec(&mut seeded(2), B * NS * P));
    let params = ParamStore::new(&Cpu::default(), pb.finish());
    let prior_cfg: DirichletProcessConfig =
        serde_json::from_value(serde_json::json!({"delta": 0.3})).unwrap();
    let shared = cfg.shared();
    let latent_info = LatentInfo {
        dim: P,
        shared: &shared,
    };
    let prior = DirichletProcess::new(&prior_cfg, latent_info).unwrap();
    for mode in [Mode::Train, Mode::Eval] {
        let mut rng = seeded(3);
        let mut ctx = Ctx {
            params: &params,
            mode,
            rng: &mut rng,
        };
        let input = EncoderStates {
            states: params.get(states, (Batch(B), Seq(NS), Model(P))),
            mask: None,
        };
        let latent = nvib.forward(&mut ctx, input).unwrap();
        for term in prior.kl(&mut ctx, &latent, None).unwrap() {
            assert!(
                term.value
                    .as_vec()
                    .iter()
                    .all(|v| v.is_finite() && *v >= -1e-6),
                "{mode:?} {}",
                term.name
            );
        }
    }
    let nothing = Shared::new();
    let err = DirichletProcess::new(
        &prior_cfg,
        LatentInfo {
            dim: P,
            shared: &nothing,
        },
    )
    .err()
    .expect("a bottleneck without a prior component is an error");
    assert!(err.to_string().contains("`prior_mu`"), "{err}");
}
