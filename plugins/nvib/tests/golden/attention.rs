//! Golden cases of `attention`: denoising attention (train and eval, v1.0 and HEAD), the
//! multi-head modules, and the equivalences with scaled dot-product attention (§B).
//!
//! Official tensors are sequence-first where the files say so, and flatten heads into
//! `B·nh` (index `b·nh + h`), which is our `(Batch, Head, …)` row-major layout.

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp, Head, Latent, Model, Seq};
use vaezoo_nvib::attention::{
    denoising_attention_eval, denoising_attention_train, denoising_mha_eval, denoising_mha_train,
    sdpa, DaVersion, LatentQuery, MhaBias, MhaWeights, Projected, ValueMap,
};
use vaezoo_nvib::num::Tr;

use crate::harness::{batch_to_seq, pack_heads, seq_to_batch, unpack_heads, Golden, Produced};

type T<S> = Tr<S, f64, Cpu>;

/// The port's outputs for the cases of this family.
pub fn run(g: &Golden) -> Option<Result<Produced, String>> {
    let f: fn(&Golden) -> Result<Produced, String> = match g.case.as_str() {
        "da_v1_train_fn" => v1_train_fn,
        "da_v1_eval_fn" => v1_eval_fn,
        "da_v1_mha_train" => |g: &Golden| mha(g, DaVersion::V1, true),
        "da_v1_mha_eval" => |g: &Golden| mha(g, DaVersion::V1, false),
        "da_head_train_fn" => head_train_fn,
        "da_head_eval_fn" => head_eval_fn,
        "da_head_mha_train" => |g: &Golden| mha(g, DaVersion::Head, true),
        "sdpa_equiv_train" => sdpa_equiv_train,
        "sdpa_equiv_eval_zero_var" => sdpa_equiv_eval_zero_var,
        _ => return None,
    };
    Some(f(g))
}

/// Input `name`'s values and shape.
fn input(g: &Golden, name: &str) -> Result<(Vec<f64>, Vec<usize>), String> {
    let a = g.input(name)?;
    Ok((a.f64s(), a.shape.clone()))
}

/// A traced f64 tensor.
fn t<S: Shape>(data: Vec<f64>, shape: S) -> T<S> {
    Cpu::default()
        .tensor_from_vec(data, shape)
        .put_tape(OwnedTape::default())
}

/// keep (Batch × Comp) from an official mask `[B, 1, Nl]` or `[B·nh, 1, Nl]` (1 = masked).
fn keep_from(g: &Golden, name: &str, b: usize) -> Result<Vec<bool>, String> {
    let mask = g.input(name)?.bools();
    let rows = mask.len() / g.input(name)?.shape.last().ok_or("scalar mask")?;
    let (nh, nl) = (rows / b, mask.len() / rows);
    let keep: Vec<bool> = (0..b * nl)
        .map(|i| !mask[(i / nl) * nh * nl + i % nl])
        .collect();
    for (r, row) in mask.chunks(nl).enumerate() {
        if row
            .iter()
            .zip(&keep[(r / nh) * nl..])
            .any(|(&m, &k)| m == k)
        {
            return Err(format!("`{name}` differs between the heads of one example"));
        }
    }
    Ok(keep)
}

/// The per-head tensor `[B·nh, N, E]` with the heads packed, as `(Batch, N, Model(nh·E))`.
fn packed<N: Dim>(g: &Golden, name: &str, b: usize, n: N) -> Result<T<(Batch, N, Model)>, String> {
    let (data, s) = input(g, name)?;
    let (nh, e) = (s[0] / b, s[2]);
    let data = pack_heads(&data, b, nh, n.size(), e);
    Ok(t(data, (Batch(b), n, Model(nh * e))))
}

/// The per-head `query`, `key` and `value` of `b` examples, heads packed.
fn projected(g: &Golden, b: usize) -> Result<Projected<f64, Cpu>, String> {
    let s = &g.input("query")?.shape;
    let (nt, nl) = (Seq(s[1]), Comp(g.input("key")?.shape[1]));
    Ok(Projected {
        heads: Head(s[0] / b),
        q: packed(g, "query", b, nt)?,
        k: packed(g, "key", b, nl)?,
        v: packed(g, "value", b, nl)?,
    })
}

/// π `[Nl, B, 1]` (sequence-first) or `[B, Nl, 1]` as `(Batch, Comp)`.
fn pi_of(g: &Golden, seq_first: bool) -> Result<T<(Batch, Comp)>, String> {
    let (data, s) = input(g, "pi")?;
    let (b, nl) = if seq_first {
        (s[1], s[0])
    } else {
        (s[0], s[1])
    };
    let data = if seq_first {
        seq_to_batch(&data, nl, b, 1)
    } else {
        data
    };
    Ok(t(data, (Batch(b), Comp(nl))))
}

