"""The shipped models: one latent vector θ ∈ R^D with a fixed prior, as :class:`Model` s.

A :class:`LogJoint` *is* a :class:`~varbayes.vi.Model` whose function declares one
latent ``theta`` with the prior p(θ) and the likelihood of the data,

    log p(x, θ) = scale · Σ_n log p(x_n | θ) + log p(θ),

so ``vi.fit(LogisticRegression(X, y))`` returns a :class:`~varbayes.vi.Posterior` with
named draws and a summary of ``theta[0]``, ``theta[1]``, ... like any model. θ has real
support, so the unconstrained z *is* θ (no Jacobian) and ``log_joint(θ)`` =
:meth:`Model.log_density` is the flat-vector log joint the guide modules of
:mod:`varbayes.vi.svi` fit. What a LogJoint adds to a Model is what those tools need:

* ``prior``, p(θ) as one Distribution, because the analytic-KL form of the ELBO,

      ELBO(q) = E_q[log p(x | θ)] - KL(q(θ) || p(θ)),

  needs it in closed form (:meth:`Model.log_likelihood` is the first term);
* minibatches: :meth:`Model.subsample` replaces the likelihood by the unbiased
  (N/B) Σ_{n∈B} log p(x_n | θ) (the data are the model's ``rows``);
* optionally a hand-derived ∇_θ log p(x, θ) (``value_and_grad``) for the fast
  mean-field path of :mod:`varbayes.vi.svi`; a test holds it equal to autograd of
  the model's density.

Shapes: θ holds S particles, ``(S, D)``; every log density returns ``(S,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import (
    Bernoulli,
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    constraints,
)

from varbayes._validation import as_tensor, check_finite
from varbayes.vi.model import Model

__all__ = ["LogJoint", "LinearRegression", "LogisticRegression"]


class LogJoint(Model):
    """A :class:`~varbayes.vi.Model` with one latent θ ∈ R^D ~ ``prior`` and a likelihood:
    log p(x, θ) = scale · Σ_n log p(x_n | θ) + log p(θ).

    Parameters
    ----------
    log_likelihood : callable
        ``log_likelihood(theta, *data) -> (S,)``: Σ_n log p(x_n | θ) over the rows of
        ``data`` for particles ``theta`` of shape ``(S, D)``; the model adds it as a
        likelihood factor (``m.factor("log_likelihood", ..., likelihood=True)``).
    prior : torch.distributions.Distribution
        p(θ) with ``event_shape == (D,)``, ``batch_shape == ()`` and real support (θ is
        unconstrained; write a :class:`~varbayes.vi.Model` for a constrained θ).
    data : tuple of tensors
        The data, all with the same first dimension N (may be empty); the model's data
        are ``{"x0": data[0], "x1": data[1], ...}``, all of them ``rows``.
    scale : float
        Multiplier of the likelihood (N/B on a minibatch of B rows; 1 on the full data).

    Calling the object evaluates the joint: ``log_joint(theta) -> (S,)``. The latent is
    named ``theta``.
    """

    def __init__(
        self,
        log_likelihood: Callable[..., torch.Tensor],
        prior: Distribution,
        data: tuple[torch.Tensor, ...] = (),
        *,
        scale: float = 1.0,
    ):
        if not callable(log_likelihood):
            raise TypeError(f"log_likelihood must be callable; got {type(log_likelihood).__name__}")
        data = tuple(data)
        if data:
            n = data[0].shape[0]
            for i, d in enumerate(data):
                if d.shape[0] != n:
                    raise ValueError(
                        f"data[{i}] must have {n} rows like data[0]; got shape {tuple(d.shape)}"
                    )
        self._log_likelihood = log_likelihood
        self._build(prior, {f"x{i}": d for i, d in enumerate(data)}, scale)

    def _build(self, prior, data: dict, scale: float = 1.0) -> None:
        """Check the prior and build the Model over ``theta`` on the named ``data``."""
        if not isinstance(prior, Distribution):
            raise TypeError(
                f"prior must be a torch.distributions.Distribution; got {type(prior).__name__}"
            )
        if prior.batch_shape != torch.Size() or len(prior.event_shape) != 1:
            raise ValueError(
                "prior must have batch_shape () and a 1-D event_shape (D,); got batch_shape "
                f"{tuple(prior.batch_shape)} and event_shape {tuple(prior.event_shape)} "
                "(wrap a Normal with Independent(Normal(loc, scale), 1))"
            )
        base = prior.support
        while isinstance(base, constraints.independent):
            base = base.base_constraint
        if base is not constraints.real:
            raise ValueError(
                f"prior must have real support (θ is unconstrained); got {prior.support} "
                "(write a varbayes.vi.Model for a constrained θ)"
            )
        self.prior = prior
        dtype, device = _dtype_device(prior)
        super().__init__(self._declare, data, rows=tuple(data), dtype=dtype, device=device)
        self.scale = float(scale)

    def _declare(self, m, data):
        """The model function: θ ~ prior, then the likelihood of the data."""
        self._observe(m, m.latent("theta", self.prior), data)

    def _observe(self, m, theta, data):
        """Add log p(x | θ) for θ of shape ``(..., D)`` (a likelihood factor here)."""
        flat = theta.reshape(-1, theta.shape[-1])
        lik = self._log_likelihood(flat, *data.values()).reshape(theta.shape[:-1])
        m.factor("log_likelihood", lik, likelihood=True)

    @property
    def name(self) -> str:
        return type(self).__name__

    def subsample(self, index: torch.Tensor) -> LogJoint:
        """The minibatch log joint (N/B) Σ_{n∈B} log p(x_n | θ) + log p(θ) for rows ``index``."""
        view = super().subsample(index)
        view._subsampled(torch.as_tensor(index))
        return view

    def _subsampled(self, index: torch.Tensor) -> None:
        """Hook for subclasses that cache statistics of the data."""

    # Hand-derived gradients (optional; used by the fast SVI path).
    def value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(log p(x, θ), ∇_θ log p(x, θ)) of shapes ``(S,)`` and ``(S, D)``, or ``None``
        when the model has no hand-derived gradient (autograd is then used)."""
        if type(self).value_and_grad_at is LogJoint.value_and_grad_at:
            return None
        return self.value_and_grad_at(theta, self.scale, *self.grad_inputs())

    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        """The tensors :meth:`value_and_grad_at` reads (the data and cached statistics)."""
        return tuple(self.data.values())

    def value_and_grad_at(self, theta, scale, *inputs):
        """log p(x, θ) and ∇_θ from explicit tensors (a pure function, so it can be compiled;
        the protocol of :mod:`varbayes.vi.fastpath`).

        ``scale`` multiplies the likelihood; ``inputs`` come from :meth:`grad_inputs`.
        Subclasses with a hand-derived gradient override it."""
        raise NotImplementedError

    def __repr__(self):
        return f"{self.name}(theta[{self.dim}]; N={self.num_data}, scale={self.scale:g})"


