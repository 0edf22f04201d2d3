//! Unit tests of the attention functions: the equivalences of §B.4, masking, and (in
//! [`gradients`]) finite-difference checks of every gradient, all in f64; [`fast_path`] checks
//! the fused f32 kernels against them.

mod fast_path;
mod gradients;

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use vaezoo_core::axes::{Batch, Comp, Head, Latent, Model, Seq};

use super::*;

/// Batch, heads, queries, components, head width and latent width of the fixtures.
const B: usize = 2;
const H: usize = 2;
const NT: usize = 3;
const NL: usize = 4;
const E: usize = 3;
const P: usize = 5;

type T<S> = Tr<S, f64, Cpu>;

/// `n` standard normal numbers, reproducible from `seed`.
fn randn(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

/// Positive mixture weights, `B × NL`.
fn pi_values(seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..B * NL).map(|_| rng.gen_range(0.05..1.0)).collect()
}

/// Every component kept but the last one of the second example (a padded position).
fn keep() -> Vec<bool> {
    (0..B * NL).map(|i| i != B * NL - 1).collect()
}

/// A traced tensor of `values`.
fn t<S: Shape>(values: &[f64], shape: S) -> T<S> {
    Cpu::default()
        .tensor_from_vec(values.to_vec(), shape)
        .put_tape(OwnedTape::default())
}

/// Queries, keys and values of `H` heads from `B·NT·H·E`, `B·NL·H·E` and `B·NL·H·E` values.
fn projected(q: &[f64], k: &[f64], v: &[f64]) -> Projected<f64, Cpu> {
    let m = Model(H * E);
    Projected {
        heads: Head(H),
        q: t(q, (Batch(B), Seq(NT), m)),
        k: t(k, (Batch(B), Comp(NL), m)),
        v: t(v, (Batch(B), Comp(NL), m)),
    }
}

fn comps(values: &[f64]) -> T<(Batch, Comp, Latent)> {
    t(values, (Batch(B), Comp(NL), Latent(P)))
}

fn pis(values: &[f64]) -> T<(Batch, Comp)> {
    t(values, (Batch(B), Comp(NL)))
}

/// Module weights from `values` = [W_q, W_k, W_v, W_o, b_q, b_k, b_v, b_o] (biases optional).
fn mha_weights(heads: usize, values: &[Vec<f64>]) -> MhaWeights<f64, Cpu> {
    let m = Model(H * E);
    let bias = (values.len() == 8).then(|| MhaBias {
        q: t(&values[4], (m,)),
        k: t(&values[5], (m,)),
        v: t(&values[6], (m,)),
        out: t(&values[7], (m,)),
    });
    MhaWeights {
        heads: Head(heads),
        q: t(&values[0], (m, m)),
        k: t(&values[1], (m, Latent(P))),
        v: t(&values[2], (m, Latent(P))),
        out: t(&values[3], (m, m)),
        bias,
    }
}

/// Random module weights (with biases) and a query `(Batch, Seq, Model)`.
fn mha_values(seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let m = H * E;
    let sizes = [m * m, m * P, m * P, m * m, m, m, m, m];
    let weights = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| randn(seed + i as u64, n).iter().map(|x| 0.5 * x).collect())
        .collect();
    (weights, randn(seed + 100, B * NT * m))
}

fn query(values: &[f64]) -> T<(Batch, Seq, Model)> {
    t(values, (Batch(B), Seq(NT), Model(H * E)))
}

/// The largest elementwise |a − b|.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn uniform_pi_and_zero_latent_give_scaled_dot_product_attention() {
    let (q, k, v) = (
        randn(1, B * H * NT * E),
        randn(2, B * H * NL * E),
        randn(3, B * H * NL * E),
    );
    let keep = keep();
    let pi: Vec<f64> = keep.iter().map(|&k| if k { 0.25 } else { 0.0 }).collect();
    let (want, want_attn) = sdpa(projected(&q, &k, &v), &keep);
    for version in [DaVersion::V1, DaVersion::Head] {
        let (got, attn) = denoising_attention_train(
            projected(&q, &k, &v),
            pis(&pi),
            comps(&vec![0.0; B * NL * P]),
            &keep,
            version,
        );
        assert!(
            max_diff(&got.as_vec(), &want.as_vec()) < 1e-12,
            "{version:?}"
        );
        assert!(max_diff(&attn.as_vec(), &want_attn.as_vec()) < 1e-12);
    }
}

#[test]
fn eval_with_vanishing_variance_and_means_at_the_sample_is_train() {
    let (mu, pi) = (randn(4, B * NL * P), pi_values(5));
    for (version, heads, bias) in [(DaVersion::Head, H, true), (DaVersion::V1, 1, false)] {
        let (mut weights, q) = mha_values(10);
        if !bias {
            weights.truncate(4);
        }
        let (train, train_attn) = denoising_mha_train(
            query(&q),
            mha_weights(heads, &weights),
            comps(&mu),
            pis(&pi),
            &keep(),
            version,
        );
        let (eval, eval_attn) = denoising_mha_eval(
            query(&q),
            mha_weights(heads, &weights),
            comps(&mu),
            comps(&vec![-200.0; B * NL * P]),
            pis(&pi),
            &keep(),
            version,
        );
        assert!(
            max_diff(&eval.as_vec(), &train.as_vec()) < 1e-12,
            "{version:?}"
        );
        assert!(max_diff(&eval_attn.as_vec(), &train_attn.as_vec()) < 1e-12);
    }
}

