//! A model: the four plugins a spec names, built with their parameters, and its losses.

use std::collections::BTreeMap;

use vaezoo_core::axes::{Batch, Comp, Feature, Latent};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::{HostParam, ParamBuilder};
use vaezoo_core::plugin::{
    Ctx, DynBottleneck, DynDecoder, DynEncoder, DynPrior, KlShaping, KlTerm, Observation, Progress,
};
use vaezoo_core::registry::{DataDims, LatentInfo, Registry};
use vaezoo_core::rng::HostRng;
use vaezoo_core::schedule::KlSchedule;
use vaezoo_core::spec::{Spec, TrainingSpec};
use vaezoo_core::torch_layout::TorchView;
use vaezoo_core::{Backend, Error as CoreError, Traced};

use crate::Result;

mod inference;

/// A schedule naming a KL term the model does not have is a mistake in the spec.
fn check_schedule_names<D: Backend>(
    schedules: &BTreeMap<String, KlSchedule>,
    terms: &[KlTerm<D>],
) -> Result<()> {
    let known = |name: &str| name == "*" || terms.iter().any(|t| t.name == name);
    if let Some(unknown) = schedules.keys().find(|name| !known(name)) {
        let names: Vec<&str> = terms.iter().map(|t| t.name.as_str()).collect();
        return Err(CoreError::Config {
            plugin: "training.kl_schedules".into(),
            message: format!(
                "a schedule for `{unknown}`, but this model's KL terms are [{}] (or `*` for all)",
                names.join(", ")
            ),
        }
        .into());
    }
    Ok(())
}

/// The built plugins of one spec.
pub struct Model {
    encoder: Box<dyn DynEncoder>,
    bottleneck: Box<dyn DynBottleneck>,
    prior: Box<dyn DynPrior>,
    decoder: Box<dyn DynDecoder>,
    latent_dim: usize,
    torch_views: BTreeMap<String, TorchView>,
}

