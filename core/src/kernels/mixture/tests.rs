//! The fused mixture-latent kernels against the generic compositions (values and gradients,
//! f32 within 1e-5 relative, serial and rayon-sized) and against finite differences; f64 takes
//! the generic path.

use dfdx::prelude::*;

use super::*;
use crate::backend::Traced;
use crate::gradcheck::GradCheck;
use crate::kernels::tests::{assert_close, read_out, same_as_generic};
use crate::params::{ParamBuilder, ParamId, ParamStore};
use crate::rng::{noise_vec_as, normal_vec, seeded};

const P: usize = 4;
const SOURCES: usize = 5;
/// Every kind of row, a source read twice (κ copies) and one never read.
const ROWS: [Row; 7] = [
    Row::Prior,
    Row::Source(2),
    Row::Zero,
    Row::Source(0),
    Row::Source(2),
    Row::Source(4),
    Row::Source(1),
];
const PRIOR_MU: [f32; P] = [0.5, -0.25, 0.0, 1.0];
const PRIOR_LV: [f32; P] = [0.0, 0.3, -0.7, 0.1];

/// Parameters `mu`, `log_var` `(sources, p)` from N(0, ½²), then a readout per output element.
fn rows_store(sources: usize, p: usize, rows: usize) -> ParamStore<Cpu> {
    let mut rng = seeded(3);
    let mut pb = ParamBuilder::new(&mut rng);
    pb.normal("mu", &[sources, p], 0.5);
    pb.normal("log_var", &[sources, p], 0.5);
    pb.normal("readout", &[rows * p], 1.0);
    ParamStore::new(&Cpu::default(), pb.finish())
}

fn eps(n: usize) -> Vec<f32> {
    normal_vec(&mut seeded(11), n)
}

fn assemble_loss(p: &ParamStore<Cpu>, fast: bool) -> Traced<(), Cpu> {
    let src = p.get(ParamId(0), (SOURCES, P));
    let y = if fast {
        cpu::mixture::assemble_rows(src, &PRIOR_MU, &ROWS)
    } else {
        generic_assemble_rows(src, &PRIOR_MU, &ROWS)
    };
    read_out(p, y, 2)
}

/// Σ r·z + ½ Σ r·μ − ⅓ Σ r·logσ²: every output reaches the loss with its own weight.
fn gaussian_loss(
    p: &ParamStore<Cpu>,
    (sources, width): (usize, usize),
    rows: &[Row],
    prior: (&[f32], &[f32]),
    fast: bool,
) -> Traced<(), Cpu> {
    let mu = p.get(ParamId(0), (sources, width));
    let log_var = p.get(ParamId(1), (sources, width));
    let eps = eps(rows.len() * width);
    let out = if fast {
        cpu::mixture::gaussian_rows(mu, log_var, prior, rows, Eps::Given(&eps))
    } else {
        generic_gaussian_rows(mu, log_var, prior, rows, Eps::Given(&eps))
    };
    read_out(p, out.z, 2) + read_out(p, out.mu, 2) * 0.5 - read_out(p, out.log_var, 2) / 3.0
}

#[test]
fn assemble_rows_matches_the_generic_ops() {
    let p = rows_store(SOURCES, P, ROWS.len());
    same_as_generic(&p, |p| assemble_loss(p, true), |p| assemble_loss(p, false));
    let src = p.get(ParamId(0), (SOURCES, P));
    let out = cpu::mixture::assemble_rows(src, &PRIOR_MU, &ROWS).as_vec();
    assert_eq!(&out[..P], &PRIOR_MU, "the prior row");
    assert_eq!(&out[2 * P..3 * P], &[0.0; P], "a zero row");
    assert_eq!(&out[P..2 * P], &p.host(0)[2 * P..3 * P], "a source row");
}

#[test]
fn gaussian_rows_match_the_generic_ops() {
    let p = rows_store(SOURCES, P, ROWS.len());
    let prior = (&PRIOR_MU[..], &PRIOR_LV[..]);
    let loss = |fast| move |p: &ParamStore<Cpu>| gaussian_loss(p, (SOURCES, P), &ROWS, prior, fast);
    same_as_generic(&p, loss(true), loss(false));
}