#[test]
fn padded_queries_are_zero_and_the_others_unchanged() {
    let (mu, pi) = (randn(4, B * NL * P), pi_values(5));
    let query_keep = [true, false, true, true, true, false];
    for (version, heads) in [(DaVersion::Head, H), (DaVersion::V1, 1)] {
        let (weights, q) = mha_values(10);
        let run = |rows: Option<&[bool]>| {
            let latent = (comps(&mu), pis(&pi), &keep()[..]);
            let weights = mha_weights(heads, &weights);
            denoising_mha_train_kept(query(&q), rows, weights, latent, version)
        };
        let (all, kept) = (run(None).as_vec(), run(Some(&query_keep)).as_vec());
        let m = H * E;
        for (row, &real) in query_keep.iter().enumerate() {
            let (a, k) = (&all[row * m..(row + 1) * m], &kept[row * m..(row + 1) * m]);
            match real {
                true => assert!(max_diff(a, k) < 1e-12, "{version:?} row {row}"),
                false => assert_eq!(k, vec![0.0; m], "{version:?} padded row {row}"),
            }
        }
    }
}

/// Train, eval and SDPA attention weights for `keep` and `pi`, each `B·H·NT·NL`.
fn weights_of(keep: &[bool], pi: &[f64]) -> [Vec<f64>; 3] {
    let (q, k, v) = (
        randn(1, B * H * NT * E),
        randn(2, B * H * NL * E),
        randn(3, B * H * NL * E),
    );
    let (_, train) = denoising_attention_train(
        projected(&q, &k, &v),
        pis(pi),
        comps(&randn(4, B * NL * P)),
        keep,
        DaVersion::Head,
    );
    let query = LatentQuery {
        heads: Head(H),
        u: t(&randn(6, B * NT * H * P), (Batch(B), Seq(NT), H * P)),
    };
    let value = ValueMap {
        weight: t(&randn(7, H * E * P), (Model(H * E), Latent(P))),
        bias: None,
    };
    let (_, eval) = denoising_attention_eval(
        query,
        comps(&randn(4, B * NL * P)),
        comps(&randn(5, B * NL * P)),
        pis(pi),
        value,
        keep,
        DaVersion::V1,
    );
    let (_, plain) = sdpa(projected(&q, &k, &v), keep);
    [train.as_vec(), eval.as_vec(), plain.as_vec()]
}

/// Asserts that component `n` of example `b` has exactly zero weight, and that every row
/// sums to one.
fn assert_dropped(weights: &[f64], b: usize, n: usize) {
    for (row, w) in weights.chunks(NL).enumerate() {
        assert!(
            (w.iter().sum::<f64>() - 1.0).abs() < 1e-12,
            "row {row}: {w:?}"
        );
        if row / (H * NT) == b {
            assert_eq!(w[n], 0.0, "row {row}: {w:?}");
        } else {
            assert!(w[n] > 0.0, "row {row}: {w:?}");
        }
    }
}

#[test]
fn a_dropped_component_gets_zero_attention() {
    let [train, eval, plain] = weights_of(&keep(), &pi_values(5));
    for w in [&train, &eval, &plain] {
        assert_dropped(w, B - 1, NL - 1);
    }
}

#[test]
fn a_component_with_zero_pi_gets_zero_attention() {
    let mut pi = pi_values(5);
    pi[2] = 0.0;
    let [train, eval, plain] = weights_of(&keep(), &pi);
    assert_dropped(&train, 0, 2);
    assert_dropped(&eval, 0, 2);
    assert!(plain[2] > 0.0, "SDPA ignores π");
}

#[test]
fn every_component_dropped_gives_nan_as_torch() {
    let [train, _, _] = weights_of(&keep(), &[0.0; B * NL]);
    assert!(train.iter().all(|w| w.is_nan()));
}

#[test]
fn prepared_keys_reused_over_query_batches_equal_the_one_shot_evaluation() {
    let (weights, q) = mha_values(31);
    let (mu, log_var, pi) = (randn(32, B * NL * P), randn(33, B * NL * P), pi_values(34));
    for version in [DaVersion::V1, DaVersion::Head] {
        let keys = EvalKeys::new(comps(&mu), comps(&log_var), pis(&pi), &keep(), version, E);
        for batch in [q.clone(), q.iter().map(|x| -0.5 * x).collect()] {
            let (once, once_attn) = denoising_mha_eval(
                query(&batch),
                mha_weights(H, &weights),
                comps(&mu),
                comps(&log_var),
                pis(&pi),
                &keep(),
                version,
            );
            let (reused, reused_attn) = denoising_mha_eval_with(
                query(&batch),
                mha_weights(H, &weights),
                keys.reuse(),
                version,
            );
            assert_eq!(reused.as_vec(), once.as_vec(), "{version:?}");
            assert_eq!(reused_attn.as_vec(), once_attn.as_vec(), "{version:?}");
        }
    }
}
