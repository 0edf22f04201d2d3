//! The importance-sampled NLL against independent computations on a tiny untrained model:
//! a plain f64 loop decoding one sample at a time, and (for K = 1) the one-sample −ELBO
//! formula on the same z, whose reconstruction comes from the trainer's own path.

use std::path::Path;

use indicatif::ProgressBar;
use vaezoo::data::{load_split, ImageSet, Split};
use vaezoo::evaluate::is_nll::{log_weights, neg_log_mean_exp, PosteriorBatch};
use vaezoo::evaluate::observation;
use vaezoo::model::Model;
use vaezoo::spec_file::read_spec;
use vaezoo_core::axes::{Batch, Latent};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Observation};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::{normal_vec, seeded};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The tiny optdigits VAE with its initial weights, and its first `n` test images.
fn tiny(n: usize) -> (Model, ParamStore<Cpu>, ImageSet) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = read_spec(&root.join("zoo/vae-optdigits-tiny.json")).unwrap();
    let dims = DataDims {
        features: 64,
        classes: 10,
        vocab: 0,
    };
    let registry = vaezoo::registry().unwrap();
    let (model, init) = Model::build(registry, &spec, dims, &mut seeded(7)).unwrap();
    let params = ParamStore::new(&Cpu::default(), init);
    let test = load_split(&root.join("zoo/data/optdigits"), Split::Test, 16.0, Some(n)).unwrap();
    (model, params, test)
}

/// Posterior means and log-variances (Eval mode) of the test images, `n × latent` each.
fn posterior(model: &Model, params: &ParamStore<Cpu>, test: &ImageSet) -> (Vec<f32>, Vec<f32>) {
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let obs = observation(params.device(), test, 0..test.n);
    let q = model.posterior(&mut ctx, &obs).unwrap();
    (q.mean.as_vec(), q.log_var.as_ref().unwrap().as_vec())
}

fn labels(test: &ImageSet) -> Vec<usize> {
    test.labels.iter().map(|&l| usize::from(l)).collect()
}

#[test]
fn batched_log_weights_equal_a_plain_loop_over_samples() {
    let (n, k) = (6, 5);
    let (model, params, test) = tiny(n);
    let l = model.latent_dim();
    let (mean, log_var) = posterior(&model, &params, &test);
    let labels = labels(&test);
    let batch = PosteriorBatch {
        x: &test.images,
        labels: Some(&labels),
        mean: &mean,
        log_var: &log_var,
        latent: l,
    };
    let mut rng = seeded(3);
    let eps = normal_vec(&mut rng.clone(), n * k * l);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    // 7 rows per decoder call: chunks end inside an example's block of 5 samples.
    let batched = log_weights(&model, &mut ctx, &batch, k, 7, &ProgressBar::hidden())
        .unwrap()
        .expect("standard_normal has a density");
    assert_eq!(batched.len(), n * k);

    let dev = Cpu::default();
    for i in 0..n {
        let mut plain = Vec::new();
        for s in 0..k {
            let e = &eps[(i * k + s) * l..(i * k + s + 1) * l];
            let (mut z, mut log_p, mut log_q) = (Vec::new(), 0.0, 0.0);
            for d in 0..l {
                let (mu, lv) = (f64::from(mean[i * l + d]), f64::from(log_var[i * l + d]));
                let zd = mu + (0.5 * lv).exp() * f64::from(e[d]);
                log_p += -0.5 * (zd * zd + LN_2PI);
                log_q += -0.5 * (LN_2PI + lv + (zd - mu).powi(2) / lv.exp());
                z.push(zd as f32);
            }
            let obs = Observation {
                x: dev.tensor_from_vec(
                    test.images[i * 64..(i + 1) * 64].to_vec(),
                    (Batch(1), vaezoo_core::axes::Feature(64)),
                ),
                labels: Some(vec![labels[i]]),
                tokens: None,
            };
            let latent = Model::point_latent(dev.tensor_from_vec(z, (Batch(1), Latent(l))));
            let nll = model.decode_nll(&mut ctx, &latent, &obs).unwrap().as_vec()[0];
            let want = -f64::from(nll) + log_p - log_q;
            let got = batched[i * k + s];
            assert!(
                (got - want).abs() < 1e-3,
                "example {i} sample {s}: {got} vs {want}"
            );
            plain.push(want);
        }
        // The plain mean of the importance weights, without the max trick.
        let mean_w = plain.iter().map(|w| w.exp()).sum::<f64>() / k as f64;
        let got = neg_log_mean_exp(&batched[i * k..(i + 1) * k]);
        assert!(
            (got + mean_w.ln()).abs() < 1e-3,
            "example {i}: {got} vs {}",
            -mean_w.ln()
        );
    }
}

#[test]
fn one_importance_sample_is_the_one_sample_elbo_on_the_same_z() {
    let n = 8;
    let (model, params, test) = tiny(n);
    let l = model.latent_dim();
    let (mean, log_var) = posterior(&model, &params, &test);
    let labels = labels(&test);
    // The trainer's path: gaussian_vib in Train mode draws ε (n × latent, row-major) from the
    // generator, the same draws the importance sampler makes with K = 1.
    let seed = 11;
    let eps = normal_vec(&mut seeded(seed), n * l);
    let mut rng = seeded(seed);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let obs = observation(params.device(), &test, 0..n);
    let rec = model.losses(&mut ctx, &obs).unwrap().rec.as_vec();

    let mut rng = seeded(seed);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let batch = PosteriorBatch {
        x: &test.images,
        labels: Some(&labels),
        mean: &mean,
        log_var: &log_var,
        latent: l,
    };
    let lw = log_weights(&model, &mut ctx, &batch, 1, 3, &ProgressBar::hidden())
        .unwrap()
        .unwrap();
    for i in 0..n {
        // −log w = rec + log q(z | x) − log p(z) = rec + ½ Σ (z² − ε² − log σ²).
        let mut log_ratio = 0.0;
        for d in 0..l {
            let (mu, lv) = (f64::from(mean[i * l + d]), f64::from(log_var[i * l + d]));
            let e = f64::from(eps[i * l + d]);
            let z = mu + (0.5 * lv).exp() * e;
            log_ratio += 0.5 * (z * z - e * e - lv);
        }
        let want = f64::from(rec[i]) + log_ratio;
        let got = neg_log_mean_exp(&lw[i..i + 1]);
        assert!((got - want).abs() < 1e-3, "example {i}: {got} vs {want}");
    }
}
