//! Golden case `identity_init_vs_sdpa` (spec §B.4.3): HEAD's identity initialisation in eval
//! mode makes denoising attention over the real tokens, renormalised, equal scaled dot-product
//! attention over the encoder outputs.

use vaezoo_core::axes::{Batch, Comp, Head, Latent, Model, Seq};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_nvib::attention::{denoising_attention_train, sdpa, DaVersion, Projected};
use vaezoo_nvib::init::{head_init, Taus};
use vaezoo_nvib::layer::{forward, AlphaWeights, PriorComponent, Version, Weights};

use crate::harness::{batch_to_seq, seq_to_batch, unpack_heads, Golden, Produced};

type T<S> = Tensor<S, f64, Cpu, OwnedTape<f64, Cpu>>;

/// The port's outputs for `identity_init_vs_sdpa`.
pub fn run(g: &Golden) -> Option<Result<Produced, String>> {
    (g.case == "identity_init_vs_sdpa").then(|| identity(g))
}

/// `x W_partᵀ + b_part` per row, for part 0 (q), 1 (k) or 2 (v) of the packed in-projection:
/// `rows × P` → `rows × P` (the heads packed in the last axis).
fn project(x: &[f64], w: &[f64], bias: &[f64], part: usize, p: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(p) {
        for o in 0..p {
            let wr = &w[(part * p + o) * p..(part * p + o + 1) * p];
            out.push(bias[part * p + o] + row.iter().zip(wr).map(|(a, b)| a * b).sum::<f64>());
        }
    }
    out
}

fn identity(g: &Golden) -> Result<Produced, String> {
    let dev = Cpu::default();
    let enc = g.input("encoder_output")?;
    let (ns, b, p) = (enc.shape[0], enc.shape[1], enc.shape[2]);
    let nt = g.input("raw_query")?.shape[0];
    let nh = g.input("nheads")?.scalar() as usize;
    let (e, nl) = (p / nh, ns + 1);
    let keep_src: Vec<bool> = g
        .input("src_key_padding_mask")?
        .bools()
        .iter()
        .map(|m| !m)
        .collect();
    let taus = Taus {
        mu_tau: 1.0,
        stdev_tau: 0.0,
        alpha_tau: 1.0,
    };
    let init = head_init(p, p, nh, &[0.0], &[1.0], 1.0, taus, f64::MIN_POSITIVE);
    let t1 = |v: Vec<f64>, n: usize| -> T<(usize,)> { dev.tensor_from_vec(v, (n,)).leaky_trace() };
    let (m, l) = (Model(p), Latent(p));
    let weights = Weights {
        mu_w: t1(init.mu_w.clone(), p * p).reshape_like(&(m, l)),
        mu_b: t1(init.mu_b.clone(), p).reshape_like(&(l,)),
        log_var_w: t1(init.log_var_w.clone(), p * p).reshape_like(&(m, l)),
        log_var_b: t1(init.log_var_b.clone(), p).reshape_like(&(l,)),
        alpha: AlphaWeights::Head {
            w_lin: t1(init.alpha_lin.clone(), p).reshape_like(&(m,)),
            w_quad: t1(init.alpha_quad.clone(), p).reshape_like(&(m,)),
            b: t1(vec![init.alpha_b], 1).reshape_like(&()),
        },
    };
    let x_rows = seq_to_batch(&enc.f64s(), ns, b, p);
    let x = dev
        .tensor_from_vec(x_rows.clone(), (Batch(b), Seq(ns), Model(p)))
        .leaky_trace();
    let prior = PriorComponent {
        mu: vec![0.0],
        var: vec![1.0],
        alpha: 1.0,
    };
    let out = forward(x, &keep_src, weights, &prior, Version::Head, 1, None);

    let w = g.input("in_proj_weight")?.f64s();
    let bias = g.input("in_proj_bias")?.f64s();
    let q_rows = seq_to_batch(&g.input("raw_query")?.f64s(), nt, b, p);
    let z_rows = out.z.as_vec();
    // The queries, keys and values of `rows` (`n` per example), heads packed.
    let projected = |rows: &[f64], n: usize| -> Projected<f64, Cpu> {
        let kv = |part: usize| {
            dev.tensor_from_vec(
                project(rows, &w, &bias, part, p),
                (Batch(b), Comp(n), Model(p)),
            )
            .leaky_trace()
        };
        Projected {
            heads: Head(nh),
            q: dev
                .tensor_from_vec(
                    project(&q_rows, &w, &bias, 0, p),
                    (Batch(b), Seq(nt), Model(p)),
                )
                .leaky_trace(),
            k: kv(1),
            v: kv(2),
        }
    };
    let (da_out, da_attn) = denoising_attention_train(
        projected(&z_rows, nl),
        out.pi.retaped(),
        out.z.retaped(),
        &out.keep,
        DaVersion::Head,
    );
    let (sd_out, sd_attn) = sdpa(projected(&x_rows, ns), &keep_src);
    let da = da_attn.as_vec();
    let renormalised: Vec<f64> = da
        .chunks(nl)
        .flat_map(|row| {
            let s: f64 = row[1..].iter().sum();
            row[1..].iter().map(move |a| a / s)
        })
        .collect();
    Ok(Produced::new()
        .with("nvib_pi", batch_to_seq(&out.pi.as_vec(), b, nl, 1))
        .with("nvib_alpha", batch_to_seq(&out.alpha.as_vec(), b, nl, 1))
        .with("nvib_logvar", batch_to_seq(&out.log_var.as_vec(), b, nl, p))
        .with("denoising_attn", da)
        .with(
            "denoising_output",
            unpack_heads(&da_out.as_vec(), b, nh, nt, e),
        )
        .with("sdpa_attn", sd_attn.as_vec())
        .with("sdpa_output", unpack_heads(&sd_out.as_vec(), b, nh, nt, e))
        .with("denoising_attn_tokens_renormalised", renormalised))
}
