//! The geometry of NVIB's mixture latents: interpolation as the official evaluation does it
//! (`docs/nvib-math.md` §F): the union of both mixtures' components, weighted (1 − τ)·π₁ and
//! τ·π₂, so the decoder's attention sees both sentences' vectors at once.

use vaezoo_core::backend::{lift, Reuse};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::plugin::LatentSpace;
use vaezoo_core::{Backend, Result};

/// Mixture latents: interpolation is the weighted union of components.
pub struct MixtureSpace;

impl<D: Backend> LatentSpace<D> for MixtureSpace {
    /// # Shapes
    /// `a: (Batch, C₁, Latent)`, `b: (Batch, C₂, Latent)` → `(Batch, C₁ + C₂, Latent)`
    fn interpolate(&self, a: &Mixture<D>, b: &Mixture<D>, tau: f32) -> Result<Mixture<D>> {
        a.check_interpolable(b)?;
        let ((ba, ca, _), (_, cb, _)) = (a.dims(), b.dims());
        let log_var = |m: &Mixture<D>| match &m.log_var {
            Some(v) => v.reuse(),
            None => lift(m.z.device().zeros_like(&m.dims())) - 200.0,
        };
        let (mask_a, mask_b) = (a.keep(), b.keep());
        let joined: Vec<bool> = (0..ba.0)
            .flat_map(|r| {
                let first = mask_a[r * ca.0..(r + 1) * ca.0].iter();
                first
                    .chain(mask_b[r * cb.0..(r + 1) * cb.0].iter())
                    .copied()
            })
            .collect();
        let mut out = Mixture::gaussian(
            (a.z.reuse(), b.z.reuse()).concat_along(Axis::<1>),
            (a.mean.reuse(), b.mean.reuse()).concat_along(Axis::<1>),
            Some((log_var(a), log_var(b)).concat_along(Axis::<1>)),
            Some(joined),
        );
        out.weights = Some(
            (
                a.weights_or_uniform() * (1.0 - tau),
                b.weights_or_uniform() * tau,
            )
                .concat_along(Axis::<1>),
        );
        Ok(out)
    }

    /// `avg_num_vec` (components with π > 0 per latent), `avg_prop_vec` (that number over the
    /// existing components) and, when the latent has pseudo-counts, `avg_alpha0` (Σ α over the
    /// existing components), each averaged over the batch.
    fn statistics(&self, latent: &Mixture<D>) -> Vec<(&'static str, f64)> {
        let (b, c, _) = latent.dims();
        let pi = latent.weights_or_uniform().as_vec();
        let alpha = latent.alpha.as_ref().map(|a| a.as_vec());
        let exists = |i: usize| latent.mask.as_ref().is_none_or(|m| m[i]);
        let (mut num, mut prop, mut alpha0) = (0.0, 0.0, 0.0);
        for row in 0..b.0 {
            let rows = row * c.0..(row + 1) * c.0;
            let kept = rows.clone().filter(|&i| exists(i) && pi[i] > 0.0).count() as f64;
            let existing = rows.clone().filter(|&i| exists(i)).count().max(1) as f64;
            num += kept;
            prop += kept / existing;
            if let Some(alpha) = &alpha {
                alpha0 += rows
                    .filter(|&i| exists(i))
                    .map(|i| f64::from(alpha[i]))
                    .sum::<f64>();
            }
        }
        let n = b.0.max(1) as f64;
        let mut stats = vec![("avg_num_vec", num / n), ("avg_prop_vec", prop / n)];
        if alpha.is_some() {
            stats.push(("avg_alpha0", alpha0 / n));
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vaezoo_core::axes::{Batch, Comp, Latent};

    fn mixture(values: Vec<f32>, weights: Vec<f32>, comps: usize) -> Mixture<Cpu> {
        let dev = Cpu::default();
        let shape = (Batch(1), Comp(comps), Latent(2));
        let z = lift(dev.tensor_from_vec(values, shape));
        let mut m = Mixture::gaussian(z.reuse(), z, None, None);
        m.weights = Some(lift(dev.tensor_from_vec(weights, (Batch(1), Comp(comps)))));
        m
    }

    #[test]
    fn interpolation_is_the_weighted_union_of_components() {
        let a = mixture(vec![1.0, 1.0, 2.0, 2.0], vec![0.25, 0.75], 2);
        let b = mixture(vec![5.0, 5.0], vec![1.0], 1);
        let m = MixtureSpace.interpolate(&a, &b, 0.5).unwrap();
        assert_eq!(m.dims().1, Comp(3));
        assert_eq!(m.z.as_vec(), vec![1.0, 1.0, 2.0, 2.0, 5.0, 5.0]);
        assert_eq!(
            m.weights.as_ref().unwrap().as_vec(),
            vec![0.125, 0.375, 0.5]
        );
        assert_eq!(m.mask, Some(vec![true; 3]));
        let at_a = MixtureSpace.interpolate(&a, &b, 0.0).unwrap();
        assert_eq!(
            at_a.weights.as_ref().unwrap().as_vec(),
            vec![0.25, 0.75, 0.0]
        );
        // Σ π μ: 0.25·1 + 0.75·2 at τ = 0.
        assert_eq!(MixtureSpace.mean(&at_a).as_vec(), vec![1.75, 1.75]);
        let stats = LatentSpace::<Cpu>::statistics(&MixtureSpace, &at_a);
        assert_eq!(
            stats,
            vec![("avg_num_vec", 2.0), ("avg_prop_vec", 2.0 / 3.0)]
        );
    }

    #[test]
    fn latents_without_weights_are_uniform_over_existing_components() {
        let dev = Cpu::default();
        let shape = (Batch(1), Comp(3), Latent(2));
        let z = lift(dev.tensor_from_vec(vec![0.0; 6], shape));
        let a = Mixture::gaussian(z.reuse(), z, None, Some(vec![true, true, false]));
        let m = MixtureSpace.interpolate(&a, &a, 0.25).unwrap();
        let w = m.weights.unwrap().as_vec();
        assert_eq!(w, vec![0.375, 0.375, 0.0, 0.125, 0.125, 0.0]);
        assert_eq!(m.mask, Some(vec![true, true, false, true, true, false]));
    }

    #[test]
    fn statistics_match_the_layers_for_an_nvib_latent() {
        let mut m = mixture(vec![0.0; 6], vec![0.5, 0.0, 0.5], 3);
        m.mask = Some(vec![true, true, false]);
        let dev = Cpu::default();
        m.alpha = Some(lift(
            dev.tensor_from_vec(vec![1.0, 0.0, 9.0], (Batch(1), Comp(3))),
        ));
        let stats = LatentSpace::<Cpu>::statistics(&MixtureSpace, &m);
        // Kept: component 0 (component 2 does not exist); α summed over existing rows.
        assert_eq!(
            stats,
            vec![
                ("avg_num_vec", 1.0),
                ("avg_prop_vec", 0.5),
                ("avg_alpha0", 1.0)
            ]
        );
    }
}
