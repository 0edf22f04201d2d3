//! Our own layers over typed axes (dfdx's `nn` modules need const shapes).
//! One layer per file, each with `new` (declaring parameters) and `forward`.

mod activation;
mod embedding;
mod linear;

pub use activation::Activation;
pub use embedding::{check_labels, Embedding, Init};
pub use linear::Linear;