/// A latent tensor `[Nl, B, P]` (sequence-first) or `[B, Nl, P]` as `(Batch, Comp, Latent)`.
fn latent(g: &Golden, name: &str, seq_first: bool) -> Result<T<(Batch, Comp, Latent)>, String> {
    let (data, s) = input(g, name)?;
    if seq_first {
        Ok(t(
            seq_to_batch(&data, s[0], s[1], s[2]),
            (Batch(s[1]), Comp(s[0]), Latent(s[2])),
        ))
    } else {
        Ok(t(data, (Batch(s[0]), Comp(s[1]), Latent(s[2]))))
    }
}

fn v1_train_fn(g: &Golden) -> Result<Produced, String> {
    let (q, s) = input(g, "q")?;
    let (b, nt, p) = (s[0], s[1], s[2]);
    let nl = g.input("k")?.shape[1];
    // One head: the per-head layout is the packed one.
    let one = |name: &str| -> Result<T<(Batch, Comp, Model)>, String> {
        Ok(t(input(g, name)?.0, (Batch(b), Comp(nl), Model(p))))
    };
    let x = Projected {
        heads: Head(1),
        q: t(q, (Batch(b), Seq(nt), Model(p))),
        k: one("k")?,
        v: one("v")?,
    };
    let keep = keep_from(g, "key_padding_mask", b)?;
    let (pi, z) = (pi_of(g, true)?, latent(g, "Z", true)?);
    let (out, attn) = denoising_attention_train(x, pi, z, &keep, DaVersion::V1);
    Ok(Produced::new()
        .with("output", out.as_vec())
        .with("attn", attn.as_vec()))
}

fn v1_eval_fn(g: &Golden) -> Result<Produced, String> {
    let (u, s) = input(g, "projected_u")?;
    let (b, nt, p) = (s[0], s[1], s[2]);
    // One head: the per-head layout is the packed one.
    let query = LatentQuery {
        heads: Head(1),
        u: t(u, (Batch(b), Seq(nt), p)),
    };
    let value = ValueMap {
        weight: t(input(g, "w_v")?.0, (Model(p), Latent(p))),
        bias: None,
    };
    let (mu, log_var) = (latent(g, "mu", true)?, latent(g, "logvar", true)?);
    let keep = keep_from(g, "key_padding_mask", b)?;
    let pi = pi_of(g, true)?;
    let (out, attn) = denoising_attention_eval(query, mu, log_var, pi, value, &keep, DaVersion::V1);
    Ok(Produced::new()
        .with("output", out.as_vec())
        .with("attn", attn.as_vec()))
}

/// HEAD's training-time function on the per-head `query`, `key`, `value`.
fn head_train(g: &Golden, z: &str) -> Result<(Vec<f64>, Vec<f64>), String> {
    let z = latent(g, z, false)?;
    let b = z.shape().0 .0;
    let x = projected(g, b)?;
    let (nh, (_, nt, model)) = (x.heads.0, *x.q.shape());
    let keep = keep_from(g, "attn_mask", b)?;
    let (out, attn) = denoising_attention_train(x, pi_of(g, false)?, z, &keep, DaVersion::Head);
    let out = unpack_heads(&out.as_vec(), b, nh, nt.0, model.0 / nh);
    Ok((out, attn.as_vec()))
}

/// HEAD's evaluation-time function on `projected_u`, `w_v`, `b_v` (`projected_b`, a
/// per-query constant of the logits, cancels in the softmax).
fn head_eval(g: &Golden) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (u, s) = input(g, "projected_u")?;
    let (b, nh, nt, p) = (s[0], s[1], s[2], s[3]);
    let e = g.input("w_v")?.shape[1];
    let query = LatentQuery {
        heads: Head(nh),
        u: t(pack_heads(&u, b, nh, nt, p), (Batch(b), Seq(nt), nh * p)),
    };
    let model = Model(nh * e);
    let value = ValueMap {
        weight: t(input(g, "w_v")?.0, (model, Latent(p))),
        bias: Some(t(input(g, "b_v")?.0, (model,))),
    };
    let (mu, log_var) = (latent(g, "mu", false)?, latent(g, "logvar", false)?);
    let keep = keep_from(g, "attn_mask", b)?;
    let pi = pi_of(g, false)?;
    let (out, attn) =
        denoising_attention_eval(query, mu, log_var, pi, value, &keep, DaVersion::Head);
    Ok((unpack_heads(&out.as_vec(), b, nh, nt, e), attn.as_vec()))
}

fn head_train_fn(g: &Golden) -> Result<Produced, String> {
    let (output, attn) = head_train(g, "Z")?;
    Ok(Produced::new().with("output", output).with("attn", attn))
}

