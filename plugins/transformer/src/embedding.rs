//! Token embeddings as PyTorch's `nn.Embedding(V, d, padding_idx=0)`: a lookup of rows, where
//! the padding token's row receives no gradient (its values stay as initialised).

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Model, Seq, Vocab};
use vaezoo_core::params::{ParamBuilder, ParamId};
use vaezoo_core::{Error, Result};
use vaezoo_nvib::num::{Dev, Real, Tr};

use crate::weights::Source;

/// The padding token id.
pub const PAD: usize = 0;

/// A `[Vocab, Model]` table, `name.weight`.
#[derive(Clone, Debug)]
pub struct TokenEmbedding {
    table: ParamId,
    vocab: Vocab,
    width: Model,
}

impl TokenEmbedding {
    /// Declares `name.weight`, uniform in ±1e-4 (the NVAE's initialisation, padding row
    /// included).
    pub fn new(params: &mut ParamBuilder, name: &str, vocab: Vocab, width: Model) -> Self {
        let table = params.uniform(&format!("{name}.weight"), &[vocab.0, width.0], 1e-4);
        Self {
            table,
            vocab,
            width,
        }
    }

    /// The model's one `embedding.weight` (outside the component's prefix, initialised as in
    /// [`new`](Self::new)), declared by the first component that asks for it and read by
    /// every other: the official NVAE's encoder and decoder share their token embedding.
    pub fn shared(params: &mut ParamBuilder, vocab: Vocab, width: Model) -> Result<Self> {
        let table = params.shared_uniform("embedding.weight", &[vocab.0, width.0], 1e-4)?;
        Ok(Self {
            table,
            vocab,
            width,
        })
    }

    /// The rows of `ids` (row-major `Batch × Seq`); [`PAD`] rows carry no gradient. An id
    /// outside the vocabulary is an error.
    ///
    /// # Shapes
    /// `ids: Batch × Seq` → `(Batch, Seq, Model)`
    pub fn forward<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        ids: &[usize],
        batch: Batch,
        seq: Seq,
    ) -> Result<Tr<(Batch, Seq, Model), E, D>> {
        if ids.len() != batch.0 * seq.0 {
            return Err(Error::Shape(format!(
                "{} token ids for {batch:?} × {seq:?}",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t >= self.vocab.0) {
            return Err(Error::Shape(format!(
                "token id {bad} outside the vocabulary of {}",
                self.vocab.0
            )));
        }
        let table = w.get(self.table, (self.vocab, self.width));
        Ok(D::embedding(table, ids, Some(PAD)).reshape_like(&(batch, seq, self.width)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::store;
    use vaezoo_core::gradcheck::GradCheck;
    use vaezoo_core::params::ParamStore;

    #[test]
    fn looks_up_rows_and_rejects_unknown_ids() {
        let (params, emb) = store(|pb| TokenEmbedding::new(pb, "e", Vocab(3), Model(2)));
        let y = emb.forward(&params, &[2, 0], Batch(1), Seq(2)).unwrap();
        let t = params.host(0);
        assert_eq!(y.as_vec(), vec![t[4], t[5], t[0], t[1]]);
        assert!(emb.forward(&params, &[3, 0], Batch(1), Seq(2)).is_err());
        assert!(emb.forward(&params, &[1], Batch(1), Seq(2)).is_err());
    }

    #[test]
    fn the_padding_row_gets_no_gradient_and_the_others_match_finite_differences() {
        let (mut params, emb) = store(|pb| TokenEmbedding::new(pb, "e", Vocab(3), Model(2)));
        let emb = &emb;
        let loss = |ids: [usize; 6]| {
            move |p: &ParamStore<Cpu>| {
                let y = emb.forward(p, &ids, Batch(2), Seq(3)).unwrap();
                (y * 1000.0).sin().sum()
            }
        };
        let grads = loss([1, 0, 2, 1, 0, 2])(&params).backward();
        let mut out = vec![Vec::new()];
        params.gradients_into(&mut { grads }, &mut out);
        assert_eq!(&out[0][..2], &[0.0, 0.0], "padding row");
        assert!(out[0][2..].iter().all(|&g| g != 0.0));
        GradCheck {
            eps: 1e-4,
            per_param: 6,
            ..Default::default()
        }
        // Without padding (whose row deliberately gets no gradient although it shifts the loss).
        .run(&mut params, loss([1, 2, 2, 1, 1, 2]))
        .unwrap();
    }
}
