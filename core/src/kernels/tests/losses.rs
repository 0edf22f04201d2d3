//! The loss kernels (weighted NLL, the fused output layer and NLL, the Bernoulli NLL) against
//! the generic ops and finite differences.

use dfdx::prelude::*;

use super::{read_out, same_as_generic, store, K, M};
use crate::backend::Traced;
use crate::gradcheck::GradCheck;
use crate::kernels::{cpu, generic, Weight};
use crate::layers::Activation;
use crate::params::{ParamId, ParamStore};

const VOCAB: usize = 7;
const TARGETS: [usize; M] = [0, 3, 6, 2, 2, 5];
const WEIGHTS: [f32; M] = [-0.5, 0.0, -0.5, -1.0, 0.25, -0.75];

fn nll_loss(p: &ParamStore<Cpu>, fast: bool) -> Traced<(), Cpu> {
    let logits = p.get(ParamId(0), (M, VOCAB));
    let per_group = if fast {
        cpu::nll::forward(logits, &TARGETS, &WEIGHTS, 3usize)
    } else {
        generic::weighted_nll(logits, &TARGETS, &WEIGHTS, 3usize)
    };
    read_out(p, per_group, 1)
}

#[test]
fn weighted_nll_matches_the_generic_ops() {
    let p = store(&[("logits", &[M, VOCAB])], 3);
    same_as_generic(&p, |p| nll_loss(p, true), |p| nll_loss(p, false));
}

#[test]
fn weighted_nll_gradients_match_finite_differences() {
    let mut p = store(&[("logits", &[M, VOCAB])], 3);
    GradCheck::default()
        .run(&mut p, |p| nll_loss(p, true))
        .unwrap();
}

fn bernoulli_loss(p: &ParamStore<Cpu>, fast: bool) -> Traced<(), Cpu> {
    let logits = p.get(ParamId(0), (M, K)) * 2.0;
    // Grey levels in [0, 1], exact 0s and 1s included.
    let x: Vec<f32> = (0..M * K).map(|i| [0.0, 1.0, 0.3, 0.9][i % 4]).collect();
    let x = p.device().tensor_from_vec(x, (M, K));
    let per_row = if fast {
        cpu::bernoulli::forward(logits, &x)
    } else {
        generic::bernoulli_nll(logits, &x)
    };
    read_out(p, per_row, 1)
}

#[test]
fn bernoulli_nll_matches_the_generic_ops() {
    let p = store(&[("logits", &[M, K])], M);
    same_as_generic(
        &p,
        |p| bernoulli_loss(p, true),
        |p| bernoulli_loss(p, false),
    );
}

#[test]
fn bernoulli_nll_gradients_match_finite_differences() {
    let mut p = store(&[("logits", &[M, K])], M);
    GradCheck::default()
        .run(&mut p, |p| bernoulli_loss(p, true))
        .unwrap();
}

#[test]
fn bernoulli_nll_matches_the_generic_ops_on_the_threaded_path() {
    // Large enough that the rows are spread over rayon's pool.
    let (rows, cols) = (128, 784);
    let p = store(&[("logits", &[rows, cols])], rows);
    let loss = |p: &ParamStore<Cpu>, fast: bool| {
        let logits = p.get(ParamId(0), (rows, cols));
        let x: Vec<f32> = (0..rows * cols).map(|i| (i % 3) as f32 / 2.0).collect();
        let x = p.device().tensor_from_vec(x, (rows, cols));
        let per_row = if fast {
            cpu::bernoulli::forward(logits, &x)
        } else {
            generic::bernoulli_nll(logits, &x)
        };
        read_out(p, per_row, 1)
    };
    same_as_generic(&p, |p| loss(p, true), |p| loss(p, false));
}

/// The weighted NLL of `x W + b` over `rows × vocab` logits, fused or through the generic ops.
fn linear_nll_loss(p: &ParamStore<Cpu>, fast: bool, out_in: bool, bias: bool) -> Traced<(), Cpu> {
    let (rows, vocab) = (p.shape(0)[0], p.shape(2)[0]);
    let x = p.get(ParamId(0), (rows, K));
    let w = if out_in {
        Weight::OutIn(p.get(ParamId(1), (vocab, K)))
    } else {
        Weight::InOut(p.get(ParamId(1), (K, vocab)))
    };
    let b = bias.then(|| p.get(ParamId(2), (vocab,)));
    let targets: Vec<usize> = (0..rows).map(|i| (i * 5 + 1) % vocab).collect();
    let weights: Vec<f32> = (0..rows).map(|i| [-0.5, 0.0, -1.0][i % 3]).collect();
    let per_group = if fast {
        cpu::linear_nll::forward(x, w, b, &targets, &weights, 3usize)
    } else {
        let logits = generic::linear(x, w, b, Activation::Identity);
        generic::weighted_nll(logits, &targets, &weights, 3usize)
    };
    read_out(p, per_group, 3)
}

fn linear_nll_store(rows: usize, vocab: usize) -> ParamStore<Cpu> {
    store(&[("x", &[rows, K]), ("w", &[K, vocab]), ("b", &[vocab])], 3)
}

#[test]
fn linear_weighted_nll_matches_the_generic_ops() {
    // 6 × 7 logits on the calling thread, 96 × 900 on rayon's pool.
    for (rows, vocab) in [(M, VOCAB), (96, 900)] {
        let p = linear_nll_store(rows, vocab);
        for out_in in [false, true] {
            for bias in [false, true] {
                same_as_generic(
                    &p,
                    |p| linear_nll_loss(p, true, out_in, bias),
                    |p| linear_nll_loss(p, false, out_in, bias),
                );
            }
        }
    }
}

#[test]
fn linear_weighted_nll_gradients_match_finite_differences() {
    for out_in in [false, true] {
        let mut p = linear_nll_store(M, VOCAB);
        GradCheck::default()
            .run(&mut p, |p| linear_nll_loss(p, true, out_in, true))
            .unwrap_or_else(|e| panic!("out_in {out_in}: {e}"));
    }
}
