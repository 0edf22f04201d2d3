//! Finite-difference checks of every gradient of the attention functions, in f64: central
//! differences with step 1e-6 against the tape, of the loss Σ output ⊙ w for a fixed random w.

use super::*;

/// A flat input as the loss closures receive it.
type Flat = T<(usize,)>;

/// Compares the tape's gradient of `loss` with respect to every input with central
/// differences (step 1e-6; pass iff |tape − numeric| ≤ 1e-7 + 1e-6·|numeric|). An input the
/// loss does not read has gradient zero.
fn check(inputs: &[Vec<f64>], loss: impl Fn(Vec<Flat>) -> T<()>) {
    let dev = Cpu::default();
    let leaves: Vec<_> = inputs
        .iter()
        .map(|x| dev.tensor_from_vec(x.clone(), (x.len(),)))
        .collect();
    let mut grads = loss(leaves.iter().map(|l| l.leaky_trace()).collect()).backward();
    for leaf in &leaves {
        grads.get_or_alloc_mut(leaf).expect("a gradient buffer");
    }
    let value = |xs: &[Vec<f64>]| loss(xs.iter().map(|x| t(x, (x.len(),))).collect()).as_vec()[0];
    let h = 1e-6;
    for (i, leaf) in leaves.iter().enumerate() {
        let tape = grads.get(leaf).as_vec();
        for (j, &g) in tape.iter().enumerate() {
            let mut xs = inputs.to_vec();
            xs[i][j] += h;
            let plus = value(&xs);
            xs[i][j] -= 2.0 * h;
            let numeric = (plus - value(&xs)) / (2.0 * h);
            assert!(
                (g - numeric).abs() <= 1e-7 + 1e-6 * numeric.abs(),
                "input {i}[{j}]: tape {g} vs finite difference {numeric}"
            );
        }
    }
}

/// Σ out ⊙ w for a fixed random w.
fn weighted_sum<S: Shape>(out: T<S>) -> T<()> {
    let shape = *out.shape();
    let w = randn(99, shape.num_elements());
    (out * Cpu::default().tensor_from_vec(w, shape)).sum()
}

/// The flat queries, keys and values of `H` heads, packed.
fn packed(q: Flat, k: Flat, v: Flat) -> Projected<f64, Cpu> {
    let m = Model(H * E);
    Projected {
        heads: Head(H),
        q: q.reshape_like(&(Batch(B), Seq(NT), m)),
        k: k.reshape_like(&(Batch(B), Comp(NL), m)),
        v: v.reshape_like(&(Batch(B), Comp(NL), m)),
    }
}

fn train_inputs() -> Vec<Vec<f64>> {
    vec![
        randn(1, B * H * NT * E),
        randn(2, B * H * NL * E),
        randn(3, B * H * NL * E),
        pi_values(4),
        randn(5, B * NL * P),
    ]
}

#[test]
fn sdpa_gradients() {
    check(&train_inputs()[..3], |x| {
        let [q, k, v]: [Flat; 3] = x.try_into().unwrap();
        let (out, _) = sdpa(packed(q, k, v), &keep());
        weighted_sum(out)
    });
}

#[test]
fn train_gradients() {
    for version in [DaVersion::V1, DaVersion::Head] {
        check(&train_inputs(), |x| {
            let [q, k, v, pi, z]: [Flat; 5] = x.try_into().unwrap();
            let (out, _) = denoising_attention_train(
                packed(q, k, v),
                pi.reshape_like(&(Batch(B), Comp(NL))),
                z.reshape_like(&(Batch(B), Comp(NL), Latent(P))),
                &keep(),
                version,
            );
            weighted_sum(out)
        });
    }
}

#[test]
fn eval_gradients() {
    let inputs = vec![
        randn(1, B * NT * H * P),
        randn(3, B * NL * P),
        randn(4, B * NL * P),
        pi_values(5),
        randn(6, H * E * P),
        randn(7, H * E),
    ];
    for version in [DaVersion::V1, DaVersion::Head] {
        check(&inputs, |x| {
            let [u, mu, log_var, pi, w_v, b_v]: [Flat; 6] = x.try_into().unwrap();
            let query = LatentQuery {
                heads: Head(H),
                u: u.reshape_like(&(Batch(B), Seq(NT), H * P)),
            };
            let value = ValueMap {
                weight: w_v.reshape_like(&(Model(H * E), Latent(P))),
                bias: Some(b_v.reshape_like(&(Model(H * E),))),
            };
            let (out, _) = denoising_attention_eval(
                query,
                mu.reshape_like(&(Batch(B), Comp(NL), Latent(P))),
                log_var.reshape_like(&(Batch(B), Comp(NL), Latent(P))),
                pi.reshape_like(&(Batch(B), Comp(NL))),
                value,
                &keep(),
                version,
            );
            weighted_sum(out)
        });
    }
}

