//! The Variational Transformer plugins against the golden-tested maths of `vt` and by hand:
//!
//! - `vt_variable` and `vt_pooled` give exactly `vt::variable` / `vt::pooled` on the same
//!   weights, states, noise and mode; `vt_normal`'s KL is exactly `vt::kl` (and an f64 host
//!   computation), named `kl_g` and weighted by λ_G;
//! - VTS: the stride mask on top of the padding, zeroed latents where it drops;
//! - the sparsity statistics `avg_num_vec` / `avg_prop_vec` on a padded batch;
//! - gradients of every plugin (heads and input states) against finite differences, in training
//!   and in evaluation;
//! - the configs.
//!
//! `vt_normal`'s samples and density are in `vt_prior_samples.rs`.

use serde_json::json;
use vaezoo_core::axes::{Batch, Comp, Latent, Model, Seq};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, Mode, Prior};
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_core::Traced;
use vaezoo_transformer::vt::{self, GaussianHeads, Pooling};
use vaezoo_transformer::vt_bottleneck::{
    vector_stats, VtPooled, VtPooledConfig, VtVariable, VtVariableConfig,
};
use vaezoo_transformer::vt_prior::{VtNormal, VtNormalConfig};

const B: usize = 3;
const S: usize = 5;
const M: usize = 4;
const L: usize = 3;
/// Real tokens per row; the rest is padding.
const LENGTHS: [usize; B] = [5, 3, 1];
const SHAPE: (Batch, Seq, Model) = (Batch(B), Seq(S), Model(M));

/// The padding mask of [`LENGTHS`], `true` for a real token, row-major `B × S`.
fn real() -> Vec<bool> {
    LENGTHS
        .iter()
        .flat_map(|&n| (0..S).map(move |i| i < n))
        .collect()
}

/// The plugin built first (its heads are parameters 0–3), then the states `x` `(B, S, M)`.
fn setup<P>(build: impl FnOnce(&mut ParamBuilder) -> P) -> (ParamStore<Cpu>, P, ParamId) {
    let mut rng = seeded(3);
    let mut pb = ParamBuilder::new(&mut rng);
    let plugin = build(&mut pb);
    let x = pb.declare("x", &[B, S, M], normal_vec(&mut seeded(4), B * S * M));
    (ParamStore::new(&Cpu::default(), pb.finish()), plugin, x)
}

/// The heads `vt` reads, declared as the plugins declare theirs (same ids, same values).
fn heads() -> GaussianHeads {
    let mut rng = seeded(3);
    GaussianHeads::new(&mut ParamBuilder::new(&mut rng), Model(M), Latent(L))
}

fn variable_plugin(stride_perc: Option<f64>) -> impl FnOnce(&mut ParamBuilder) -> VtVariable {
    move |pb| {
        let cfg = VtVariableConfig {
            latent_dim: Some(L),
            stride_perc,
        };
        VtVariable::new(&cfg, pb, M)
    }
}

fn pooled_plugin(pooling: Pooling) -> impl FnOnce(&mut ParamBuilder) -> VtPooled {
    move |pb| {
        let cfg = VtPooledConfig {
            latent_dim: Some(L),
            pooling,
        };
        VtPooled::new(&cfg, pb, M)
    }
}

/// The bottleneck's latent for the states `x` with the padding of [`LENGTHS`].
fn forward(
    bottleneck: &dyn Bottleneck<Cpu>,
    p: &ParamStore<Cpu>,
    x: ParamId,
    mode: Mode,
    seed: u64,
) -> Mixture<Cpu> {
    let mut rng = seeded(seed);
    let mut ctx = Ctx {
        params: p,
        mode,
        rng: &mut rng,
    };
    let states = EncoderStates {
        states: p.get(x, SHAPE),
        mask: Some(real()),
    };
    bottleneck.forward(&mut ctx, states).unwrap()
}

fn bits(t: &Traced<(Batch, Comp, Latent), Cpu>) -> Vec<u32> {
    t.as_vec().iter().map(|v| v.to_bits()).collect()
}

