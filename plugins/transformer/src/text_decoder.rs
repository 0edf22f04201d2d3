//! `transformer_decoder`: the NVAE's decoder as a plugin (§D). Teacher forcing: the decoder
//! reads `ids[:, :-1]` (`[CLS] w₁ …`) with causal, key-padded self-attention and predicts
//! `ids[:, 1:]` (`w₁ … [SEP]`); the loss is the official mean token cross-entropy
//! ([`projected_token_nll`](crate::loss::projected_token_nll): PAD targets count 0 but stay
//! in the denominator).
//!
//! Each layer's cross-attention is the [`Attention`](vaezoo_core::plugin::Attention) plugin the
//! config names (`denoising` for the NVAE, `sdpa` for the baselines), one module per layer,
//! its parameters under `decoder.stack.layers.{i}.multihead_attn.*` (PyTorch's names). The latent
//! width must equal d_model, as in the official model.
//!
//! Generation ([`Decoder::greedy`], [`TransformerDecoder::greedy_with`]) is the official greedy
//! decoding (§D): from `[CLS]`, the argmax token, for exactly the steps asked (no early stop),
//! in evaluation. The official code re-decodes the whole prefix at every step; here each layer
//! keeps the keys and values of the positions decoded so far (a KV cache), so step t embeds
//! only the new token (at position t + 1) and its self-attention reads the t cached positions.
//! The logits are the same, up to float rounding. Per row, with L layers, width d, C latent
//! components and V tokens, step t costs O(L·(t·d + d² + C·d²) + d·V) (the attention plugin
//! projects the latent again at every step: the C·d² term), so T steps cost
//! O(L·(T²·d + T·d² + T·C·d²) + T·d·V), where re-decoding the prefix costs
//! O(L·(T³·d + T²·d² + T²·C·d + T·C·d²)) in the layers alone.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Feature, Latent, Model, Seq, Vocab};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::{Embedding, Init};
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::plugin::{Ctx, Decoder, DynAttention, DynDecoder, Mode, Observation, Prepared};
use vaezoo_core::registry::{
    parse_config, schema_of, Build, DataDims, PluginKind, PluginRegistration, Registry,
};
use vaezoo_core::rng::HostRng;
use vaezoo_core::spec::Component;
use vaezoo_core::{Backend, Error, Result, Traced};

use crate::decoder_layer::Cross;
use crate::dense::Dense;
use crate::loss::projected_token_nll;
use crate::stack::DecoderStack;
use crate::text_encoder::{columns, tokens_of, vocab_of, yes, TextInput, TransformerConfig};

const NAME: &str = "transformer_decoder";

/// Config of `transformer_decoder`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformerDecoderConfig {
    /// d_model; it must equal the latent width.
    #[schemars(range(min = 1, max = 65_536))]
    pub d_model: usize,
    /// Self-attention heads; they must divide d_model.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub heads: usize,
    /// Decoder layers, each with its own cross-attention.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub layers: usize,
    /// Dropout probability.
    #[serde(default = "default_dropout")]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub dropout: f64,
    /// The attention plugin through which each layer reads the latent.
    #[schemars(schema_with = "cross_attention_schema")]
    pub cross_attention: Component,
    /// Add a learned vector of the row's class to every input embedding (zero at the start),
    /// making the decoder p(x | z, c): the decoder of a conditional text VAE. The labels come
    /// from the dataset.
    #[serde(default)]
    pub class_conditional: bool,
    /// Read the model's one token embedding (`embedding.weight`), shared with the encoder as
    /// in the official NVAE and its baselines; `false` gives the decoder a table of its own.
    #[serde(default = "yes")]
    pub shared_embedding: bool,
}

fn one() -> usize {
    1
}
fn default_dropout() -> f64 {
    0.1
}

/// `cross_attention` names one of the built-in attention plugins, its config checked by that
/// plugin's schema.
fn cross_attention_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let schema = vaezoo_core::component_schema::builtin_component_schema(
        PluginKind::Attention,
        "The attention plugin through which each layer reads the latent.",
        generator.definitions_mut(),
    );
    schema.try_into().expect("a component schema is an object")
}

/// The built `transformer_decoder`; it decodes greedily with a KV cache, O(t) work at step t
/// (see the module documentation).
pub struct TransformerDecoder {
    input: TextInput,
    stack: DecoderStack,
    cross: Vec<Box<dyn DynAttention>>,
    output: Dense<Model, Vocab>,
    class: Option<Embedding<Model>>,
    width: Model,
}