def _dtype_device(prior: Distribution):
    """The prior's dtype and device (torch's defaults when it has no closed-form mean)."""
    try:
        mean = prior.mean
    except NotImplementedError:
        return torch.get_default_dtype(), None
    return mean.dtype, mean.device


def _normal_prior_value_and_grad(
    prior: Distribution, theta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """log p(θ) and its gradient for a Normal prior (Independent(Normal) or MultivariateNormal)."""
    if isinstance(prior, Independent) and isinstance(prior.base_dist, Normal):
        loc, scale = prior.base_dist.loc, prior.base_dist.scale
        z = (theta - loc) / scale
        value = -0.5 * (z * z).sum(-1) - (scale.log().sum() + 0.5 * theta.shape[-1] * _LOG_2PI)
        return value, -z / scale
    if isinstance(prior, MultivariateNormal):
        diff = theta - prior.loc
        grad = -diff @ prior.precision_matrix
        return prior.log_prob(theta), grad
    return None


def _isotropic_prior_value_and_grad(theta, variance: float, const: float):
    """log N(θ | 0, v I) = -|θ|²/(2v) - const and its gradient -θ/v (few kernels)."""
    return (theta * theta).sum(-1).mul(-0.5 / variance).sub(const), theta.mul(-1.0 / variance)


_LOG_2PI = math.log(2 * math.pi)


class LinearRegression(LogJoint):
    """Bayesian linear regression with known noise: y_n ~ N(x_nᵀ θ, σ²), θ ~ N(0, α⁻¹ I).

    Parameters
    ----------
    X : (N, D) design matrix (its floating dtype is kept unless ``dtype`` is given).
    y : (N,) targets.
    noise_scale : σ, the known noise standard deviation.
    prior_scale : α^{-1/2}, the prior standard deviation of each coefficient.
    """

    def __init__(self, X, y, *, noise_scale: float = 1.0, prior_scale: float = 1.0, dtype=None):
        X, y = _check_xy(X, y, dtype)
        self.noise_scale = _positive_float(noise_scale, "noise_scale")
        self.prior_scale = _positive_float(prior_scale, "prior_scale")
        self._build(_isotropic_normal(X, self.prior_scale), {"X": X, "y": y})

    def _observe(self, m, theta, data):
        """y ~ N(Xθ, σ²): ``m.observe("y", Normal(θ Xᵀ, σ), y)``."""
        m.observe("y", Normal(theta @ data["X"].T, self.noise_scale), data["y"])

    def value_and_grad_at(self, theta, scale, X, y):
        """log p(y, θ | X) and ∇_θ, ``(S,)`` and ``(S, D)``; gradient Xᵀ(y - Xθ)/σ² - θ/s²."""
        r = y - theta @ X.T
        s2 = self.noise_scale**2
        lik = -0.5 * (r * r).sum(-1) / s2 - X.shape[0] * (
            math.log(self.noise_scale) + 0.5 * _LOG_2PI
        )
        g = (r @ X) / s2
        pv, pg = _normal_prior_value_and_grad(self.prior, theta)
        return scale * lik + pv, scale * g + pg


class LogisticRegression(LogJoint):
    """Bayesian logistic regression: y_n ~ Bernoulli(sigmoid(x_nᵀ θ)), θ ~ N(0, s² I).

    log p(y | X, θ) = Σ_n [y_n · x_nᵀθ - softplus(x_nᵀθ)] (stable for any logit).

    Parameters
    ----------
    X : (N, D) design matrix.
    y : (N,) labels in {0, 1}.
    prior_scale : s, the prior standard deviation of each coefficient.
    """

    def __init__(self, X, y, *, prior_scale: float = 1.0, dtype=None):
        X, y = _check_xy(X, y, dtype)
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("y must hold labels 0 or 1 for logistic regression")
        self.prior_scale = _positive_float(prior_scale, "prior_scale")
        self._build(_isotropic_normal(X, self.prior_scale), {"X": X, "y": y})
        self._cache()

    def _observe(self, m, theta, data):
        """y ~ Bernoulli(sigmoid(Xθ)): ``m.observe("y", Bernoulli(logits=θ Xᵀ), y)``."""
        m.observe("y", Bernoulli(logits=theta @ data["X"].T), data["y"])

    def _cache(self):
        X, y = self.data["X"], self.data["y"]
        self._Xty = y @ X
        # X stored column-major as well: both X θ and Xᵀr then read it with unit stride
        # (about 1.5x faster matrix-vector products on CPU)
        self._XT = X.T.contiguous()
        d = X.shape[1]
        self._prior_var = self.prior_scale**2
        self._prior_const = 0.5 * d * math.log(2 * math.pi * self._prior_var)

    def _subsampled(self, index):
        self._cache()

    def grad_inputs(self):
        """(Xᵀ as a contiguous (D, N) tensor, Xᵀy): the likelihood's data statistics."""
        return self._XT, self._Xty

    def _value_and_grad_one(self, t, scale, XT, Xty, out=None):
        """log p(y, θ | X) (0-d) and ∇_θ (D,) (written into ``out`` if given) for one θ
        and a likelihood scale != 0, in few kernels: with a = Xᵀy - θ/(s²·scale),
        ∇ = scale·(a - Xᵀσ(Xθ)) (one addmv) and
        log p = scale·(θᵀ(Xᵀy - θ/(2s²·scale)) - Σ softplus(Xθ)) - const."""
        logits = torch.mv(XT.T, t)
        inv = 1.0 / (self._prior_var * scale)
        g = torch.addmv(
            torch.add(Xty, t, alpha=-inv), XT, torch.sigmoid(logits),
            beta=scale, alpha=-scale, out=out,
        )  # fmt: skip
        lin = torch.dot(t, torch.add(Xty, t, alpha=-0.5 * inv))
        value = lin.sub_(torch.nn.functional.softplus(logits).sum()).mul_(scale)
        return value.sub_(self._prior_const), g

    def value_and_grad_at(self, theta, scale, XT, Xty):
        """log p(y, θ | X) and ∇_θ = Xᵀ(y - sigmoid(Xθ)) - θ/s²; ``(S,)`` and ``(S, D)``.

        Σ_n y_n x_nᵀθ = θᵀ(Xᵀy) uses the cached Xᵀy, so one step reads X twice (Xθ and
        Xᵀσ(Xθ)) and touches the N logits in two element-wise passes."""
        if theta.shape[0] == 1 and scale != 0:  # one particle: BLAS gemv, fewest kernels
            value, g = self._value_and_grad_one(theta[0], scale, XT, Xty)
            return value[None], g[None]
        logits = theta @ XT
        lik = theta @ Xty - torch.nn.functional.softplus(logits).sum(-1)
        g = Xty - torch.sigmoid(logits) @ XT.T
        pv, pg = _isotropic_prior_value_and_grad(theta, self._prior_var, self._prior_const)
        return lik.mul_(scale).add_(pv), g.mul_(scale).add_(pg)


def _isotropic_normal(X, prior_scale):
    """θ ~ N(0, s² I) with D = X's columns, in X's dtype."""
    loc = torch.zeros(X.shape[1], dtype=X.dtype, device=X.device)
    return Independent(Normal(loc, prior_scale * X.new_ones(())), 1)


def _check_xy(X, y, dtype):
    X = as_tensor(X, "X", dtype=dtype)
    if not X.dtype.is_floating_point:
        X = X.to(torch.get_default_dtype())
    y = as_tensor(y, "y", dtype=X.dtype)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (N, D) matrix; got shape {tuple(X.shape)}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"y must be a 1-D vector with {X.shape[0]} entries (one per row of X); "
            f"got shape {tuple(y.shape)}"
        )
    check_finite(X, "X")
    check_finite(y, "y")
    return X, y


def _positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number; got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)
