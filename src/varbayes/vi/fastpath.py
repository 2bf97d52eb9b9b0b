"""The hand-derived fast path of stochastic VI, behind a public protocol.

:func:`varbayes.vi.svi.fit` takes this path, in place of autograd, when the guide is a
:class:`~varbayes.vi.guides.MeanFieldNormal` on the real line, the estimator is the
pathwise one and the model implements the protocol:

* ``model.grad_inputs() -> tuple of tensors``: the data (and cached statistics) the
  gradient reads;
* ``model.value_and_grad_at(theta, scale, *inputs) -> (log p (S,), ∇_θ log p (S, D))``:
  a pure function of explicit tensors (so that it can be compiled), ``scale`` the
  likelihood's factor N/B;
* ``model.value_and_grad(theta)``: the same at the model's own data and scale, or
  ``None`` when there is no hand-derived gradient.

The shipped :class:`~varbayes.vi.models.LinearRegression` and
:class:`~varbayes.vi.models.LogisticRegression` implement it. With θ_s = μ + σ ⊙ ε_s the
gradient with respect to λ = (μ, ρ), σ = e^ρ, is then formed directly,

    ∇_μ ELBO = mean_s g_s,      ∇_ρ ELBO = mean_s (g_s ⊙ σ ⊙ ε_s) + 1,   g_s = ∇_θ log p(x, θ_s),

without an autograd graph: the same estimator as the autograd path, to rounding, in fewer
kernels (measured in BENCHMARKS.md, "SVI on Bayesian logistic regression").
"""

from __future__ import annotations

import math

import torch

from varbayes.vi.guides import MeanFieldNormal

__all__ = ["available", "meanfield_grad"]

_LOG_2PI = math.log(2 * math.pi)


def available(model, guide, estimator) -> bool:
    """Whether :func:`meanfield_grad` serves this model, guide and estimator."""
    if type(guide) is not MeanFieldNormal or guide.transform is not None:
        return False
    if estimator not in (None, "pathwise"):
        return False
    if not hasattr(model, "value_and_grad"):
        return False
    probe = guide.loc.detach()[None]
    return hasattr(model, "grad_inputs") and model.value_and_grad(probe) is not None


def meanfield_grad(value_and_grad, flat, noise, stl, scale, *inputs):
    """ELBO estimate and the gradient of the LOSS (-ELBO) w.r.t. flat = [μ, ρ].

    θ_s = μ + σ ⊙ ε_s, σ = exp(ρ); -log q(θ_s) = Σρ + ½|ε_s|² + (D/2) log 2π, so
    ∇_μ ELBO = mean g, ∇_ρ ELBO = mean(g ⊙ σ ⊙ ε) + 1, g = ∇_θ log p(x, θ_s)
    (with STL, -log q is differentiated with λ fixed: g + ε/σ in place of g and no +1).
    ``noise`` is ε, shape (S, D); ``value_and_grad`` is the model's ``value_and_grad_at``.
    """
    d = flat.shape[0] // 2
    loc, log_scale = flat[:d], flat[d:]
    sigma = log_scale.exp()
    theta = torch.addcmul(loc, sigma, noise)
    log_p, g = value_and_grad(theta, scale, *inputs)
    if stl:
        g = g + noise / sigma
    if noise.shape[0] == 1:  # one particle: no means over particles (fewer kernels)
        noise0, g0 = noise[0], g[0]
        value = log_p[0].add(log_scale.sum()).add_(torch.dot(noise0, noise0), alpha=0.5)
        g_rho = (g0 * noise0).mul_(sigma)
        g_rho = g_rho if stl else g_rho.add_(1.0)
        return value.add_(0.5 * d * _LOG_2PI), -torch.cat([g0, g_rho])
    neg_log_q = log_scale.sum() + 0.5 * (noise * noise).sum(-1) + 0.5 * d * _LOG_2PI
    value = (log_p + neg_log_q).mean()
    g_rho = (g * noise).mean(0) * sigma
    return value, -torch.cat([g.mean(0), g_rho if stl else g_rho + 1.0])