/// Large enough for the rayon passes (when the pool has more than one thread).
#[test]
fn gaussian_rows_match_the_generic_ops_when_parallel() {
    let (sources, width) = (300, 256);
    let rows: Vec<Row> = (0..2 * sources + 40)
        .map(|i| match i % 7 {
            0 => Row::Prior,
            3 => Row::Zero,
            _ => Row::Source((i * 5) % sources),
        })
        .collect();
    let p = rows_store(sources, width, rows.len());
    let (pm, plv) = (vec![0.25; width], vec![-0.5; width]);
    let prior = (&pm[..], &plv[..]);
    let loss = |fast| {
        let rows = &rows;
        move |p: &ParamStore<Cpu>| gaussian_loss(p, (sources, width), rows, prior, fast)
    };
    same_as_generic(&p, loss(true), loss(false));
    let assemble = |fast: bool| {
        let (src, rows) = (p.get(ParamId(0), (sources, width)), &rows);
        let y = if fast {
            cpu::mixture::assemble_rows(src, &pm, rows)
        } else {
            generic_assemble_rows(src, &pm, rows)
        };
        read_out(&p, y, 2)
    };
    same_as_generic(&p, |_| assemble(true), |_| assemble(false));
}

#[test]
fn gaussian_rows_gradients_match_finite_differences() {
    let mut p = rows_store(SOURCES, P, ROWS.len());
    let prior = (&PRIOR_MU[..], &PRIOR_LV[..]);
    GradCheck::default()
        .run(&mut p, |p| {
            gaussian_loss(p, (SOURCES, P), &ROWS, prior, true)
        })
        .unwrap();
    GradCheck::default()
        .run(&mut p, |p| assemble_loss(p, true))
        .unwrap();
}

const B: usize = 3;
const C: usize = 4;
/// Padded rows in two batch elements; the last row of the first one holds ∞ and NaN.
const KEEP: [bool; B * C] = [
    true, true, true, false, true, false, true, true, true, true, true, true,
];
const KL_PRIOR_MU: [f64; P] = [0.0, 0.5, -1.0, 0.25];
const KL_PRIOR_VAR: [f64; P] = [1.0, 2.0, 0.5, 1.5];

/// Parameters `mu`, `log_var` `(B, C, P)`, `alpha` `(B, C)` in (0.2, 2), readout `(B,)`.
fn kl_store(poison: bool) -> ParamStore<Cpu> {
    let mut rng = seeded(5);
    let mut pb = ParamBuilder::new(&mut rng);
    let mut mu = normal_vec(&mut seeded(6), B * C * P);
    if poison {
        mu[3 * P] = f32::INFINITY;
        mu[3 * P + 1] = f32::NAN;
    }
    pb.declare("mu", &[B, C, P], mu);
    pb.normal("log_var", &[B, C, P], 0.7);
    pb.uniform_range("alpha", &[B, C], 0.2, 2.0);
    pb.normal("readout", &[B], 1.0);
    ParamStore::new(&Cpu::default(), pb.finish())
}

fn kl_loss(p: &ParamStore<Cpu>, fast: bool) -> Traced<(), Cpu> {
    let shape = (B, C, P);
    let (mu, log_var) = (p.get(ParamId(0), shape), p.get(ParamId(1), shape));
    let alpha = p.get(ParamId(2), (B, C));
    let args = (&KEEP[..], &KL_PRIOR_MU[..], &KL_PRIOR_VAR[..], 1.5);
    let kl = if fast {
        cpu::kl_gaussian::forward(mu, log_var, alpha, args.0, args.1, args.2, args.3)
    } else {
        generic_kl_gaussian_mixture(mu, log_var, alpha, args.0, args.1, args.2, args.3)
    };
    read_out(p, kl, 3)
}

#[test]
fn kl_gaussian_mixture_matches_the_generic_ops() {
    let p = kl_store(false);
    same_as_generic(&p, |p| kl_loss(p, true), |p| kl_loss(p, false));
}

#[test]
fn kl_gaussian_mixture_ignores_padded_rows() {
    let p = kl_store(true);
    let (value, grads) = crate::kernels::tests::evaluate(&p, |p| kl_loss(p, true));
    assert!(value.is_finite());
    assert!(grads.iter().flatten().all(|g| g.is_finite()));
    assert_eq!(
        &grads[0][3 * P..4 * P],
        &[0.0; P],
        "no gradient at a padded row"
    );
    assert_eq!(grads[2][3], 0.0, "no α gradient at a padded row");
    assert_close("kl", &[value], &[kl_loss(&kl_store(false), true).array()]);
}

#[test]
fn kl_gaussian_mixture_gradients_match_finite_differences() {
    let mut p = kl_store(false);
    GradCheck::default()
        .run(&mut p, |p| kl_loss(p, true))
        .unwrap();
}

