"""Priors p(z) of a VAE: the standard normal, the VampPrior, and a second stochastic layer.

Each prior scores latents z of shape (..., L) with ``log_prob(z, eps, encoder)``, shape
(...). A prior may need noise of its own (``noise_dim`` > 0 values per sample, ``eps`` of
shape (..., noise_dim)); then ``log_prob`` is a one-sample estimate whose exponential is
unbiased for p(z), so log w = log p(x|z) + log p̂(z) − log q(z|x) stays an importance
weight and IWAE_k still tends to log p(x).

=====================  ======================================================  =========
prior                  p(z)                                                    closed KL
=====================  ======================================================  =========
``standard``           N(0, I_L)                                               yes
``vampprior``          (1/K) Σ_k q_φ(z | u_k), u_k learned pseudo-inputs       no
                       (Tomczak & Welling 2018)
two stochastic layers  ∫ p_θ(z₁|z₂) N(z₂; 0, I) dz₂, estimated with one        no
                       z₂ ~ q_φ(z₂|z₁) (Burda et al. 2015)
=====================  ======================================================  =========

The two-layer VAE is thus the one-layer VAE on z = z₁ whose prior is itself a VAE bound:
log w = log p(x|z₁) + log p(z₁|z₂) + log p(z₂) − log q(z₂|z₁) − log q(z₁|x), exactly the
log weight of (z₁, z₂) under the two-layer model with q(z₁, z₂|x) = q(z₁|x) q(z₂|z₁).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from varbayes.vae.config import VAEConfig

__all__ = ["Prior", "StandardNormalPrior", "TwoLayerPrior", "VampPrior", "prior_from_config"]

_LOG_2PI = math.log(2 * math.pi)


def log_normal(z: torch.Tensor, loc: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, diag exp(log_var)) summed over the last axis (broadcasting)."""
    r = (z - loc) * torch.exp(-0.5 * log_var)
    return -0.5 * ((r * r).sum(-1) + log_var.sum(-1) + z.shape[-1] * _LOG_2PI)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis."""
    return -0.5 * ((z * z).sum(-1) + z.shape[-1] * _LOG_2PI)


class Prior(nn.Module):
    """Base class. ``noise_dim``: extra standard-normal values ``log_prob`` needs per z."""

    noise_dim = 0
    analytic_kl = False  # whether :meth:`kl` has a closed form

    def log_prob(self, z: torch.Tensor, eps: torch.Tensor | None, encoder: nn.Module):
        """log p(z) (or its one-sample estimate) for z (..., L); shape (...)."""
        raise NotImplementedError

    def sample(self, n: int, like: torch.Tensor, encoder: nn.Module, generator=None):
        """n draws z ~ p(z), shape (n, L); ``like`` (L,) gives L, dtype and device."""
        raise NotImplementedError

    def kl(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """KL(N(loc, diag scale²) || p(z)) in closed form, shape (B,)."""
        raise ValueError(
            f"kl='analytic' needs the standard normal prior; this model's prior is "
            f"{type(self).__name__} (use kl='mc')"
        )


class StandardNormalPrior(Prior):
    """p(z) = N(0, I_L)."""

    analytic_kl = True

    def log_prob(self, z, eps=None, encoder=None):
        return log_standard_normal(z)

    def sample(self, n, like, encoder=None, generator=None):
        shape = (n, like.shape[-1])
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)

    def kl(self, loc, scale):
        """KL(N(μ, diag σ²) || N(0, I)) = ½ Σ_l (σ_l² + μ_l² − 1 − log σ_l²), written out
        (torch's ``kl_divergence`` of the two Normals computes the same operations; its
        registry lookup does not trace under ``torch.compile(fullgraph=True)``)."""
        var = scale.pow(2)
        return (0.5 * (var + loc.pow(2) - 1 - var.log())).sum(-1)


class VampPrior(Prior):
    """p(z) = (1/K) Σ_k q_φ(z | u_k): the encoder's posteriors at K learned pseudo-inputs.

    The pseudo-inputs are ``hardtanh(raw, 0, 1)``, shape (K, D), so they stay images with
    values in [0, 1]; ``raw`` starts at N(0.05, 0.01²) as in Tomczak & Welling's MNIST
    code. ``log_prob`` runs the encoder on the K pseudo-inputs (once per call) and
    computes log (1/K) Σ_k N(z; μ_k, diag σ_k²) by a log-sum-exp over k, expanding the
    squares into matrix products so that memory is (..., K), not (..., K, L).
    """

    def __init__(self, num_pseudo_inputs: int, data_dim: int, mean=0.05, std=0.01):
        super().__init__()
        self.raw_pseudo_inputs = nn.Parameter(torch.randn(num_pseudo_inputs, data_dim) * std + mean)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_1..u_K, shape (K, D), in [0, 1]."""
        return F.hardtanh(self.raw_pseudo_inputs, 0.0, 1.0)

    def components(self, encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_k, log σ_k²) = encoder(u_k), each (K, L)."""
        return encoder(self.pseudo_inputs)

    def log_prob(self, z, eps=None, encoder=None):
        loc, log_var = self.components(encoder)  # (K, L)
        prec = torch.exp(-log_var)
        # Σ_l (z_l − μ_kl)² / σ_kl² = z² · prec_kᵀ − 2 z · (μ_k prec_k)ᵀ + Σ_l μ_kl² prec_kl
        quad = (z * z) @ prec.T - 2 * (z @ (loc * prec).T) + (loc * loc * prec).sum(-1)
        log_comp = -0.5 * (quad + log_var.sum(-1) + z.shape[-1] * _LOG_2PI)  # (..., K)
        return torch.logsumexp(log_comp, -1) - math.log(loc.shape[0])

    def sample(self, n, like, encoder=None, generator=None):
        loc, log_var = self.components(encoder)
        k = torch.randint(loc.shape[0], (n,), generator=generator, device=loc.device)
        e = torch.randn(n, loc.shape[-1], generator=generator, dtype=loc.dtype, device=loc.device)
        return loc[k] + torch.exp(0.5 * log_var[k]) * e


class TwoLayerPrior(Prior):
    """p(z₁) = ∫ p_θ(z₁|z₂) N(z₂; 0, I) dz₂ with q_φ(z₂|z₁): the second stochastic layer.

    ``up`` maps z₁ (..., L₁) to (μ, log σ²) of q(z₂|z₁), each (..., L₂); ``down`` maps z₂
    to (μ, log σ²) of p(z₁|z₂), each (..., L₁). With ε (..., L₂) and z₂ = μ + σ ⊙ ε,
    ``log_prob`` returns log p(z₁|z₂) + log N(z₂; 0, I) − log q(z₂|z₁).
    """

    def __init__(self, up: nn.Module, down: nn.Module, top_latent_dim: int):
        super().__init__()
        self.up, self.down = up, down
        self.noise_dim = top_latent_dim

    def log_prob(self, z, eps, encoder=None):
        loc2, log_var2 = self.up(z)
        z2 = loc2 + torch.exp(0.5 * log_var2) * eps
        # log q(z₂|z₁) at z₂ = μ + σ ε is −½(Σ ε² + Σ log σ² + L₂ log 2π)
        log_q2 = -0.5 * ((eps * eps).sum(-1) + log_var2.sum(-1) + eps.shape[-1] * _LOG_2PI)
        loc1, log_var1 = self.down(z2)
        return log_normal(z, loc1, log_var1) + log_standard_normal(z2) - log_q2

    def sample(self, n, like, encoder=None, generator=None):
        dt, dev = like.dtype, like.device
        z2 = torch.randn(n, self.noise_dim, generator=generator, dtype=dt, device=dev)
        loc1, log_var1 = self.down(z2)
        e = torch.randn(loc1.shape, generator=generator, dtype=dt, device=dev)
        return loc1 + torch.exp(0.5 * log_var1) * e


def prior_from_config(config: VAEConfig) -> Prior:
    """The prior described by ``config`` (``prior``, ``stochastic_layers``)."""
    if config.stochastic_layers == 2:
        from varbayes.vae.networks import MLPEncoder

        args = (config.top_hidden, config.top_latent_dim, config.activation)
        up = MLPEncoder(config.latent_dim, *args)
        down = MLPEncoder(config.top_latent_dim, tuple(reversed(config.top_hidden)),
                          config.latent_dim, config.activation)  # fmt: skip
        return TwoLayerPrior(up, down, config.top_latent_dim)
    if config.prior == "vampprior":
        return VampPrior(config.num_pseudo_inputs, config.data_dim)
    return StandardNormalPrior()
