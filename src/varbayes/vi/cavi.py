"""Coordinate-ascent variational inference (CAVI) with closed-form factor updates.

Mean-field VI restricts q to a product of factors and maximises

    ELBO(q) = E_q[log p(x, θ)] - E_q[log q(θ)]

one factor at a time: with the others fixed, the optimal factor is

    log q*_j(θ_j) = E_{q_{-j}}[log p(x, θ)] + const,

which for conjugate-exponential models is a known family whose parameters depend on
the other factors only through a few expectations. Each update can only raise the
ELBO, so the bound never decreases (the monitor checks it every iteration).

Models here (float64 by default):

* :func:`cavi_linear_regression` — y = Xw + ε, ε ~ N(0, τ⁻¹ I), with the
  Normal-Gamma prior w | τ ~ N(m₀, (τ Λ₀)⁻¹), τ ~ Gamma(a₀, b₀); q(w) q(τ).
* :func:`cavi_normal` — x_n ~ N(μ, τ⁻¹), μ | τ ~ N(μ₀, (λ₀τ)⁻¹), τ ~ Gamma(a₀, b₀);
  q(μ) q(τ) (Bishop, PRML §10.1.3). It is the regression above with X = 1 (D = 1).
* :func:`cavi_gaussian` — mean-field q(θ) = Π_d N(θ_d) for a Gaussian target
  N(m, Λ⁻¹) (e.g. the posterior of linear regression with known noise): the fixed
  point has the exact mean and variances 1/Λ_dd.

Each factor update is a pure function of the other factors' expectations, like
blackjax's steps; the loop in :func:`_run` owns the iterations and the monitor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import Gamma, Independent, MultivariateNormal, Normal

from varbayes._validation import as_tensor, check_finite, check_int
from varbayes.monitor import ConvergenceMonitor

__all__ = [
    "CAVIResult",
    "cavi_linear_regression",
    "cavi_normal",
    "cavi_gaussian",
]

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class CAVIResult:
    """Result of a CAVI run.

    ``factors`` maps each factor's name to its torch Distribution (e.g. ``"w"`` →
    MultivariateNormal, ``"tau"`` → Gamma); ``elbo`` the final ELBO (a float, the full
    bound with all constants); ``history`` the ELBO after every iteration; ``n_iter``
    and ``converged`` as in the monitor.
    """

    factors: dict
    elbo: float
    history: list[float]
    n_iter: int
    converged: bool


def _run(init, update: Callable, bound: Callable, tol, max_iter, verbose, name) -> CAVIResult:
    """Iterate ``state = update(state)`` until the monitor stops; the ELBO must not fall."""
    monitor = ConvergenceMonitor(tol, max_iter, monotone=True, verbose=verbose, name=name)
    state = init
    while True:
        state = update(state)
        if monitor.update(bound(state)):
            break
    monitor.warn_if_not_converged()
    return state, monitor


# ------------------------------------------------------------- linear regression
@dataclass(frozen=True)
class _RegStats:
    XtX: torch.Tensor
    Xty: torch.Tensor
    yty: torch.Tensor
    n: int
    m0: torch.Tensor
    L0: torch.Tensor  # prior precision factor Λ₀ (w | τ ~ N(m₀, (τΛ₀)⁻¹))
    a0: float
    b0: float
    # derived, independent of q(τ)
    LN: torch.Tensor  # Λ₀ + XᵀX
    mN: torch.Tensor  # (Λ₀ + XᵀX)⁻¹ (Λ₀ m₀ + Xᵀy)


def _reg_update_w(st: _RegStats, e_tau: torch.Tensor):
    """q(w) = N(m_N, (E[τ] Λ_N)⁻¹): returns (mean, covariance)."""
    cov = torch.cholesky_inverse(torch.linalg.cholesky(st.LN)) / e_tau
    return st.mN, cov


def _reg_expected_quadratic(st: _RegStats, mean, cov):
    """E_q(w)[|y - Xw|² + (w - m₀)ᵀΛ₀(w - m₀)] (the τ-coefficient of -2 log p)."""
    fit = st.yty - 2 * mean @ st.Xty + mean @ st.XtX @ mean + (st.XtX * cov).sum()
    d = mean - st.m0
    return fit + d @ st.L0 @ d + (st.L0 * cov).sum()


def _reg_update_tau(st: _RegStats, mean, cov):
    """q(τ) = Gamma(a₀ + (N + D)/2, b₀ + ½ E[quadratic])."""
    dim = mean.shape[0]
    a = st.a0 + 0.5 * (st.n + dim)
    b = st.b0 + 0.5 * _reg_expected_quadratic(st, mean, cov)
    return torch.as_tensor(a, dtype=mean.dtype), b


def _reg_elbo(st: _RegStats, mean, cov, a, b) -> float:
    """E[log p(y|w,τ)] + E[log p(w|τ)] + E[log p(τ)] + H[q(w)] + H[q(τ)], all constants."""
    dim = mean.shape[0]
    e_tau = a / b
    e_log_tau = torch.digamma(a) - torch.log(b)
    quad = _reg_expected_quadratic(st, mean, cov)
    log_lik_and_prior_w = (
        0.5 * (st.n + dim) * (e_log_tau - _LOG_2PI)
        + 0.5 * torch.linalg.slogdet(st.L0)[1]
        - 0.5 * e_tau * quad
    )
    log_p_tau = st.a0 * math.log(st.b0) - math.lgamma(st.a0) + (st.a0 - 1) * e_log_tau
    log_p_tau = log_p_tau - st.b0 * e_tau
    h_w = 0.5 * dim * (1 + _LOG_2PI) + 0.5 * torch.linalg.slogdet(cov)[1]
    h_tau = Gamma(a, b).entropy()
    return float(log_lik_and_prior_w + log_p_tau + h_w + h_tau)


def cavi_linear_regression(
    X,
    y,
    *,
    prior_mean=None,
    prior_precision=None,
    a0: float = 1.0,
    b0: float = 1.0,
    init_tau: float | None = None,
    tol: float = 1e-10,
    max_iter: int = 500,
    verbose: bool = False,
    dtype: torch.dtype = torch.float64,
) -> CAVIResult:
    """Mean-field VI q(w) q(τ) for Bayesian linear regression with unknown noise precision τ.

    Model: y | X, w, τ ~ N(Xw, τ⁻¹ I_N); w | τ ~ N(m₀, (τ Λ₀)⁻¹); τ ~ Gamma(a₀, b₀).
    Updates, alternated until the ELBO changes by less than ``tol``:

        q(w) = N(m_N, (E[τ] Λ_N)⁻¹),   Λ_N = Λ₀ + XᵀX,  m_N = Λ_N⁻¹(Λ₀m₀ + Xᵀy)
        q(τ) = Gamma(a₀ + (N + D)/2,  b₀ + ½ E_w[|y - Xw|² + (w - m₀)ᵀΛ₀(w - m₀)])

    Parameters
    ----------
    X : (N, D); y : (N,)
    prior_mean : (D,) m₀ (default 0); prior_precision : (D, D) Λ₀ (default I).
    a0, b0 : Gamma shape and rate of τ.
    init_tau : starting E[τ] (default the prior mean a₀/b₀).

    Returns
    -------
    CAVIResult with factors ``{"w": MultivariateNormal, "tau": Gamma}``.
    """
    X = as_tensor(X, "X", dtype=dtype)
    y = as_tensor(y, "y", dtype=dtype)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (N, D) matrix; got shape {tuple(X.shape)}")
    n, dim = X.shape
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match X; got {tuple(y.shape)}")
    check_finite(X, "X")
    check_finite(y, "y")
    m0 = (
        torch.zeros(dim, dtype=dtype)
        if prior_mean is None
        else as_tensor(prior_mean, "prior_mean", dtype=dtype)
    )
    if m0.shape != (dim,):
        raise ValueError(f"prior_mean must have shape ({dim},); got {tuple(m0.shape)}")
    L0 = (
        torch.eye(dim, dtype=dtype)
        if prior_precision is None
        else as_tensor(prior_precision, "prior_precision", dtype=dtype)
    )
    if L0.shape != (dim, dim):
        raise ValueError(f"prior_precision must have shape ({dim}, {dim}); got {tuple(L0.shape)}")
    if torch.linalg.cholesky_ex(L0).info != 0 or not torch.allclose(L0, L0.T):
        raise ValueError("prior_precision must be symmetric positive definite")
    a0 = _pos(a0, "a0")
    b0 = _pos(b0, "b0")
    e_tau0 = a0 / b0 if init_tau is None else _pos(init_tau, "init_tau")
    XtX, Xty = X.T @ X, X.T @ y
    LN = L0 + XtX
    mN = torch.linalg.solve(LN, L0 @ m0 + Xty)
    st = _RegStats(XtX, Xty, y @ y, n, m0, L0, a0, b0, LN, mN)

    def update(state):
        e_tau = state[2] / state[3]
        mean, cov = _reg_update_w(st, e_tau)
        a, b = _reg_update_tau(st, mean, cov)
        return mean, cov, a, b

    init = (mN, None, torch.tensor(e_tau0, dtype=dtype), torch.tensor(1.0, dtype=dtype))
    (mean, cov, a, b), monitor = _run(
        init,
        update,
        lambda s: _reg_elbo(st, *s),
        tol,
        check_int(max_iter, "max_iter", minimum=1),
        verbose,
        "CAVI ELBO",
    )
    factors = {"w": MultivariateNormal(mean, covariance_matrix=cov), "tau": Gamma(a, b)}
    return CAVIResult(
        factors, monitor.last, list(monitor.history), monitor.n_iter, monitor.converged
    )


def cavi_normal(
    x,
    *,
    mu0: float = 0.0,
    lambda0: float = 1.0,
    a0: float = 1.0,
    b0: float = 1.0,
    init_tau: float | None = None,
    tol: float = 1e-10,
    max_iter: int = 500,
    verbose: bool = False,
    dtype: torch.dtype = torch.float64,
) -> CAVIResult:
    """Mean-field VI q(μ) q(τ) for x_n ~ N(μ, τ⁻¹) with μ | τ ~ N(μ₀, (λ₀τ)⁻¹), τ ~ Gamma(a₀, b₀).

    Updates (Bishop, PRML eqs. 10.26-10.30):

        q(μ) = N(μ_N, (λ_N)⁻¹),  μ_N = (λ₀μ₀ + N x̄)/(λ₀ + N),  λ_N = (λ₀ + N) E[τ]
        q(τ) = Gamma(a₀ + (N + 1)/2,  b₀ + ½ E_μ[Σ_n (x_n - μ)² + λ₀(μ - μ₀)²])

    Parameters
    ----------
    x : (N,) observations.

    Returns
    -------
    CAVIResult with factors ``{"mu": Normal, "tau": Gamma}``.
    """
    x = as_tensor(x, "x", dtype=dtype)
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty 1-D vector; got shape {tuple(x.shape)}")
    check_finite(x, "x")
    lambda0 = _pos(lambda0, "lambda0")
    res = cavi_linear_regression(
        torch.ones(x.shape[0], 1, dtype=dtype),
        x,
        prior_mean=[float(mu0)],
        prior_precision=[[lambda0]],
        a0=a0,
        b0=b0,
        init_tau=init_tau,
        tol=tol,
        max_iter=max_iter,
        verbose=verbose,
        dtype=dtype,
    )
    q_w = res.factors["w"]
    res.factors = {
        "mu": Normal(q_w.loc[0], q_w.covariance_matrix[0, 0].sqrt()),
        "tau": res.factors["tau"],
    }
    return res


def cavi_gaussian(
    precision,
    mean=None,
    *,
    shift=None,
    init=None,
    tol: float = 1e-12,
    max_iter: int = 1000,
    verbose: bool = False,
    dtype: torch.dtype = torch.float64,
) -> CAVIResult:
    """Mean-field VI q(θ) = Π_d N(θ_d | m_d, 1/Λ_dd) for a Gaussian target p(θ) = N(m*, Λ⁻¹).

    The target is given by its precision Λ (D, D) and either its ``mean`` m* or the
    ``shift`` h = Λ m* (log p(θ) = -½ θᵀΛθ + hᵀθ + const). The optimal factor for θ_d
    is N(m_d, 1/Λ_dd) with m_d = (h_d - Σ_{j≠d} Λ_dj m_j)/Λ_dd (a Gauss-Seidel sweep);
    the fixed point is m = m* exactly, with variances 1/Λ_dd ≤ (Λ⁻¹)_dd: mean-field
    underestimates the marginal variances. ELBO(q) = log Z - KL(q || p) with
    log Z = 0 (the target normalised), i.e. the bound is -KL(q || p).

    Returns
    -------
    CAVIResult with factors ``{"theta": Independent(Normal)}``.
    """
    L = as_tensor(precision, "precision", dtype=dtype)
    if L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"precision must be a square (D, D) matrix; got {tuple(L.shape)}")
    if torch.linalg.cholesky_ex(L).info != 0 or not torch.allclose(L, L.T):
        raise ValueError("precision must be symmetric positive definite")
    dim = L.shape[0]
    if (mean is None) == (shift is None):
        raise ValueError("give exactly one of mean and shift")
    if mean is not None:
        mean = as_tensor(mean, "mean", dtype=dtype)
        if mean.shape != (dim,):
            raise ValueError(f"mean must have shape ({dim},); got {tuple(mean.shape)}")
        h = L @ mean
    else:
        h = as_tensor(shift, "shift", dtype=dtype)
        if h.shape != (dim,):
            raise ValueError(f"shift must have shape ({dim},); got {tuple(h.shape)}")
        mean = torch.linalg.solve(L, h)
    m = (
        torch.zeros(dim, dtype=dtype)
        if init is None
        else as_tensor(init, "init", dtype=dtype).clone()
    )
    if m.shape != (dim,):
        raise ValueError(f"init must have shape ({dim},); got {tuple(m.shape)}")
    var = 1.0 / L.diagonal()
    target = MultivariateNormal(mean, precision_matrix=L)

    def update(m):
        m = m.clone()
        for d in range(dim):
            m[d] = (h[d] - L[d] @ m + L[d, d] * m[d]) / L[d, d]
        return m

    def bound(m):
        q = MultivariateNormal(m, covariance_matrix=torch.diag(var))
        return -float(torch.distributions.kl_divergence(q, target))

    m, monitor = _run(
        m, update, bound, tol, check_int(max_iter, "max_iter", minimum=1), verbose, "CAVI ELBO"
    )
    q = Independent(Normal(m, var.sqrt()), 1)
    return CAVIResult(
        {"theta": q}, monitor.last, list(monitor.history), monitor.n_iter, monitor.converged
    )


def _pos(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number; got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)
