//! Golden cases of `kl` (§A.6): `kl_gaussian_v1`, `kl_gaussian_head`, `kl_dirichlet_v1` and
//! `kl_dirichlet_head`, in f64. The official latents are sequence-first `[κNl, B, X]`; ours are
//! batch-first `(Batch, Comp, Latent)`, and the official mask (1 = padded) is negated into `keep`.

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_nvib::kl::{kl_dirichlet, kl_gaussian, DpPrior};

use crate::harness::{seq_to_batch, Golden, Produced};

/// The port's outputs for the cases of this family.
pub fn run(g: &Golden) -> Option<Result<Produced, String>> {
    match g.case.as_str() {
        "kl_gaussian_v1" | "kl_gaussian_head" => Some(gaussian(g)),
        "kl_dirichlet_v1" => Some(dirichlet(g).map(|kl| Produced::new().with("kl", kl))),
        "kl_dirichlet_head" => Some(dirichlet(g).map(|kl| {
            // The official result is cast to float32; the f64 value is our reference.
            let kl32 = kl.iter().map(|&x| f64::from(x as f32)).collect();
            Produced::new()
                .with("kl", kl32)
                .with("kl_float64_reference", kl)
        })),
        _ => None,
    }
}

/// Per-row α, batch-first.
type Alpha = Tensor<(Batch, Comp), f64, Cpu>;

/// The batch-first α `(Batch, Comp = κNl)` of a case and its `keep` flags.
fn alpha_and_keep(g: &Golden) -> Result<(Alpha, Vec<bool>), String> {
    let alpha = g.input("alpha")?;
    let (rows, b) = (alpha.shape[0], alpha.shape[1]);
    let mask = g.input("memory_key_padding_mask")?;
    if mask.shape != [b, rows] {
        return Err(format!("mask shape {:?}, want [{b}, {rows}]", mask.shape));
    }
    let keep = mask.bools().into_iter().map(|m| !m).collect();
    let data = seq_to_batch(&alpha.f64s(), rows, b, 1);
    Ok((
        Cpu::default().tensor_from_vec(data, (Batch(b), Comp(rows))),
        keep,
    ))
}

/// κ from the case.
fn kappa(g: &Golden) -> Result<usize, String> {
    Ok(g.input("kappa")?.scalar() as usize)
}

fn gaussian(g: &Golden) -> Result<Produced, String> {
    let (alpha, keep) = alpha_and_keep(g)?;
    let (b, rows) = (alpha.shape().0, alpha.shape().1);
    let p = *g.input("mu")?.shape.last().ok_or("mu without shape")?;
    let dev = alpha.device().clone();
    let latent = |name: &str| -> Result<_, String> {
        let data = seq_to_batch(&g.input(name)?.f64s(), rows.0, b.0, p);
        Ok(dev.tensor_from_vec(data, (b, rows, Latent(p))))
    };
    let (mu, logvar) = (latent("mu")?, latent("logvar")?);
    let prior = DpPrior {
        mu: g.input("prior_mu")?.f64s(),
        var: g.input("prior_var")?.f64s(),
        kappa: kappa(g)?,
        ..DpPrior::default()
    };
    let kl = kl_gaussian(
        mu.leaky_trace(),
        logvar.leaky_trace(),
        alpha.leaky_trace(),
        &keep,
        &prior,
    );
    Ok(Produced::new().with("kl", kl.as_vec()))
}

fn dirichlet(g: &Golden) -> Result<Vec<f64>, String> {
    let (alpha, keep) = alpha_and_keep(g)?;
    let prior = DpPrior {
        alpha: g.input("prior_alpha")?.scalar(),
        delta: g.input("delta")?.scalar(),
        kappa: kappa(g)?,
        ..DpPrior::default()
    };
    Ok(kl_dirichlet(alpha.leaky_trace(), &keep, &prior).as_vec())
}
