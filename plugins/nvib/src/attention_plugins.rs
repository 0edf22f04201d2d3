//! `denoising` and `sdpa`: attention plugins through which a decoder's queries read a latent
//! mixture, each a multi-head module owning its projections (initialised as the NVAE's
//! `train.py` leaves PyTorch's `MultiheadAttention`: Xavier-uniform in- and output projections,
//! zero biases).
//!
//! `denoising` is NVIB's denoising attention: in training it attends to the sampled components
//! z weighted by π; in evaluation to the Gaussians N(μ, σ²). `sdpa` is scaled dot-product
//! attention over z, which denoising attention generalises.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Head, Latent, Model, Seq};
use vaezoo_core::backend::{lift, Reuse};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Attention, Ctx, DynAttention, Mode, Prepared};
use vaezoo_core::registry::{parse_config, schema_of, Build, PluginRegistration};
use vaezoo_core::{Backend, Error, Result, Traced};

use crate::attention::{
    denoising_mha_eval_with, denoising_mha_train_kept, sdpa_mha, DaVersion, EvalKeys, MhaBias,
    MhaWeights,
};
use crate::layer::Version;

/// Config of `denoising`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenoisingConfig {
    /// Which official version's constants (`v1`: π floor 1e-8, eval penalty Σ log V; `head`:
    /// floor = float tiny, ½ Σ log V).
    #[serde(default)]
    pub version: Version,
    /// Attention heads; they must divide the latent width.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub heads: usize,
    /// Biases on the projections (the NVAE decoder has none).
    #[serde(default)]
    pub bias: bool,
}

/// Config of `sdpa`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SdpaConfig {
    /// Attention heads; they must divide the latent width.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub heads: usize,
    /// Biases on the projections.
    #[serde(default = "yes")]
    pub bias: bool,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// The projections of one multi-head module, `[out, in]` as PyTorch stores them.
struct Projections {
    heads: usize,
    width: usize,
    weights: [ParamId; 4],
    biases: Option<[ParamId; 4]>,
}

impl Projections {
    fn new(
        params: &mut ParamBuilder,
        width: usize,
        heads: usize,
        bias: bool,
        plugin: &str,
    ) -> Result<Self> {
        if !width.is_multiple_of(heads) {
            return Err(Error::Config {
                plugin: plugin.into(),
                message: format!("{heads} heads do not divide the latent width {width}"),
            });
        }
        // As the NVAE's `train.py` leaves `nn.MultiheadAttention`: Xavier-uniform over the
        // packed `[3·width, width]` in-projection and over the `[width, width]` output
        // projection, zero biases.
        let in_proj = (6.0 / (4.0 * width as f32)).sqrt();
        let out_proj = (6.0 / (2.0 * width as f32)).sqrt();
        let shape = [width, width];
        let weights = [
            params.uniform("q.weight", &shape, in_proj),
            params.uniform("k.weight", &shape, in_proj),
            params.uniform("v.weight", &shape, in_proj),
            params.uniform("out.weight", &shape, out_proj),
        ];
        let biases = bias.then(|| {
            ["q", "k", "v", "out"].map(|n| params.constant(&format!("{n}.bias"), &[width], 0.0))
        });
        Ok(Self {
            heads,
            width,
            weights,
            biases,
        })
    }

    fn get<D: Backend>(&self, params: &ParamStore<D>) -> MhaWeights<f32, D> {
        let (m, l) = (Model(self.width), Latent(self.width));
        let [q, k, v, out] = self.weights;
        MhaWeights {
            heads: Head(self.heads),
            q: params.get(q, (m, m)),
            k: params.get(k, (m, l)),
            v: params.get(v, (m, l)),
            out: params.get(out, (m, m)),
            bias: self.biases.map(|[q, k, v, out]| MhaBias {
                q: params.get(q, (m,)),
                k: params.get(k, (m,)),
                v: params.get(v, (m,)),
                out: params.get(out, (m,)),
            }),
        }
    }
}

/// The built `denoising` attention.
pub struct Denoising {
    proj: Projections,
    version: DaVersion,
}

impl Denoising {
    /// [`Attention::attend`], computing only the queries `query_keep` flags in training.
    ///
    /// # Shapes
    /// `queries: (Batch, Seq, Latent)`, `query_keep: Batch × Seq` → `(Batch, Seq, Latent)`
    fn attend_queries<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        queries: Traced<(Batch, Seq, Latent), D>,
        query_keep: Option<&[bool]>,
        latent: &Mixture<D>,
    ) -> Result<Traced<(Batch, Seq, Latent), D>> {
        let (b, s, l) = *queries.shape();
        let q = queries.reshape_like(&(b, s, Model(l.0)));
        let weights = self.proj.get(ctx.params);
        let out = match ctx.mode {
            Mode::Train => {
                let (keep, pi) = (latent.keep(), latent.weights_or_uniform());
                let latent_terms = (latent.z.reuse(), pi, &keep[..]);
                denoising_mha_train_kept(q, query_keep, weights, latent_terms, self.version)
            }
            Mode::Eval => {
                let keys = self.eval_keys(latent);
                denoising_mha_eval_with(q, weights, keys, self.version).0
            }
        };
        Ok(out.reshape_like(&(b, s, l)))
    }

    /// The terms of `latent`'s components that evaluation-time attention reads.
    fn eval_keys<D: Backend>(&self, latent: &Mixture<D>) -> EvalKeys<f32, D> {
        let log_var = match &latent.log_var {
            Some(v) => v.reuse(),
            None => lift(latent.mean.device().zeros_like(&latent.dims())) - 200.0,
        };
        let (keep, pi) = (latent.keep(), latent.weights_or_uniform());
        let head_width = self.proj.width / self.proj.heads;
        EvalKeys::new(
            latent.mean.reuse(),
            log_var,
            pi,
            &keep,
            self.version,
            head_width,
        )
    }
}

