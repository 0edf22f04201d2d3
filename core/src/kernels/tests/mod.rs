//! The CPU kernels against the generic dfdx compositions (values and gradients, f32 within
//! 1e-5 relative) and against finite differences; the attention kernel's in [`attention`], the
//! embedding lookup's in [`embedding`], how kernels get their buffers in [`buffers`].

mod attention;
mod buffers;
mod embedding;
mod losses;

use dfdx::prelude::*;

use super::{cpu, generic, Weight};
use crate::backend::Traced;
use crate::gradcheck::GradCheck;
use crate::layers::Activation;
use crate::params::{ParamBuilder, ParamId, ParamStore};
use crate::rng::{dropout_mask, seeded};

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
fn linear_on_two_threads_matches_the_generic_ops() {
    // Large enough for products split by rows across the pool (forward) and for the weight's
    // and the input's gradients computed side by side (backward); rows gathered and not.
    let (m, k, n) = (160, 96, 144);
    let p = store(&[("x", &[m, k]), ("w", &[n, k]), ("b", &[n])], m * n);
    let keep: Vec<bool> = (0..m).map(|i| i % 5 != 2).collect();
    let loss = |p: &ParamStore<Cpu>, fast: bool, rows: Option<&[bool]>| {
        let x = p.get(ParamId(0), (m, k));
        let w = Weight::OutIn(p.get(ParamId(1), (n, k)));
        let b = Some(p.get(ParamId(2), (n,)));
        let y = match (fast, rows) {
            (true, _) => cpu::linear::forward_rows(x, w, b, Activation::Relu, rows, None),
            (false, Some(keep)) => generic::linear_rows(x, w, b, Activation::Relu, keep, None),
            (false, None) => generic::linear(x, w, b, Activation::Relu),
        };
        read_out(p, y, 3)
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        for rows in [None, Some(&keep[..])] {
            same_as_generic(&p, |p| loss(p, true, rows), |p| loss(p, false, rows));
        }
    });
}