/// Module weights `(Model, ·)` from the flat inputs [W_q, W_k, W_v, W_o, b_q, b_k, b_v, b_o].
fn traced_weights(heads: usize, x: Vec<Flat>) -> MhaWeights<f64, Cpu> {
    let m = Model(H * E);
    let [w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o]: [Flat; 8] = x.try_into().unwrap();
    MhaWeights {
        heads: Head(heads),
        q: w_q.reshape_like(&(m, m)),
        k: w_k.reshape_like(&(m, Latent(P))),
        v: w_v.reshape_like(&(m, Latent(P))),
        out: w_o.reshape_like(&(m, m)),
        bias: Some(MhaBias {
            q: b_q.reshape_like(&(m,)),
            k: b_k.reshape_like(&(m,)),
            v: b_v.reshape_like(&(m,)),
            out: b_o.reshape_like(&(m,)),
        }),
    }
}

/// Inputs [query, 8 weights, memory…, π]; the memory is z (train) or μ, logσ² (eval).
fn mha_inputs(memory: usize) -> Vec<Vec<f64>> {
    let (weights, q) = mha_values(20);
    let mut inputs = vec![q];
    inputs.extend(weights);
    inputs.extend((0..memory).map(|i| randn(30 + i as u64, B * NL * P)));
    inputs.push(pi_values(40));
    inputs
}

#[test]
fn module_train_gradients() {
    let padded = [true, true, false, true, false, true];
    for (version, heads) in [(DaVersion::V1, 1), (DaVersion::Head, H)] {
        for query_keep in [None, Some(&padded[..])] {
            check(&mha_inputs(1), |mut x| {
                let (pi, z) = (x.pop().unwrap(), x.pop().unwrap());
                let q = x.remove(0);
                let latent = (
                    z.reshape_like(&(Batch(B), Comp(NL), Latent(P))),
                    pi.reshape_like(&(Batch(B), Comp(NL))),
                    &keep()[..],
                );
                let out = denoising_mha_train_kept(
                    q.reshape_like(&(Batch(B), Seq(NT), Model(H * E))),
                    query_keep,
                    traced_weights(heads, x),
                    latent,
                    version,
                );
                weighted_sum(out)
            });
        }
    }
}

#[test]
fn module_eval_gradients() {
    // v1.0 ignores b_v in evaluation (and b_k cancels in the softmax, for both versions).
    check(&mha_inputs(2), |mut x| {
        let (pi, log_var, mu) = (x.pop().unwrap(), x.pop().unwrap(), x.pop().unwrap());
        let q = x.remove(0);
        let (out, _) = denoising_mha_eval(
            q.reshape_like(&(Batch(B), Seq(NT), Model(H * E))),
            traced_weights(H, x),
            mu.reshape_like(&(Batch(B), Comp(NL), Latent(P))),
            log_var.reshape_like(&(Batch(B), Comp(NL), Latent(P))),
            pi.reshape_like(&(Batch(B), Comp(NL))),
            &keep(),
            DaVersion::Head,
        );
        weighted_sum(out)
    });
}

#[test]
fn a_zero_pi_component_has_zero_and_finite_gradients() {
    let mut inputs = train_inputs();
    inputs[3][2] = 0.0;
    let leaves: Vec<_> = inputs
        .iter()
        .map(|x| Cpu::default().tensor_from_vec(x.clone(), (x.len(),)))
        .collect();
    let [q, k, v, pi, z]: [Flat; 5] = leaves
        .iter()
        .map(|l| l.leaky_trace())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let (out, _) = denoising_attention_train(
        packed(q, k, v),
        pi.reshape_like(&(Batch(B), Comp(NL))),
        z.reshape_like(&(Batch(B), Comp(NL), Latent(P))),
        &keep(),
        DaVersion::Head,
    );
    let grads = weighted_sum(out).backward();
    for leaf in &leaves {
        assert!(grads.get(leaf).as_vec().iter().all(|g| g.is_finite()));
    }
    assert_eq!(grads.get(&leaves[3]).as_vec()[2], 0.0, "dL/dπ");
    // Component 2 of example 0: its value row (every head) and its latent get no gradient.
    let v_rows = grads.get(&leaves[2]).as_vec();
    assert!(
        v_rows[2 * H * E..3 * H * E].iter().all(|&g| g == 0.0),
        "dL/dv"
    );
    assert!(grads.get(&leaves[4]).as_vec()[2 * P..3 * P]
        .iter()
        .all(|&g| g == 0.0));
}
