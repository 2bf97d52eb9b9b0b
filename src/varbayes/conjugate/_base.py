"""The shared machinery of conjugate models: prior hyper-parameters + sufficient statistics.

A conjugate model holds the prior's hyper-parameters and the sufficient statistics
T(x) of every observation seen so far. The posterior p(θ | x) is in the prior's
family, with hyper-parameters a closed-form function of (prior, T(x)); because
T adds over observations, updating on x then on y equals updating on both.

The evidence uses the identity (Bayes' rule solved for p(x)), valid at any θ*:

    log p(x) = log p(x | θ*) + log p(θ*) - log p(θ* | x),

taken at the posterior mean θ*, where all three terms are well conditioned.
"""

from __future__ import annotations

import copy

import torch
from torch.distributions import Distribution

from varbayes._validation import as_tensor, check_finite, check_nonempty

__all__ = ["ConjugateModel"]


class ConjugateModel:
    """Base class: a belief p(θ | data seen so far) in a conjugate family.

    Subclasses define

    * ``_validate(x)``: support checks on the observations (after the generic ones),
    * ``_sufficient_stats(x)``: dict of tensors T(x), additive over observations
      (or override ``_merge_stats``),
    * ``_posterior_params()``: hyper-parameters after the data seen,
    * ``_distribution(**params)``: the torch Distribution over θ,
    * ``_log_likelihood(x, theta)``: Σ_i log p(x_i | θ),
    * ``posterior_predictive()``, ``map()``, ``mle()``.

    Objects are immutable: :meth:`update` returns a new object and leaves this one as
    it was, also when the data are rejected.
    """

    #: number of trailing dimensions of one observation (0: scalars, 1: vectors)
    event_dim = 0
    #: dtype of the observations after conversion
    data_dtype = torch.float64

    def __init__(self, prior: dict[str, torch.Tensor]):
        self._prior = prior
        self._stats: dict[str, torch.Tensor] | None = None

    # -------------------------------------------------------------- data input
    def _check_data(self, data, name: str = "data") -> torch.Tensor:
        x = as_tensor(data, name, dtype=self.data_dtype)
        if x.dim() == self.event_dim:
            x = x.unsqueeze(0)
        if x.dim() != self.event_dim + 1:
            kind = "a 1-D tensor of observations" if self.event_dim == 0 else "a 2-D tensor (N, K)"
            raise ValueError(f"{name} must be {kind}; got shape {tuple(x.shape)}")
        check_nonempty(x, name)
        check_finite(x, name)
        self._validate(x, name)
        return x

    def _validate(self, x: torch.Tensor, name: str) -> None:
        """Family-specific support checks (raise ValueError naming ``name``)."""

    # ---------------------------------------------------------------- updating
    def update(self, data) -> ConjugateModel:
        """Return the posterior after observing ``data`` (this object is unchanged).

        ``data``: observations of shape ``(N,)`` (scalar families) or ``(N, K)``.
        """
        x = self._check_data(data)
        new_stats = self._sufficient_stats(x)
        if self._stats is not None:
            new_stats = self._merge_stats(self._stats, new_stats)
        new = copy.copy(self)
        new._stats = new_stats
        bad = [k for k, v in new._posterior_params().items() if not bool(torch.isfinite(v).all())]
        if bad:
            biggest = float(x.abs().max()) if x.dtype.is_floating_point else float(x.max())
            raise ValueError(
                f"data: the posterior's {', '.join(bad)} overflow float64 (largest |value| "
                f"{biggest:.3g}); rescale the data (other units)"
            )
        return new

    def _merge_stats(self, a: dict, b: dict) -> dict:
        return {k: a[k] + b[k] for k in a}

    @property
    def n_observations(self) -> int:
        """Number of observations absorbed so far."""
        return 0 if self._stats is None else int(self._stats["n"])

    def _require_data(self, what: str) -> dict:
        if self._stats is None:
            raise ValueError(f"{what} needs data: call update(data) first")
        return self._stats

    # -------------------------------------------------------------- beliefs
    @property
    def prior(self) -> Distribution:
        """The prior p(θ) as a torch Distribution."""
        return self._distribution(**self._prior)

    @property
    def posterior(self) -> Distribution:
        """The posterior p(θ | data seen) as a torch Distribution (the prior before any data)."""
        if self._stats is None:
            return self.prior
        return self._distribution(**self._posterior_params())

    @property
    def posterior_params(self) -> dict[str, torch.Tensor]:
        """Hyper-parameters of the posterior (those of the prior before any data)."""
        return dict(self._prior) if self._stats is None else self._posterior_params()

    def log_marginal_likelihood(self, data) -> torch.Tensor:
        """log p(data) under the current belief (the prior if nothing was seen yet).

        The evidence integrates θ out: p(x) = ∫ p(x | θ) p(θ) dθ. Sequentially,
        ``m.log_marginal_likelihood(y)`` is log p(y | x) for ``m = prior.update(x)``.
        Returns a 0-d float64 tensor.
        """
        x = self._check_data(data)
        after = self.update(x)
        theta = after._reference_point()
        result = (
            self._log_likelihood(x, theta)
            + self.posterior.log_prob(theta)
            - after.posterior.log_prob(theta)
        )
        if not bool(torch.isfinite(result)):
            raise ValueError(
                f"data: log p(data) is not a finite float64 number (got {float(result)}); "
                "the data are too extreme for this prior: rescale them or widen the prior"
            )
        return result

    def _reference_point(self) -> torch.Tensor:
        return self.posterior.mean

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in self.posterior_params.items())
        return f"{type(self).__name__}({params}; n={self.n_observations})"

    # ------------------------------------------------------ subclass hooks
    def _sufficient_stats(self, x: torch.Tensor) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _posterior_params(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _distribution(self, **params) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def _log_likelihood(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def posterior_predictive(self) -> Distribution:  # pragma: no cover - abstract
        """p(x_new | data seen) = ∫ p(x_new | θ) p(θ | data) dθ, as a torch Distribution."""
        raise NotImplementedError

    def map(self) -> torch.Tensor:  # pragma: no cover - abstract
        """θ_MP = argmax_θ p(θ | data seen): the mode of the posterior ("poor Bayes")."""
        raise NotImplementedError

    def mle(self) -> torch.Tensor:  # pragma: no cover - abstract
        """θ_ML = argmax_θ p(data seen | θ); needs at least one observation."""
        raise NotImplementedError


def _fmt(v: torch.Tensor) -> str:
    if v.numel() == 1:
        return f"{float(v):.6g}"
    return "[" + ", ".join(f"{float(t):.6g}" for t in v.flatten()) + "]"


def stable_mean(x: torch.Tensor) -> torch.Tensor:
    """x̄ = mean of ``x`` over its first dimension, also when Σx overflows.

    The plain mean when it is finite; otherwise m · mean(x / m) with m = max|x|, whose
    terms lie in [-1, 1]. Finite for any finite ``x``.
    """
    mean = x.mean(0)
    if bool(torch.isfinite(mean).all()):
        return mean
    scale = x.abs().amax(0).clamp(min=torch.finfo(x.dtype).tiny)
    return scale * (x / scale).mean(0)


def convex(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """w·a + (1 - w)·b for w in [0, 1], without overflow for any finite a and b.

    Same signs: a + (1 - w)(b - a), where |b - a| <= max(|a|, |b|); otherwise the plain
    sum, whose terms have opposite signs.
    """
    same = (a >= 0) == (b >= 0)
    return torch.where(same, a + (1 - w) * (b - a), w * a + (1 - w) * b)


def scalar_param(value, name: str, *, positive: bool = False) -> torch.Tensor:
    """A finite float64 0-d tensor (positive when asked), with errors naming ``name``."""
    t = as_tensor(value, name)
    if t.dim() != 0:
        if t.numel() != 1:
            raise ValueError(f"{name} must be a scalar; got shape {tuple(t.shape)}")
        t = t.reshape(())
    check_finite(t, name)
    if positive and not bool(t > 0):
        raise ValueError(f"{name} must be > 0; got {float(t)!r}")
    return t
