//! The plugin traits. Each is generic over the device `D`; a plugin implements it for every
//! [`Backend`], and the registry stores it as the device-independent `Dyn*` trait object.
//!
//! Parameters are owned by the host ([`ParamStore`]) and randomness comes from the host's
//! generator ([`Ctx::rng`]), so a plugin's forward is a pure function of its inputs, the
//! parameters and the host's seed: what a C ABI can wrap later.

use dfdx::prelude::*;

use crate::axes::{Batch, Comp, Feature, Latent, Model, Seq};
use crate::backend::{Backend, Traced};
use crate::error::Result;
use crate::latent::Mixture;
use crate::params::ParamStore;
use crate::rng::{normal_vec, HostRng};

/// Whether a forward pass trains (samples) or evaluates (uses means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Stochastic: posterior samples, dropout.
    Train,
    /// Deterministic: posterior means.
    Eval,
}

/// What every forward pass receives from the host.
pub struct Ctx<'a, D: Backend> {
    /// The model's parameters.
    pub params: &'a ParamStore<D>,
    /// Train or eval.
    pub mode: Mode,
    /// The host's generator: the only source of randomness.
    pub rng: &'a mut HostRng,
}

impl<D: Backend> Ctx<'_, D> {
    /// The device.
    pub fn dev(&self) -> &D {
        self.params.device()
    }

    /// Standard-normal noise of `shape`, drawn from the host generator.
    pub fn normal<S: Shape>(&mut self, shape: S) -> Tensor<S, f32, D> {
        let values = normal_vec(self.rng, shape.num_elements());
        self.dev().tensor_from_vec(values, shape)
    }
}

/// A batch of observations.
pub struct Observation<D: Backend> {
    /// Features scaled to `[0, 1]`, `(Batch, Feature)`; `(Batch, Feature(0))` for text.
    pub x: Tensor<(Batch, Feature), f32, D>,
    /// Class labels, one per example, when the dataset has them.
    pub labels: Option<Vec<usize>>,
    /// Token sequences, for text data; `None` for vector data.
    pub tokens: Option<TokenBatch>,
}

impl<D: Backend> Observation<D> {
    /// A text batch: `tokens` with no features.
    ///
    /// # Shapes
    /// `tokens: Batch × Seq` → `x: (Batch, Feature(0))`
    pub fn text(dev: &D, tokens: TokenBatch, labels: Option<Vec<usize>>) -> Self {
        let x = dev.zeros_like(&(tokens.batch(), Feature(0)));
        Self {
            x,
            labels,
            tokens: Some(tokens),
        }
    }
}

/// A batch of token sequences, right-padded with id 0.
///
/// # Shapes
/// `ids`, `keep`: row-major `Batch × Seq`, `Batch = ids.len() / seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids (`[CLS] … [SEP]` then padding), row-major `Batch × Seq`.
    pub ids: Vec<usize>,
    /// `true` for a real token, `false` for padding, row-major `Batch × Seq`.
    pub keep: Vec<bool>,
    /// Positions per row.
    pub seq: Seq,
}

impl TokenBatch {
    /// Checks that `ids` and `keep` are both `Batch × seq` with `seq > 0`.
    pub fn new(ids: Vec<usize>, keep: Vec<bool>, seq: Seq) -> crate::Result<Self> {
        if seq.0 == 0 || !ids.len().is_multiple_of(seq.0) || keep.len() != ids.len() {
            return Err(crate::Error::Shape(format!(
                "{} ids and {} flags are not rows of {} positions",
                ids.len(),
                keep.len(),
                seq.0
            )));
        }
        Ok(Self { ids, keep, seq })
    }

    /// The number of rows.
    pub fn batch(&self) -> Batch {
        Batch(self.ids.len() / self.seq.0)
    }
}

/// An encoder's output: a sequence of states (length one for vector data).
pub struct EncoderStates<D: Backend> {
    /// `(Batch, Seq, Model)`.
    pub states: Traced<(Batch, Seq, Model), D>,
    /// Which positions are real (not padding), row-major `Batch × Seq`; `None` when all are.
    pub mask: Option<Vec<bool>>,
}