#[test]
fn linear_of_a_matrix_by_itself_matches_finite_differences() {
    // x is both the input and the weight, so both gradients land in one buffer (dfdx's own
    // matmul refuses this case, so finite differences are the reference).
    let mut p = store(&[("x", &[K, K])], K * K);
    GradCheck::default()
        .run(&mut p, |p| {
            let x = p.get(ParamId(0), (K, K));
            let w = Weight::InOut(x.retaped());
            read_out(p, cpu::linear::forward(x, w, None, Activation::Tanh), 1)
        })
        .unwrap();
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

/// Groups of the grouped Linear tests.
const G: usize = 3;

fn grouped_loss(p: &ParamStore<Cpu>, out_in: bool, bias: bool, fast: bool) -> Traced<(), Cpu> {
    let x = p.get(ParamId(0), (M, G * K));
    let w = if out_in {
        Weight::OutIn(p.get(ParamId(1), (G * N, K)))
    } else {
        Weight::InOut(p.get(ParamId(1), (G * K, N)))
    };
    let b = bias.then(|| p.get(ParamId(2), (G * N,)));
    let y: Traced<(usize, usize), Cpu> = if fast {
        cpu::linear::grouped(x, w, b, Activation::Identity, G, None, None)
    } else {
        generic::grouped_linear(x, w, b, G)
    };
    read_out(p, y, 3)
}

fn grouped_store() -> ParamStore<Cpu> {
    store(
        &[("x", &[M, G * K]), ("w", &[G * K * N]), ("b", &[G * N])],
        M * G * N,
    )
}

#[test]
fn grouped_linear_matches_the_generic_ops() {
    let p = grouped_store();
    for out_in in [false, true] {
        for bias in [false, true] {
            same_as_generic(
                &p,
                |p| grouped_loss(p, out_in, bias, true),
                |p| grouped_loss(p, out_in, bias, false),
            );
        }
    }
}

#[test]
fn grouped_linear_gradients_match_finite_differences() {
    for out_in in [false, true] {
        let mut p = grouped_store();
        GradCheck::default()
            .run(&mut p, |p| grouped_loss(p, out_in, true, true))
            .unwrap_or_else(|e| panic!("out_in {out_in}: {e}"));
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

/// `linear_rows` (fused or generic) of an `m × K` input to `n` outputs, keeping rows `keep`,
/// with a fixed dropout mask when `dropout`.
fn linear_rows_loss(
    p: &ParamStore<Cpu>,
    fast: bool,
    act: Activation,
    out_in: bool,
    keep: &[bool],
    dropout: bool,
) -> Traced<(), Cpu> {
    let (m, n) = (keep.len(), p.shape(2)[0]);
    let x = p.get(ParamId(0), (m, K));
    let w = if out_in {
        Weight::OutIn(p.get(ParamId(1), (n, K)))
    } else {
        Weight::InOut(p.get(ParamId(1), (K, n)))
    };
    let b = Some(p.get(ParamId(2), (n,)));
    let mask = dropout.then(|| dropout_mask(&mut seeded(9), 0.25, m * n));
    let y = if fast {
        cpu::linear::forward_rows(x, w, b, act, Some(keep), mask)
    } else {
        generic::linear_rows(x, w, b, act, keep, mask.as_deref())
    };
    read_out(p, y, 3)
}

fn rows_store(m: usize, n: usize) -> ParamStore<Cpu> {
    store(&[("x", &[m, K]), ("w", &[K, n]), ("b", &[n])], m * n)
}

#[test]
fn linear_rows_match_the_generic_ops() {
    let some: Vec<bool> = (0..M).map(|i| i % 3 != 1).collect();
    for keep in [some, vec![true; M], vec![false; M], few_left_out()] {
        let p = rows_store(keep.len(), N);
        for act in ACTIVATIONS {
            for (out_in, dropout) in [(false, false), (true, false), (false, true), (true, true)] {
                same_as_generic(
                    &p,
                    |p| linear_rows_loss(p, true, act, out_in, &keep, dropout),
                    |p| linear_rows_loss(p, false, act, out_in, &keep, dropout),
                );
            }
        }
    }
    // Large enough for rayon's pool in the element-wise passes.
    let keep: Vec<bool> = (0..200).map(|i| i % 7 < 5).collect();
    let p = rows_store(200, 400);
    same_as_generic(
        &p,
        |p| linear_rows_loss(p, true, Activation::Gelu, true, &keep, true),
        |p| linear_rows_loss(p, false, Activation::Gelu, true, &keep, true),
    );
}

#[test]
fn linear_rows_gradients_match_finite_differences() {
    let some: Vec<bool> = (0..M).map(|i| i % 3 != 1).collect();
    for keep in [some, few_left_out()] {
        let cases = [
            (Activation::Tanh, false),
            (Activation::Gelu, true),
            (Activation::Relu, true),
        ];
        for (act, dropout) in cases {
            let mut p = rows_store(keep.len(), N);
            GradCheck::default()
                .run(&mut p, |p| {
                    linear_rows_loss(p, true, act, true, &keep, dropout)
                })
                .unwrap_or_else(|e| panic!("{act:?}: {e}"));
        }
    }
}

/// A row mask that leaves out 2 rows of 16: few enough for the kernel to compute every row in
/// place and zero the left-out ones.
fn few_left_out() -> Vec<bool> {
    (0..16).map(|i| i != 3 && i != 11).collect()
}

/// A left-out row whose input is not finite changes nothing: not the output, not a gradient.
#[test]
fn linear_rows_ignore_what_left_out_rows_hold() {
    let keep = few_left_out();
    let clean = rows_store(keep.len(), N);
    let mut dirty = rows_store(keep.len(), N);
    let mut x = dirty.host(0).to_vec();
    x[3 * K..4 * K].fill(f32::NAN);
    x[11 * K] = f32::INFINITY;
    dirty.set(0, &x).unwrap();
    for act in [Activation::Identity, Activation::Gelu] {
        let loss = |p: &ParamStore<Cpu>| linear_rows_loss(p, true, act, true, &keep, true);
        let ((cv, cg), (dv, dg)) = (evaluate(&clean, loss), evaluate(&dirty, loss));
        assert_eq!(cv, dv);
        // The input's gradient differs only in rows nobody reads; the others are equal.
        assert_eq!(cg[1..], dg[1..]);
        assert!(dg[0].iter().all(|g| g.is_finite()));
    }
}

/// `residual_layer_norm` of `rows × cols` inputs `x` and `sub`, with a dropout-like mask.
fn residual_norm_loss(p: &ParamStore<Cpu>, fast: bool, masked: bool) -> Traced<(), Cpu> {
    let (rows, cols) = (p.shape(0)[0], p.shape(0)[1]);
    let x = p.get(ParamId(0), (rows, cols));
    let sub = p.get(ParamId(1), (rows, cols));
    let (g, b) = (p.get(ParamId(2), (cols,)), p.get(ParamId(3), (cols,)));
    let mask: Vec<f32> = (0..rows * cols)
        .map(|i| if i % 4 == 1 { 0.0 } else { 4.0 / 3.0 })
        .collect();
    let mask = masked.then_some(mask);
    let y = if fast {
        cpu::layer_norm::forward_residual(x, Some((sub, mask)), g, b, 1e-5)
    } else {
        generic::residual_layer_norm(x, sub, mask.as_deref(), g, b, 1e-5)
    };
    read_out(p, y, 4)
}

fn residual_norm_store(rows: usize, cols: usize) -> ParamStore<Cpu> {
    let shapes: [(&str, &[usize]); 4] = [
        ("x", &[rows, cols]),
        ("sub", &[rows, cols]),
        ("gamma", &[cols]),
        ("beta", &[cols]),
    ];
    store(&shapes, rows * cols)
}

#[test]
fn residual_layer_norm_matches_the_generic_ops() {
    // Small, and large enough for rayon's pool.
    for (rows, cols) in [(M, K), (300, 256)] {
        let p = residual_norm_store(rows, cols);
        for masked in [false, true] {
            same_as_generic(
                &p,
                |p| residual_norm_loss(p, true, masked),
                |p| residual_norm_loss(p, false, masked),
            );
        }
    }
}

#[test]
fn residual_layer_norm_gradients_match_finite_differences() {
    for masked in [false, true] {
        let mut p = residual_norm_store(M, K);
        GradCheck::default()
            .run(&mut p, |p| residual_norm_loss(p, true, masked))
            .unwrap_or_else(|e| panic!("masked {masked}: {e}"));
    }
}

fn sq_norm_loss(p: &ParamStore<Cpu>, (rows, cols): (usize, usize), fast: bool) -> Traced<(), Cpu> {
    let x = p.get(ParamId(0), (rows, cols));
    let norms = if fast {
        cpu::sq_norm::forward(x, 0.3)
    } else {
        generic::scaled_sq_norm_rows(x, 0.3)
    };
    read_out(p, norms, 1)
}

#[test]
fn scaled_sq_norm_rows_matches_the_generic_ops() {
    // Small, and large enough that the backward pass runs on rayon's pool.
    for (rows, cols) in [(M, K), (128, 784)] {
        let p = store(&[("x", &[rows, cols])], rows);
        same_as_generic(
            &p,
            |p| sq_norm_loss(p, (rows, cols), true),
            |p| sq_norm_loss(p, (rows, cols), false),
        );
    }
}

#[test]
fn scaled_sq_norm_rows_gradients_match_finite_differences() {
    let mut p = store(&[("x", &[M, K])], M);
    GradCheck::default()
        .run(&mut p, |p| sq_norm_loss(p, (M, K), true))
        .unwrap();
}
