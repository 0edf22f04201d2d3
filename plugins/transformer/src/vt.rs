//! The Variational Transformer baselines' bottlenecks (§E, `T:VariationalTransformer*.py`):
//!
//! - VTV ([`variable`]): one Gaussian per token, μ and logσ² linear in the encoder output;
//!   z = μ + σε in training, μ in evaluation; μ, logσ² and z zeroed at padded tokens;
//! - VTP ([`pooled`]): mean pooling over the real tokens, or max pooling with padded tokens at
//!   −∞, then one Gaussian vector (its mask all false). The official max pooling writes the −∞
//!   **into the encoder output in place**; here the encoder states are left untouched (nothing
//!   else reads them in VTP);
//! - VTS ([`stride_mask`]): VTV with a deterministic mask dropping a fraction of the latents.
//!
//! [`kl`] is their KL against a scalar Gaussian prior: ½ Σ_tokens mean_P[σ²/σ²_p +
//! (μ − μ_p)²/σ²_p − 1 − ln(σ²/σ²_p)], summed over the kept (unpadded) latents.

use dfdx::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent, Model, Seq};
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::{noise_vec_as, HostRng};
use vaezoo_nvib::num::{c, Dev, Real, Tr};

use crate::dense::Dense;
use crate::weights::Source;

/// The two linear heads `mu_proj` and `logvar_proj` (`Model → Latent`).
#[derive(Clone, Debug)]
pub struct GaussianHeads {
    mu: Dense<Model, Latent>,
    log_var: Dense<Model, Latent>,
}

/// A VT latent: `(Batch, Comp, Latent)` tensors and which components exist (`Batch × Comp`).
pub struct VtLatent<E: Real, D: Dev<E>> {
    pub z: Tr<(Batch, Comp, Latent), E, D>,
    pub mu: Tr<(Batch, Comp, Latent), E, D>,
    pub log_var: Tr<(Batch, Comp, Latent), E, D>,
    pub keep: Vec<bool>,
}

/// How VTP pools the encoder states (the official `POOLING`; mean by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over the real tokens.
    #[default]
    Mean,
    /// The element-wise maximum over the real tokens.
    Max,
}

impl GaussianHeads {
    /// Declares `mu_proj.*` and `logvar_proj.*`.
    pub fn new(params: &mut ParamBuilder, width: Model, latent: Latent) -> Self {
        Self {
            mu: Dense::new(params, "mu_proj", width, latent, true),
            log_var: Dense::new(params, "logvar_proj", width, latent, true),
        }
    }

    /// μ, logσ² and z (a sample in training, μ in evaluation), each multiplied by `scale`
    /// (`(Batch, N)`: 1 keeps a row, 0 zeroes it).
    fn gaussian<N: Dim, E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        h: Tr<(Batch, N, Model), E, D>,
        scale: Tensor<(Batch, N), E, D>,
        mode: Mode,
        rng: &mut HostRng,
    ) -> [Tr<(Batch, N, Latent), E, D>; 3] {
        let mu = self.mu.forward(w, h.retaped());
        let log_var = self.log_var.forward(w, h);
        let shape = *mu.shape();
        let scale = scale.broadcast_like::<_, Axis<2>>(&shape);
        let z = match mode {
            Mode::Eval => mu.retaped(),
            Mode::Train => {
                let eps = noise_vec_as::<E>(rng, shape.num_elements());
                let eps = w.device().tensor_from_vec(eps, shape);
                mu.retaped::<OwnedTape<E, D>>()
                    + (log_var.retaped::<OwnedTape<E, D>>() * c::<E>(0.5)).exp() * eps
            }
        };
        [z * scale.clone(), mu * scale.clone(), log_var * scale]
    }
}

/// `keep` as 1/0 values of `shape`.
fn flags<S: Shape, E: Real, D: Dev<E>>(dev: &D, keep: &[bool], shape: S) -> Tensor<S, E, D> {
    let v = keep
        .iter()
        .map(|&k| if k { E::one() } else { E::zero() })
        .collect();
    dev.tensor_from_vec(v, shape)
}

/// VTV: one Gaussian per token, zeroed at padded tokens.
///
/// # Shapes
/// `h: (Batch, Seq, Model)`, `keep: Batch × Seq` → latent `(Batch, Comp = Seq, Latent)`
pub fn variable<E: Real, D: Dev<E>>(
    heads: &GaussianHeads,
    w: &impl Source<E, D>,
    h: Tr<(Batch, Seq, Model), E, D>,
    keep: &[bool],
    mode: Mode,
    rng: &mut HostRng,
) -> VtLatent<E, D> {
    let (batch, seq, model) = *h.shape();
    let h = h.reshape_like(&(batch, Comp(seq.0), model));
    let scale = flags(w.device(), keep, (batch, Comp(seq.0)));
    let [z, mu, log_var] = heads.gaussian(w, h, scale, mode, rng);
    VtLatent {
        z,
        mu,
        log_var,
        keep: keep.to_vec(),
    }
}