/// The scalar a step minimises, and its parts.
pub struct Objective<D: Backend> {
    /// The loss to back-propagate.
    pub loss: Traced<(), D>,
    /// Its value.
    pub value: f32,
    /// Batch mean of the reconstruction term.
    pub rec: f32,
    /// Batch mean of the summed KL terms.
    pub kl: f32,
    /// The bottleneck's statistics.
    pub stats: Vec<(&'static str, f64)>,
    /// Each KL term's factor in the loss at this step (weights × schedule × shaping).
    pub kl_factors: Vec<(String, f32)>,
    /// The bottleneck's KL shaping at this step.
    pub shaping: KlShaping,
}

fn mean_of<D: Backend>(t: &Traced<(Batch,), D>) -> f32 {
    let v = t.as_vec();
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

/// The per-example loss terms of one batch.
pub struct Losses<D: Backend> {
    /// −log p(x | z), `(Batch,)`.
    pub rec: Traced<(Batch,), D>,
    /// The KL terms, each `(Batch,)`: the bottleneck's own (`Mixture::kl`), then the prior's.
    pub kl: Vec<KlTerm<D>>,
    /// The bottleneck's statistics for this batch (e.g. NVIB's `avg_prop_vec`).
    pub stats: Vec<(&'static str, f64)>,
}

impl Model {
    /// Builds every plugin of `spec` for data of size `data`, declaring parameters drawn from
    /// `rng`; returns the model and the initial parameters (names prefixed by slot).
    pub fn build(
        registry: &Registry,
        spec: &Spec,
        data: DataDims,
        rng: &mut HostRng,
    ) -> Result<(Self, Vec<HostParam>)> {
        let mut params = ParamBuilder::new(rng);
        let (e, b, p, d) = (&spec.encoder, &spec.bottleneck, &spec.prior, &spec.decoder);
        // The size limit is checked after each component, before its own result: a plugin
        // may fail on the empty values of a parameter past the limit.
        let encoder = registry.build_encoder(&e.kind, &e.config, &mut params, data);
        params.check_size()?;
        let encoder = encoder?;
        let bottleneck =
            registry.build_bottleneck(&b.kind, &b.config, &mut params, encoder.output_dim);
        params.check_size()?;
        let bottleneck = bottleneck?;
        let latent = bottleneck.latent_dim;
        let info = LatentInfo {
            dim: latent,
            shared: &bottleneck.shared,
        };
        let prior = registry.build_prior(&p.kind, &p.config, &mut params, info, data);
        params.check_size()?;
        let prior = prior?;
        let decoder = registry.build_decoder(&d.kind, &d.config, &mut params, latent, data);
        params.check_size()?;
        let decoder = decoder?;
        let model = Self {
            encoder: encoder.module,
            bottleneck: bottleneck.module,
            prior,
            decoder,
            latent_dim: bottleneck.latent_dim,
            torch_views: params.torch_views(),
        };
        Ok((model, params.finish()))
    }

    /// How parameter `name` maps onto the equivalent PyTorch module's tensor.
    pub fn torch_view(&self, name: &str) -> TorchView {
        self.torch_views.get(name).cloned().unwrap_or_default()
    }

    /// The parameters whose PyTorch layout differs from vaezoo's, by name.
    pub fn torch_views(&self) -> &BTreeMap<String, TorchView> {
        &self.torch_views
    }

    /// The latent size.
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// Reconstruction and KL terms for a batch (posterior samples when `ctx.mode` is Train).
    ///
    /// # Shapes
    /// `obs.x: (Batch, Feature)` → each term `(Batch,)`
    pub fn losses<D: Backend>(&self, ctx: &mut Ctx<D>, obs: &Observation<D>) -> Result<Losses<D>> {
        let latent = self.posterior(ctx, obs)?;
        self.losses_of(ctx, latent, obs)
    }

    /// [`losses`](Self::losses) of a batch whose posterior latent is `latent` (from
    /// [`posterior`](Self::posterior) on `obs`), for callers that read the latent too.
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)` → each term `(Batch,)`
    pub fn losses_of<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        mut latent: Mixture<D>,
        obs: &Observation<D>,
    ) -> Result<Losses<D>> {
        let mut kl = std::mem::take(&mut latent.kl);
        kl.extend(D::prior(&*self.prior).kl(ctx, &latent, obs.labels.as_deref())?);
        let rec = D::decoder(&*self.decoder).nll(ctx, &latent, obs)?;
        let stats = latent.stats.clone();
        let (rec, tape) = rec.split_tape();
        let rec = rec.put_tape(tape.merge(latent.into_tape()));
        Ok(Losses { rec, kl, stats })
    }

    /// The training objective at `progress`: the batch mean of `rec + Σ f·kl` over the KL
    /// terms, where a term's factor `f` is the spec's `kl_weight` × the term's own weight (e.g.
    /// NVIB's λ) × its schedule × the bottleneck's [`KlShaping`] weight; with a capacity C the
    /// term is `f · |batch mean of kl − C|` instead. Returns the loss with its value and the
    /// batch means of rec and of the summed KL for logging. A non-finite loss is an error, and
    /// so is a schedule for a term the model does not have.
    pub fn objective<D: Backend>(
        &self,
        losses: Losses<D>,
        training: &TrainingSpec,
        progress: Progress,
    ) -> Result<Objective<D>> {
        check_schedule_names(&training.kl_schedules, &losses.kl)?;
        let shaping = D::bottleneck(&*self.bottleneck).kl_shaping(progress);
        let rec = mean_of(&losses.rec);
        let stats = losses.stats;
        let mut factors = Vec::new();
        let mut per_example = losses.rec;
        let mut capacity_terms = Vec::new();
        let mut kl = 0.0;
        for term in losses.kl {
            kl += mean_of(&term.value);
            let schedule = (training.kl_schedules.get(&term.name))
                .or_else(|| training.kl_schedules.get("*"))
                .map_or(1.0, |s| s.factor(progress));
            let factor = training.kl_weight * term.weight * schedule * shaping.weight;
            match shaping.capacity {
                Some(c) => capacity_terms.push(((term.value.mean() - c).abs(), factor)),
                None => per_example = per_example + term.value * factor,
            }
            factors.push((term.name, factor));
        }
        let mut loss = per_example.mean();
        for (gap, factor) in capacity_terms {
            loss = loss + gap * factor;
        }
        let value = loss.as_vec()[0];
        if !value.is_finite() {
            return Err(CoreError::Numeric(format!(
                "the loss is {value} (rec {rec}, kl {kl}); try a lower learning rate or gradient clipping"
            ))
            .into());
        }
        Ok(Objective {
            loss,
            value,
            rec,
            kl,
            stats,
            kl_factors: factors,
            shaping,
        })
    }

    /// The decoder's mean for `n` latents drawn from the prior, conditioned on `labels` (one
    /// per sample) when given. `temperature` scales each draw's distance from its prior mean
    /// (z ← μ + T·(z − μ)): 1 samples the model as trained; below 1 gives more typical samples
    /// (as Glow's sampling temperature).
    ///
    /// # Shapes
    /// → `(n, Feature)`
    pub fn sample<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        n: usize,
        labels: Option<&[usize]>,
        temperature: f32,
    ) -> Result<Tensor<(Batch, Feature), f32, D>> {
        let (batch, latent) = (Batch(n), Latent(self.latent_dim));
        let mut z = D::prior(&*self.prior).sample(ctx, batch, Comp(1), latent, labels)?;
        if temperature != 1.0 {
            let mean = z.mean.reuse();
            z.z = mean.reuse() + (z.z.reuse() - mean) * temperature;
        }
        self.decode_mean(ctx, &z, labels)
    }
}
