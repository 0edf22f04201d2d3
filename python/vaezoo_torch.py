"""Rebuild a model that `vaezoo export RUN --format pytorch` wrote, in plain PyTorch.

    import sys; sys.path.insert(0, "python")          # this folder of the vaezoo repository
    from vaezoo_torch import load_mlp_vae, load_state_dict
    vae = load_mlp_vae("runs/my-run/export/pytorch")  # the export folder
    rec, kl = vae.neg_elbo_at_mean(x)                 # x: (N, features) scaled to [0, 1]

`load_state_dict` reads any export's `model.safetensors` into a dict of tensors (without the
`safetensors` package; with it, `safetensors.torch.load_file` gives the same). `load_mlp_vae`
rebuilds the vector VAE family of the MLP plugins: `mlp_encoder` (every layer followed by the
activation), `gaussian_vib` and `mlp_decoder` (the activation after each hidden layer; a
Bernoulli likelihood on logits), unconditional. Its modules' `state_dict()` names are the
export's, so `load_state_dict(strict=True)` checks that nothing is missing or left over.
"""

import json
import struct
from pathlib import Path

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": lambda: nn.GELU(approximate="tanh"),
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "identity": nn.Identity,
}


def load_state_dict(path):
    """The tensors of a safetensors file (F32 only), by name."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        values = torch.frombuffer(bytearray(body[start:end]), dtype=torch.float32)
        tensors[name] = values.reshape(info["shape"])
    return tensors


class Mlp(nn.Module):
    """`layers.0`, `layers.1`, …: nn.Linear layers, the activation after the hidden ones (and
    after the last one too with `activate_output`)."""

    def __init__(self, sizes, activation, activate_output):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.activation = ACTIVATIONS[activation]()
        self.activate_output = activate_output

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers) or self.activate_output:
                x = self.activation(x)
        return x


class GaussianVib(nn.Module):
    """`mean` and `log_var`: the posterior q(z | x) = N(mean, exp(log_var))."""

    def __init__(self, width, latent_dim):
        super().__init__()
        self.mean = nn.Linear(width, latent_dim)
        self.log_var = nn.Linear(width, latent_dim)


class MlpVae(nn.Module):
    """The `encoder`, `bottleneck` and `decoder` of an MLP VAE spec, as vaezoo names them."""

    def __init__(self, spec, features):
        super().__init__()
        kinds = [spec[slot]["kind"] for slot in ("encoder", "bottleneck", "decoder")]
        if kinds != ["mlp_encoder", "gaussian_vib", "mlp_decoder"]:
            raise ValueError(f"not an MLP VAE: {kinds}")
        enc, dec = spec["encoder"].get("config", {}), spec["decoder"].get("config", {})
        if enc.get("condition") or dec.get("condition") or enc.get("tokens", 1) != 1:
            raise ValueError("conditional or multi-token MLP VAEs are not covered")
        if dec["likelihood"]["type"] != "bernoulli":
            raise ValueError("only the Bernoulli likelihood is covered")
        latent = spec["bottleneck"]["config"]["latent_dim"]
        hidden = enc["hidden"]
        self.encoder = Mlp([features] + hidden, enc.get("activation", "relu"), True)
        self.bottleneck = GaussianVib(hidden[-1], latent)
        self.decoder = Mlp([latent] + dec.get("hidden", []) + [features],
                           dec.get("activation", "relu"), False)

    def posterior(self, x):
        h = self.encoder(x)
        return self.bottleneck.mean(h), self.bottleneck.log_var(h)

    def neg_elbo_at_mean(self, x):
        """Per example: -log p(x | z) at z = the posterior mean, and KL(q(z | x) || N(0, I))."""
        mean, log_var = self.posterior(x)
        logits = self.decoder(mean)
        rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)
        return rec.sum(-1), kl


def load_mlp_vae(export_dir):
    """The MLP VAE of an export folder (`spec.json` + `model.safetensors`), weights loaded."""
    export_dir = Path(export_dir)
    spec = json.loads((export_dir / "spec.json").read_text())
    state = load_state_dict(export_dir / "model.safetensors")
    features = state["encoder.layers.0.weight"].shape[1]
    model = MlpVae(spec, features)
    model.load_state_dict(state, strict=True)
    return model.eval()