fn head_eval_fn(g: &Golden) -> Result<Produced, String> {
    let (output, attn) = head_eval(g)?;
    let nh = g.input("projected_u")?.shape[1];
    let query = raw_query(g, "raw_query")?;
    let (Batch(b), Seq(nt), Model(p)) = *query.shape();
    let (mu, log_var) = (latent(g, "mu", false)?, latent(g, "logvar", false)?);
    let keep = keep_from(g, "attn_mask", b)?;
    let weights = mha_weights(g, nh, p)?;
    let (mha, _) = denoising_mha_eval(
        query,
        weights,
        mu,
        log_var,
        pi_of(g, false)?,
        &keep,
        DaVersion::Head,
    );
    Ok(Produced::new()
        .with("output", output)
        .with("attn", attn)
        .with("mha_output_intended", batch_to_seq(&mha.as_vec(), b, nt, p)))
}

/// A module query `[Nt, B, P]` as `(Batch, Seq, Model)`.
fn raw_query(g: &Golden, name: &str) -> Result<T<(Batch, Seq, Model)>, String> {
    let (data, s) = input(g, name)?;
    let (nt, b, p) = (s[0], s[1], s[2]);
    Ok(t(
        seq_to_batch(&data, nt, b, p),
        (Batch(b), Seq(nt), Model(p)),
    ))
}

/// The module's weights from the packed `in_proj_weight` [3P, P], `in_proj_bias` [3P] and
/// `out_proj_weight`/`out_proj_bias` (the biases where the file has them).
fn mha_weights(g: &Golden, heads: usize, p: usize) -> Result<MhaWeights<f64, Cpu>, String> {
    let w = input(g, "in_proj_weight")?.0;
    let block = |i: usize| w[i * p * p..(i + 1) * p * p].to_vec();
    let bias = match g.inputs.contains_key("in_proj_bias") {
        true => {
            let b = input(g, "in_proj_bias")?.0;
            let part = |i: usize| t(b[i * p..(i + 1) * p].to_vec(), (Model(p),));
            Some(MhaBias {
                q: part(0),
                k: part(1),
                v: part(2),
                out: t(input(g, "out_proj_bias")?.0, (Model(p),)),
            })
        }
        false => None,
    };
    Ok(MhaWeights {
        heads: Head(heads),
        q: t(block(0), (Model(p), Model(p))),
        k: t(block(1), (Model(p), Latent(p))),
        v: t(block(2), (Model(p), Latent(p))),
        out: t(input(g, "out_proj_weight")?.0, (Model(p), Model(p))),
        bias,
    })
}

/// The v1.0 and HEAD modules (train or eval) on the sequence-first memory (z, π, μ, logσ²).
fn mha(g: &Golden, version: DaVersion, train: bool) -> Result<Produced, String> {
    let query = raw_query(g, "query")?;
    let (Batch(b), Seq(nt), Model(p)) = *query.shape();
    let nh = match g.output("attn_weights")?.shape.len() {
        4 => g.output("attn_weights")?.shape[1],
        _ => 1,
    };
    let weights = mha_weights(g, nh, p)?;
    let keep = g
        .input("key_padding_mask")?
        .bools()
        .iter()
        .map(|m| !m)
        .collect::<Vec<_>>();
    let pi = pi_of(g, true)?;
    let (out, attn) = if train {
        denoising_mha_train(query, weights, latent(g, "z", true)?, pi, &keep, version)
    } else {
        let (mu, log_var) = (latent(g, "mu", true)?, latent(g, "logvar", true)?);
        denoising_mha_eval(query, weights, mu, log_var, pi, &keep, version)
    };
    Ok(Produced::new()
        .with("attn_output", batch_to_seq(&out.as_vec(), b, nt, p))
        .with("attn_weights", attn.as_vec()))
}

fn sdpa_equiv_train(g: &Golden) -> Result<Produced, String> {
    let (da_out, da_attn) = head_train(g, "Z")?;
    let b = g.input("Z")?.shape[0];
    let x = projected(g, b)?;
    let (nh, (_, nt, model)) = (x.heads.0, *x.q.shape());
    let (out, attn) = sdpa(x, &keep_from(g, "attn_mask", b)?);
    let out = unpack_heads(&out.as_vec(), b, nh, nt.0, model.0 / nh);
    Ok(Produced::new()
        .with("denoising_output", da_out)
        .with("denoising_attn", da_attn)
        .with("sdpa_output", out)
        .with("sdpa_attn", attn.as_vec()))
}

fn sdpa_equiv_eval_zero_var(g: &Golden) -> Result<Produced, String> {
    let (eval_out, eval_attn) = head_eval(g)?;
    let (train_out, train_attn) = head_train(g, "mu")?;
    Ok(Produced::new()
        .with("eval_output", eval_out)
        .with("eval_attn", eval_attn)
        .with("train_output", train_out)
        .with("train_attn", train_attn))
}