/// One named KL term, per example.
pub struct KlTerm<D: Backend> {
    /// e.g. `"kl"`, or `"kl_g"` / `"kl_d"` for NVIB.
    pub name: String,
    /// `(Batch,)`, in nats.
    pub value: Traced<(Batch,), D>,
    /// Its weight in the training loss (e.g. NVIB's λ_G, λ_D), on top of the spec's
    /// `kl_weight`; evaluation reports the unweighted value.
    pub weight: f32,
}

/// Maps observations to encoder states.
pub trait Encoder<D: Backend>: Send + Sync {
    /// # Shapes
    /// `obs.x: (Batch, Feature)` → `states: (Batch, Seq, Model)`
    fn forward(&self, ctx: &mut Ctx<D>, obs: &Observation<D>) -> Result<EncoderStates<D>>;

    /// Whether it reads the class labels (a conditional model's part); the model's numbers
    /// are then conditional on the class.
    fn reads_labels(&self) -> bool {
        false
    }
}

/// Where training stands: what step-dependent settings (KL schedules, capacity) read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Steps done before this one (0 at the first step).
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Epochs of the whole run (each `total_steps / epochs` steps).
    pub epochs: u64,
}

impl Progress {
    /// The epoch this step is in, from 0.
    pub fn epoch(&self) -> u64 {
        (self.step * self.epochs.max(1) / self.total_steps.max(1)).min(self.epochs.max(1) - 1)
    }
}

/// How a bottleneck's KL terms enter the training loss, on top of the spec's `kl_weight` and
/// schedules: `weight · KL`, or with a capacity C, `weight · |batch mean of KL − C|` (Burgess
/// et al. 2018). Evaluation always reports the plain KL.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KlShaping {
    /// The β of a β-VAE (Burgess's γ when a capacity is set).
    pub weight: f32,
    /// The target KL in nats at this step, if any.
    pub capacity: Option<f32>,
}

impl Default for KlShaping {
    /// Weight 1, no capacity: the ELBO's KL.
    fn default() -> Self {
        Self {
            weight: 1.0,
            capacity: None,
        }
    }
}

/// Maps encoder states to a latent distribution and its sample.
pub trait Bottleneck<D: Backend>: Send + Sync {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp, Latent)`
    fn forward(&self, ctx: &mut Ctx<D>, states: EncoderStates<D>) -> Result<Mixture<D>>;

    /// How the KL terms enter the training loss at `progress` (the ELBO's by default).
    fn kl_shaping(&self, _progress: Progress) -> KlShaping {
        KlShaping::default()
    }
}

/// A prior over latents: KL of a posterior against it, and samples for generation.
pub trait Prior<D: Backend>: Send + Sync {
    /// KL(q ‖ p), one or more named terms. `labels` (one per example, when the data has
    /// them) are the condition of a conditional prior p(z | c); other priors ignore them.
    ///
    /// # Shapes
    /// posterior `(Batch, Comp, Latent)` → each term `(Batch,)`
    fn kl(
        &self,
        ctx: &mut Ctx<D>,
        posterior: &Mixture<D>,
        labels: Option<&[usize]>,
    ) -> Result<Vec<KlTerm<D>>>;

    /// Latents drawn from the prior (given `labels`, one per row, for a conditional prior).
    ///
    /// # Shapes
    /// → `(batch, comps, latent)`
    fn sample(
        &self,
        ctx: &mut Ctx<D>,
        batch: Batch,
        comps: Comp,
        latent: Latent,
        labels: Option<&[usize]>,
    ) -> Result<Mixture<D>>;

    /// log p(z) per example, summed over latent dimensions, when the prior has a density
    /// (importance-sampled likelihoods need it); `None` otherwise.
    ///
    /// # Shapes
    /// `z: (Batch, Comp, Latent)` → `(Batch,)`
    fn log_density(
        &self,
        _ctx: &mut Ctx<D>,
        _z: &Tensor<(Batch, Comp, Latent), f32, D>,
        _labels: Option<&[usize]>,
    ) -> Option<Result<Tensor<(Batch,), f32, D>>> {
        None
    }

    /// Whether it reads the class labels (a conditional model's part); the model's numbers
    /// are then conditional on the class.
    fn reads_labels(&self) -> bool {
        false
    }
}

/// Maps latents to a distribution over observations.
pub trait Decoder<D: Backend>: Send + Sync {
    /// −log p(x | z) per example, in nats.
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)`, `obs.x: (Batch, Feature)` → `(Batch,)`
    fn nll(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        obs: &Observation<D>,
    ) -> Result<Traced<(Batch,), D>>;

    /// The mean of p(x | z), in the data's `[0, 1]` units; `labels` (one per row) are the
    /// condition of a conditional decoder p(x | z, c).
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)` → `(Batch, Feature)`
    fn mean(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
    ) -> Result<Tensor<(Batch, Feature), f32, D>>;

    /// Greedy decoding, for sequence decoders: from `bos`, `steps` argmax tokens per row,
    /// reading `latent` (and `labels`, one per row, for a conditional decoder) in evaluation
    /// mode (no dropout). Returns Batch rows of exactly `steps` ids
    /// (the caller cuts at [SEP]). Decoders of vector observations have no token sequence: the
    /// default is [`Error::Unsupported`](crate::Error::Unsupported).
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)` → Batch × steps ids
    fn greedy(
        &self,
        _ctx: &mut Ctx<D>,
        _latent: &Mixture<D>,
        _labels: Option<&[usize]>,
        _bos: usize,
        _steps: usize,
    ) -> Result<Vec<Vec<usize>>> {
        Err(crate::Error::Unsupported(
            "this decoder does not decode token sequences".into(),
        ))
    }

    /// Whether it reads the class labels (a conditional model's part); the model's numbers
    /// are then conditional on the class.
    fn reads_labels(&self) -> bool {
        false
    }
}

