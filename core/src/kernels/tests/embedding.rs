//! The fused embedding lookup against the generic composition (values, and gradients with and
//! without a frozen id) and against finite differences.

use dfdx::prelude::*;

use super::{evaluate, read_out, same_as_generic, store, K};
use crate::backend::Traced;
use crate::gradcheck::GradCheck;
use crate::kernels::{cpu, generic};
use crate::params::{ParamId, ParamStore};

/// Ids with repeats and the frozen id (2), over a 5-row table.
const IDS: [usize; 8] = [1, 2, 4, 1, 0, 2, 3, 1];

fn embedding_loss(p: &ParamStore<Cpu>, frozen: Option<usize>, fast: bool) -> Traced<(), Cpu> {
    let table = p.get(ParamId(0), (5, K));
    let rows = if fast {
        cpu::embedding::forward(table, &IDS, frozen)
    } else {
        generic::embedding(table, &IDS, frozen)
    };
    read_out(p, rows, 1)
}

#[test]
fn embedding_matches_the_generic_ops() {
    let p = store(&[("table", &[5, K])], IDS.len() * K);
    for frozen in [None, Some(2), Some(0)] {
        same_as_generic(
            &p,
            |p| embedding_loss(p, frozen, true),
            |p| embedding_loss(p, frozen, false),
        );
        let (_, grads) = evaluate(&p, |p| embedding_loss(p, frozen, true));
        for (row, g) in grads[0].chunks(K).enumerate() {
            let trained = Some(row) != frozen && IDS.contains(&row);
            assert_eq!(
                g.iter().any(|&g| g != 0.0),
                trained,
                "row {row}, frozen {frozen:?}"
            );
        }
    }
    // Large enough that the rows are copied on rayon's pool.
    let ids: Vec<usize> = (0..40_000).map(|i| (i * 7) % 97).collect();
    let t = store(&[("table", &[97, 8])], 1);
    let table = || t.get::<(usize, usize)>(ParamId(0), (97, 8));
    let fast = cpu::embedding::forward(table(), &ids, Some(0)).as_vec();
    assert_eq!(fast, generic::embedding(table(), &ids, Some(0)).as_vec());
}

#[test]
fn embedding_gradients_match_finite_differences() {
    // Without a frozen id: the frozen row's zero gradient is on purpose, not the derivative
    // (`embedding_matches_the_generic_ops` checks it).
    let mut p = store(&[("table", &[5, K])], IDS.len() * K);
    GradCheck::default()
        .run(&mut p, |p| embedding_loss(p, None, true))
        .unwrap();
}

#[test]
#[should_panic(expected = "id 5 outside a table of 5 rows")]
fn embedding_rejects_an_id_outside_the_table() {
    let p = store(&[("table", &[5, K])], 1);
    cpu::embedding::forward(p.get(ParamId(0), (5, K)), &[5], None);
}