/// ε drawn by the kernel are those `noise_vec_as` draws, and the generator ends where it does.
#[test]
fn drawn_noise_is_the_generators_normals() {
    let p = rows_store(SOURCES, P, ROWS.len());
    let prior = (&PRIOR_MU[..], &PRIOR_LV[..]);
    let (mu, log_var) = (
        p.get(ParamId(0), (SOURCES, P)),
        p.get(ParamId(1), (SOURCES, P)),
    );
    let mut reference = seeded(4);
    let eps: Vec<f32> = noise_vec_as(&mut reference, ROWS.len() * P);
    let given = cpu::mixture::gaussian_rows(
        mu.retaped(),
        log_var.retaped(),
        prior,
        &ROWS,
        Eps::Given(&eps),
    );
    for fast in [true, false] {
        let mut rng = seeded(4);
        let (mu, log_var) = (mu.retaped(), log_var.retaped());
        let drawn = if fast {
            cpu::mixture::gaussian_rows(mu, log_var, prior, &ROWS, Eps::Draw(&mut rng))
        } else {
            generic_gaussian_rows(mu, log_var, prior, &ROWS, Eps::Draw(&mut rng))
        };
        assert_close("z", &drawn.z.as_vec(), &given.z.as_vec());
        assert_eq!(rng.get_word_pos(), reference.get_word_pos());
    }
}

#[test]
fn f64_takes_the_generic_path() {
    let dev = Cpu::default();
    let t = |n: usize, seed: u64| -> Vec<f64> {
        normal_vec(&mut seeded(seed), n)
            .into_iter()
            .map(f64::from)
            .collect()
    };
    let (mu, lv) = (t(SOURCES * P, 1), t(SOURCES * P, 2));
    let eps = t(ROWS.len() * P, 3);
    let prior: (Vec<f64>, Vec<f64>) = (
        PRIOR_MU.iter().map(|&v| f64::from(v)).collect(),
        PRIOR_LV.iter().map(|&v| f64::from(v)).collect(),
    );
    let leaf = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (SOURCES, P)).leaky_trace();
    let prior = (&prior.0[..], &prior.1[..]);
    let via_trait = <Cpu as MixtureKernels<f64>>::gaussian_rows(
        leaf(&mu),
        leaf(&lv),
        prior,
        &ROWS,
        Eps::Given(&eps),
    );
    let generic = generic_gaussian_rows(leaf(&mu), leaf(&lv), prior, &ROWS, Eps::Given(&eps));
    assert_eq!(via_trait.z.as_vec(), generic.z.as_vec());
    assert_eq!(via_trait.log_var.as_vec(), generic.log_var.as_vec());
}

/// Parameters `mu`, `log_var` `(b, c, p)` and a readout of each of the three outputs.
fn keys_store(b: usize, c: usize, p: usize) -> ParamStore<Cpu> {
    let mut rng = seeded(12);
    let mut pb = ParamBuilder::new(&mut rng);
    pb.normal("mu", &[b, c, p], 1.0);
    pb.normal("log_var", &[b, c, p], 0.8);
    pb.normal("keys_readout", &[b * c * p], 1.0);
    pb.normal("values_readout", &[2 * b * c * p], 1.0);
    pb.normal("terms_readout", &[b * c], 1.0);
    ParamStore::new(&Cpu::default(), pb.finish())
}

/// The three outputs of `denoising_keys` (s = 2, c = ½), each read out and summed.
fn keys_loss(p: &ParamStore<Cpu>, (b, c, w): (usize, usize, usize), fast: bool) -> Traced<(), Cpu> {
    let shape = (b, c, w);
    let (mu, log_var) = (p.get(ParamId(0), shape), p.get(ParamId(1), shape));
    let out = if fast {
        cpu::denoising_keys::forward(mu, log_var, 2.0, 0.5)
    } else {
        generic_denoising_keys(mu, log_var, 2.0, 0.5)
    };
    read_out(p, out.keys, 2) + read_out(p, out.values, 3) + read_out(p, out.terms, 4)
}

#[test]
fn denoising_keys_match_the_generic_ops() {
    let shape = (B, C, P);
    same_as_generic(
        &keys_store(B, C, P),
        |p| keys_loss(p, shape, true),
        |p| keys_loss(p, shape, false),
    );
}

#[test]
fn denoising_keys_match_the_generic_ops_when_parallel() {
    // 2¹⁷ values: the kernel's passes run on rayon's pool.
    let shape = (4, 64, 512);
    same_as_generic(
        &keys_store(shape.0, shape.1, shape.2),
        |p| keys_loss(p, shape, true),
        |p| keys_loss(p, shape, false),
    );
}

#[test]
fn denoising_keys_gradients_match_finite_differences() {
    let mut p = keys_store(B, C, P);
    GradCheck::default()
        .run(&mut p, |p| keys_loss(p, (B, C, P), true))
        .unwrap();
}
