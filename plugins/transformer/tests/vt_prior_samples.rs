//! `vt_normal`'s prior samples (one vector per row, or masked rows with NVIB's lengths) and its
//! density, against the host generator's draws and an f64 computation.

use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Prior};
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_nvib::kl::sample_prior_lengths;
use vaezoo_transformer::vt_prior::{VtNormal, VtNormalConfig};

fn sample(prior: &VtNormal, batch: usize, comps: usize, seed: u64) -> Mixture<Cpu> {
    let p = ParamStore::new(&Cpu::default(), Vec::new());
    let mut rng = seeded(seed);
    let mut ctx = Ctx {
        params: &p,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    Prior::<Cpu>::sample(prior, &mut ctx, Batch(batch), Comp(comps), Latent(2), None).unwrap()
}

#[test]
fn one_component_samples_are_one_prior_vector_per_row() {
    let (mu, var) = (0.5, 2.0);
    let prior = VtNormal::new(&VtNormalConfig {
        prior_mu: mu,
        prior_var: var,
        lambda_g: 1.0,
    });
    let n = 20_000;
    let s = sample(&prior, n, 1, 3);
    assert!(s.is_vector());
    assert_eq!(s.dims(), (Batch(n), Comp(1), Latent(2)));
    assert!(s.mean.as_vec().iter().all(|&m| m == mu as f32));
    let log_var = s.log_var.as_ref().unwrap().as_vec();
    assert!(log_var
        .iter()
        .all(|&v| (v - (var.ln() as f32)).abs() < 1e-6));
    // z = μ_p + σ_p ε with ε the host generator's first draws.
    let eps = normal_vec(&mut seeded(3), 2 * n);
    let z = s.z.as_vec();
    for (z, e) in z.iter().zip(&eps) {
        let want = e * (var.sqrt() as f32) + mu as f32;
        assert!((z - want).abs() < 1e-5, "{z} vs {want}");
    }
    let m = z.iter().map(|&v| f64::from(v)).sum::<f64>() / z.len() as f64;
    let v = z.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / z.len() as f64;
    assert!(
        (m - mu).abs() < 0.05 && (v - var).abs() < 0.1,
        "mean {m}, var {v}"
    );
}

#[test]
fn many_component_samples_keep_nvib_prior_lengths() {
    let prior = VtNormal::new(&VtNormalConfig::default());
    let (batch, comps) = (40, 6);
    let s = sample(&prior, batch, comps, 11);
    let mut rng = seeded(11);
    let lengths = sample_prior_lengths(&mut rng, batch, 1, comps);
    let keep: Vec<bool> = (lengths.iter())
        .flat_map(|&n| (0..comps).map(move |i| i < n))
        .collect();
    assert!(keep.iter().any(|&k| !k), "some rows are masked");
    assert_eq!(s.mask.as_deref(), Some(&keep[..]));
    let eps = normal_vec(&mut rng, batch * comps * 2);
    let z = s.z.as_vec();
    for (i, &kept) in keep.iter().enumerate() {
        for l in 0..2 {
            let j = i * 2 + l;
            let want = if kept { eps[j] } else { 0.0 };
            assert!((z[j] - want).abs() < 1e-6, "{i}: {} vs {want}", z[j]);
        }
    }
    assert!(Prior::<Cpu>::sample(
        &prior,
        &mut Ctx {
            params: &ParamStore::new(&Cpu::default(), Vec::new()),
            mode: Mode::Eval,
            rng: &mut seeded(0),
        },
        Batch(1),
        Comp(0),
        Latent(2),
        None,
    )
    .is_err());
}

/// VTS: the prior's samples drop what the bottleneck's stride mask drops, on top of the
/// lengths (every second position at stride ½), and z is zero there.
#[test]
fn vts_samples_apply_the_stride_mask_of_the_bottleneck() {
    let prior = VtNormal::with_stride(&VtNormalConfig::default(), Some(0.5));
    let (batch, comps) = (40, 6);
    let s = sample(&prior, batch, comps, 11);
    let lengths = sample_prior_lengths(&mut seeded(11), batch, 1, comps);
    let keep: Vec<bool> = (lengths.iter())
        .flat_map(|&n| (0..comps).map(move |i| i < n && (i + 1) % 2 != 0))
        .collect();
    assert_eq!(s.mask.as_deref(), Some(&keep[..]));
    let z = s.z.as_vec();
    for (i, &kept) in keep.iter().enumerate() {
        assert_eq!(z[2 * i] != 0.0, kept, "component {i}");
    }
}

/// The registry builds `vt_normal` beside `vt_variable` with the bottleneck's stride: a spec
/// states `stride_perc` once.
#[test]
fn the_registry_hands_vt_normal_the_stride_of_vt_variable() {
    use vaezoo_core::params::ParamBuilder;
    use vaezoo_core::registry::{DataDims, LatentInfo, Registry};
    let registry = Registry::builtin().unwrap();
    let mut rng = seeded(0);
    let mut pb = ParamBuilder::new(&mut rng);
    let bottleneck = registry
        .build_bottleneck(
            "vt_variable",
            &serde_json::json!({"stride_perc": 0.5}),
            &mut pb,
            4,
        )
        .unwrap();
    let info = LatentInfo {
        dim: bottleneck.latent_dim,
        shared: &bottleneck.shared,
    };
    let dims = DataDims {
        features: 0,
        classes: 0,
        vocab: 10,
    };
    let prior = registry
        .build_prior("vt_normal", &serde_json::json!({}), &mut pb, info, dims)
        .unwrap();
    let p = ParamStore::new(&Cpu::default(), Vec::new());
    let mut ctx = Ctx {
        params: &p,
        mode: Mode::Eval,
        rng: &mut seeded(11),
    };
    let prior = <Cpu as vaezoo_core::Backend>::prior(prior.as_ref());
    let s = prior
        .sample(&mut ctx, Batch(40), Comp(6), Latent(4), None)
        .unwrap();
    let mask = s.mask.expect("masked samples");
    assert!(
        mask.chunks(6).all(|row| !row[1] && !row[3] && !row[5]),
        "every second position dropped"
    );
}

#[test]
fn log_density_is_the_scalar_gaussian_summed_over_everything() {
    let (mu, var) = (-0.4, 0.6);
    let prior = VtNormal::new(&VtNormalConfig {
        prior_mu: mu,
        prior_var: var,
        lambda_g: 1.0,
    });
    let dev = Cpu::default();
    let p = ParamStore::new(&dev, Vec::new());
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &p,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let values = normal_vec(&mut seeded(5), 2 * 3 * 2);
    let z = dev.tensor_from_vec(values.clone(), (Batch(2), Comp(3), Latent(2)));
    let got = Prior::<Cpu>::log_density(&prior, &mut ctx, &z, None)
        .expect("a density")
        .unwrap()
        .as_vec();
    for (row, got) in values.chunks(6).zip(got) {
        let want: f64 = row
            .iter()
            .map(|&v| {
                let d = f64::from(v) - mu;
                -0.5 * (d * d / var + (2.0 * std::f64::consts::PI * var).ln())
            })
            .sum();
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
    }
}
