"""Decoder likelihoods p(x|z): the distribution of the D pixels given the decoder's output.

Each likelihood turns the decoder output ``out = f_θ(z)`` of shape (..., D) into a torch
Distribution over x with ``event_shape == (D,)`` (pixels independent given z) and scores
data with a fused ``log_prob(x, out) = Σ_d log p(x_d | z)`` of shape (...). ``x`` of
shape (B, D) broadcasts against ``out`` of shape (k, B, D).

======================  ==========================  ====================================
name                    p(x_d | z)                  decoder output
======================  ==========================  ====================================
``bernoulli``           Bernoulli(sigmoid(out_d))   logits; x ∈ [0, 1] (binary data, or
                                                    grey levels read as cross-entropy)
``gaussian``            N(sigmoid(out_d), s_d²)     pre-sigmoid mean; s fixed or learned
``continuous-bernoulli``  CB(λ = sigmoid(out_d))    logits; x ∈ [0, 1] (Loaiza-Ganem &
                                                    Cunningham 2019)
======================  ==========================  ====================================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Independent, Normal

from varbayes.vae.config import LIKELIHOODS, VAEConfig

__all__ = [
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "GaussianLikelihood",
    "Likelihood",
    "make_likelihood",
]


class Likelihood(nn.Module):
    """Base class: p(x|z) from the decoder output. Subclasses set ``name`` and ``unit_interval``."""

    name = ""
    unit_interval = False  # whether x must lie in [0, 1]

    def distribution(self, out: torch.Tensor) -> Distribution:
        """p(x|z) as a torch Distribution, batch shape out.shape[:-1], event shape (D,)."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = Σ_d log p(x_d|z), shape ``broadcast(x, out).shape[:-1]``."""
        return self.distribution(out).log_prob(x)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape (..., D): the image a decoder output stands for."""
        return self.distribution(out).mean

    def check_data(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` naming ``name`` when ``x`` is outside this likelihood's support."""
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite; it holds NaN or infinite values")
        if self.unit_interval and x.numel():
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"{name} must hold values in [0, 1] for the {self.name} likelihood; "
                    f"got values in [{lo:g}, {hi:g}]"
                )


class BernoulliLikelihood(Likelihood):
    """p(x|z) = Π_d Bernoulli(x_d; sigmoid(out_d)); log p = Σ_d [x_d·out_d − softplus(out_d)]."""

    name = "bernoulli"
    unit_interval = True

    def distribution(self, out):
        return Independent(Bernoulli(logits=out, validate_args=False), 1)

    def log_prob(self, x, out):
        if x.shape != out.shape:
            x = x.expand_as(out)
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)

    def mean(self, out):
        return torch.sigmoid(out)


class GaussianLikelihood(Likelihood):
    """p(x|z) = Π_d N(x_d; m_d, s_d²), m = sigmoid(out) (``link="sigmoid"``) or out (``identity``).

    ``std`` is the fixed s (all pixels), or the initial value of a learned per-pixel s
    (``learn_std=True``, parameterised as log s so that s > 0).
    """

    name = "gaussian"

    def __init__(self, data_dim: int, std: float = 0.1, *, learn_std: bool = False, link="sigmoid"):
        super().__init__()
        if link not in ("sigmoid", "identity"):
            raise ValueError(f"link must be 'sigmoid' or 'identity'; got {link!r}")
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
            raise ValueError(f"std must be a finite number > 0; got {std!r}")
        self.link = link
        self.learn_std = learn_std
        self.fixed_log_std = math.log(std)
        if learn_std:
            self.log_std = nn.Parameter(torch.full((data_dim,), math.log(std)))

    def _loc(self, out):
        return torch.sigmoid(out) if self.link == "sigmoid" else out

    def _log_std(self, out) -> torch.Tensor:
        if self.learn_std:
            return self.log_std.to(out.dtype)
        return torch.full((out.shape[-1],), self.fixed_log_std, dtype=out.dtype, device=out.device)

    def distribution(self, out):
        scale = self._log_std(out).exp().expand_as(out)
        return Independent(Normal(self._loc(out), scale, validate_args=False), 1)

    def log_prob(self, x, out):
        log_std = self._log_std(out)
        r = (x - self._loc(out)) * torch.exp(-log_std)
        return -0.5 * (r * r).sum(-1) - log_std.sum() - 0.5 * out.shape[-1] * math.log(2 * math.pi)

    def mean(self, out):
        return self._loc(out)


class ContinuousBernoulliLikelihood(Likelihood):
    """p(x|z) = Π_d CB(x_d; λ_d), λ = sigmoid(out): density C(λ) λ^x (1−λ)^(1−x) on [0, 1]."""

    name = "continuous-bernoulli"
    unit_interval = True

    def distribution(self, out):
        return Independent(ContinuousBernoulli(logits=out, validate_args=False), 1)


def make_likelihood(
    name: str, data_dim: int, *, std: float = 0.1, learn_std: bool = False
) -> Likelihood:
    """The likelihood called ``name``: ``bernoulli``, ``gaussian`` or ``continuous-bernoulli``."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(data_dim, std, learn_std=learn_std)
    if name == "continuous-bernoulli":
        return ContinuousBernoulliLikelihood()
    raise ValueError(f"likelihood must be one of {list(LIKELIHOODS)}; got {name!r}")


def likelihood_from_config(config: VAEConfig) -> Likelihood:
    """:func:`make_likelihood` with the fields of ``config``."""
    return make_likelihood(
        config.likelihood, config.data_dim, std=config.gaussian_std, learn_std=config.learn_std
    )
