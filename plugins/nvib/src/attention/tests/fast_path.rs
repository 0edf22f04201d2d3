//! The multi-head modules in f32 on the CPU, where the fused kernels run, against the same
//! modules in f64, where the generic dfdx ops run: outputs, attention weights and the
//! gradients of the query and the weights, and the training-time module with padded queries.

use super::*;
use crate::num::{Dev, Real};

/// A traced tensor of `values` in `F`.
fn traced<S: Shape, F: Real>(values: &[f64], shape: S) -> Tr<S, F, Cpu> {
    let values = values.iter().map(|&v| F::from_f64(v).unwrap()).collect();
    Cpu::default()
        .tensor_from_vec(values, shape)
        .put_tape(OwnedTape::default())
}

/// The leaves of one evaluation: the query, the 8 module weights, z (or μ), logσ², π.
struct Leaves<F: Real> {
    tensors: Vec<Tensor<(usize,), F, Cpu>>,
}

impl<F: Real> Leaves<F>
where
    Cpu: Dev<F>,
{
    fn new(values: &[Vec<f64>]) -> Self {
        let tensors = values
            .iter()
            .map(|v| traced::<_, F>(v, (v.len(),)).retaped::<NoneTape>())
            .collect();
        Self { tensors }
    }

    fn get<S: Shape>(&self, i: usize, shape: S) -> Tr<S, F, Cpu> {
        self.tensors[i].leaky_trace().reshape_like(&shape)
    }

    /// Module weights with `heads` heads (biases when `bias`).
    fn weights(&self, heads: usize, bias: bool) -> MhaWeights<F, Cpu> {
        let (m, l) = (Model(H * E), Latent(P));
        MhaWeights {
            heads: Head(heads),
            q: self.get(1, (m, m)),
            k: self.get(2, (m, l)),
            v: self.get(3, (m, l)),
            out: self.get(4, (m, m)),
            bias: bias.then(|| MhaBias {
                q: self.get(5, (m,)),
                k: self.get(6, (m,)),
                v: self.get(7, (m,)),
                out: self.get(8, (m,)),
            }),
        }
    }

    /// Output, weights and the gradients of Σ out ⊙ w, for the module `which`.
    fn run(&self, which: usize, heads: usize, bias: bool, version: DaVersion) -> Vec<Vec<f64>> {
        let q = self.get(0, (Batch(B), Seq(NT), Model(H * E)));
        let memory = self.get(9, (Batch(B), Comp(NL), Latent(P)));
        let pi = self.get(11, (Batch(B), Comp(NL)));
        let weights = self.weights(heads, bias);
        let with_attn = |(out, attn)| (out, Some(attn));
        let (out, attn) = match which {
            0 => with_attn(denoising_mha_train(
                q,
                weights,
                memory,
                pi,
                &keep(),
                version,
            )),
            1 => {
                let log_var = self.get(10, (Batch(B), Comp(NL), Latent(P)));
                with_attn(denoising_mha_eval(
                    q,
                    weights,
                    memory,
                    log_var,
                    pi,
                    &keep(),
                    version,
                ))
            }
            2 => with_attn(sdpa_mha(q, weights, memory, &keep())),
            _ => {
                // Each example's second and last queries are padding.
                let rows: Vec<bool> = (0..B * NT)
                    .map(|i| i % NT != 1 && i % NT + 1 < NT)
                    .collect();
                let latent = (memory, pi, &keep()[..]);
                let out = denoising_mha_train_kept(q, Some(&rows), weights, latent, version);
                (out, None)
            }
        };
        let as_f64 = |v: Vec<F>| v.iter().map(|x| x.to_f64().unwrap()).collect::<Vec<_>>();
        let mut results = vec![as_f64(out.as_vec())];
        results.extend(attn.map(|a| as_f64(a.as_vec())));
        let w = traced::<_, F>(&randn(99, B * NT * H * E), *out.shape()).retaped::<NoneTape>();
        let mut grads = (out * w).sum::<(), _>().backward();
        for t in &self.tensors[..9] {
            // Zeros for an input the module does not read.
            grads.get_or_alloc_mut(t).expect("a gradient buffer");
        }
        results.extend(
            self.tensors[..9]
                .iter()
                .map(|t| as_f64(grads.get(t).as_vec())),
        );
        results
    }
}

#[test]
fn the_fused_f32_modules_match_the_generic_f64_ones() {
    let (mut values, q) = mha_values(50);
    values.insert(0, q);
    values.extend([randn(60, B * NL * P), randn(61, B * NL * P), pi_values(62)]);
    let (fast, slow) = (Leaves::<f32>::new(&values), Leaves::<f64>::new(&values));
    for (version, heads, bias) in [(DaVersion::V1, 1, false), (DaVersion::Head, H, true)] {
        for which in 0..4 {
            let got = fast.run(which, heads, bias, version);
            let want = slow.run(which, heads, bias, version);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let scale = w.iter().fold(1.0, |m: f64, v| m.max(v.abs()));
                let err = max_diff(g, w);
                assert!(
                    err <= 2e-5 * scale,
                    "module {which}, {version:?}, result {i}: {err} (scale {scale})"
                );
            }
        }
    }
}
