"""Variational families q(θ | λ) as small ``nn.Module``s returning torch distributions.

Every guide keeps its variational parameters λ in ONE flat unconstrained vector
(``guide.flat``, shape ``(P,)``), so an optimizer updates all of them with a single
fused operation; named views (``loc``, ``scale``, ...) are derived from it.

The Gaussian lives on an unconstrained space u ∈ R^{D'}. For a constrained support
(positive, unit interval, simplex, ...) θ = T(u) with T = ``biject_to(support)`` and the
guide returns a ``TransformedDistribution``, whose log density includes the
log-det-Jacobian:

    log q(θ) = log q_u(T⁻¹(θ)) - log |det ∂T/∂u|,

so the ELBO E_q[log p(x, θ) - log q(θ)] is the right one on the constrained space.

Families (D' the unconstrained dimension):

* :class:`MeanFieldNormal`  q_u = Π_d N(μ_d, σ_d²)            P = 2D'
* :class:`FullRankNormal`   q_u = N(μ, LLᵀ), L = diag(s)(I + N)      P = D' + D'(D'+1)/2
* :class:`LowRankNormal`    q_u = N(μ, WWᵀ + diag(d)), W (D', r) P = D'(r + 2)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    biject_to,
    constraints,
)

from varbayes._validation import as_tensor, check_finite, check_int

__all__ = ["Guide", "MeanFieldNormal", "FullRankNormal", "LowRankNormal"]


class Guide(nn.Module):
    """Base class: a q(θ | λ) over θ of shape ``(dim,)`` on ``support``.

    Subclasses define ``_sizes()`` (the named blocks of ``flat``) and
    ``base_distribution()`` (the Gaussian over the unconstrained u).
    """

    def __init__(
        self,
        dim: int,
        *,
        support: constraints.Constraint = constraints.real,
        init_scale: float = 0.1,
        dtype: torch.dtype | None = None,
        device=None,
    ):
        super().__init__()
        dim = check_int(dim, "dim", minimum=1)
        if not isinstance(support, constraints.Constraint):
            raise TypeError(
                f"support must be a torch.distributions.constraints.Constraint; got {support!r}"
            )
        if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale)) or (
            init_scale <= 0
        ):
            raise ValueError(f"init_scale must be a finite number > 0; got {init_scale!r}")
        try:
            transform = biject_to(support)
        except NotImplementedError as exc:
            raise ValueError(
                f"support {support!r} has no bijection registered in biject_to"
            ) from exc
        self.support = support
        self.dim = dim
        self.event_shape = torch.Size((dim,))
        self.transform = None if _is_real(support) else transform
        self.udim = int(transform.inverse_shape(self.event_shape)[-1]) if self.transform else dim
        dtype = dtype or torch.get_default_dtype()
        self._blocks = self._sizes()
        flat = torch.zeros(sum(n for _, n in self._blocks), dtype=dtype, device=device)
        self.flat = nn.Parameter(flat)
        self._reset(init_scale)

    # ---- layout of the flat vector
    def _sizes(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def _view(self, name: str, flat: torch.Tensor | None = None) -> torch.Tensor:
        flat = self.flat if flat is None else flat
        start = 0
        for n, size in self._blocks:
            if n == name:
                return flat[start : start + size]
            start += size
        raise KeyError(name)

    def _reset(self, init_scale: float) -> None:
        raise NotImplementedError

    # ---- the distribution
    def base_distribution(self) -> Distribution:
        """The Gaussian q_u over the unconstrained u, event_shape ``(udim,)``."""
        raise NotImplementedError

    def forward(self) -> Distribution:
        """q(θ | λ): the base Gaussian, pushed through ``biject_to(support)`` if constrained."""
        base = self.base_distribution()
        if self.transform is None:
            return base
        return TransformedDistribution(base, [self.transform], validate_args=False)

    def rsample_with_log_q(
        self, num_samples: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """θ = T(u), u = μ + Lε (reparameterized), and log q(θ), shapes ``(S, dim)`` and
        ``(S,)``, with ε ~ N(0, I) of shape ``(S, noise_dim)`` from ``generator`` and log q
        computed from ε (:meth:`rsample_from_noise`)."""
        from varbayes.vi.drawn import randn

        eps = randn((num_samples, self.noise_dim), generator, self.flat)
        return self.rsample_from_noise(eps)

    def rsample_from_noise(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """θ = T(u), u = μ + Lε, and log q(θ) for given noise ε of shape ``(S, noise_dim)``:

            log q(θ) = log q_u(u) - log |det ∂T/∂u|,  log q_u(u) = -log|det L| - |ε|²/2 - c.

        A pure function of ``flat`` and ε (so that it can be compiled or differentiated
        with ``torch.func``)."""
        u, log_q = self.base_from_noise(eps)
        if self.transform is None:
            return u, log_q
        theta = self.transform(u)
        ladj = self.transform.log_abs_det_jacobian(u, theta)
        extra = 1 - self.transform.domain.event_dim  # dims still to sum to get (S,)
        if extra > 0:
            ladj = ladj.sum(-1)
        return theta, log_q - ladj

    def base_from_noise(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u = μ + Lε and log q_u(u) for noise ε ``(S, noise_dim)``
        (:func:`varbayes.vi.posterior.from_noise` of :meth:`base_distribution`)."""
        from varbayes.vi.posterior import from_noise

        return from_noise(self.base_distribution(), eps)

    @property
    def noise_dim(self) -> int:
        """The number of N(0, 1) variables behind one draw (udim, plus the rank for
        :class:`LowRankNormal`)."""
        return self.udim

    @property
    def loc(self) -> torch.Tensor:
        """μ, the mean of the unconstrained Gaussian, shape ``(udim,)``."""
        return self._view("loc")

    # ---- initialisation
    @torch.no_grad()
    def init_to_point(self, theta, scale: float | None = None) -> Guide:
        """Centre q at θ (e.g. the MAP): μ = T⁻¹(θ); optionally reset the scale. Returns self."""
        theta = as_tensor(theta, "theta", dtype=self.flat.dtype, device=self.flat.device)
        if theta.shape != self.event_shape:
            raise ValueError(
                f"theta must have shape {tuple(self.event_shape)}; got {tuple(theta.shape)}"
            )
        check_finite(theta, "theta")
        if self.transform is not None:
            if not bool(self.support.check(theta).all()):
                raise ValueError(f"theta must lie in the guide's support {self.support}")
            u = self.transform.inv(theta)
        else:
            u = theta
        if scale is not None:
            self._reset(scale)
        self.loc.copy_(u)
        return self

    @torch.no_grad()
    def init_from_prior(
        self, prior: Distribution, num_samples: int = 4096, *, generator=None
    ) -> Guide:
        """Moment-match q_u to the prior pushed to the unconstrained space. Returns self.

        Draws θ ~ p(θ), maps u = T⁻¹(θ) and sets μ and the covariance (its diagonal for
        the mean-field and low-rank families) to the sample moments of u.
        """
        from varbayes.vi.elbo import draw

        if not isinstance(prior, Distribution):
            raise TypeError(f"prior must be a Distribution; got {type(prior).__name__}")
        if prior.batch_shape + prior.event_shape != self.event_shape:
            raise ValueError(
                f"prior must be over θ of shape {tuple(self.event_shape)}; got batch_shape "
                f"{tuple(prior.batch_shape)} and event_shape {tuple(prior.event_shape)}"
            )
        num_samples = check_int(num_samples, "num_samples", minimum=2)
        theta = draw(prior, num_samples, generator=generator, reparameterized=False)
        theta = theta.reshape(num_samples, -1).to(self.flat)
        u = self.transform.inv(theta) if self.transform is not None else theta
        self._moment_match(u.mean(0), torch.cov(u.T).reshape(self.udim, self.udim))
        return self

    def _moment_match(self, mean: torch.Tensor, cov: torch.Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, support={self.support}, num_params={self.flat.numel()}"


class MeanFieldNormal(Guide):
    """Mean-field Normal q_u(u) = Π_d N(u_d | μ_d, σ_d²), σ_d = exp(ρ_d).

    ``flat = [μ (D'), ρ (D')]``; returns ``Independent(Normal(μ, σ), 1)`` (pushed through
    ``biject_to(support)`` when constrained).
    """

    def _sizes(self):
        return [("loc", self.udim), ("log_scale", self.udim)]

    @torch.no_grad()
    def _reset(self, init_scale):
        self._view("log_scale").fill_(math.log(init_scale))

    @property
    def scale(self) -> torch.Tensor:
        """σ, shape ``(udim,)``."""
        return self._view("log_scale").exp()

    def base_distribution(self):
        return Independent(
            Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False
        )

    def _moment_match(self, mean, cov):
        self.loc.copy_(mean)
        self._view("log_scale").copy_(cov.diagonal().clamp_min(1e-30).log() / 2)


class FullRankNormal(Guide):
    """Full-rank Normal q_u(u) = N(u | μ, LLᵀ), L = diag(s)(I + N) with s = exp(ρ) and N
    strictly lower triangular (NumPyro's AutoMultivariateNormal parameterization: the
    scales and the correlations are separate parameters, so a badly scaled posterior
    does not make the off-diagonals stall or blow up).

    ``flat = [μ (D'), ρ (D'), N (D'(D'-1)/2)]``. Returns
    ``MultivariateNormal(μ, scale_tril=L)``; :meth:`rsample_with_log_q` gives
    log q = -Σρ - |ε|²/2 - (D'/2) log 2π from the noise ε (no triangular solve, so it stays
    right in float32 however ill-conditioned L is).
    """

    def _sizes(self):
        d = self.udim
        return [("loc", d), ("log_scale", d), ("unit_tril", d * (d - 1) // 2)]

    def _tril_index(self):
        return torch.tril_indices(self.udim, self.udim, -1, device=self.flat.device)

    @torch.no_grad()
    def _reset(self, init_scale):
        self._view("log_scale").fill_(math.log(init_scale))
        self._view("unit_tril").zero_()

    def _set_tril(self, L):
        """Set L (lower triangular, positive diagonal): s = diag(L), N = L/s - I."""
        s = L.diagonal()
        unit = L / s[:, None]
        i, j = self._tril_index()
        self._view("log_scale").copy_(s.log())
        self._view("unit_tril").copy_(unit[i, j])

    @property
    def scale_tril(self) -> torch.Tensor:
        """L = diag(s)(I + N), shape ``(udim, udim)``, lower triangular with diagonal s."""
        d = self.udim
        i, j = self._tril_index()
        unit = self.flat.new_zeros(d, d).index_put((i, j), self._view("unit_tril"))
        unit = unit + torch.eye(d, dtype=self.flat.dtype, device=self.flat.device)
        return self._view("log_scale").exp()[:, None] * unit

    def base_distribution(self):
        return MultivariateNormal(self.loc, scale_tril=self.scale_tril, validate_args=False)

    def _moment_match(self, mean, cov):
        self.loc.copy_(mean)
        self._set_tril(torch.linalg.cholesky(cov))


class LowRankNormal(Guide):
    """Low-rank-plus-diagonal Normal q_u(u) = N(u | μ, WWᵀ + diag(d)), d = exp(2ρ).

    ``flat = [μ (D'), W (D'·r), ρ (D')]``; returns ``LowRankMultivariateNormal(μ, W, d)``.
    W starts at zero (plus a small deterministic pattern so that its gradient is non-zero).
    """

    def __init__(self, dim: int, rank: int = 1, **kwargs):
        self.rank = check_int(rank, "rank", minimum=1)
        super().__init__(dim, **kwargs)

    def _sizes(self):
        return [("loc", self.udim), ("cov_factor", self.udim * self.rank), ("log_sd", self.udim)]

    @torch.no_grad()
    def _reset(self, init_scale):
        self._view("log_sd").fill_(math.log(init_scale))
        w = self._view("cov_factor").view(self.udim, self.rank)
        w.zero_()
        k = min(self.udim, self.rank)
        w[torch.arange(k), torch.arange(k)] = 1e-3 * init_scale

    @property
    def noise_dim(self) -> int:
        return self.udim + self.rank

    @property
    def cov_factor(self) -> torch.Tensor:
        """W, shape ``(udim, rank)``."""
        return self._view("cov_factor").view(self.udim, self.rank)

    @property
    def cov_diag(self) -> torch.Tensor:
        """d, shape ``(udim,)``."""
        return (2 * self._view("log_sd")).exp()

    def base_distribution(self):
        return LowRankMultivariateNormal(
            self.loc, self.cov_factor, self.cov_diag, validate_args=False
        )

    def base_from_noise(self, eps):
        """u = μ + √d ⊙ ε₁ + W ε₂ and log q_u(u)
        (:func:`~varbayes.vi.posterior.lowrank_from_noise`), without building the torch
        distribution (whose constructor factors C with ``torch.linalg.cholesky``, which
        does not compile inside ``torch.while_loop``)."""
        from varbayes.vi.posterior import lowrank_from_noise

        return lowrank_from_noise(self.loc, self.cov_factor, self.cov_diag, eps)

    def _moment_match(self, mean, cov):
        self.loc.copy_(mean)
        self._reset(1.0)
        self._view("log_sd").copy_(cov.diagonal().clamp_min(1e-30).log() / 2)


def _is_real(support) -> bool:
    base = support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    return base is constraints.real