impl TransformerDecoder {
    /// Declares the embedding, the stack, one cross-attention per layer and the output layer.
    pub fn new(
        cfg: &TransformerDecoderConfig,
        params: &mut ParamBuilder,
        latent_dim: usize,
        data: DataDims,
    ) -> Result<Self> {
        let shared = TransformerConfig {
            d_model: cfg.d_model,
            heads: cfg.heads,
            layers: cfg.layers,
            dropout: cfg.dropout,
            shared_embedding: cfg.shared_embedding,
        };
        let sizes = shared.sizes(NAME)?;
        if latent_dim != cfg.d_model {
            return Err(Error::Config {
                plugin: NAME.into(),
                message: format!(
                    "d_model {} differs from the latent width {latent_dim}",
                    cfg.d_model
                ),
            });
        }
        let vocab = vocab_of(data, NAME)?;
        let input = TextInput::new(params, vocab, sizes, cfg.shared_embedding)?;
        let stack = DecoderStack::new(params, "stack", cfg.layers, sizes)?;
        let registry = Registry::builtin()?;
        let entry = registry.get(PluginKind::Attention, &cfg.cross_attention.kind)?;
        let Build::Attention(build) = entry.build else {
            unreachable!("entries are keyed by the kind of their builder")
        };
        let cross = (0..cfg.layers)
            .map(|i| {
                params.set_prefix(&format!("decoder.stack.layers.{i}.multihead_attn"));
                build(&cfg.cross_attention.config, params, latent_dim)
            })
            .collect::<Result<_>>()?;
        params.set_prefix("decoder");
        let output = Dense::new(params, "output", sizes.width, vocab, true);
        let class = match (cfg.class_conditional, data.classes) {
            (false, _) => None,
            (true, 0) => {
                return Err(Error::Config {
                    plugin: NAME.into(),
                    message: "class_conditional needs a labelled dataset; this one has no classes"
                        .into(),
                })
            }
            (true, classes) => Some(Embedding::new(
                params,
                "class_embedding",
                classes,
                sizes.width,
                Init::Constant(0.0),
            )),
        };
        Ok(Self {
            input,
            stack,
            cross,
            output,
            class,
            width: sizes.width,
        })
    }

    /// `x` plus the class vector of each row, for a class-conditional decoder.
    ///
    /// # Shapes
    /// `x: (Batch, Seq, Model)`, `labels: [Batch]` → `(Batch, Seq, Model)`
    fn condition<D: Backend>(
        &self,
        params: &ParamStore<D>,
        x: Traced<(Batch, Seq, Model), D>,
        labels: Option<&[usize]>,
    ) -> Result<Traced<(Batch, Seq, Model), D>> {
        let Some(class) = &self.class else {
            return Ok(x);
        };
        let labels = labels.ok_or_else(|| Error::Config {
            plugin: NAME.into(),
            message: "this class-conditional decoder needs a class label for every row".into(),
        })?;
        let shape = *x.shape();
        let (x, tape) = x.split_tape();
        let rows = class.forward(params, labels, NAME)?.broadcast_like(&shape);
        Ok(rows + x.put_tape(tape))
    }

