//! vaezoo-core: the pieces every vaezoo plugin and the application share.
//!
//! - [`abi`]: the stable C ABI of separately built plugin libraries, and its SDK;
//! - [`axes`]: typed tensor axes (`Batch`, `Seq`, `Latent`, …) with sizes known at run time;
//! - [`backend`]: the device bound, traced-tensor aliases and the casts to trait objects;
//! - [`latent`]: the latent handed from bottleneck to decoder, always a mixture;
//! - [`plugin`]: the plugin traits (`Encoder`, `Bottleneck`, `Prior`, `Decoder`, …);
//! - [`registry`]: name-keyed plugin entries collected from `inventory`;
//! - [`spec`] and [`schema`]: model specs, their run-time composed JSON Schema and validation;
//!   [`component_schema`]: the schema of a config field naming a plugin of another kind;
//! - [`schedule`]: KL schedules (constant, linear warm-up, cyclical) set per KL term;
//! - [`params`], [`optim`], [`checkpoint`]: parameters, Adam and safetensors checkpoints;
//! - [`layers`]: our own layers over typed axes;
//! - [`kernels`]: the fused ops layers call (CPU fast path, generic dfdx ops elsewhere);
//! - [`custom_op`]: element-wise ops with host-computed values and hand-written backward;
//! - [`gradcheck`]: finite-difference gradient checks for ops and plugins.

pub mod abi;
pub mod axes;
pub mod backend;
pub mod checkpoint;
pub mod component_schema;
pub mod custom_op;
pub mod error;
pub mod gradcheck;
pub mod kernels;
pub mod latent;
pub mod layers;
pub mod optim;
pub mod params;
pub mod plugin;
pub mod process;
pub mod registry;
pub mod rng;
pub mod schedule;
pub mod schema;
pub mod spec;
pub mod torch_layout;

pub use backend::{Backend, Traced};
pub use error::{Error, Result};

/// Re-exports a plugin crate needs, so that its versions always match the host's.
pub use dfdx;
pub use inventory;
pub use schemars;
pub use serde_json;
