"""Distributions that ``torch.distributions`` lacks, written the torch way.

They appear as posteriors and posterior predictives of the conjugate models:

* :class:`BetaBinomial` — predictive of the Beta-Binomial model,
* :class:`DirichletMultinomial` — predictive of the Dirichlet-Multinomial model,
* :class:`NormalGamma` — joint posterior of (μ, τ) for a Normal with unknown mean and
  precision,
* :class:`NormalInverseGamma` — joint posterior of (w, σ²) in Bayesian linear regression
  with unknown noise.

Each declares its ``arg_constraints`` and ``support``, validates its arguments like
torch's own classes, and implements ``log_prob``, ``sample`` and moments.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, Gamma, InverseGamma, MultivariateNormal, constraints
from torch.distributions import Normal as _Normal
from torch.distributions.utils import broadcast_all

_EMPTY = torch.Size()

__all__ = ["BetaBinomial", "DirichletMultinomial", "NormalGamma", "NormalInverseGamma"]


def _log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


class BetaBinomial(Distribution):
    r"""Beta-Binomial: k | p ~ Binomial(n, p), p ~ Beta(α, β), p integrated out.

    .. math:: p(k) = \binom{n}{k} \frac{B(k + α, n - k + β)}{B(α, β)},\quad k = 0..n.

    Args:
        concentration1 (Tensor): α > 0.
        concentration0 (Tensor): β > 0.
        total_count (Tensor or int): n >= 0 trials.
    """

    arg_constraints = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "total_count": constraints.nonnegative_integer,
    }
    has_enumerate_support = False

    def __init__(self, concentration1, concentration0, total_count=1, validate_args=None):
        self.concentration1, self.concentration0, self.total_count = broadcast_all(
            concentration1, concentration0, total_count
        )
        self.total_count = self.total_count.type_as(self.concentration1)
        super().__init__(self.concentration1.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    @property
    def mean(self):
        a, b = self.concentration1, self.concentration0
        return self.total_count * a / (a + b)

    @property
    def variance(self):
        a, b, n = self.concentration1, self.concentration0, self.total_count
        s = a + b
        return n * a * b * (s + n) / (s * s * (s + 1))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        a, b, n = self.concentration1, self.concentration0, self.total_count
        log_choose = torch.lgamma(n + 1) - torch.lgamma(value + 1) - torch.lgamma(n - value + 1)
        return log_choose + _log_beta(value + a, n - value + b) - _log_beta(a, b)

    def sample(self, sample_shape=_EMPTY):
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            p = torch.distributions.Beta(
                self.concentration1.expand(shape), self.concentration0.expand(shape)
            ).sample()
            return torch.distributions.Binomial(self.total_count.expand(shape), p).sample()


class DirichletMultinomial(Distribution):
    r"""Dirichlet-Multinomial: counts x | π ~ Multinomial(n, π), π ~ Dirichlet(α).

    .. math:: p(x) = \frac{n!\,Γ(α_0)}{Γ(n + α_0)} \prod_k \frac{Γ(x_k + α_k)}{x_k!\,Γ(α_k)},
              \quad α_0 = \sum_k α_k,\ \sum_k x_k = n.

    Args:
        concentration (Tensor): α, shape ``batch_shape + (K,)``, positive.
        total_count (int or Tensor): n >= 0, broadcast against ``batch_shape``.
    """

    arg_constraints = {
        "concentration": constraints.independent(constraints.positive, 1),
        "total_count": constraints.nonnegative_integer,
    }

    def __init__(self, concentration, total_count=1, validate_args=None):
        self.concentration = torch.as_tensor(concentration)
        if self.concentration.dim() < 1:
            raise ValueError("concentration must have at least one dimension (K categories)")
        batch_shape = self.concentration.shape[:-1]
        self.total_count = torch.as_tensor(
            total_count, dtype=self.concentration.dtype, device=self.concentration.device
        ).expand(batch_shape)
        super().__init__(batch_shape, self.concentration.shape[-1:], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.multinomial(int(self.total_count.max()))

    @property
    def mean(self):
        a = self.concentration
        return self.total_count.unsqueeze(-1) * a / a.sum(-1, keepdim=True)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        a = self.concentration
        a0 = a.sum(-1)
        n = value.sum(-1)
        return (
            torch.lgamma(n + 1)
            + torch.lgamma(a0)
            - torch.lgamma(n + a0)
            + (torch.lgamma(value + a) - torch.lgamma(value + 1) - torch.lgamma(a)).sum(-1)
        )

    def sample(self, sample_shape=_EMPTY):
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            probs = torch.distributions.Dirichlet(self.concentration.expand(shape)).sample()
            n = int(self.total_count.max())
            if not bool((self.total_count == n).all()):
                raise NotImplementedError("sampling needs one total_count for the whole batch")
            return torch.distributions.Multinomial(n, probs=probs).sample()


class NormalGamma(Distribution):
    r"""Normal-Gamma on θ = (μ, τ): τ ~ Gamma(α, β) (rate β), μ | τ ~ N(m, 1 / (κ τ)).

    A value is a tensor whose last dimension holds ``(μ, τ)``.

    .. math:: \log p(μ, τ) = \log \mathrm{Gamma}(τ; α, β) + \log N(μ; m, (κτ)^{-1}).

    Marginally μ ~ StudentT(2α, m, sqrt(β / (α κ))) and τ ~ Gamma(α, β).
    """

    arg_constraints = {
        "loc": constraints.real,
        "kappa": constraints.positive,
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = constraints.independent(constraints.real, 1)  # τ > 0 is checked in log_prob
    has_rsample = True

    def __init__(self, loc, kappa, concentration, rate, validate_args=None):
        self.loc, self.kappa, self.concentration, self.rate = broadcast_all(
            loc, kappa, concentration, rate
        )
        super().__init__(self.loc.shape, torch.Size([2]), validate_args=validate_args)

    def marginal_loc(self) -> torch.distributions.StudentT:
        """The marginal posterior of μ: StudentT(2α, m, sqrt(β / (α κ)))."""
        scale = torch.sqrt(self.rate / (self.concentration * self.kappa))
        return torch.distributions.StudentT(2 * self.concentration, self.loc, scale)

    def marginal_precision(self) -> Gamma:
        """The marginal posterior of τ: Gamma(α, β)."""
        return Gamma(self.concentration, self.rate)

    @property
    def mean(self):
        return torch.stack([self.loc, self.concentration / self.rate], -1)

    @property
    def mode(self):
        """Joint mode (m, (α - 1/2) / β), valid for α > 1/2."""
        return torch.stack([self.loc, (self.concentration - 0.5) / self.rate], -1)

    def log_prob(self, value):
        mu, tau = value[..., 0], value[..., 1]
        ok = tau > 0
        tau_safe = torch.where(ok, tau, torch.ones_like(tau))
        lp = Gamma(self.concentration, self.rate).log_prob(tau_safe) + _Normal(
            self.loc, torch.rsqrt(self.kappa * tau_safe)
        ).log_prob(mu)
        return torch.where(ok, lp, torch.full_like(lp, -math.inf))

    def rsample(self, sample_shape=_EMPTY):
        shape = self._extended_shape(sample_shape)[:-1]
        tau = Gamma(self.concentration.expand(shape), self.rate.expand(shape)).rsample()
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        mu = self.loc + eps * torch.rsqrt(self.kappa * tau)
        return torch.stack([mu, tau], -1)


class NormalInverseGamma(Distribution):
    r"""Normal-Inverse-Gamma on θ = (w, σ²): σ² ~ InvGamma(a, b), w | σ² ~ N(m, σ² V).

    A value is a tensor of shape ``(..., D + 1)``: the D weights, then σ².

    Marginally σ² ~ InvGamma(a, b) and w ~ multivariate Student-t with 2a degrees of
    freedom, location m and scale matrix (b / a) V; ``weight_mean`` and
    ``weight_covariance`` give its moments.
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, loc, scale_tril, concentration, rate, validate_args=None):
        self.loc = loc
        self.scale_tril = scale_tril  # Cholesky factor of V
        self.concentration = torch.as_tensor(concentration, dtype=loc.dtype)
        self.rate = torch.as_tensor(rate, dtype=loc.dtype)
        d = loc.shape[-1]
        super().__init__(torch.Size(), torch.Size([d + 1]), validate_args=validate_args)

    def marginal_noise(self) -> InverseGamma:
        """The marginal posterior of the noise variance σ²: InvGamma(a, b)."""
        return InverseGamma(self.concentration, self.rate)

    @property
    def weight_mean(self) -> torch.Tensor:
        """E[w] = m."""
        return self.loc

    @property
    def weight_covariance(self) -> torch.Tensor:
        """Cov[w] = b / (a - 1) V (finite for a > 1)."""
        v = self.scale_tril @ self.scale_tril.mT
        return self.rate / (self.concentration - 1) * v

    def log_prob(self, value):
        w, s2 = value[..., :-1], value[..., -1]
        ok = s2 > 0
        s2_safe = torch.where(ok, s2, torch.ones_like(s2))
        lp = InverseGamma(self.concentration, self.rate).log_prob(s2_safe)
        lp = lp + MultivariateNormal(
            self.loc, scale_tril=self.scale_tril * s2_safe.sqrt()[..., None, None]
        ).log_prob(w)
        return torch.where(ok, lp, torch.full_like(lp, -math.inf))

    def rsample(self, sample_shape=_EMPTY):
        s2 = InverseGamma(self.concentration, self.rate).rsample(sample_shape)
        eps = torch.randn(
            (*sample_shape, self.loc.shape[-1]), dtype=self.loc.dtype, device=self.loc.device
        )
        w = self.loc + s2.sqrt()[..., None] * (eps @ self.scale_tril.mT)
        return torch.cat([w, s2[..., None]], -1)
