//! The names of the official `nvib_transformers` NVAE (`TransformerNVIB`) for a vaezoo text
//! model's tensors: its state_dict holds `encoder.layers.N.…`, `encoder.norm.…`,
//! `decoder.layers.N.…` (the cross-attention as `multihead_attn.in_proj_weight`, the query,
//! key and value maps stacked along the rows, and `multihead_attn.out_proj.…`),
//! `decoder.norm.…`, `embedding.weight`, `output_proj.…` and, for the NVIB bottleneck,
//! `nvib_layer.{mu_proj, logvar_proj, alpha_proj}.…` (the names the golden files of the
//! official code carry). Other tensors keep vaezoo's names.

/// Where a vaezoo tensor goes in the official state_dict: a name, and for a tensor stacked
/// from several (the cross-attention's q, k, v), its index among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Official {
    /// The official name.
    pub name: String,
    /// `Some((i, n))`: rows block `i` of `n` blocks of the same size.
    pub part: Option<(usize, usize)>,
}

/// The official name of tensor `name` of a model whose encoder, bottleneck and decoder are of
/// plugin kinds `kinds`; `name` itself for a model that is not a Transformer encoder-decoder,
/// and for tensors the official model does not have.
pub fn official(name: &str, kinds: [&str; 3]) -> Official {
    let same = || Official {
        name: name.to_string(),
        part: None,
    };
    if kinds[0] != "transformer_encoder" || kinds[2] != "transformer_decoder" {
        return same();
    }
    let whole = |name: String| Official { name, part: None };
    if let Some(rest) = name.strip_prefix("encoder.stack.") {
        return whole(format!("encoder.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("decoder.output.") {
        return whole(format!("output_proj.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("decoder.stack.") {
        let Some((layer, tensor)) = rest.split_once(".multihead_attn.") else {
            return whole(format!("decoder.{rest}"));
        };
        let packed = |kind: &str| format!("decoder.{layer}.multihead_attn.in_proj_{kind}");
        return match tensor.split_once('.') {
            Some(("out", kind)) => whole(format!("decoder.{layer}.multihead_attn.out_proj.{kind}")),
            Some((map @ ("q" | "k" | "v"), kind)) => Official {
                name: packed(kind),
                part: Some((["q", "k", "v"].iter().position(|m| *m == map).unwrap(), 3)),
            },
            _ => same(),
        };
    }
    if kinds[1] == "nvib" {
        for (ours, theirs) in [
            ("mu", "mu_proj"),
            ("log_var", "logvar_proj"),
            ("alpha", "alpha_proj"),
        ] {
            if let Some(rest) = name.strip_prefix(&format!("bottleneck.{ours}.")) {
                return whole(format!("nvib_layer.{theirs}.{rest}"));
            }
        }
    }
    same()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NVAE: [&str; 3] = ["transformer_encoder", "nvib", "transformer_decoder"];

    #[test]
    fn nvae_tensors_get_the_official_names() {
        let name = |n: &str| official(n, NVAE);
        let whole = |n: &str| Official {
            name: n.into(),
            part: None,
        };
        assert_eq!(
            name("encoder.stack.layers.0.self_attn.in_proj_weight"),
            whole("encoder.layers.0.self_attn.in_proj_weight")
        );
        assert_eq!(name("decoder.stack.norm.bias"), whole("decoder.norm.bias"));
        assert_eq!(name("decoder.output.weight"), whole("output_proj.weight"));
        assert_eq!(name("embedding.weight"), whole("embedding.weight"));
        assert_eq!(
            name("decoder.stack.layers.1.multihead_attn.k.weight"),
            Official {
                name: "decoder.layers.1.multihead_attn.in_proj_weight".into(),
                part: Some((1, 3)),
            }
        );
        assert_eq!(
            name("decoder.stack.layers.1.multihead_attn.out.weight"),
            whole("decoder.layers.1.multihead_attn.out_proj.weight")
        );
        assert_eq!(
            name("bottleneck.log_var.bias"),
            whole("nvib_layer.logvar_proj.bias")
        );
        let mlp = ["mlp_encoder", "gaussian_vib", "mlp_decoder"];
        assert_eq!(
            official("encoder.layers.0.weight", mlp),
            whole("encoder.layers.0.weight")
        );
    }
}
