//! Golden cases of the Variational Transformer baselines (§E): VTV and VTP latents in eval mode
//! with their KL, and VTS's stride masks.

use vaezoo_core::axes::{Batch, Latent, Model, Seq};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::seeded;
use vaezoo_transformer::vt::{kl, pooled, stride_mask, variable, GaussianHeads, Pooling};
use vaezoo_transformer::weights::Table;

use crate::harness::{batch_to_seq, seq_to_batch, Golden, Produced};

/// The port's outputs for the VT cases.
pub fn run(g: &Golden) -> Option<Result<Produced, String>> {
    let result = match g.case.as_str() {
        "vt_variable_latent_eval" => latent(g, None),
        "vt_pooled_mean_latent_eval" => latent(g, Some(Pooling::Mean)),
        "vt_pooled_max_latent_eval" => latent(g, Some(Pooling::Max)),
        "vt_stride_mask" => strides(g),
        _ => return None,
    };
    Some(result)
}

fn latent(g: &Golden, pooling: Option<Pooling>) -> Result<Produced, String> {
    let dev = Cpu::default();
    let enc = g.input("encoder_output")?;
    let (ns, b, p) = (enc.shape[0], enc.shape[1], enc.shape[2]);
    let l = g.input("mu_proj_bias")?.shape[0];
    let mut rng = seeded(0);
    let mut pb = ParamBuilder::new(&mut rng);
    let heads = GaussianHeads::new(&mut pb, Model(p), Latent(l));
    // `mu_proj.weight` is the file's `mu_proj_weight` (PyTorch's [out, in] layout, as ours).
    let w = Table::new(&dev, &pb.finish(), |d| {
        Ok(g.input(&d.name.replace('.', "_"))?.f64s())
    })?;
    let keep: Vec<bool> = g
        .input("src_key_padding_mask")?
        .bools()
        .iter()
        .map(|m| !m)
        .collect();
    let h = dev
        .tensor_from_vec(
            seq_to_batch(&enc.f64s(), ns, b, p),
            (Batch(b), Seq(ns), Model(p)),
        )
        .put_tape(OwnedTape::default());
    let mut rng = seeded(0);
    let lat = match pooling {
        None => variable(&heads, &w, h, &keep, Mode::Eval, &mut rng),
        Some(pooling) => pooled(&heads, &w, h, &keep, pooling, Mode::Eval, &mut rng),
    };
    let n = lat.keep.len() / b;
    let kl = kl(
        lat.mu.retaped(),
        lat.log_var.retaped(),
        &lat.keep,
        g.input("prior_mu")?.scalar(),
        g.input("prior_var")?.scalar(),
    );
    let seq = |v: Vec<f64>| batch_to_seq(&v, b, n, l);
    Ok(Produced::new()
        .with("z", seq(lat.z.as_vec()))
        .with("mu", seq(lat.mu.as_vec()))
        .with("logvar", seq(lat.log_var.as_vec()))
        .with(
            "memory_key_padding_mask",
            lat.keep.iter().map(|&k| f64::from(u8::from(!k))).collect(),
        )
        .with("kl", kl.as_vec()))
}

fn strides(g: &Golden) -> Result<Produced, String> {
    let src = g.input("src_key_padding_mask")?;
    let n = src.shape[1];
    let mut out = Produced::new();
    for perc in g.input("percentages")?.f64s() {
        let stride = stride_mask(&src.bools(), n, perc);
        let memory: Vec<bool> = stride
            .iter()
            .zip(src.bools())
            .map(|(&s, m)| s || m)
            .collect();
        let flag = |v: &[bool]| v.iter().map(|&x| f64::from(u8::from(x))).collect();
        // The official names print the percentage as Python does: 0, 0.25, …, 1.
        let name = if perc.fract() == 0.0 {
            format!("{}", perc as i64)
        } else {
            format!("{perc}")
        };
        out = out
            .with(&format!("stride_mask_{name}"), flag(&stride))
            .with(&format!("memory_mask_{name}"), flag(&memory));
    }
    Ok(out)
}
