//! Text from a trained text model (§F of `docs/nvib-math.md`): teacher-forced token
//! cross-entropy, greedy reconstructions, prior samples and interpolations, every latent read in
//! evaluation mode. The evaluation and the `sample`, `reconstruct` and `interpolate` commands
//! all go through [`TextModel`].

use std::cell::OnceCell;

use vaezoo_core::axes::Seq;
use vaezoo_core::backend::Reuse;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, LatentSpace, Mode, Observation, TokenBatch};
use vaezoo_core::rng::HostRng;
use vaezoo_core::spec::DataSpec;
use vaezoo_core::Backend;
use vaezoo_nvib::space::MixtureSpace;

use super::interpolation::PositionwiseSpace;
use super::{pad_batch, EncodedCorpus, TextTokenizer};
use crate::model::Model;
use crate::session::Restored;
use crate::{Error, Result};

/// A text model with its weights and tokenizer.
pub struct TextModel<'a, D: Backend> {
    /// The built plugins.
    pub model: &'a Model,
    /// The weights.
    pub params: &'a ParamStore<D>,
    /// The run's tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// The most ids per sentence (the spec's `max_len`).
    pub max_len: usize,
    /// How many components the bottleneck gives a full-length sentence, once probed.
    sample_components: OnceCell<usize>,
}

/// Token cross-entropy of some sentences, teacher-forced.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenCe {
    /// Σ −log p over every predicted token (the word pieces and `[SEP]`), in nats.
    pub nats: f64,
    /// Predicted tokens: word pieces plus `[SEP]`, per sentence.
    pub predicted: usize,
    /// Word pieces without `[SEP]`: the official PPL's denominator.
    pub pieces: usize,
}

impl TokenCe {
    /// The counts of a batch from the decoder's per-row loss, Σ_t CE / (Seq − 1) (the official
    /// mean over every position, PAD in the denominator, §D).
    pub fn of_rows(per_row: &[f32], tokens: &TokenBatch) -> Self {
        let targets = (tokens.seq.0 - 1) as f64;
        let rows = tokens.batch().0;
        let predicted = tokens.keep.iter().filter(|&&k| k).count() - rows;
        Self {
            nats: per_row.iter().map(|&v| f64::from(v) * targets).sum(),
            predicted,
            pieces: predicted - rows,
        }
    }

    /// Adds another batch's counts.
    pub fn add(&mut self, other: TokenCe) {
        self.nats += other.nats;
        self.predicted += other.predicted;
        self.pieces += other.pieces;
    }

    /// Mean nats per predicted token.
    pub fn per_token(&self) -> f64 {
        self.nats / self.predicted.max(1) as f64
    }

    /// The official perplexity, exp(Σ CE / word pieces): `[SEP]`'s CE is in the sum but not
    /// in the count (`utils.py:259-283`), so it is a little above exp(per-token CE).
    pub fn ppl(&self) -> f64 {
        (self.nats / self.pieces as f64).exp()
    }
}

impl<'a, D: Backend> TextModel<'a, D> {
    /// The text model of a restored run, with its tokenizer ([`Restored::tokenizer`]).
    pub fn of_run(r: &'a Restored<D>, tokenizer: &'a TextTokenizer) -> Result<Self> {
        let DataSpec::Text { max_len, .. } = r.spec.data else {
            return Err(Error::Usage(format!(
                "{} is not a text run",
                r.run.root().display()
            )));
        };
        Ok(Self {
            model: &r.model,
            params: &r.params,
            tokenizer,
            max_len,
            sample_components: OnceCell::new(),
        })
    }

    fn ctx<'c>(&'c self, rng: &'c mut HostRng) -> Ctx<'c, D> {
        Ctx {
            params: self.params,
            mode: Mode::Eval,
            rng,
        }
    }

    /// `sentences` tokenized and padded into one batch, with `labels` (one per sentence).
    ///
    /// # Shapes
    /// → `tokens: Batch × Seq` with `Batch = sentences.len()`
    pub fn observation<S: AsRef<str>>(
        &self,
        sentences: &[S],
        labels: Option<Vec<usize>>,
    ) -> Result<Observation<D>> {
        let corpus = EncodedCorpus {
            ids: self.tokenizer.encode_all(sentences, self.max_len)?,
            labels,
        };
        let rows: Vec<usize> = (0..sentences.len()).collect();
        let b = pad_batch(&corpus, &rows, self.tokenizer.pad_id());
        let tokens = TokenBatch::new(b.ids, b.mask, Seq(b.seq))?;
        Ok(Observation::text(self.params.device(), tokens, b.labels))
    }

