//! `standard_normal`: the prior p(z) = N(0, I), with the closed-form KL of a diagonal Gaussian
//! posterior, KL = ½ Σ (μ² + σ² − 1 − log σ²), summed over latent dimensions and components,
//! and the density log p(z) = −½ Σ (z² + log 2π) that importance-sampled likelihoods need.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::backend::{lift, Reuse};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, KlTerm, Prior};
use vaezoo_core::registry::{parse_config, schema_of, Build, PluginRegistration};
use vaezoo_core::{Backend, Result, Traced};

/// Config of `standard_normal` (it has no settings).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StandardNormalConfig {}

/// N(0, I) over the latent of every component.
pub struct StandardNormal;

impl<D: Backend> Prior<D> for StandardNormal {
    /// # Shapes
    /// posterior `(Batch, Comp, Latent)` → `kl: (Batch,)`
    fn kl(
        &self,
        ctx: &mut Ctx<D>,
        posterior: &Mixture<D>,
        _labels: Option<&[usize]>,
    ) -> Result<Vec<KlTerm<D>>> {
        let log_var = posterior.log_var_for_kl("standard_normal")?;
        let mean = posterior.mean.reuse();
        let per_dim = mean.square() + log_var.reuse().exp() - log_var.reuse() - 1.0;
        let per_comp = per_dim.sum::<(Batch, Comp), Axis<2>>() * 0.5;
        Ok(vec![kl_term(ctx, per_comp, posterior)])
    }

    /// # Shapes
    /// → `(batch, comps, latent)`, z ~ N(0, I)
    fn sample(
        &self,
        ctx: &mut Ctx<D>,
        batch: Batch,
        comps: Comp,
        latent: Latent,
        _labels: Option<&[usize]>,
    ) -> Result<Mixture<D>> {
        let shape = (batch, comps, latent);
        let z = lift(ctx.normal(shape));
        let zeros: Tensor<_, f32, D> = ctx.dev().zeros_like(&shape);
        Ok(Mixture::gaussian(
            z,
            lift(zeros.clone()),
            Some(lift(zeros)),
            None,
        ))
    }

    /// log N(z; 0, I) = −½ Σ (z² + log 2π), summed over latent dimensions and components. The
    /// trait passes no component mask, so every component counts.
    ///
    /// # Shapes
    /// `z: (Batch, Comp, Latent)` → `(Batch,)`
    fn log_density(
        &self,
        _ctx: &mut Ctx<D>,
        z: &Tensor<(Batch, Comp, Latent), f32, D>,
        _labels: Option<&[usize]>,
    ) -> Option<Result<Tensor<(Batch,), f32, D>>> {
        let ln_2pi = (2.0 * std::f32::consts::PI).ln();
        let per_dim = (z.clone().square() + ln_2pi) * -0.5;
        Some(Ok(per_dim.sum::<(Batch,), Axes2<1, 2>>()))
    }
}

/// The `kl` term of a per-component KL: zero for the components the posterior's mask drops,
/// summed over the rest.
///
/// # Shapes
/// `per_comp: (Batch, Comp)` → value `(Batch,)`
pub(crate) fn kl_term<D: Backend>(
    ctx: &Ctx<D>,
    per_comp: Traced<(Batch, Comp), D>,
    posterior: &Mixture<D>,
) -> KlTerm<D> {
    let per_comp = match &posterior.mask {
        Some(mask) => {
            let shape = *per_comp.shape();
            let keep = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
            per_comp * ctx.dev().tensor_from_vec(keep, shape)
        }
        None => per_comp,
    };
    KlTerm {
        name: "kl".into(),
        value: per_comp.sum::<(Batch,), Axis<1>>(),
        weight: 1.0,
    }
}

fn build(
    config: &serde_json::Value,
    _params: &mut ParamBuilder,
    _latent: vaezoo_core::registry::LatentInfo,
    _data: vaezoo_core::registry::DataDims,
) -> Result<Box<dyn vaezoo_core::plugin::DynPrior>> {
    let _: StandardNormalConfig = parse_config("standard_normal", config)?;
    Ok(Box::new(StandardNormal))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "standard_normal",
        version: env!("CARGO_PKG_VERSION"),
        description: "Standard normal prior N(0, I) with closed-form Gaussian KL",
        schema: schema_of::<StandardNormalConfig>,
        example: || vaezoo_core::serde_json::json!({}),
        partners: &[],
        build: Build::Prior(build),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vaezoo_core::params::ParamStore;
    use vaezoo_core::plugin::Mode;
    use vaezoo_core::rng::seeded;

    #[test]
    fn log_density_is_the_standard_normal_summed_over_dims_and_components() {
        let dev = Cpu::default();
        let params = ParamStore::new(&dev, Vec::new());
        let mut rng = seeded(0);
        let mut ctx = Ctx {
            params: &params,
            mode: Mode::Eval,
            rng: &mut rng,
        };
        // Two examples, two components of two dimensions each.
        let values = vec![0.0, 1.0, -2.0, 0.5, 3.0, -1.5, 0.25, 0.0];
        let z = dev.tensor_from_vec(values.clone(), (Batch(2), Comp(2), Latent(2)));
        let got = StandardNormal
            .log_density(&mut ctx, &z, None)
            .expect("a density")
            .unwrap()
            .as_vec();
        let ln_2pi = (2.0 * std::f64::consts::PI).ln();
        for (row, got) in values.chunks(4).zip(got) {
            let want: f64 = row
                .iter()
                .map(|&v| -0.5 * (f64::from(v) * f64::from(v) + ln_2pi))
                .sum();
            assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
        }
        // By hand for the first row: −½ (0 + 1 + 4 + 0.25) − 2 log 2π.
        let first = -0.5 * 5.25 - 2.0 * ln_2pi;
        let z1 = dev.tensor_from_vec(values[..4].to_vec(), (Batch(1), Comp(2), Latent(2)));
        let one = StandardNormal
            .log_density(&mut ctx, &z1, None)
            .unwrap()
            .unwrap();
        assert!((f64::from(one.as_vec()[0]) - first).abs() < 1e-5);
    }
}