/// VTP: the encoder states pooled over the real tokens, then one Gaussian vector.
///
/// # Shapes
/// `h: (Batch, Seq, Model)`, `keep: Batch × Seq` → latent `(Batch, Comp = 1, Latent)`
pub fn pooled<E: Real, D: Dev<E>>(
    heads: &GaussianHeads,
    w: &impl Source<E, D>,
    h: Tr<(Batch, Seq, Model), E, D>,
    keep: &[bool],
    pooling: Pooling,
    mode: Mode,
    rng: &mut HostRng,
) -> VtLatent<E, D> {
    let shape = *h.shape();
    let (batch, seq, model) = shape;
    let dev = w.device().clone();
    let pooled = match pooling {
        Pooling::Mean => {
            let weights = keep
                .chunks(seq.0)
                .flat_map(|row| {
                    let n = row.iter().filter(|&&k| k).count() as f64;
                    row.iter()
                        .map(move |&k| if k { c::<E>(1.0 / n) } else { E::zero() })
                })
                .collect();
            let weights = dev
                .tensor_from_vec(weights, (batch, seq))
                .broadcast_like(&shape);
            (h * weights).sum::<(Batch, Model), Axis<1>>()
        }
        Pooling::Max => {
            let real = flags::<_, E, D>(&dev, keep, (batch, seq))
                .gt(c::<E>(0.5))
                .broadcast_like::<_, Axis<2>>(&shape);
            let minus_inf = dev.tensor_from_vec(vec![E::neg_infinity(); batch.0], (batch,));
            real.choose(h, minus_inf.broadcast_like(&shape))
                .max::<(Batch, Model), Axis<1>>()
        }
    };
    let one = (batch, Comp(1), model);
    let scale = dev.ones_like(&(batch, Comp(1)));
    let [z, mu, log_var] = heads.gaussian(w, pooled.reshape_like(&one), scale, mode, rng);
    VtLatent {
        z,
        mu,
        log_var,
        keep: vec![true; batch.0],
    }
}

/// VTS's stride mask (`make_stride_mask`), true = dropped, row-major `Batch × Seq` like
/// `padded` (true = padding), which it includes: for `perc ≤ 0.5`, the positions with
/// (idx + 1) mod ⌊1/perc⌋ = 0 (none for 0); for `0.5 < perc < 1`, all but
/// idx ≡ 0 mod ⌊1/(1 − perc)⌋; for `perc ≥ 1`, all but idx 0.
pub fn stride_mask(padded: &[bool], seq: usize, perc: f64) -> Vec<bool> {
    let dropped = |idx: usize| {
        if perc <= 0.0 {
            false
        } else if perc <= 0.5 {
            (idx + 1).is_multiple_of((1.0 / perc).floor() as usize)
        } else if perc < 1.0 {
            !idx.is_multiple_of((1.0 / (1.0 - perc)).floor() as usize)
        } else {
            idx != 0
        }
    };
    padded
        .iter()
        .enumerate()
        .map(|(i, &pad)| pad || dropped(i % seq))
        .collect()
}

/// Which latents VTS keeps, row-major `Batch × Seq`: those `keep` keeps, less those the stride
/// mask of `perc` drops ([`stride_mask`]).
pub fn stride_keep(keep: &[bool], seq: usize, perc: f64) -> Vec<bool> {
    let padded: Vec<bool> = keep.iter().map(|&k| !k).collect();
    stride_mask(&padded, seq, perc)
        .into_iter()
        .map(|dropped| !dropped)
        .collect()
}