    /// The posterior latents (their means) of a batch.
    pub fn encode(&self, rng: &mut HostRng, obs: &Observation<D>) -> Result<Mixture<D>> {
        self.model.posterior(&mut self.ctx(rng), obs)
    }

    /// Teacher-forced token cross-entropy of a batch, with the latent the posterior's mean.
    pub fn token_ce(&self, rng: &mut HostRng, obs: &Observation<D>) -> Result<TokenCe> {
        let tokens = obs.tokens.as_ref().expect("text observations carry tokens");
        let latent = self.encode(rng, obs)?;
        let per_row = self.model.decode_nll(&mut self.ctx(rng), &latent, obs)?;
        Ok(TokenCe::of_rows(&per_row.as_vec(), tokens))
    }

    /// Greedy decodings of `latent` (given `labels` for a conditional decoder), `steps` tokens
    /// each, as text (cut at `[SEP]`).
    pub fn decode(
        &self,
        rng: &mut HostRng,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
        steps: usize,
    ) -> Result<Vec<String>> {
        let bos = self.tokenizer.bos_id();
        let ids = (self.model).greedy(&mut self.ctx(rng), latent, labels, bos, steps)?;
        ids.iter().map(|row| self.tokenizer.decode(row)).collect()
    }

    /// Greedy reconstructions of a batch: each decoded for as many steps as the batch's longest
    /// source (its word pieces and `[SEP]`), as the official evaluation does.
    pub fn reconstruct(&self, rng: &mut HostRng, obs: &Observation<D>) -> Result<Vec<String>> {
        let seq = obs.tokens.as_ref().map_or(self.max_len, |t| t.seq.0);
        let latent = self.encode(rng, obs)?;
        self.decode(rng, &latent, obs.labels.as_deref(), seq - 1)
    }

    /// `n` sentences decoded greedily from prior latents (for `labels` when the prior is
    /// conditional), each for `max_len` steps. The prior draws as many components as the
    /// bottleneck gives a full-length sentence (one for a pooled latent, one per token plus
    /// NVIB's prior component otherwise). `temperature` scales each draw's distance from its
    /// prior mean, as for images (1: the model as trained).
    pub fn sample(
        &self,
        rng: &mut HostRng,
        n: usize,
        labels: Option<&[usize]>,
        temperature: f32,
    ) -> Result<Vec<String>> {
        let comps = match self.sample_components.get() {
            Some(&comps) => comps,
            None => {
                let comps = self.components_of_full_sentence(rng)?;
                *self.sample_components.get_or_init(|| comps)
            }
        };
        let mut latent = self
            .model
            .prior_sample(&mut self.ctx(rng), n, comps, labels)?;
        if temperature != 1.0 {
            let mean = latent.mean.reuse();
            latent.z = mean.reuse() + (latent.z.reuse() - mean) * temperature;
        }
        self.decode(rng, &latent, labels, self.max_len - 1)
    }

    /// How many components the bottleneck gives a sentence of `max_len` ids.
    fn components_of_full_sentence(&self, rng: &mut HostRng) -> Result<usize> {
        let mut ids = vec![self.tokenizer.unk_id(); self.max_len];
        ids[0] = self.tokenizer.bos_id();
        ids[self.max_len - 1] = self.tokenizer.eos_id();
        let keep = vec![true; self.max_len];
        let tokens = TokenBatch::new(ids, keep, Seq(self.max_len))?;
        let obs = Observation::text(self.params.device(), tokens, None);
        Ok(self.encode(rng, &obs)?.dims().1 .0)
    }

    /// The latent a fraction `tau` of the way from `a` to `b` (batches of the same size):
    /// mixtures with weights (NVIB) join their components weighted (1 − τ)·π₁ and τ·π₂ (§F);
    /// other latents average position by position ([`PositionwiseSpace`]).
    pub fn interpolate(&self, a: &Mixture<D>, b: &Mixture<D>, tau: f32) -> Result<Mixture<D>> {
        if a.weights.is_some() || b.weights.is_some() {
            Ok(MixtureSpace.interpolate(a, b, tau)?)
        } else {
            Ok(PositionwiseSpace.interpolate(a, b, tau)?)
        }
    }
}

/// The components of a latent, for the statistics of latents without their own.
pub fn kept_statistics<D: Backend>(latent: &Mixture<D>) -> Vec<(&'static str, f64)> {
    LatentSpace::<D>::statistics(&MixtureSpace, latent)
}
