//! The fused attention against the generic composition (output, weights and every gradient,
//! f32 within 1e-5 relative) over heads, shared keys, gated values, key bias and masks, and
//! against finite differences.

use dfdx::prelude::*;

use super::{assert_close, evaluate, read_out, store};
use crate::axes::Head;
use crate::backend::Traced;
use crate::gradcheck::GradCheck;
use crate::kernels::{cpu, generic, Attended, AttentionSpec};
use crate::params::{ParamId, ParamStore};

/// One configuration: the sizes, what is shared or added, and which keys are hidden.
#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    dk: usize,
    dv: usize,
    shared: bool,
    /// Values of a gate and a shift (`dv = 2·dk`) combined with the queries.
    gate: bool,
    bias: bool,
    causal: bool,
    /// `Batch × Query`: the queries whose outputs are read, or `None` for every query.
    queries: Option<Vec<bool>>,
    /// Whether the weights are asked for (then every query is computed).
    weights: bool,
    /// `Batch × Key`, or `None` for every key.
    keep: Option<Vec<bool>>,
}

impl Case {
    fn small(heads: usize, nq: usize) -> Self {
        Self {
            batch: 2,
            heads,
            nq,
            nk: 4,
            dk: 2,
            dv: 3,
            shared: false,
            gate: false,
            bias: false,
            causal: false,
            keep: None,
            queries: None,
            weights: true,
        }
    }

    /// Gated values: a gate and a shift per head, as wide as the queries.
    fn gated(mut self) -> Self {
        (self.gate, self.dv) = (true, 2 * self.dk);
        self
    }

    /// A head's output width.
    fn d_out(&self) -> usize {
        if self.gate {
            self.dk
        } else {
            self.dv
        }
    }

    /// Hides some keys, never the first (so that every causal query sees one).
    fn padded(mut self) -> Self {
        let keep = (0..self.batch * self.nk)
            .map(|i| i % self.nk == 0 || !(i / self.nk + i % self.nk).is_multiple_of(3))
            .collect();
        self.keep = Some(keep);
        self
    }

    /// Pads each example at the end, as a batch of sequences of different lengths: example e
    /// hides its last `e + 1` keys (keeping at least one), the keys its products skip.
    fn trailing_padding(mut self) -> Self {
        let nk = self.nk;
        let keep = (0..self.batch * nk)
            .map(|i| i % nk < nk.saturating_sub(i / nk + 1).max(1))
            .collect();
        self.keep = Some(keep);
        self
    }

    /// Reads only some queries' outputs, without asking for the weights: example e leaves out
    /// its last `e + 1` queries or, with `gaps`, example 0 its second query and example 1 all.
    fn reading(mut self, gaps: bool) -> Self {
        let nq = self.nq;
        let read = (0..self.batch * nq).map(|i| {
            let (e, query) = (i / nq, i % nq);
            match (gaps, e) {
                (false, _) => query + e + 1 < nq,
                (true, 0) => query != 1,
                (true, _) => false,
            }
        });
        (self.queries, self.weights) = (Some(read.collect()), false);
        self
    }

    /// The widths of q, k and v.
    fn widths(&self) -> [usize; 3] {
        let kv = if self.shared { 1 } else { self.heads };
        [self.heads * self.dk, kv * self.dk, kv * self.dv]
    }

    fn store(&self) -> ParamStore<Cpu> {
        let ([wq, wk, wv], b) = (self.widths(), self.batch);
        let out = b * self.nq * self.heads * self.d_out();
        store(
            &[
                ("q", &[b, self.nq, wq]),
                ("k", &[b, self.nk, wk]),
                ("v", &[b, self.nk, wv]),
                ("bias", &[b, self.nk]),
            ],
            out,
        )
    }

