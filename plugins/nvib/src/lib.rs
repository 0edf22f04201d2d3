//! The Nonparametric Variational Information Bottleneck (Henderson & Fehr, ICLR 2023) and its
//! parts, ported from the official code (both the ICLR 2023 version, `v1`, which the published
//! NVAE used, and the later one, `head`). The maths and every pitfall of the official code are
//! in the repository's `docs/nvib-math.md`; golden files of the official code check the port.
//!
//! - [`num`]: the float types (f32 in models, f64 for the golden checks) and devices;
//! - [`special`]: lgamma, digamma and trigamma, on the host and as differentiable ops;
//! - [`gamma`]: torch's Gamma sampler and implicit reparameterisation gradient, `rsample`;
//! - [`dirichlet`]: the Dirichlet weights π of both versions, train and eval;
//! - [`kl`]: the Gaussian and Dirichlet KL terms against the (conditional) DP prior;
//! - [`attention`]: denoising attention (train and eval) and scaled dot-product attention;
//! - [`layer`] and [`init`]: the NVIB layer of both versions and its initialisations;
//! - [`space`]: interpolation between mixture latents (the weighted union of components);
//! - [`bottleneck`] (`nvib`), [`prior`] (`dirichlet_process`) and [`attention_plugins`]
//!   (`denoising`, `sdpa`): the registered plugins.

/// The names of the plugins this crate registers. The facade calls it so that the linker
/// keeps this crate (and its `inventory` submissions) in every binary.
pub fn link() -> &'static [&'static str] {
    &["denoising", "dirichlet_process", "nvib", "sdpa"]
}

pub mod attention;
pub mod attention_plugins;
pub mod bottleneck;
pub mod dirichlet;
pub mod gamma;
pub mod init;
pub mod kl;
pub mod layer;
pub mod num;
pub mod prior;
pub mod space;
pub mod special;