    /// Teacher forcing: the last layer's states at every position of `ids` (causal,
    /// key-padded self-attention), in `ctx.mode`; the output layer maps them to logits.
    ///
    /// # Shapes
    /// `ids`, `keep`: `Batch × Seq`, `latent.z: (Batch, Comp, Latent)` → `(Batch, Seq, Model)`
    fn hidden<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
        ids: &[usize],
        keep: &[bool],
        (batch, seq): (Batch, Seq),
    ) -> Result<Traced<(Batch, Seq, Model), D>> {
        let x = self.input.forward(ctx, ids, batch, seq)?;
        let x = self.condition(ctx.params, x, labels)?;
        let (params, mode) = (ctx.params, ctx.mode);
        let mut closures = self.crosses(params, mode, latent);
        let mut cross: Vec<&mut Cross<f32, D>> = closures.iter_mut().map(|c| &mut **c).collect();
        self.stack
            .forward(params, x, keep, &mut cross, mode, ctx.rng)
    }

    /// Greedy decoding ([`Decoder::greedy`]) with a KV cache, in evaluation whatever
    /// `ctx.mode`; `logits` sees each step's logits, row-major `Batch × Vocab`, before the
    /// argmax (the first maximum). See the module documentation for the cost.
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)` → Batch × `steps` ids
    pub fn greedy_with<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
        bos: usize,
        steps: usize,
        mut logits: impl FnMut(&[f32]),
    ) -> Result<Vec<Vec<usize>>> {
        let (batch, _, width) = latent.dims();
        if width.0 != self.width.0 {
            return Err(Error::Shape(format!(
                "{NAME} of d_model {} reads latents of width {}",
                self.width.0, width.0
            )));
        }
        let params = ctx.params;
        let mut ctx = Ctx {
            params,
            mode: Mode::Eval,
            rng: &mut *ctx.rng,
        };
        let mut closures = self.crosses(params, Mode::Eval, latent);
        let mut cross: Vec<&mut Cross<f32, D>> = closures.iter_mut().map(|c| &mut **c).collect();
        let mut cache = self.stack.cache();
        let vocab = self.output.out_dim().0;
        let mut last = vec![bos; batch.0];
        let mut ids = vec![Vec::with_capacity(steps); batch.0];
        for t in 0..steps {
            let x = self
                .input
                .forward_from(&mut ctx, &last, batch, Seq(1), t + 1)?;
            let x = self.condition(params, x, labels)?;
            let y = self
                .stack
                .step(params, x, &mut cache, &mut cross, ctx.rng)?;
            let scores = self.output.forward(params, y).as_vec();
            logits(&scores);
            for ((row, next), ids) in scores.chunks(vocab).zip(&mut last).zip(&mut ids) {
                *next = argmax(row);
                ids.push(*next);
            }
        }
        Ok(ids)
    }

    /// Each layer's cross-attention over `latent`: its attention plugin, queries viewed as
    /// `Latent` (d_model = latent width).
    fn crosses<'a, D: Backend>(
        &'a self,
        params: &'a ParamStore<D>,
        mode: Mode,
        latent: &'a Mixture<D>,
    ) -> Vec<Box<Cross<'a, f32, D>>> {
        let width = self.width;
        self.cross
            .iter()
            .map(|attention| {
                // In evaluation, the attention's work on the latent alone, done at the first
                // call and shared by the later ones (every step of greedy decoding).
                let mut prepared: Option<Option<Prepared>> = None;
                Box::new(
                    move |q: Traced<(Batch, Seq, Model), D>,
                          keep: Option<&[bool]>,
                          rng: &mut HostRng| {
                        let (b, s, _) = *q.shape();
                        let mut ctx = Ctx { params, mode, rng };
                        let q = q.reshape_like(&(b, s, Latent(width.0)));
                        let attention = D::attention(&**attention);
                        if mode == Mode::Eval && prepared.is_none() {
                            prepared = Some(attention.prepare(&mut ctx, latent)?);
                        }
                        let out = match (prepared.as_ref().and_then(Option::as_ref), keep) {
                            (Some(p), _) => attention.attend_prepared(&mut ctx, q, latent, p)?,
                            (None, Some(keep)) => {
                                attention.attend_kept(&mut ctx, q, keep, latent)?
                            }
                            (None, None) => attention.attend(&mut ctx, q, latent)?,
                        };
                        Ok(out.reshape_like(&(b, s, width)))
                    },
                ) as Box<Cross<'a, f32, D>>
            })
            .collect()
    }
}

/// The index of the first maximum (0 for an empty or all-NaN row).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}

impl<D: Backend> Decoder<D> for TransformerDecoder {
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)`, `obs.tokens: Batch × Seq` → `(Batch,)`
    fn nll(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        obs: &Observation<D>,
    ) -> Result<Traced<(Batch,), D>> {
        let tokens = tokens_of(obs, NAME)?;
        let (batch, len, seq) = (tokens.batch(), tokens.seq.0 - 1, tokens.seq.0);
        let inputs = columns(&tokens.ids, seq, 0, len);
        let keep = columns(&tokens.keep, seq, 0, len);
        let targets = columns(&tokens.ids, seq, 1, len);
        let labels = obs.labels.as_deref();
        let hidden = self.hidden(ctx, latent, labels, &inputs, &keep, (batch, Seq(len)))?;
        projected_token_nll(ctx.params, &self.output, hidden, &targets)
    }

    /// [`TransformerDecoder::greedy_with`], the logits unread.
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)` → Batch × `steps` ids
    fn greedy(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
        bos: usize,
        steps: usize,
    ) -> Result<Vec<Vec<usize>>> {
        self.greedy_with(ctx, latent, labels, bos, steps, |_| {})
    }

    fn reads_labels(&self) -> bool {
        self.class.is_some()
    }

    /// Text has no mean observation: reconstructions and samples are decoded token by token.
    fn mean(
        &self,
        _ctx: &mut Ctx<D>,
        _latent: &Mixture<D>,
        _labels: Option<&[usize]>,
    ) -> Result<Tensor<(Batch, Feature), f32, D>> {
        Err(Error::Unsupported(format!(
            "{NAME} has no mean observation; text is decoded token by token"
        )))
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    latent_dim: usize,
    data: DataDims,
) -> Result<Box<dyn DynDecoder>> {
    let cfg: TransformerDecoderConfig = parse_config(NAME, config)?;
    Ok(Box::new(TransformerDecoder::new(
        &cfg, params, latent_dim, data,
    )?))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: NAME,
        version: env!("CARGO_PKG_VERSION"),
        description: "The NVAE's post-LN Transformer decoder; cross-attention through an attention plugin",
        schema: schema_of::<TransformerDecoderConfig>,
        // Narrower than the encoder example (8), so this decoder owns its embedding table;
        // the encoder example covers dropout (here it moved finite differences across ReLU
        // kinks of the composed VT models).
        example: || vaezoo_core::serde_json::json!({
            "d_model": 3, "heads": 1, "layers": 2, "dropout": 0.0, "shared_embedding": false,
            "cross_attention": { "kind": "denoising", "config": { "version": "head", "heads": 1 } }
        }),
        partners: &["transformer_encoder", "nvib", "dirichlet_process"],
        build: Build::Decoder(build),
    }
}

#[cfg(test)]
mod tests;