    fn spec(&self, want_weights: bool) -> AttentionSpec<'_> {
        AttentionSpec {
            heads: Head(self.heads),
            shared_kv: self.shared,
            scale: 1.0 / (self.dk as f64).sqrt(),
            keep: self.keep.as_deref(),
            causal: self.causal,
            queries: self.queries.as_deref(),
            query_gate: self.gate,
            want_weights,
        }
    }

    fn attend(
        &self,
        p: &ParamStore<Cpu>,
        fast: bool,
        no_query_tape: bool,
    ) -> Attended<usize, usize, usize, usize, f32, Cpu> {
        let ([wq, wk, wv], b) = (self.widths(), self.batch);
        let q = p.get(ParamId(0), (b, self.nq, wq));
        let k = p.get(ParamId(1), (b, self.nk, wk));
        let v = p.get(ParamId(2), (b, self.nk, wv));
        let bias = self.bias.then(|| p.get(ParamId(3), (b, self.nk)));
        let spec = self.spec(self.weights);
        match (fast, no_query_tape) {
            (true, true) => cpu::attention::forward(q.retaped::<NoneTape>(), k, v, bias, spec),
            (true, false) => cpu::attention::forward(q, k, v, bias, spec),
            (false, _) => generic::multi_head_attention(q, k, v, bias, spec),
        }
    }

    fn loss(&self, p: &ParamStore<Cpu>, fast: bool) -> Traced<(), Cpu> {
        read_out(p, self.attend(p, fast, false).0, 4)
    }

    /// Output, weights and every gradient as the generic ops give them. (The outputs are
    /// compared rather than the loss, a sum whose terms cancel.)
    fn check_against_generic(&self) {
        let p = self.store();
        let (fast, slow) = (self.attend(&p, true, false), self.attend(&p, false, false));
        assert_close("output", &fast.0.as_vec(), &slow.0.as_vec());
        match (fast.1, slow.1) {
            (Some(f), Some(s)) if self.weights => assert_close("weights", &f.as_vec(), &s.as_vec()),
            (None, None) if !self.weights => {}
            _ => panic!("weights returned exactly when asked for"),
        }
        let (_, fast) = evaluate(&p, |p| self.loss(p, true));
        let (_, slow) = evaluate(&p, |p| self.loss(p, false));
        for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
            assert_close(p.name(i), f, s);
        }
    }
}

#[test]
fn attention_matches_the_generic_ops() {
    for heads in [1, 2, 4] {
        for (shared, gate) in [(false, false), (true, false), (false, true), (true, true)] {
            for bias in [false, true] {
                for nq in [3, 4] {
                    for (mask, causal) in
                        [0, 1, 2].into_iter().flat_map(|m| [(m, false), (m, true)])
                    {
                        let mut case = Case::small(heads, nq);
                        (case.shared, case.bias, case.causal) = (shared, bias, causal);
                        if gate {
                            case = case.gated();
                        }
                        case = match mask {
                            0 => case,
                            1 => case.padded(),
                            _ => case.trailing_padding(),
                        };
                        case.check_against_generic();
                        case.clone().reading(false).check_against_generic();
                        case.clone().reading(true).check_against_generic();
                        let mut all_weights = case.reading(true);
                        all_weights.weights = true;
                        all_weights.check_against_generic();
                    }
                }
            }
        }
    }
}

#[test]
fn large_attention_runs_in_parallel_and_matches_the_generic_ops() {
    // 8·4·16·16·(16 + 16) multiply-adds: over the threshold of the parallel path.
    let mut case = Case {
        batch: 8,
        heads: 4,
        nq: 16,
        nk: 16,
        dk: 16,
        dv: 16,
        bias: true,
        causal: true,
        ..Case::small(4, 16)
    }
    .padded();
    case.check_against_generic();
    case.clone().reading(true).check_against_generic();
    case.shared = true;
    case.check_against_generic();
    case.clone().reading(false).check_against_generic();
    case.gated().check_against_generic();
}