/// The plugin's z, μ, logσ² bit for bit equal to `want`'s.
fn assert_same(got: &Mixture<Cpu>, want: &vt::VtLatent<f32, Cpu>, what: &str) {
    assert_eq!(bits(&got.z), bits(&want.z), "{what}: z");
    assert_eq!(bits(&got.mean), bits(&want.mu), "{what}: mean");
    let log_var = got.log_var.as_ref().expect("a variance");
    assert_eq!(bits(log_var), bits(&want.log_var), "{what}: log_var");
    assert!(
        got.weights.is_none() && got.alpha.is_none(),
        "{what}: no π, no α"
    );
}

#[test]
fn vt_variable_is_vt_variable_with_the_padding_or_stride_mask() {
    for stride in [
        None,
        Some(0.0),
        Some(0.25),
        Some(0.5),
        Some(0.75),
        Some(1.0),
    ] {
        let (p, plugin, x) = setup(variable_plugin(stride));
        let padded: Vec<bool> = real().iter().map(|&k| !k).collect();
        let keep: Vec<bool> = match stride {
            Some(perc) => vt::stride_mask(&padded, S, perc)
                .iter()
                .map(|&d| !d)
                .collect(),
            None => real(),
        };
        for mode in [Mode::Train, Mode::Eval] {
            let got = forward(&plugin, &p, x, mode, 9);
            let want = vt::variable(&heads(), &p, p.get(x, SHAPE), &keep, mode, &mut seeded(9));
            let what = format!("stride {stride:?}, {mode:?}");
            assert_same(&got, &want, &what);
            assert_eq!(got.dims(), (Batch(B), Comp(S), Latent(L)), "{what}");
            assert_eq!(got.mask.as_deref(), Some(&keep[..]), "{what}");
        }
    }
}

#[test]
fn vts_drops_the_strided_latents_on_top_of_the_padding() {
    let (p, plugin, x) = setup(variable_plugin(Some(0.5)));
    let got = forward(&plugin, &p, x, Mode::Train, 1);
    let (t, f) = (true, false);
    #[rustfmt::skip]
    let want = [
        t, f, t, f, t,
        t, f, t, f, f,
        t, f, f, f, f,
    ];
    assert_eq!(got.mask.as_deref(), Some(&want[..]));
    let log_var = got.log_var.as_ref().unwrap();
    for t in [&got.z, &got.mean, log_var] {
        let v = t.as_vec();
        for (row, &kept) in v.chunks(L).zip(&want) {
            assert_eq!(row.iter().all(|&x| x != 0.0), kept, "{row:?}");
            assert_eq!(row.iter().all(|&x| x == 0.0), !kept, "{row:?}");
        }
    }
    // Without a stride the mask is the padding, and with all tokens real there is none.
    let (p, plugin, x) = setup(variable_plugin(None));
    assert_eq!(
        forward(&plugin, &p, x, Mode::Eval, 0).mask.as_deref(),
        Some(&real()[..])
    );
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &p,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let unpadded = EncoderStates {
        states: p.get(x, SHAPE),
        mask: None,
    };
    let latent = Bottleneck::<Cpu>::forward(&plugin, &mut ctx, unpadded).unwrap();
    assert!(latent.mask.is_none());
    assert_eq!(
        latent.stats,
        [("avg_num_vec", S as f64), ("avg_prop_vec", 1.0)]
    );
}

#[test]
fn vt_pooled_is_vt_pooled_with_one_unmasked_vector() {
    for pooling in [Pooling::Mean, Pooling::Max] {
        let (p, plugin, x) = setup(pooled_plugin(pooling));
        for mode in [Mode::Train, Mode::Eval] {
            let got = forward(&plugin, &p, x, mode, 5);
            let h = p.get(x, SHAPE);
            let want = vt::pooled(&heads(), &p, h, &real(), pooling, mode, &mut seeded(5));
            let what = format!("{pooling:?}, {mode:?}");
            assert_same(&got, &want, &what);
            assert_eq!(got.dims(), (Batch(B), Comp(1), Latent(L)), "{what}");
            assert!(got.mask.is_none() && got.is_vector(), "{what}");
        }
    }
}

