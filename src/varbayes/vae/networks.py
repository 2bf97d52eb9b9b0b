"""Encoder and decoder networks: an MLP pair and a small convolutional pair.

The encoder maps a batch of images x, flattened to shape (B, D), to the parameters of
q(z|x) = N(μφ(x), diag σφ²(x)): it returns ``(loc, log_var)``, each (B, L). The decoder
maps latents z of shape (..., L) to the parameters of p(x|z), shape (..., D) (logits or
means, see :mod:`varbayes.vae.likelihoods`). Leading dimensions of z (e.g. k importance
samples) are kept. Outputs come back in the input's dtype: under bfloat16 autocast
(``precision="bf16-mixed"``) only the layers run in bfloat16, and the latent and
likelihood arithmetic after them stays in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from varbayes.vae.config import ACTIVATIONS, VAEConfig

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "build_networks"]

_ACTIVATION_CLASSES = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}
assert set(_ACTIVATION_CLASSES) == set(ACTIVATIONS)


def _mlp(widths: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(_ACTIVATION_CLASSES[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x (B, D) → D-h₁-…-h_n-2L fully connected → (μφ(x), log σφ²(x)), each (B, L)."""

    def __init__(self, data_dim: int, hidden: tuple[int, ...], latent_dim: int, activation: str):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp([data_dim, *hidden, 2 * latent_dim], activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x).to(x.dtype)
        return out[..., : self.latent_dim], out[..., self.latent_dim :]


class MLPDecoder(nn.Module):
    """z (..., L) → L-h_n-…-h₁-D fully connected → parameters of p(x|z), (..., D)."""

    def __init__(self, data_dim: int, hidden: tuple[int, ...], latent_dim: int, activation: str):
        super().__init__()
        self.net = _mlp([latent_dim, *reversed(hidden), data_dim], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).to(z.dtype)


class ConvEncoder(nn.Module):
    """x (B, H·W) → two stride-2 4×4 convolutions per channel list → linear → (μ, log σ²)."""

    def __init__(
        self,
        image_shape: tuple[int, int],
        channels: tuple[int, ...],
        hidden: int,
        latent_dim: int,
        activation: str,
    ):
        super().__init__()
        self.image_shape = image_shape
        self.latent_dim = latent_dim
        act = _ACTIVATION_CLASSES[activation]
        layers: list[nn.Module] = []
        c_in, h, w = 1, *image_shape
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), act()]
            c_in, h, w = c, h // 2, w // 2
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * h * w, hidden), act(), nn.Linear(hidden, 2 * latent_dim)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.conv(x.reshape(-1, 1, *self.image_shape))).to(x.dtype)
        return out[..., : self.latent_dim], out[..., self.latent_dim :]


class ConvDecoder(nn.Module):
    """z (..., L) → linear → transposed 4×4 stride-2 convolutions → parameters (..., H·W)."""

    def __init__(
        self,
        image_shape: tuple[int, int],
        channels: tuple[int, ...],
        hidden: int,
        latent_dim: int,
        activation: str,
    ):
        super().__init__()
        act = _ACTIVATION_CLASSES[activation]
        n = len(channels)
        self.start = (channels[-1], image_shape[0] >> n, image_shape[1] >> n)
        self.data_dim = image_shape[0] * image_shape[1]
        c, h, w = self.start
        self.head = nn.Sequential(
            nn.Linear(latent_dim, hidden), act(), nn.Linear(hidden, c * h * w), act()
        )
        layers: list[nn.Module] = []
        outs = [*reversed(channels[:-1]), 1]
        for i, c_out in enumerate(outs):
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(act())
            c = c_out
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        return self.deconv(h).reshape(*lead, self.data_dim).to(z.dtype)


def build_networks(config: VAEConfig) -> tuple[nn.Module, nn.Module]:
    """The (encoder, decoder) pair described by ``config``."""
    if config.architecture == "mlp":
        args = (config.data_dim, config.hidden, config.latent_dim, config.activation)
        return MLPEncoder(*args), MLPDecoder(*args)
    hidden = config.hidden[-1] if config.hidden else 256
    args = (config.image_shape, config.conv_channels, hidden, config.latent_dim, config.activation)
    return ConvEncoder(*args), ConvDecoder(*args)