impl<D: Backend> Attention<D> for Denoising {
    fn attend(
        &self,
        ctx: &mut Ctx<D>,
        queries: Traced<(Batch, Seq, Latent), D>,
        latent: &Mixture<D>,
    ) -> Result<Traced<(Batch, Seq, Latent), D>> {
        self.attend_queries(ctx, queries, None, latent)
    }

    /// In training, padded queries are neither projected nor output-projected.
    fn attend_kept(
        &self,
        ctx: &mut Ctx<D>,
        queries: Traced<(Batch, Seq, Latent), D>,
        keep: &[bool],
        latent: &Mixture<D>,
    ) -> Result<Traced<(Batch, Seq, Latent), D>> {
        self.attend_queries(ctx, queries, Some(keep), latent)
    }

    /// In evaluation, the components' keys, values and prior terms ([`EvalKeys`]).
    fn prepare(&self, ctx: &mut Ctx<D>, latent: &Mixture<D>) -> Result<Option<Prepared>> {
        Ok(match ctx.mode {
            Mode::Train => None,
            Mode::Eval => Some(Box::new(self.eval_keys(latent).reuse())),
        })
    }

    fn attend_prepared(
        &self,
        ctx: &mut Ctx<D>,
        queries: Traced<(Batch, Seq, Latent), D>,
        latent: &Mixture<D>,
        prepared: &Prepared,
    ) -> Result<Traced<(Batch, Seq, Latent), D>> {
        let keys = match (ctx.mode, prepared.downcast_ref::<EvalKeys<f32, D>>()) {
            (Mode::Eval, Some(keys)) => keys.reuse(),
            _ => return self.attend(ctx, queries, latent),
        };
        let (b, s, l) = *queries.shape();
        let q = queries.reshape_like(&(b, s, Model(l.0)));
        let weights = self.proj.get(ctx.params);
        let (out, _) = denoising_mha_eval_with(q, weights, keys, self.version);
        Ok(out.reshape_like(&(b, s, l)))
    }
}

pub struct Sdpa {
    proj: Projections,
}

impl<D: Backend> Attention<D> for Sdpa {
    /// # Shapes
    /// `queries: (Batch, Seq, Latent)`, latent `(Batch, Comp, Latent)` → `(Batch, Seq, Latent)`
    fn attend(
        &self,
        ctx: &mut Ctx<D>,
        queries: Traced<(Batch, Seq, Latent), D>,
        latent: &Mixture<D>,
    ) -> Result<Traced<(Batch, Seq, Latent), D>> {
        let (b, s, l) = *queries.shape();
        let q = queries.reshape_like(&(b, s, Model(l.0)));
        let keep = latent.keep();
        let (out, _) = sdpa_mha(q, self.proj.get(ctx.params), latent.z.reuse(), &keep);
        Ok(out.reshape_like(&(b, s, l)))
    }
}

fn build_denoising(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    latent: usize,
) -> Result<Box<dyn DynAttention>> {
    let cfg: DenoisingConfig = parse_config("denoising", config)?;
    let version = match cfg.version {
        Version::V1 => DaVersion::V1,
        Version::Head => DaVersion::Head,
    };
    let proj = Projections::new(params, latent, cfg.heads, cfg.bias, "denoising")?;
    Ok(Box::new(Denoising { proj, version }))
}

fn build_sdpa(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    latent: usize,
) -> Result<Box<dyn DynAttention>> {
    let cfg: SdpaConfig = parse_config("sdpa", config)?;
    Ok(Box::new(Sdpa {
        proj: Projections::new(params, latent, cfg.heads, cfg.bias, "sdpa")?,
    }))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "denoising",
        version: env!("CARGO_PKG_VERSION"),
        description: "NVIB's denoising attention over a mixture latent (train: z and pi; eval: N(mu, var))",
        schema: schema_of::<DenoisingConfig>,
        example: || vaezoo_core::serde_json::json!({ "version": "head", "heads": 1, "bias": true }),
        partners: &["nvib"],
        build: Build::Attention(build_denoising),
    }
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "sdpa",
        version: env!("CARGO_PKG_VERSION"),
        description: "Multi-head scaled dot-product attention over the latent's components",
        schema: schema_of::<SdpaConfig>,
        example: || vaezoo_core::serde_json::json!({ "heads": 1 }),
        partners: &["nvib"],
        build: Build::Attention(build_sdpa),
    }
}