#[test]
fn the_statistics_count_kept_vectors_per_unpadded_token() {
    let stats = |latent: Mixture<Cpu>| latent.stats;
    let close = |got: Vec<(&'static str, f64)>, num: f64, prop: f64| {
        let names: Vec<&str> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["avg_num_vec", "avg_prop_vec"]);
        assert!((got[0].1 - num).abs() < 1e-12, "{got:?} vs {num}");
        assert!((got[1].1 - prop).abs() < 1e-12, "{got:?} vs {prop}");
    };
    // VTV keeps every real token.
    let (p, plugin, x) = setup(variable_plugin(None));
    close(stats(forward(&plugin, &p, x, Mode::Eval, 0)), 3.0, 1.0);
    // VTS at 0.5 keeps 3 of 5, 2 of 3 and 1 of 1.
    let (p, plugin, x) = setup(variable_plugin(Some(0.5)));
    let prop = (3.0 / 5.0 + 2.0 / 3.0 + 1.0) / 3.0;
    close(stats(forward(&plugin, &p, x, Mode::Train, 0)), 2.0, prop);
    // VTP keeps one vector per row.
    for pooling in [Pooling::Mean, Pooling::Max] {
        let (p, plugin, x) = setup(pooled_plugin(pooling));
        let prop = (1.0 / 5.0 + 1.0 / 3.0 + 1.0) / 3.0;
        close(stats(forward(&plugin, &p, x, Mode::Eval, 0)), 1.0, prop);
    }
    close(vector_stats(&[0, 1], &[true, true, false, true]), 0.5, 0.5);
}

/// ½ Σ_kept mean_l [σ²/σ²_p + (μ − μ_p)²/σ²_p − 1 − ln(σ²/σ²_p)] per row, in f64.
fn host_kl(latent: &Mixture<Cpu>, mu_p: f64, var_p: f64) -> Vec<f64> {
    let (_, comps, dim) = latent.dims();
    let (mean, log_var) = (
        latent.mean.as_vec(),
        latent.log_var.as_ref().unwrap().as_vec(),
    );
    let keep = latent.keep();
    (0..B)
        .map(|b| {
            (0..comps.0)
                .filter(|&c| keep[b * comps.0 + c])
                .map(|c| {
                    let per: f64 = (0..dim.0)
                        .map(|l| {
                            let i = (b * comps.0 + c) * dim.0 + l;
                            let (m, lv) = (f64::from(mean[i]), f64::from(log_var[i]));
                            let ratio = lv.exp() / var_p;
                            ratio + (m - mu_p).powi(2) / var_p - 1.0 - ratio.ln()
                        })
                        .sum();
                    0.5 * per / dim.0 as f64
                })
                .sum()
        })
        .collect()
}

#[test]
fn vt_normal_kl_is_vt_kl_over_the_kept_components() {
    let cfg: VtNormalConfig =
        serde_json::from_value(json!({"prior_mu": 0.3, "prior_var": 1.7, "lambda_g": 0.25}))
            .unwrap();
    let prior = VtNormal::new(&cfg);
    let latents: Vec<(&str, Mixture<Cpu>)> = vec![
        {
            let (p, plugin, x) = setup(variable_plugin(Some(0.5)));
            ("vts", forward(&plugin, &p, x, Mode::Train, 2))
        },
        {
            let (p, plugin, x) = setup(variable_plugin(None));
            ("vtv", forward(&plugin, &p, x, Mode::Eval, 2))
        },
        {
            let (p, plugin, x) = setup(pooled_plugin(Pooling::Max));
            ("vtp", forward(&plugin, &p, x, Mode::Train, 2))
        },
    ];
    let p = ParamStore::new(&Cpu::default(), Vec::new());
    for (what, latent) in latents {
        let mut rng = seeded(0);
        let mut ctx = Ctx {
            params: &p,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let mut terms = Prior::<Cpu>::kl(&prior, &mut ctx, &latent, None).unwrap();
        assert_eq!(terms.len(), 1, "{what}");
        let term = terms.remove(0);
        assert_eq!((term.name.as_str(), term.weight), ("kl_g", 0.25), "{what}");
        let log_var = latent.log_var.as_ref().unwrap();
        let want = vt::kl(
            latent.mean.reuse(),
            log_var.reuse(),
            &latent.keep(),
            0.3,
            1.7,
        );
        let got = term.value.as_vec();
        assert_eq!(got, want.as_vec(), "{what}");
        for (g, h) in got.iter().zip(host_kl(&latent, 0.3, 1.7)) {
            assert!(
                (f64::from(*g) - h).abs() < 1e-5 * h.abs().max(1.0),
                "{what}: {g} vs {h}"
            );
        }
    }
}

#[test]
fn vt_normal_needs_a_posterior_variance() {
    let dev = Cpu::default();
    let p = ParamStore::new(&dev, Vec::new());
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &p,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let code = vaezoo_core::backend::lift(dev.zeros_like(&(Batch(2), Comp(1), Latent(2))));
    let deterministic = Mixture::gaussian(code.reuse(), code, None, None);
    let prior = VtNormal::new(&VtNormalConfig::default());
    let err = Prior::<Cpu>::kl(&prior, &mut ctx, &deterministic, None)
        .err()
        .expect("no variance, no KL");
    assert!(err.to_string().contains("vt_normal"), "{err}");
}

/// Checks the gradients of `Σ sin(z) + Σ kl_g` w.r.t. the heads and the states.
fn check_gradients<P: Bottleneck<Cpu>>(
    build: impl FnOnce(&mut ParamBuilder) -> P,
    mode: Mode,
    what: &str,
) {
    let (mut p, plugin, x) = setup(build);
    let prior = VtNormal::new(&VtNormalConfig {
        prior_mu: 0.2,
        prior_var: 1.5,
        lambda_g: 1.0,
    });
    let report = GradCheck {
        eps: 1e-3,
        per_param: 12,
        ..Default::default()
    }
    .run(&mut p, |p| {
        let latent = forward(&plugin, p, x, mode, 8);
        let mut rng = seeded(0);
        let mut ctx = Ctx {
            params: p,
            mode,
            rng: &mut rng,
        };
        let kl = Prior::<Cpu>::kl(&prior, &mut ctx, &latent, None)
            .unwrap()
            .remove(0)
            .value;
        let loss = latent.z.reuse().sin().sum() + kl.sum();
        let (loss, tape) = loss.split_tape();
        loss.put_tape(tape.merge(latent.into_tape()))
    })
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        report.zero_gradient.is_empty(),
        "{what}: no gradient reaches {:?}",
        report.zero_gradient
    );
}