/// The VT KL per example against N(μ_p, σ²_p) (scalars), over the components `keep` keeps.
///
/// # Shapes
/// `mu, log_var: (Batch, Comp, Latent)`, `keep: Batch × Comp` → `(Batch,)`
pub fn kl<E: Real, D: Dev<E>>(
    mu: Tr<(Batch, Comp, Latent), E, D>,
    log_var: Tr<(Batch, Comp, Latent), E, D>,
    keep: &[bool],
    prior_mu: f64,
    prior_var: f64,
) -> Tr<(Batch,), E, D> {
    let shape = *mu.shape();
    let log_ratio = log_var - c::<E>(prior_var.ln());
    let per = log_ratio.retaped::<OwnedTape<E, D>>().exp()
        + (mu - c::<E>(prior_mu)).square() * c::<E>(1.0 / prior_var)
        - log_ratio
        - c::<E>(1.0);
    let per = per.mean::<(Batch, Comp), Axis<2>>();
    let kept = flags(per.device(), keep, (shape.0, shape.1));
    (per * kept).sum::<(Batch,), Axis<1>>() * c::<E>(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check, store};
    use vaezoo_core::rng::seeded;

    const KEEP: [bool; 6] = [true, true, true, true, false, false];

    #[test]
    fn stride_masks_follow_the_official_rule() {
        let row = |perc| stride_mask(&[false; 6], 6, perc);
        assert_eq!(row(0.0), [false; 6]);
        assert_eq!(row(0.25), [false, false, false, true, false, false]);
        assert_eq!(row(0.5), [false, true, false, true, false, true]);
        assert_eq!(row(0.6), row(0.5), "0.6 behaves like 0.5");
        assert_eq!(row(0.75), [false, true, true, true, false, true]);
        assert_eq!(row(1.0), [false, true, true, true, true, true]);
        let padded = [false, false, false, false, true, true];
        assert_eq!(
            stride_mask(&padded, 3, 0.5),
            [false, true, false, false, true, true]
        );
    }

    #[test]
    fn variable_latents_are_zero_at_padding_and_their_kl_ignores_it() {
        let (params, heads) = store(|pb| GaussianHeads::new(pb, Model(3), Latent(2)));
        let h = crate::testing::input(&params, vec![1.0; 18], (Batch(2), Seq(3), Model(3)));
        let lat = variable(&heads, &params, h, &KEEP, Mode::Train, &mut seeded(1));
        for t in [&lat.z, &lat.mu, &lat.log_var] {
            assert_eq!(&t.as_vec()[8..], &[0.0; 4]);
            assert!(t.as_vec()[..8].iter().all(|&v| v != 0.0));
        }
        assert_ne!(lat.z.as_vec(), lat.mu.as_vec(), "train samples");
        let zero = |n| crate::testing::input(&params, vec![0.0; n], (Batch(2), Comp(3), Latent(2)));
        assert_eq!(kl(zero(12), zero(12), &KEEP, 0.0, 1.0).as_vec(), [0.0, 0.0]);
        let k = kl(zero(12), zero(12), &KEEP, 1.0, 2.0).as_vec();
        let per = 0.5 * (0.5 + 0.5 - 1.0 + 2f32.ln());
        assert!(
            (k[0] - 3.0 * per).abs() < 1e-6 && (k[1] - per).abs() < 1e-6,
            "{k:?}"
        );
    }

    #[test]
    fn pooling_reads_only_real_tokens() {
        let (params, heads) = store(|pb| GaussianHeads::new(pb, Model(1), Latent(1)));
        let h = || {
            crate::testing::input(
                &params,
                vec![1.0, 3.0, 9.0, -4.0, -2.0, 50.0],
                (Batch(2), Seq(3), Model(1)),
            )
        };
        let mean = pooled(
            &heads,
            &params,
            h(),
            &KEEP,
            Pooling::Mean,
            Mode::Eval,
            &mut seeded(0),
        );
        let max = pooled(
            &heads,
            &params,
            h(),
            &KEEP,
            Pooling::Max,
            Mode::Eval,
            &mut seeded(0),
        );
        let (w, b) = (params.host(0)[0], params.host(1)[0]);
        let want = |x: f32| w * x + b;
        let close = |got: Vec<f32>, want: [f32; 2]| {
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5),
                "{got:?} vs {want:?}"
            )
        };
        close(mean.mu.as_vec(), [want(13.0 / 3.0), want(-4.0)]);
        close(max.mu.as_vec(), [want(9.0), want(-4.0)]);
        assert_eq!(max.keep, [true, true]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let shape = (Batch(2), Seq(3), Model(3));
        for mode in [Mode::Eval, Mode::Train] {
            check(
                |pb| GaussianHeads::new(pb, Model(3), Latent(2)),
                shape,
                |heads, p, x| {
                    let l = variable(heads, p, x, &KEEP, mode, &mut seeded(4));
                    let k = kl(l.mu, l.log_var, &KEEP, 0.5, 2.0);
                    l.z.sin().sum() + k.sum()
                },
            );
            for pooling in [Pooling::Mean, Pooling::Max] {
                check(
                    |pb| GaussianHeads::new(pb, Model(3), Latent(2)),
                    shape,
                    |heads, p, x| {
                        let l = pooled(heads, p, x, &KEEP, pooling, mode, &mut seeded(4));
                        l.z.sin().sum() + kl(l.mu, l.log_var, &l.keep, 0.0, 1.0).sum()
                    },
                );
            }
        }
    }
}
