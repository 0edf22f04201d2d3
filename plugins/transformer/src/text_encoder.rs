//! `transformer_encoder`: the NVAE's encoder as a plugin (§D). Token ids become
//! `PE(Dropout(Emb(ids)))`, then the post-LN encoder stack with its final LayerNorm; the states
//! keep the padding mask, so a sequence bottleneck (`nvib`) sees which states are real.
//!
//! As the official model, the encoder reads `ids[:, 1:]` (no `[CLS]`). As the official model
//! too, the encoder and decoder share one token embedding by default (`shared_embedding`: the
//! model's top-level `embedding.weight`, declared by whichever plugin comes first); with
//! `shared_embedding: false` a plugin owns its table (`encoder.embedding.weight`,
//! `decoder.embedding.weight`). The vocabulary size comes from the data ([`DataDims::vocab`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Head, Hidden, Model, Seq, Vocab};
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, Encoder, EncoderStates, Observation, TokenBatch};
use vaezoo_core::registry::{
    parse_config, schema_of, Build, BuiltEncoder, DataDims, PluginRegistration,
};
use vaezoo_core::{Backend, Error, Result, Traced};

use crate::dropout::Dropout;
use crate::embedding::TokenEmbedding;
use crate::encoder_layer::LayerSizes;
use crate::positional::PositionalEncoding;
use crate::stack::EncoderStack;

/// The sizes shared by `transformer_encoder` and `transformer_decoder`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// d_model (the NVAE's DIM_H); the feed-forward is 4·d_model wide.
    #[schemars(range(min = 1, max = 65_536))]
    pub d_model: usize,
    /// Attention heads; they must divide d_model.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub heads: usize,
    /// Layers of the stack.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub layers: usize,
    /// Dropout probability (embeddings, residual branches, feed-forward).
    #[serde(default = "default_dropout")]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub dropout: f64,
    /// Read the model's one token embedding (`embedding.weight`), shared with the decoder as
    /// in the official NVAE and its baselines; `false` gives this plugin a table of its own.
    #[serde(default = "yes")]
    pub shared_embedding: bool,
}

fn one() -> usize {
    1
}
fn default_dropout() -> f64 {
    0.1
}
/// The default of `shared_embedding`.
pub fn yes() -> bool {
    true
}

impl TransformerConfig {
    /// The layer sizes, checked (`plugin` names the plugin in errors).
    pub fn sizes(&self, plugin: &str) -> Result<LayerSizes> {
        if !self.d_model.is_multiple_of(self.heads) || !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config {
                plugin: plugin.into(),
                message: format!(
                    "{} heads must divide d_model {} and dropout {} must be in [0, 1)",
                    self.heads, self.d_model, self.dropout
                ),
            });
        }
        Ok(LayerSizes {
            width: Model(self.d_model),
            heads: Head(self.heads),
            hidden: Hidden(4 * self.d_model),
            dropout: self.dropout,
        })
    }
}

/// The vocabulary of text data; vector data (no vocabulary) is a config error.
pub fn vocab_of(data: DataDims, plugin: &str) -> Result<Vocab> {
    if data.vocab == 0 {
        return Err(Error::Config {
            plugin: plugin.into(),
            message: "needs text data (a token vocabulary)".into(),
        });
    }
    Ok(Vocab(data.vocab))
}

/// The tokens of a text observation; vector observations are an error.
pub fn tokens_of<'a, D: Backend>(obs: &'a Observation<D>, plugin: &str) -> Result<&'a TokenBatch> {
    match &obs.tokens {
        Some(t) if t.seq.0 >= 2 => Ok(t),
        Some(t) => Err(Error::Shape(format!(
            "{plugin} needs at least 2 positions ([CLS] … [SEP]), got {}",
            t.seq.0
        ))),
        None => Err(Error::Shape(format!("{plugin} reads text observations"))),
    }
}

/// Positions `from..from + len` of every row of a row-major `rows × seq` buffer.
pub fn columns<T: Copy>(v: &[T], seq: usize, from: usize, len: usize) -> Vec<T> {
    v.chunks(seq)
        .flat_map(|r| &r[from..from + len])
        .copied()
        .collect()
}

/// Token embedding, dropout and positional encoding: the input of either stack.
#[derive(Clone, Debug)]
pub struct TextInput {
    embedding: TokenEmbedding,
    dropout: Dropout,
    positional: PositionalEncoding,
}

