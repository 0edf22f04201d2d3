//! Golden case of the NVAE model (§D): the official `TransformerNVIB` in eval mode, rebuilt
//! from its state_dict with the Transformer crate's layers, the NVIB v1 layer and v1 denoising
//! cross-attention, and compared at every recorded intermediate.

use vaezoo_core::axes::{Batch, Head, Hidden, Latent, Model, Seq, Vocab};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::params::{ParamBuilder, ParamId};
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::{seeded, HostRng};
use vaezoo_nvib::attention::{denoising_mha_eval, DaVersion, MhaWeights};
use vaezoo_nvib::kl::{kl_dirichlet, kl_gaussian, DpPrior};
use vaezoo_nvib::layer::{forward, AlphaWeights, PriorComponent, Version, Weights};
use vaezoo_nvib::num::Tr;
use vaezoo_transformer::decoder_layer::Cross;
use vaezoo_transformer::dense::Dense;
use vaezoo_transformer::embedding::TokenEmbedding;
use vaezoo_transformer::encoder_layer::LayerSizes;
use vaezoo_transformer::loss::token_nll;
use vaezoo_transformer::positional::PositionalEncoding;
use vaezoo_transformer::stack::{DecoderStack, EncoderStack};
use vaezoo_transformer::weights::{Source, Table};

use crate::harness::{batch_to_seq, seq_to_batch, Golden, Produced};
use crate::layer::transpose;

type T<S> = Tr<S, f64, Cpu>;

/// The port's outputs for the NVAE case.
pub fn run(g: &Golden) -> Option<Result<Produced, String>> {
    (g.case == "nvae_v1_eval_forward").then(|| nvae(g))
}

/// Token ids `[N, B]` (sequence-first) as row-major `Batch × Seq`.
fn ids(g: &Golden, name: &str) -> Result<(Vec<usize>, usize, usize), String> {
    let a = g.input(name)?;
    let (n, b) = (a.shape[0], a.shape[1]);
    let ids = seq_to_batch(&a.f64s(), n, b, 1);
    Ok((ids.into_iter().map(|x| x as usize).collect(), b, n))
}

