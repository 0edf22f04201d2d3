//! Typed tensor axes: each axis role is its own type, each size is known at run time.
//!
//! `Tensor<(Batch, Latent), f32, D>` and `Tensor<(Batch, Hidden), f32, D>` are different types,
//! so a matmul of the wrong axes does not compile, while the sizes come from the spec. Every
//! axis implements dfdx's [`Dim`]; use `Const<N>` where the maths fixes a size.

use dfdx::shapes::Dim;

macro_rules! axes {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub usize);

        impl Dim for $name {
            #[inline(always)]
            fn size(&self) -> usize {
                self.0
            }
            #[inline(always)]
            fn from_size(size: usize) -> Option<Self> {
                Some(Self(size))
            }
        }

        /// Concatenating along an axis adds its sizes (dfdx's `concat_along` needs this).
        impl std::ops::Add for $name {
            type Output = Self;
            fn add(self, other: Self) -> Self {
                Self(self.0 + other.0)
            }
        }
    )*};
}

axes! {
    /// Examples in a minibatch.
    Batch,
    /// Positions in a sequence (one for vector data).
    Seq,
    /// Components of a mixture latent (one for a vector VAE).
    Comp,
    /// The model (hidden state) width of an encoder's output.
    Model,
    /// The latent dimension.
    Latent,
    /// A hidden layer's width.
    Hidden,
    /// Observed features, e.g. the pixels of a flattened image.
    Feature,
    /// Attention heads.
    Head,
    /// The width of one attention head (model width / heads).
    HeadDim,
    /// Vocabulary entries.
    Vocab,
    /// Classes of a labelled dataset.
    Class,
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::prelude::*;

    #[test]
    fn typed_axes_matmul_and_reduce_with_runtime_sizes() {
        let dev = Cpu::default();
        let x: Tensor<(Batch, Feature), f32, _> = dev.ones_like(&(Batch(3), Feature(4)));
        let w: Tensor<(Feature, Latent), f32, _> = dev.ones_like(&(Feature(4), Latent(2)));
        let y = x.matmul(w);
        assert_eq!(y.shape(), &(Batch(3), Latent(2)));
        let s = y.sum::<(Batch,), Axis<1>>();
        assert_eq!(s.as_vec(), vec![8.0; 3]);
    }

    #[test]
    fn typed_axes_concatenate() {
        let dev = Cpu::default();
        let a: Tensor<(Batch, Comp), f32, _> = dev.ones_like(&(Batch(2), Comp(1)));
        let b: Tensor<(Batch, Comp), f32, _> = dev.zeros_like(&(Batch(2), Comp(3)));
        let c = (a, b).concat_along(Axis::<1>);
        assert_eq!(c.shape(), &(Batch(2), Comp(4)));
        assert_eq!(c.as_vec(), vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    }
}
