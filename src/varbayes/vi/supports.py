"""Supports of latent variables and their bijections to the real line.

A latent θ with support 𝒮 is fitted on an unconstrained u ∈ R^{D'} with θ = T(u),
T = :func:`bijection` (𝒮); its density on u is

    log p(u) = log p(T(u)) + log |det ∂T/∂u|.

:func:`bijection` is ``torch.distributions.biject_to`` plus the supports torch lacks:

* :data:`ordered_vector`           θ_1 < θ_2 < … < θ_K (Stan's ``ordered``):
  θ_1 = u_1, θ_k = θ_{k-1} + exp(u_k);
* :data:`positive_ordered_vector`  0 < θ_1 < … < θ_K (Stan's ``positive_ordered``):
  the same map after exp on u_1;
* ``constraints.lower_cholesky``   lower triangular with a positive diagonal (Stan's
  ``cholesky_factor_cov``): the K(K+1)/2 free entries u fill the lower triangle and
  the diagonal goes through exp.

torch's own registry is left unchanged (a local :class:`ConstraintRegistry` is asked
first). Bounds may be tensors that depend on other latents
(``constraints.interval(0, 1 - alpha1)``); they broadcast over the particles.
"""

from __future__ import annotations

import torch
from torch.distributions import biject_to, constraints
from torch.distributions.constraint_registry import ConstraintRegistry
from torch.distributions.transforms import Transform

__all__ = ["ordered_vector", "positive_ordered_vector", "bijection"]


class _Ordered(constraints.Constraint):
    """Vectors with strictly increasing entries along the last dimension."""

    event_dim = 1

    def check(self, value):
        return (value[..., 1:] > value[..., :-1]).all(-1)

    def __repr__(self):
        return "ordered_vector"


class _PositiveOrdered(_Ordered):
    """Vectors with 0 < θ_1 < θ_2 < … along the last dimension."""

    def check(self, value):
        return super().check(value) & (value[..., 0] > 0)

    def __repr__(self):
        return "positive_ordered_vector"


ordered_vector = _Ordered()
positive_ordered_vector = _PositiveOrdered()


def _cumsum(x):
    """Σ_{j≤k} x_j along the last dimension: for K ≤ 32 as a masked sum of K² terms (one fused
    loop once compiled, where ``cumsum`` is an external call each way)."""
    k = x.shape[-1]
    if k > 32:
        return x.cumsum(-1)
    mask = torch.ones(k, k, dtype=x.dtype, device=x.device).tril()
    return (x.unsqueeze(-2) * mask).sum(-1)


class OrderedTransform(Transform):
    """u ∈ R^K ↦ θ with θ_1 = u_1, θ_k = θ_{k-1} + exp(u_k); log|det J| = Σ_{k≥2} u_k."""

    domain = constraints.real_vector
    codomain = ordered_vector
    bijective = True

    def __eq__(self, other):
        return isinstance(other, OrderedTransform)

    def _call(self, u):
        return _cumsum(torch.cat([u[..., :1], u[..., 1:].exp()], -1))

    def _inverse(self, theta):
        return torch.cat([theta[..., :1], (theta[..., 1:] - theta[..., :-1]).log()], -1)

    def log_abs_det_jacobian(self, u, theta):
        return u[..., 1:].sum(-1)


class LowerCholeskyBijection(Transform):
    """u ∈ R^{K(K+1)/2} ↦ L (K, K): u fills the lower triangle row by row, diag(L) = exp(·).

    log|det J| = Σ_k u_kk (the diagonal entries of u before exp)."""

    domain = constraints.real_vector
    codomain = constraints.lower_cholesky
    bijective = True

    def __eq__(self, other):
        return isinstance(other, LowerCholeskyBijection)

    @staticmethod
    def _size(n):
        k = int(round(((8 * n + 1) ** 0.5 - 1) / 2))
        if k * (k + 1) // 2 != n:
            raise ValueError(f"a lower Cholesky factor needs K(K+1)/2 free entries; got {n}")
        return k

    def _call(self, u):
        k = self._size(u.shape[-1])
        i, j = torch.tril_indices(k, k, device=u.device)
        L = u.new_zeros(u.shape[:-1] + (k, k))
        L[..., i, j] = u
        d = L.diagonal(dim1=-2, dim2=-1)
        return L - torch.diag_embed(d) + torch.diag_embed(d.exp())

    def _inverse(self, L):
        k = L.shape[-1]
        i, j = torch.tril_indices(k, k, device=L.device)
        raw = (
            L
            - torch.diag_embed(L.diagonal(dim1=-2, dim2=-1))
            + torch.diag_embed(L.diagonal(dim1=-2, dim2=-1).log())
        )
        return raw[..., i, j]

    def log_abs_det_jacobian(self, u, L):
        k = L.shape[-1]
        diag = torch.arange(k, device=u.device)
        rows = diag * (diag + 1) // 2 + diag  # positions of the diagonal in the packed u
        return u[..., rows].sum(-1)

    def forward_shape(self, shape):
        k = self._size(shape[-1])
        return torch.Size(shape[:-1]) + (k, k)

    def inverse_shape(self, shape):
        k = shape[-1]
        return torch.Size(shape[:-2]) + (k * (k + 1) // 2,)


_registry = ConstraintRegistry()


@_registry.register(_Ordered)
def _ordered(constraint):
    return OrderedTransform()


@_registry.register(_PositiveOrdered)
def _positive_ordered(constraint):
    return _PositiveFirst()


@_registry.register(type(constraints.lower_cholesky))
def _lower_cholesky(constraint):
    return LowerCholeskyBijection()


class _PositiveFirst(Transform):
    """u ↦ OrderedTransform(u) with u_1 through exp first: 0 < θ_1 < … < θ_K."""

    domain = constraints.real_vector
    codomain = positive_ordered_vector
    bijective = True

    def __eq__(self, other):
        return isinstance(other, _PositiveFirst)

    def _call(self, u):
        return _cumsum(u.exp())

    def _inverse(self, theta):
        return torch.cat([theta[..., :1], theta[..., 1:] - theta[..., :-1]], -1).log()

    def log_abs_det_jacobian(self, u, theta):
        return u.sum(-1)


def bijection(support: constraints.Constraint) -> Transform:
    """T: R^{D'} → ``support``, a bijection (``biject_to`` plus the supports above).

    Raises ``NotImplementedError`` when neither registry knows the support."""
    try:
        return _registry(support)
    except NotImplementedError:
        return biject_to(support)
