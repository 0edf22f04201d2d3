//! Our own layers over typed axes (dfdx's `nn` modules need const shapes).
//! One layer per file, each with `new` (declaring parameters) and `forward`.

mod activation;
mod linear;

pub use activation::Activation;
pub use linear::Linear;
