"""Monte Carlo estimates of the evidence lower bound and of the log evidence.

For data x, parameters θ and an approximation q(θ) = q(θ | λ),

    log p(x) = ELBO(q) + KL(q(θ) || p(θ | x)),
    ELBO(q)  = E_q[log p(x, θ) - log q(θ)] = E_q[log p(x | θ)] - KL(q(θ) || p(θ)).

:func:`elbo` is the one entry point. It draws S particles θ_s ~ q, scores them
under the model (log p(x, θ_s)) and under q (log q(θ_s)), and hands the two
vectors to :func:`objective`, which alone turns the log ratios
log w_s = log p(x, θ_s) - log q(θ_s) into the objective. The estimators differ in
exactly one place each:

``"pathwise"``  θ_s = T(ε_s; λ) by ``rsample`` (reparameterization); the objective
                mean_s log w_s is differentiated through θ_s. Default when q has rsample.
``"score"``     θ_s by ``sample`` (no path to λ); the gradient comes from the
                score-function (REINFORCE) identity ∇E_q[f] = E_q[f ∇log q], with the
                leave-one-out control variate b_s = mean_{t≠s} log w_t.
``"analytic"``  the ratio is log p(x | θ_s) and KL(q || p(θ)) is subtracted in closed
                form (``torch.distributions.kl_divergence``).
``"iwae"``      the importance-weighted bound log (1/S) Σ_s w_s (Burda et al.), which
                is ≥ the ELBO and tends to log p(x) as S grows.

The returned ELBO is a scalar tensor whose *value* is the Monte Carlo estimate and
whose *gradient* with respect to λ is the chosen estimator of ∇_λ ELBO (the
score-function surrogate is added as ``s - s.detach()``, which is zero in value).
Names carry the sign: the ELBO is maximised, ``loss = -elbo`` is minimised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    kl_divergence,
    register_kl,
)

from varbayes._validation import check_int
from varbayes.vi.drawn import randn

__all__ = [
    "ESTIMATORS",
    "EvidenceEstimate",
    "elbo",
    "loss",
    "objective",
    "log_evidence",
    "draw",
]

ESTIMATORS = ("pathwise", "score", "analytic", "iwae")


def objective(
    log_p: torch.Tensor,
    log_q: torch.Tensor,
    *,
    estimator: str = "pathwise",
    kl: torch.Tensor | None = None,
    score_log_q: torch.Tensor | None = None,
    control_variate: bool = True,
) -> torch.Tensor:
    """Turn the log densities of S particles into the ELBO (or IWAE bound) estimate.

    Parameters
    ----------
    log_p : (S,) log p(x, θ_s) (for ``"analytic"``: log p(x | θ_s)).
    log_q : (S,) log q(θ_s) (for ``"analytic"``: zeros; the KL comes in ``kl``).
    estimator : one of :data:`ESTIMATORS`; ``"iwae"`` returns log mean_s exp(log w_s),
        the others mean_s log w_s (minus ``kl``).
    kl : scalar KL(q(θ) || p(θ)) for the analytic form.
    score_log_q : (S,) log q(θ_s) with θ_s detached, when the gradient must come from
        the score function: the surrogate mean_s log q(θ_s) · (log w_s - b_s) is added
        with value zero, b_s the leave-one-out mean of the other particles' log w.
    control_variate : use the leave-one-out baseline b_s (else b_s = 0).

    Returns
    -------
    Scalar tensor: value = the estimate; gradient = the estimator of ∇_λ ELBO.
    """
    log_w = log_p - log_q
    s = log_w.shape[0]
    if estimator == "iwae":
        value = torch.logsumexp(log_w, 0) - math.log(s)
    else:
        value = log_w.mean()
    if kl is not None:
        value = value - kl
    if score_log_q is not None:
        f = log_w.detach()
        if control_variate:
            f = f - (f.sum() - f) / (s - 1)
        surrogate = (score_log_q * f).mean()
        value = value + (surrogate - surrogate.detach())
    return value


def elbo(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    q: Distribution | nn.Module,
    num_particles: int = 1,
    *,
    estimator: str | None = None,
    control_variate: bool = True,
    stl: bool = False,
    generator: torch.Generator | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Estimate ELBO(q) = E_q[log p(x, θ) - log q(θ)] with ``num_particles`` draws from q.

    Parameters
    ----------
    log_joint : callable
        ``log_joint(theta) -> (S,)``, log p(x, θ) for particles ``theta`` of shape
        ``(S,) + q.event_shape``. For ``estimator="analytic"`` it must also have
        ``log_likelihood(theta) -> (S,)`` and ``prior`` (a Distribution), as
        :class:`varbayes.vi.models.LogJoint` has.
    q : torch.distributions.Distribution or nn.Module
        q(θ | λ) with ``batch_shape == ()``, or a guide module whose ``forward()``
        returns one.
    num_particles : int
        S ≥ 1 (≥ 2 for the score-function control variate); for ``"iwae"`` the k of
        the bound.
    estimator : {"pathwise", "score", "analytic", "iwae"} or None
        None picks ``"pathwise"`` when ``q.has_rsample`` and ``"score"`` otherwise.
    control_variate : bool
        Score-function estimator only: subtract the leave-one-out baseline.
    stl : bool
        "Sticking the landing" (Roeder et al. 2017), pathwise only: log q(θ_s) is
        evaluated with λ detached, so the gradient is exactly zero at q = p(θ | x)
        when the family contains the posterior. Needs a guide module for ``q``.
    generator : torch.Generator, optional
        Source of the noise ε (torch's ``rsample`` takes none); the same generator
        state gives the same estimate.
    validate : bool
        Check that log p(x, θ) has shape (S,) and is finite (one host sync).

    Returns
    -------
    Scalar tensor: the ELBO estimate (the IWAE bound for ``"iwae"``); call
    ``(-value).backward()`` to get the gradient of the loss -ELBO.

    Raises
    ------
    ValueError
        ``num_particles`` < 1 (or < 2 with the control variate), an unknown
        ``estimator``, pathwise/IWAE with a q without ``rsample``, a q whose shape
        does not fit the model, or a ``log_joint`` returning a wrong shape or
        non-finite values.
    """
    num_particles = check_int(num_particles, "num_particles", minimum=1)
    dist = _resolve_q(q)
    estimator = _choose_estimator(estimator, dist)
    _check_model_shape(log_joint, dist)
    if estimator == "score" and control_variate and num_particles < 2:
        raise ValueError(
            "num_particles must be >= 2 for the score-function estimator with the "
            f"leave-one-out control variate; got {num_particles} "
            "(or pass control_variate=False)"
        )
    if stl and estimator not in ("pathwise", "iwae"):
        raise ValueError(f"stl=True needs estimator='pathwise' or 'iwae'; got {estimator!r}")

    reparam = dist.has_rsample and estimator != "score"
    from_noise = (
        reparam and not stl and estimator != "analytic" and hasattr(q, "rsample_with_log_q")
    )
    if from_noise:  # a guide module: log q from the noise ε, no triangular solve
        theta, log_q_noise = q.rsample_with_log_q(num_particles, generator)
    else:
        theta = draw(dist, num_particles, generator=generator, reparameterized=reparam)
    score_log_q = None
    kl = None
    if estimator == "analytic":
        if not isinstance(getattr(log_joint, "prior", None), Distribution):
            raise ValueError(
                "estimator='analytic' needs a log joint with a prior Distribution p(θ) (a "
                f"varbayes.vi.LogJoint); got {type(log_joint).__name__}, which has none. "
                "Use estimator='pathwise'."
            )
        log_p = _call(log_joint.log_likelihood, theta, num_particles, validate, "log_joint")
        log_q = torch.zeros_like(log_p)
        prior = log_joint.prior
        try:
            kl = kl_divergence(dist, prior)
        except NotImplementedError as exc:
            raise ValueError(
                "estimator='analytic' needs KL(q || prior) registered in "
                f"torch.distributions; none for q={type(dist).__name__}, "
                f"prior={type(prior).__name__}. Use estimator='pathwise'."
            ) from exc
        if not reparam:
            score_log_q = dist.log_prob(theta)
    else:
        log_p = _call(log_joint, theta, num_particles, validate, "log_joint")
        if from_noise:
            log_q = log_q_noise
        elif stl:
            log_q = _detached_dist(q).log_prob(theta)
        else:
            log_q = dist.log_prob(theta)
        if not reparam:
            score_log_q = log_q
    return objective(
        log_p,
        log_q,
        estimator=estimator,
        kl=kl,
        score_log_q=score_log_q,
        control_variate=control_variate,
    )


