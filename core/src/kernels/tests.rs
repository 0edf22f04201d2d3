//! The CPU kernels against the generic dfdx compositions (values and gradients, f32 within
//! 1e-5 relative) and against finite differences.

use dfdx::prelude::*;

use super::{cpu, generic, Weight};
use crate::backend::Traced;
use crate::gradcheck::GradCheck;
use crate::layers::Activation;
use crate::params::{ParamBuilder, ParamId, ParamStore};
use crate::rng::seeded;

const M: usize = 6;
const K: usize = 5;
const N: usize = 4;

/// A store of `(name, shape)` parameters drawn from N(0, 1), plus a fixed readout `r` of
/// `readout` values that turns an output into a scalar loss with a non-trivial gradient.
pub(super) fn store(shapes: &[(&str, &[usize])], readout: usize) -> ParamStore<Cpu> {
    let mut rng = seeded(7);
    let mut pb = ParamBuilder::new(&mut rng);
    for (name, shape) in shapes {
        pb.normal(name, shape, 1.0);
    }
    pb.normal("readout", &[readout], 1.0);
    ParamStore::new(&Cpu::default(), pb.finish())
}

pub(super) fn read_out<S: Shape>(
    p: &ParamStore<Cpu>,
    y: Traced<S, Cpu>,
    id: usize,
) -> Traced<(), Cpu> {
    let n = y.shape().num_elements();
    let r = p.get(ParamId(id), (n,)).retaped::<NoneTape>();
    (y.reshape_like(&(n,)) * r).sum()
}

/// The loss and every parameter's gradient.
pub(super) fn evaluate(
    p: &ParamStore<Cpu>,
    loss: impl Fn(&ParamStore<Cpu>) -> Traced<(), Cpu>,
) -> (f32, Vec<Vec<f32>>) {
    let l = loss(p);
    let value = l.array();
    let mut grads = l.backward();
    let mut out = vec![Vec::new(); p.len()];
    p.gradients_into(&mut grads, &mut out);
    (value, out)
}

pub(super) fn assert_close(what: &str, fast: &[f32], slow: &[f32]) {
    let scale = slow.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (f, s)) in fast.iter().zip(slow).enumerate() {
        assert!(
            (f - s).abs() <= 1e-5 * scale.max(s.abs()) + 1e-7,
            "{what}[{i}]: fast {f} vs generic {s}"
        );
    }
}

pub(super) fn same_as_generic(
    p: &ParamStore<Cpu>,
    fast: impl Fn(&ParamStore<Cpu>) -> Traced<(), Cpu>,
    slow: impl Fn(&ParamStore<Cpu>) -> Traced<(), Cpu>,
) {
    let (fv, fg) = evaluate(p, fast);
    let (sv, sg) = evaluate(p, slow);
    assert_close("loss", &[fv], &[sv]);
    for (i, (f, s)) in fg.iter().zip(&sg).enumerate() {
        assert_close(p.name(i), f, s);
    }
}

const ACTIVATIONS: [Activation; 6] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Gelu,
    Activation::LeakyRelu,
];

fn linear_store() -> ParamStore<Cpu> {
    store(&[("x", &[M, K]), ("w", &[K, N]), ("b", &[N])], M * N)
}

fn weight(p: &ParamStore<Cpu>, out_in: bool) -> Weight<usize, usize, f32, Cpu> {
    if out_in {
        Weight::OutIn(p.get(ParamId(1), (N, K)))
    } else {
        Weight::InOut(p.get(ParamId(1), (K, N)))
    }
}

#[test]
fn linear_matches_the_generic_ops() {
    let p = linear_store();
    for act in ACTIVATIONS {
        for out_in in [false, true] {
            for bias in [false, true] {
                let b = |p: &ParamStore<Cpu>| bias.then(|| p.get(ParamId(2), (N,)));
                same_as_generic(
                    &p,
                    |p| {
                        let x = p.get(ParamId(0), (M, K));
                        read_out(p, cpu::linear::forward(x, weight(p, out_in), b(p), act), 3)
                    },
                    |p| {
                        let x = p.get(ParamId(0), (M, K));
                        read_out(p, generic::linear(x, weight(p, out_in), b(p), act), 3)
                    },
                );
            }
        }
    }
}

#[test]
fn linear_computes_no_gradient_for_an_input_without_a_tape() {
    let p = linear_store();
    let (_, grads) = evaluate(&p, |p| {
        let x = p.get(ParamId(0), (M, K)).retaped::<NoneTape>();
        let y = cpu::linear::forward(x, weight(p, false), None, Activation::Tanh);
        read_out(p, y, 3)
    });
    assert!(grads[0].iter().all(|&g| g == 0.0), "no input gradient");
    assert!(grads[1].iter().any(|&g| g != 0.0), "weight gradient");
}

#[test]
fn linear_gradients_match_finite_differences() {
    for act in [
        Activation::Identity,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Sigmoid,
    ] {
        for out_in in [false, true] {
            let mut p = linear_store();
            GradCheck::default()
                .run(&mut p, |p| {
                    let x = p.get(ParamId(0), (M, K));
                    let b = Some(p.get(ParamId(2), (N,)));
                    read_out(p, cpu::linear::forward(x, weight(p, out_in), b, act), 3)
                })
                .unwrap_or_else(|e| panic!("{act:?}, out_in {out_in}: {e}"));
        }
    }
}

fn layer_norm_store() -> ParamStore<Cpu> {
    store(&[("x", &[M, K]), ("gamma", &[K]), ("beta", &[K])], M * K)
}

fn layer_norm_loss(p: &ParamStore<Cpu>, fast: bool) -> Traced<(), Cpu> {
    let (x, g, b) = (
        p.get(ParamId(0), (M, K)),
        p.get(ParamId(1), (K,)),
        p.get(ParamId(2), (K,)),
    );
    let y = if fast {
        cpu::layer_norm::forward(x, g, b, 1e-5)
    } else {
        generic::layer_norm(x, g, b, 1e-5)
    };
    read_out(p, y, 3)
}

#[test]
fn layer_norm_matches_the_generic_ops() {
    let p = layer_norm_store();
    same_as_generic(
        &p,
        |p| layer_norm_loss(p, true),
        |p| layer_norm_loss(p, false),
    );
}

#[test]
fn layer_norm_gradients_match_finite_differences() {
    let mut p = layer_norm_store();
    GradCheck::default()
        .run(&mut p, |p| layer_norm_loss(p, true))
        .unwrap();
}

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