#[test]
fn gradients_match_finite_differences() {
    for mode in [Mode::Train, Mode::Eval] {
        for stride in [None, Some(0.5)] {
            let what = format!("vt_variable stride {stride:?}, {mode:?}");
            check_gradients(variable_plugin(stride), mode, &what);
        }
        for pooling in [Pooling::Mean, Pooling::Max] {
            let what = format!("vt_pooled {pooling:?}, {mode:?}");
            check_gradients(pooled_plugin(pooling), mode, &what);
        }
    }
}

#[test]
fn configs_have_the_official_defaults_and_refuse_unknown_fields() {
    let variable: VtVariableConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(variable, VtVariableConfig::default());
    let pooled: VtPooledConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(pooled.pooling, Pooling::Mean);
    let max: VtPooledConfig = serde_json::from_value(json!({"pooling": "max"})).unwrap();
    assert_eq!(max.pooling, Pooling::Max);
    let normal: VtNormalConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(normal, VtNormalConfig::default());
    assert_eq!(
        (normal.prior_mu, normal.prior_var, normal.lambda_g),
        (0.0, 1.0, 1.0)
    );
    assert!(serde_json::from_value::<VtPooledConfig>(json!({"pooling": "cls"})).is_err());
    assert!(serde_json::from_value::<VtVariableConfig>(json!({"stride": 0.5})).is_err());
    assert!(serde_json::from_value::<VtPooledConfig>(json!({"latent": 3})).is_err());
    assert!(serde_json::from_value::<VtNormalConfig>(json!({"lambda_d": 1})).is_err());
    // Without latent_dim the heads map the encoder width onto itself.
    let mut rng = seeded(0);
    let mut pb = ParamBuilder::new(&mut rng);
    VtVariable::new(&variable, &mut pb, 6);
    VtPooled::new(&pooled, &mut pb, 6);
    let shapes: Vec<(String, Vec<usize>)> = (pb.finish().into_iter())
        .map(|h| (h.name, h.shape))
        .collect();
    let heads = [
        ("mu_proj.weight", vec![6, 6]),
        ("mu_proj.bias", vec![6]),
        ("logvar_proj.weight", vec![6, 6]),
        ("logvar_proj.bias", vec![6]),
    ];
    let want: Vec<(String, Vec<usize>)> = (heads.iter().chain(&heads))
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect();
    assert_eq!(shapes, want);
}