#[test]
fn attention_returns_the_softmax_weights() {
    let mut case = Case::small(2, 3).padded();
    case.causal = true;
    let p = case.store();
    let (_, weights) = case.attend(&p, true, false);
    let weights = weights.expect("weights were asked for");
    assert_eq!(*weights.shape(), (2, Head(2), 3, 4));
    let keep = case.keep.as_ref().unwrap();
    for (r, row) in weights.as_vec().chunks(case.nk).enumerate() {
        let (e, query) = (r / (case.heads * case.nq), r % case.nq);
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "row {r} sums to {sum}");
        for (key, &w) in row.iter().enumerate() {
            let visible = keep[e * case.nk + key] && key <= query;
            assert_eq!(w > 0.0, visible, "row {r}, key {key}: weight {w}");
        }
    }
    let (_, none) = cpu::attention::forward::<_, _, _, _, _, _, usize, _, _, _>(
        p.get(ParamId(0), (2, 3, 4)),
        p.get(ParamId(1), (2, 4, 4)),
        p.get(ParamId(2), (2, 4, 6)),
        None,
        case.spec(false),
    );
    assert!(none.is_none(), "no weights unless asked for");
}

#[test]
fn a_query_that_sees_no_key_gives_nan() {
    let mut case = Case::small(2, 3);
    case.keep = Some((0..8).map(|i| i < 4).collect()); // the second example hides every key
    let p = case.store();
    for fast in [true, false] {
        let out = case.attend(&p, fast, false).0.as_vec();
        let (first, second) = out.split_at(out.len() / 2);
        assert!(first.iter().all(|v| v.is_finite()), "fast {fast}");
        assert!(second.iter().all(|v| v.is_nan()), "fast {fast}");
    }
}

#[test]
fn attention_computes_no_gradient_for_an_input_without_a_tape() {
    let case = Case::small(2, 3);
    let p = case.store();
    let (_, grads) = evaluate(&p, |p| read_out(p, case.attend(p, true, true).0, 4));
    assert!(grads[0].iter().all(|&g| g == 0.0), "no query gradient");
    assert!(grads[1].iter().any(|&g| g != 0.0), "key gradient");
    assert!(grads[2].iter().any(|&g| g != 0.0), "value gradient");
}

#[test]
fn attention_gradients_match_finite_differences() {
    let mut causal = Case::small(2, 3).padded();
    (causal.bias, causal.causal) = (true, true);
    let mut shared = Case::small(2, 4).padded();
    (shared.bias, shared.shared) = (true, true);
    let gated = shared.clone().gated();
    let mut trailing = Case::small(2, 3).trailing_padding();
    trailing.bias = true;
    let trailing_gated = trailing.clone().gated();
    let reading = trailing.clone().reading(false);
    let gaps = shared.clone().reading(true);
    let gaps_gated = gated.clone().reading(true);
    for case in [
        causal,
        shared,
        gated,
        trailing,
        trailing_gated,
        reading,
        gaps,
        gaps_gated,
    ] {
        let mut p = case.store();
        GradCheck::default()
            .run(&mut p, |p| case.loss(p, true))
            .unwrap_or_else(|e| panic!("{case:?}: {e}"));
    }
}

#[test]
fn self_attention_of_one_tensor_matches_finite_differences() {
    // The queries, keys and values are one tensor, so their gradients land in one buffer.
    let case = Case::small(2, 4);
    let (b, n, d) = (case.batch, case.nk, case.dk * case.heads);
    let mut p = super::store(&[("x", &[b, n, d])], b * n * d);
    GradCheck::default()
        .run(&mut p, |p| {
            let x = p.get(ParamId(0), (b, n, d));
            let spec = AttentionSpec {
                heads: Head(case.heads),
                shared_kv: false,
                scale: 0.5,
                keep: None,
                causal: false,
                queries: None,
                query_gate: false,
                want_weights: false,
            };
            let (q, k) = (
                x.retaped::<OwnedTape<f32, Cpu>>(),
                x.retaped::<OwnedTape<f32, Cpu>>(),
            );
            let attended: Attended<usize, usize, usize, usize, f32, Cpu> =
                cpu::attention::forward(q, k, x, None, spec);
            read_out(p, attended.0, 1)
        })
        .unwrap();
}