impl TextInput {
    /// Declares this plugin's `embedding.weight`, or with `shared` reads the model's one.
    pub fn new(
        params: &mut ParamBuilder,
        vocab: Vocab,
        sizes: LayerSizes,
        shared: bool,
    ) -> Result<Self> {
        let embedding = if shared {
            TokenEmbedding::shared(params, vocab, sizes.width).map_err(|e| Error::Config {
                plugin: "transformer_encoder/transformer_decoder".into(),
                message: format!(
                    "{e}; a shared embedding needs one d_model for encoder and decoder \
                     (or `\"shared_embedding\": false`)"
                ),
            })?
        } else {
            TokenEmbedding::new(params, "embedding", vocab, sizes.width)
        };
        Ok(Self {
            embedding,
            dropout: Dropout::new(sizes.dropout),
            positional: PositionalEncoding::new(sizes.width),
        })
    }

    /// `PE(Dropout(Emb(ids)))`, positions from 1.
    ///
    /// # Shapes
    /// `ids: Batch × Seq` → `(Batch, Seq, Model)`
    pub fn forward<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        ids: &[usize],
        batch: Batch,
        seq: Seq,
    ) -> Result<Traced<(Batch, Seq, Model), D>> {
        self.forward_from(ctx, ids, batch, seq, 1)
    }

    /// As [`forward`](Self::forward), positions from `first` (a decoding step's new tokens).
    ///
    /// # Shapes
    /// `ids: Batch × Seq` → `(Batch, Seq, Model)`
    pub fn forward_from<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        ids: &[usize],
        batch: Batch,
        seq: Seq,
        first: usize,
    ) -> Result<Traced<(Batch, Seq, Model), D>> {
        let x = self.embedding.forward(ctx.params, ids, batch, seq)?;
        let x = self.dropout.forward(x, ctx.mode, ctx.rng);
        Ok(self.positional.forward_from(x, first))
    }
}

/// The built `transformer_encoder`.
pub struct TransformerEncoder {
    input: TextInput,
    stack: EncoderStack,
}

impl TransformerEncoder {
    /// Declares the embedding and the stack.
    pub fn new(cfg: &TransformerConfig, params: &mut ParamBuilder, data: DataDims) -> Result<Self> {
        const NAME: &str = "transformer_encoder";
        let sizes = cfg.sizes(NAME)?;
        Ok(Self {
            input: TextInput::new(params, vocab_of(data, NAME)?, sizes, cfg.shared_embedding)?,
            stack: EncoderStack::new(params, "stack", cfg.layers, sizes)?,
        })
    }
}

impl<D: Backend> Encoder<D> for TransformerEncoder {
    /// # Shapes
    /// `obs.tokens: Batch × Seq` → `states: (Batch, Seq − 1, Model)`, mask `Batch × (Seq − 1)`
    fn forward(&self, ctx: &mut Ctx<D>, obs: &Observation<D>) -> Result<EncoderStates<D>> {
        let tokens = tokens_of(obs, "transformer_encoder")?;
        let (batch, len) = (tokens.batch(), tokens.seq.0 - 1);
        let ids = columns(&tokens.ids, tokens.seq.0, 1, len);
        let keep = columns(&tokens.keep, tokens.seq.0, 1, len);
        let x = self.input.forward(ctx, &ids, batch, Seq(len))?;
        let states = self.stack.forward(ctx.params, x, &keep, ctx.mode, ctx.rng);
        Ok(EncoderStates {
            states,
            mask: Some(keep),
        })
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    data: DataDims,
) -> Result<BuiltEncoder> {
    let cfg: TransformerConfig = parse_config("transformer_encoder", config)?;
    Ok(BuiltEncoder {
        module: Box::new(TransformerEncoder::new(&cfg, params, data)?),
        output_dim: cfg.d_model,
    })
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "transformer_encoder",
        version: env!("CARGO_PKG_VERSION"),
        description: "The NVAE's post-LN Transformer encoder over token ids (text data)",
        schema: schema_of::<TransformerConfig>,
        example: || vaezoo_core::serde_json::json!({ "d_model": 8, "heads": 2, "layers": 1, "dropout": 0.1 }),
        partners: &[],
        build: Build::Encoder(build),
    }
}