/// The number of layers `stack.layers.N.*` among the file's parameters.
fn layer_count(g: &Golden, stack: &str) -> Result<usize, String> {
    let prefix = format!("param.{stack}.layers.");
    let count = g
        .inputs
        .keys()
        .filter_map(|k| {
            k.strip_prefix(&prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|i| i + 1)
        .max()
        .ok_or(format!("no `{prefix}N.*` parameters"))?;
    Ok(count)
}

/// The attention heads, which a state_dict does not carry: the description names them
/// (`…, 1 head, …`; the official v1 denoising cross-attention only works with one).
fn heads(g: &Golden) -> Result<usize, String> {
    let words: Vec<&str> = g.description.split([' ', ',']).collect();
    words
        .windows(2)
        .find(|w| w[1].starts_with("head"))
        .and_then(|w| w[0].parse().ok())
        .ok_or_else(|| format!("the description names no head count: {}", g.description))
}

fn nvae(g: &Golden) -> Result<Produced, String> {
    let dev = Cpu::default();
    let p = g.input("param.embedding.weight")?.shape[1];
    let vocab = g.input("param.embedding.weight")?.shape[0];
    let hidden = g.input("param.encoder.layers.0.linear1.weight")?.shape[0];
    let sizes = LayerSizes {
        width: Model(p),
        heads: Head(heads(g)?),
        hidden: Hidden(hidden),
        dropout: 0.0,
    };
    let err = |e: vaezoo_core::Error| e.to_string();
    let mut rng = seeded(0);
    let mut pb = ParamBuilder::new(&mut rng);
    let embedding = TokenEmbedding::new(&mut pb, "embedding", Vocab(vocab), Model(p));
    let encoder =
        EncoderStack::new(&mut pb, "encoder", layer_count(g, "encoder")?, sizes).map_err(err)?;
    let decoder =
        DecoderStack::new(&mut pb, "decoder", layer_count(g, "decoder")?, sizes).map_err(err)?;
    let cross: Vec<_> = (0..decoder.len())
        .map(|i| {
            let name = format!("decoder.layers.{i}.multihead_attn");
            let in_proj = pb.declare(
                &format!("{name}.in_proj_weight"),
                &[3 * p, p],
                vec![0.0; 3 * p * p],
            );
            let out_proj = pb.declare(
                &format!("{name}.out_proj.weight"),
                &[p, p],
                vec![0.0; p * p],
            );
            (in_proj, out_proj)
        })
        .collect();
    let output = Dense::new(&mut pb, "output_proj", Model(p), Vocab(vocab), true);
    let w = Table::new(&dev, &pb.finish(), |d| {
        Ok(g.input(&format!("param.{}", d.name))?.f64s())
    })?;
    let pe = PositionalEncoding::new(Model(p));
    let mut host_rng: HostRng = seeded(0);

    // Encoder.
    let (src, b, ns) = ids(g, "encoder_input_ids")?;
    let keep_src: Vec<bool> = g
        .input("src_key_padding_mask")?
        .bools()
        .iter()
        .map(|m| !m)
        .collect();
    let x = embedding
        .forward(&w, &src, Batch(b), Seq(ns))
        .map_err(err)?;
    let memory = encoder.forward(&w, pe.forward(x), &keep_src, Mode::Eval, &mut host_rng);

    // NVIB v1, eval.
    let nvib_w = |name: &str| -> Result<Vec<f64>, String> {
        let a = g.input(&format!("param.nvib_layer.{name}"))?;
        Ok(if a.shape.len() == 2 && a.shape[0] > 1 {
            transpose(&a.f64s(), a.shape[0], a.shape[1])
        } else {
            a.f64s()
        })
    };
    let t = |v: Vec<f64>| -> T<(usize,)> {
        let n = v.len();
        dev.tensor_from_vec(v, (n,)).put_tape(OwnedTape::default())
    };
    let (m, l) = (Model(p), Latent(p));
    let weights = Weights {
        mu_w: t(nvib_w("mu_proj.weight")?).reshape_like(&(m, l)),
        mu_b: t(nvib_w("mu_proj.bias")?).reshape_like(&(l,)),
        log_var_w: t(nvib_w("logvar_proj.weight")?).reshape_like(&(m, l)),
        log_var_b: t(nvib_w("logvar_proj.bias")?).reshape_like(&(l,)),
        alpha: AlphaWeights::V1 {
            w: t(nvib_w("alpha_proj.weight")?).reshape_like(&(m,)),
            b: t(nvib_w("alpha_proj.bias")?).reshape_like(&()),
        },
    };
    let prior = PriorComponent {
        mu: vec![g.input("prior_mu")?.scalar()],
        var: vec![g.input("prior_var")?.scalar()],
        alpha: g.input("prior_alpha")?.scalar(),
    };
    let memory_seq = batch_to_seq(&memory.as_vec(), b, ns, p);
    let latent = forward(memory, &keep_src, weights, &prior, Version::V1, 1, None);

    // Decoder, its cross-attention v1 denoising attention (eval) over (μ, logσ², π).
    let (tgt, _, nt) = ids(g, "decoder_input_ids")?;
    let keep_tgt: Vec<bool> = g
        .input("tgt_key_padding_mask")?
        .bools()
        .iter()
        .map(|m| !m)
        .collect();
    let y = pe.forward(
        embedding
            .forward(&w, &tgt, Batch(b), Seq(nt))
            .map_err(err)?,
    );
    let heads = sizes.heads;
    let (w_ref, dev_ref, latent_ref) = (&w, &dev, &latent);
    // Layer i's cross-attention: v1 denoising attention (eval) with its own projections.
    let attend = |(cross_in, cross_out): (ParamId, ParamId)| {
        move |q: T<(Batch, Seq, Model)>, _: Option<&[bool]>, _: &mut HostRng| {
            let packed = w_ref.get(cross_in, (Const::<3>, m, m));
            let part = |i: usize| {
                packed
                    .retaped::<OwnedTape<f64, Cpu>>()
                    .select(dev_ref.tensor(i))
            };
            let mha = MhaWeights {
                heads,
                q: part(0),
                k: part(1).reshape_like(&(m, l)),
                v: part(2).reshape_like(&(m, l)),
                out: w_ref.get(cross_out, (m, m)),
                bias: None,
            };
            let (out, _) = denoising_mha_eval(
                q,
                mha,
                latent_ref.mu.retaped(),
                latent_ref.log_var.retaped(),
                latent_ref.pi.retaped(),
                &latent_ref.keep,
                DaVersion::V1,
            );
            Ok(out)
        }
    };
    let mut attends: Vec<_> = cross.iter().map(|&ids| attend(ids)).collect();
    let mut per_layer: Vec<&mut Cross<f64, Cpu>> = attends
        .iter_mut()
        .map(|a| a as &mut Cross<f64, Cpu>)
        .collect();
    let y = decoder
        .forward(&w, y, &keep_tgt, &mut per_layer, Mode::Eval, &mut host_rng)
        .map_err(err)?;
    let logits = output.forward(&w, y);
    let logits_seq = batch_to_seq(&logits.as_vec(), b, nt, vocab);

    // Loss: mean token CE over all positions + λ_G mean KL_G + λ_D mean KL_D.
    let (targets, _, _) = ids(g, "encoder_input_ids")?;
    let nll = token_nll(logits, &targets).map_err(err)?.as_vec();
    let ce_mean = nll.iter().sum::<f64>() / b as f64;
    let dp = DpPrior {
        mu: prior.mu.clone(),
        var: prior.var.clone(),
        alpha: prior.alpha,
        delta: g.input("delta")?.scalar(),
        kappa: 1,
    };
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let kl_g = mean(
        kl_gaussian(
            latent.mu.retaped(),
            latent.log_var.retaped(),
            latent.alpha.retaped(),
            &latent.keep,
            &dp,
        )
        .as_vec(),
    );
    let kl_d = mean(kl_dirichlet(latent.alpha.retaped(), &latent.keep, &dp).as_vec());
    let loss =
        ce_mean + g.input("lambda_klg")?.scalar() * kl_g + g.input("lambda_kld")?.scalar() * kl_d;

    let nl = ns + 1;
    Ok(Produced::new()
        .with(
            "positional_encoding_rows",
            pe.table(g.output("positional_encoding_rows")?.shape[0]),
        )
        .with_padded("encoder_memory", memory_seq, &keep_src, b)
        .with_padded("logits", logits_seq, &keep_tgt, b)
        .with("mu", batch_to_seq(&latent.mu.as_vec(), b, nl, p))
        .with("logvar", batch_to_seq(&latent.log_var.as_vec(), b, nl, p))
        .with("alpha", batch_to_seq(&latent.alpha.as_vec(), b, nl, 1))
        .with("pi", batch_to_seq(&latent.pi.as_vec(), b, nl, 1))
        .with(
            "memory_key_padding_mask",
            latent
                .keep
                .iter()
                .map(|&k| f64::from(u8::from(!k)))
                .collect(),
        )
        .with("loss", vec![loss])
        .with("cross_entropy_sum", vec![ce_mean * (b * nt) as f64])
        .with("kl_gaussian", vec![kl_g])
        .with("kl_dirichlet", vec![kl_d])
        .with("avg_prop_vec", vec![latent.stats.avg_prop_vec]))
}
