//! The Nonparametric Variational Information Bottleneck (Henderson & Fehr, ICLR 2023) and its
//! parts, ported from the official code (both the ICLR 2023 version, `v1`, which the published
//! NVAE used, and the later one, `head`). The maths and every pitfall of the official code are
//! in `docs/nvib-math.md`; golden files of the official code check the port.
//!
//! - [`num`]: the float types (f32 in models, f64 for the golden checks) and devices;
//! - [`special`]: lgamma, digamma, trigamma, Gamma sampling and its implicit gradient;
//! - [`dirichlet`]: the Dirichlet weights π of both versions, train and eval;
//! - [`kl`]: the Gaussian and Dirichlet KL terms against the (conditional) DP prior;
//! - [`attention`]: denoising attention (train and eval) and scaled dot-product attention;
//! - [`schedule`]: the official KL annealing schedules.

pub mod attention;
pub mod dirichlet;
pub mod kl;
pub mod num;
pub mod schedule;
pub mod special;
