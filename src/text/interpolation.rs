//! Interpolation between latents without mixture weights (a Transformer autoencoder's
//! memory, the Variational Transformer's per-token Gaussians): as the official evaluation does
//! for every model but NVIB (§F), both latents are padded to the longer one and averaged
//! position by position, (1 − τ)·z₁ + τ·z₂. A position exists where a latent of nonzero weight
//! has it: at τ = 0 exactly the first latent's, at τ = 1 the second's, in between either's.

use vaezoo_core::axes::Comp;
use vaezoo_core::backend::lift;
use vaezoo_core::latent::Mixture;
use vaezoo_core::plugin::LatentSpace;
use vaezoo_core::{Backend, Result};

/// Position-wise averaging of padded latents.
pub struct PositionwiseSpace;

/// `values` (row-major `Batch × from × width`) padded with zeros to `to` components per row.
fn pad(values: &[f32], batch: usize, from: usize, to: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0.0; batch * to * width];
    for r in 0..batch {
        let src = &values[r * from * width..(r + 1) * from * width];
        out[r * to * width..r * to * width + from * width].copy_from_slice(src);
    }
    out
}

impl<D: Backend> LatentSpace<D> for PositionwiseSpace {
    /// # Shapes
    /// `a: (Batch, C₁, Latent)`, `b: (Batch, C₂, Latent)` → `(Batch, max(C₁, C₂), Latent)`
    fn interpolate(&self, a: &Mixture<D>, b: &Mixture<D>, tau: f32) -> Result<Mixture<D>> {
        a.check_interpolable(b)?;
        let ((ba, ca, la), (_, cb, _)) = (a.dims(), b.dims());
        let comps = ca.0.max(cb.0);
        let shape = (ba, Comp(comps), la);
        let dev = a.z.device().clone();
        let blend = |x: &Traced3<D>, y: &Traced3<D>| {
            let x = pad(&x.as_vec(), ba.0, ca.0, comps, la.0);
            let y = pad(&y.as_vec(), ba.0, cb.0, comps, la.0);
            let v: Vec<f32> = x
                .iter()
                .zip(&y)
                .map(|(x, y)| (1.0 - tau) * x + tau * y)
                .collect();
            lift(dev.tensor_from_vec(v, shape))
        };
        let (keep_a, keep_b) = (a.keep(), b.keep());
        let keep: Vec<bool> = (0..ba.0 * comps)
            .map(|i| {
                let (r, c) = (i / comps, i % comps);
                let in_a = tau < 1.0 && c < ca.0 && keep_a[r * ca.0 + c];
                in_a || (tau > 0.0 && c < cb.0 && keep_b[r * cb.0 + c])
            })
            .collect();
        let log_var = match (&a.log_var, &b.log_var) {
            (Some(x), Some(y)) => Some(blend(x, y)),
            _ => None,
        };
        Ok(Mixture::gaussian(
            blend(&a.z, &b.z),
            blend(&a.mean, &b.mean),
            log_var,
            Some(keep),
        ))
    }

    /// Latents without weights report no statistics of their own.
    fn statistics(&self, _latent: &Mixture<D>) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

type Traced3<D> =
    vaezoo_core::Traced<(vaezoo_core::axes::Batch, Comp, vaezoo_core::axes::Latent), D>;

#[cfg(test)]
mod tests {
    use super::*;
    use vaezoo_core::axes::{Batch, Latent};
    use vaezoo_core::backend::Reuse;
    use vaezoo_core::dfdx::prelude::*;

    fn latent(values: Vec<f32>, comps: usize, keep: Vec<bool>) -> Mixture<Cpu> {
        let dev = Cpu::default();
        let z = lift(dev.tensor_from_vec(values, (Batch(1), Comp(comps), Latent(1))));
        Mixture::gaussian(z.reuse(), z, None, Some(keep))
    }

    #[test]
    fn pads_the_shorter_latent_and_averages_by_position() {
        let a = latent(vec![1.0, 2.0], 2, vec![true, true]);
        let b = latent(vec![3.0, 5.0, 7.0], 3, vec![true, true, false]);
        let m = PositionwiseSpace.interpolate(&a, &b, 0.25).unwrap();
        assert_eq!(m.z.as_vec(), vec![1.5, 2.75, 1.75]);
        assert_eq!(m.mask, Some(vec![true, true, false]));
        let b = latent(vec![3.0, 5.0, 7.0], 3, vec![true, true, true]);
        let m = PositionwiseSpace.interpolate(&a, &b, 0.5).unwrap();
        assert_eq!(m.mask, Some(vec![true, true, true]));
        let start = PositionwiseSpace.interpolate(&a, &b, 0.0).unwrap();
        assert_eq!(start.mask, Some(vec![true, true, false]));
        let end = PositionwiseSpace.interpolate(&a, &b, 1.0).unwrap();
        assert_eq!(end.mean.as_vec(), vec![3.0, 5.0, 7.0]);
        assert_eq!(end.mask, Some(vec![true, true, true]));
    }
}
