//! Test helpers: a seeded parameter store and finite-difference checks of a layer's gradients
//! with respect to its parameters and its input.

use dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_core::Traced;

/// A layer built with a seeded builder, and its parameters on the CPU.
pub fn store<L>(build: impl FnOnce(&mut ParamBuilder) -> L) -> (ParamStore<Cpu>, L) {
    let mut rng = seeded(7);
    let mut pb = ParamBuilder::new(&mut rng);
    let layer = build(&mut pb);
    (ParamStore::new(&Cpu::default(), pb.finish()), layer)
}

/// A constant input of `shape` on a fresh tape.
pub fn input<S: Shape>(params: &ParamStore<Cpu>, values: Vec<f32>, shape: S) -> Traced<S, Cpu> {
    params
        .device()
        .tensor_from_vec(values, shape)
        .put_tape(OwnedTape::default())
}

/// Checks d`loss`/d(parameters and input) against central differences. The input (standard
/// normal, of `shape`) is declared as the last parameter, `x`.
pub fn check<L, S: Shape>(
    build: impl FnOnce(&mut ParamBuilder) -> L,
    shape: S,
    loss: impl Fn(&L, &ParamStore<Cpu>, Traced<S, Cpu>) -> Traced<(), Cpu>,
) {
    let mut rng = seeded(11);
    let mut pb = ParamBuilder::new(&mut rng);
    let layer = build(&mut pb);
    let values = normal_vec(&mut seeded(12), shape.num_elements());
    let x = pb.declare("x", &[values.len()], values);
    let mut params = ParamStore::new(&Cpu::default(), pb.finish());
    let report = GradCheck {
        eps: 1e-3,
        per_param: 12,
        ..Default::default()
    }
    .run(&mut params, |p| loss(&layer, p, p.get(x, shape)))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.zero_gradient.is_empty(),
        "no gradient: {:?}",
        report.zero_gradient
    );
}