/// Queries read a latent mixture (scaled dot-product attention, or NVIB's denoising attention,
/// which generalises it). Decoders that read a sequence latent do it through this trait.
pub trait Attention<D: Backend>: Send + Sync {
    /// # Shapes
    /// `queries: (Batch, Seq, Latent)`, `latent: (Batch, Comp, Latent)` → `(Batch, Seq, Latent)`
    fn attend(
        &self,
        ctx: &mut Ctx<D>,
        queries: Traced<(Batch, Seq, Latent), D>,
        latent: &Mixture<D>,
    ) -> Result<Traced<(Batch, Seq, Latent), D>>;

    /// [`attend`](Attention::attend) where only the queries flagged in `keep` (row-major
    /// `Batch × Seq`) are read: the others are padding, whose outputs nothing downstream reads,
    /// so an attention may skip their work and leave them zero (no gradient reaches such a
    /// query). The default computes every query.
    ///
    /// # Shapes
    /// As [`attend`](Attention::attend), `keep: Batch × Seq`.
    fn attend_kept(
        &self,
        ctx: &mut Ctx<D>,
        queries: Traced<(Batch, Seq, Latent), D>,
        _keep: &[bool],
        latent: &Mixture<D>,
    ) -> Result<Traced<(Batch, Seq, Latent), D>> {
        self.attend(ctx, queries, latent)
    }

    /// The work on `latent` alone that evaluation-mode [`attend_prepared`] calls over the
    /// same latent can share (greedy decoding attends to one latent at every step), or `None`
    /// (the default) when there is nothing to share.
    ///
    /// [`attend_prepared`]: Attention::attend_prepared
    fn prepare(&self, _ctx: &mut Ctx<D>, _latent: &Mixture<D>) -> Result<Option<Prepared>> {
        Ok(None)
    }

    /// [`attend`](Attention::attend) in evaluation, given what [`prepare`](Attention::prepare)
    /// returned for the same `latent` (the default ignores it). No gradient reaches the latent
    /// through the prepared part.
    ///
    /// # Shapes
    /// As [`attend`](Attention::attend).
    fn attend_prepared(
        &self,
        ctx: &mut Ctx<D>,
        queries: Traced<(Batch, Seq, Latent), D>,
        latent: &Mixture<D>,
        _prepared: &Prepared,
    ) -> Result<Traced<(Batch, Seq, Latent), D>> {
        self.attend(ctx, queries, latent)
    }
}

/// An attention's work on one latent, kept for later calls ([`Attention::prepare`]); only the
/// attention that made it reads it.
pub type Prepared = Box<dyn std::any::Any>;

/// The geometry of a latent kind: how to move between two latents.
pub trait LatentSpace<D: Backend> {
    /// The latent a fraction `tau` of the way from `a` to `b` (`tau = 0` is `a`).
    fn interpolate(&self, a: &Mixture<D>, b: &Mixture<D>, tau: f32) -> Result<Mixture<D>>;