def loss(log_joint, q, num_particles: int = 1, **kwargs) -> torch.Tensor:
    """The loss -ELBO, to be minimised; same arguments as :func:`elbo`."""
    return -elbo(log_joint, q, num_particles, **kwargs)


class EvidenceEstimate(NamedTuple):
    """Importance-sampling estimate of log p(x) with q as proposal.

    ``log_evidence`` = log (1/S) Σ_s w_s, w_s = p(x, θ_s)/q(θ_s); ``stderr`` its standard
    error by the delta method, sd(w)/(√S · mean(w)); ``ess`` the effective sample size
    (Σ w)²/Σ w²; ``num_samples`` = S.
    """

    log_evidence: float
    stderr: float
    ess: float
    num_samples: int


@torch.no_grad()
def log_evidence(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    q: Distribution | nn.Module,
    num_samples: int = 10_000,
    *,
    batch_size: int = 1_000,
    generator: torch.Generator | None = None,
) -> EvidenceEstimate:
    """Estimate log p(x) = log E_q[p(x, θ)/q(θ)] by importance sampling from q.

    The estimate is consistent (biased low by about stderr²/2 for finite S); its
    standard error is reliable only when the effective sample size ``ess`` is large.
    Samples are drawn ``batch_size`` at a time to bound memory.
    """
    num_samples = check_int(num_samples, "num_samples", minimum=2)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    dist = _resolve_q(q)
    _check_model_shape(log_joint, dist)
    chunks = []
    done = 0
    while done < num_samples:
        s = min(batch_size, num_samples - done)
        theta = draw(dist, s, generator=generator, reparameterized=False)
        log_p = _call(log_joint, theta, s, True, "log_joint")
        chunks.append((log_p - dist.log_prob(theta)).double())
        done += s
    log_w = torch.cat(chunks)
    m = log_w.max()
    w = torch.exp(log_w - m)
    mean_w = w.mean()
    log_z = (m + mean_w.log()).item()
    stderr = (w.std() / (math.sqrt(num_samples) * mean_w)).item()
    ess = (w.sum() ** 2 / (w * w).sum()).item()
    return EvidenceEstimate(log_z, stderr, ess, num_samples)