    /// Summary statistics of a batch of latents (e.g. how many components are kept).
    fn statistics(&self, latent: &Mixture<D>) -> Vec<(&'static str, f64)>;

    /// The mean vector of each latent: Σᵢ πᵢ μᵢ over its components (π uniform over the
    /// existing components when the latent has no weights).
    ///
    /// # Shapes
    /// `(Batch, Comp, Latent)` → `(Batch, Latent)`
    fn mean(&self, latent: &Mixture<D>) -> Traced<(Batch, Latent), D> {
        let shape = latent.dims();
        let weights = latent.weights_or_uniform().broadcast_like(&shape);
        (latent.mean.retaped::<OwnedTape<f32, D>>() * weights).sum::<(Batch, Latent), Axis<1>>()
    }
}

/// Vector latents (one component, no mask): straight-line interpolation of means.
pub struct VectorSpace;

impl<D: Backend> LatentSpace<D> for VectorSpace {
    fn interpolate(&self, a: &Mixture<D>, b: &Mixture<D>, tau: f32) -> Result<Mixture<D>> {
        if a.dims() != b.dims() {
            return Err(crate::Error::Shape(format!(
                "cannot interpolate latents of shapes {:?} and {:?}",
                a.dims(),
                b.dims()
            )));
        }
        let mean = a.mean.retaped::<OwnedTape<f32, D>>() * (1.0 - tau)
            + b.mean.retaped::<OwnedTape<f32, D>>() * tau;
        Ok(Mixture::gaussian(mean.retaped(), mean, None, None))
    }

    /// Vector latents have no component statistics.
    fn statistics(&self, _latent: &Mixture<D>) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

macro_rules! device_independent {
    ($($(#[$doc:meta])* $dyn:ident: $tr:ident;)*) => {$(
        #[cfg(not(feature = "cuda"))]
        $(#[$doc])*
        pub trait $dyn: $tr<Cpu> {}
        #[cfg(not(feature = "cuda"))]
        impl<P: $tr<Cpu>> $dyn for P {}
        #[cfg(feature = "cuda")]
        $(#[$doc])*
        pub trait $dyn: $tr<Cpu> + $tr<Cuda> {}
        #[cfg(feature = "cuda")]
        impl<P: $tr<Cpu> + $tr<Cuda>> $dyn for P {}
    )*};
}

device_independent! {
    /// An [`Encoder`] for every enabled device.
    DynEncoder: Encoder;
    /// A [`Bottleneck`] for every enabled device.
    DynBottleneck: Bottleneck;
    /// A [`Prior`] for every enabled device.
    DynPrior: Prior;
    /// A [`Decoder`] for every enabled device.
    DynDecoder: Decoder;
    /// An [`Attention`] for every enabled device.
    DynAttention: Attention;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::lift;

    #[test]
    fn token_batches_are_whole_rows() {
        let t = TokenBatch::new(vec![2, 5, 3, 2, 0, 0], vec![true; 6], Seq(3)).unwrap();
        assert_eq!(t.batch(), Batch(2));
        let obs = Observation::text(&Cpu::default(), t, None);
        assert_eq!(obs.x.shape(), &(Batch(2), Feature(0)));
        assert!(TokenBatch::new(vec![1; 5], vec![true; 5], Seq(3)).is_err());
        assert!(TokenBatch::new(vec![1; 6], vec![true; 5], Seq(3)).is_err());
        assert!(TokenBatch::new(vec![], vec![], Seq(0)).is_err());
    }

    #[test]
    fn vector_interpolation_is_linear_in_the_means() {
        let dev = Cpu::default();
        let mk = |v: f32| {
            let t = lift(dev.tensor_from_vec(vec![v; 4], (Batch(2), Comp(1), Latent(2))));
            Mixture::gaussian(t.retaped(), t, None, None)
        };
        let (a, b) = (mk(1.0), mk(3.0));
        let m = LatentSpace::<Cpu>::interpolate(&VectorSpace, &a, &b, 0.25).unwrap();
        assert_eq!(m.z.as_vec(), vec![1.5; 4]);
        assert_eq!(VectorSpace.mean(&m).as_vec(), vec![1.5; 4]);
        assert!(LatentSpace::<Cpu>::statistics(&VectorSpace, &m).is_empty());
    }
}