# ------------------------------------------------- KL terms torch does not register
def _diag_normal_as_mvn(p: Independent) -> MultivariateNormal:
    if not (isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    return MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diag_normal(q, p):
    """KL(N(μ, Σ) || Π_d N(m_d, s_d²)) via the full-covariance formula."""
    return kl_divergence(q, _diag_normal_as_mvn(p))


@register_kl(LowRankMultivariateNormal, Independent)
def _kl_lowrank_diag_normal(q, p):
    """KL(N(μ, WWᵀ + diag d) || Π_d N(m_d, s_d²)) via torch's low-rank/full formula."""
    return kl_divergence(q, _diag_normal_as_mvn(p))


# ---------------------------------------------------------------------- drawing
def draw(
    q: Distribution,
    num_samples: int,
    *,
    generator: torch.Generator | None = None,
    reparameterized: bool = True,
) -> torch.Tensor:
    """Draw ``(num_samples,) + q.event_shape`` particles from q.

    With ``reparameterized`` the draw is θ = T(ε; λ) (``rsample``), differentiable in λ;
    otherwise it is detached. With a ``generator`` the noise ε comes from it: explicitly
    for Normal, MultivariateNormal, LowRankMultivariateNormal, Independent and
    TransformedDistribution, through a forked global RNG seeded from it otherwise.
    """
    shape = torch.Size((num_samples,))
    if generator is None:
        if reparameterized:
            return q.rsample(shape)
        return q.sample(shape)
    theta = _draw_explicit(q, shape, generator)
    if theta is None:
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            theta = q.rsample(shape) if reparameterized else q.sample(shape)
    return theta if reparameterized else theta.detach()


def _draw_explicit(q, shape, gen):
    if isinstance(q, Independent):
        return _draw_explicit(q.base_dist, shape, gen)
    if isinstance(q, TransformedDistribution):
        x = _draw_explicit(q.base_dist, shape, gen)
        if x is None:
            return None
        for t in q.transforms:
            x = t(x)
        return x
    if type(q) is Normal:
        eps = randn(shape + q.batch_shape, gen, q.loc)
        return q.loc + q.scale * eps
    if type(q) is MultivariateNormal:
        eps = randn(shape + q.batch_shape + q.event_shape, gen, q.loc)
        return q.loc + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    if type(q) is LowRankMultivariateNormal:
        r = q.cov_factor.shape[-1]
        e_w = randn(shape + q.batch_shape + (r,), gen, q.loc)
        e_d = randn(shape + q.batch_shape + q.event_shape, gen, q.loc)
        return q.loc + (q.cov_factor @ e_w.unsqueeze(-1)).squeeze(-1) + q.cov_diag.sqrt() * e_d
    return None


# ---------------------------------------------------------------------- checks
def _resolve_q(q) -> Distribution:
    if isinstance(q, nn.Module):
        try:
            dist = q()
        except TypeError as exc:  # e.g. an nn.Linear, whose forward needs an input
            raise TypeError(
                f"q (the guide) must be a module that returns a torch Distribution when called "
                f"with no arguments, like varbayes.vi.MeanFieldNormal; {type(q).__name__}() "
                f"failed: {exc}"
            ) from None
    else:
        dist = q
    if not isinstance(dist, Distribution):
        raise TypeError(
            "q must be a torch.distributions.Distribution or a guide module returning one; "
            f"got {type(dist).__name__}"
        )
    if dist.batch_shape != torch.Size():
        raise ValueError(
            "q must describe one θ: batch_shape () with θ in its event_shape; got "
            f"batch_shape {tuple(dist.batch_shape)} and event_shape {tuple(dist.event_shape)} "
            "(wrap a Normal with Independent(Normal(loc, scale), 1))"
        )
    return dist


def _choose_estimator(estimator, dist) -> str:
    if estimator is None:
        return "pathwise" if dist.has_rsample else "score"
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
    if estimator in ("pathwise", "iwae") and not dist.has_rsample:
        raise ValueError(
            f"estimator={estimator!r} needs reparameterized samples, but q "
            f"({type(dist).__name__}) has no rsample; use estimator='score' "
            "(score-function gradients with a control variate)"
        )
    return estimator


def _check_model_shape(log_joint, dist) -> None:
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable; got {type(log_joint).__name__}")
    prior = getattr(log_joint, "prior", None)
    p_dtype, q_dtype = _dtype(prior), _dtype(dist)
    if p_dtype is None and isinstance(getattr(log_joint, "dtype", None), torch.dtype):
        p_dtype = log_joint.dtype  # a varbayes.vi.Model: the dtype of its data and density
    if p_dtype is not None and q_dtype is not None and p_dtype != q_dtype:
        raise ValueError(
            f"q is {q_dtype} but the model (log_joint) is {p_dtype}; build the "
            f"guide with dtype={p_dtype} (or the model's data in {q_dtype})"
        )
    if isinstance(prior, Distribution) and prior.event_shape != dist.event_shape:
        raise ValueError(
            f"q has event_shape {tuple(dist.event_shape)} but the model's prior (log_joint) "
            f"has event_shape {tuple(prior.event_shape)}; the guide must match θ's shape"
        )


def _dtype(d) -> torch.dtype | None:
    """The floating dtype of a Distribution's parameters (None: unknown, or not one)."""
    if not isinstance(d, Distribution):
        return None
    try:
        return d.mean.dtype
    except NotImplementedError:  # e.g. a TransformedDistribution without a closed-form mean
        return None


def _call(fn, theta, s, validate, name) -> torch.Tensor:
    try:
        out = fn(theta)
    except RuntimeError as exc:
        raise ValueError(
            f"{name} failed on θ of shape {tuple(theta.shape)} drawn from q; check that q's "
            f"event_shape matches the model's parameter shape ({exc})"
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor of shape ({s},); got {type(out).__name__}")
    if validate:
        if out.shape != (s,):
            raise ValueError(
                f"{name} must return one log density per particle, shape ({s},); got "
                f"shape {tuple(out.shape)}"
            )
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise ValueError(
                f"{name} returned {bad} non-finite value(s) out of {s}; log p(x, θ) must be "
                "finite on q's support (is q's support inside the model's?)"
            )
    return out


def _detached_dist(q) -> Distribution:
    if not isinstance(q, nn.Module):
        raise TypeError(
            "stl=True needs q to be a guide module (its parameters are detached in log q); "
            f"got {type(q).__name__}"
        )
    params = {k: v.detach() for k, v in q.named_parameters()}
    return torch.func.functional_call(q, params, ())
