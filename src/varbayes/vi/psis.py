"""Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao and Gabry, 2024).

For draws θ_s ~ q with log weights log w_s = log p(x, θ_s) - log q(θ_s), the largest
M = ⌈min(S/5, 3√S)⌉ weights are replaced by quantiles of a generalized Pareto
distribution fitted to them (Zhang and Stephens 2009, with the weakly informative prior
on its shape used by loo and ArviZ). The fitted shape k̂ says whether q can be trusted:

* k̂ ≤ 0.5   importance sampling (and q itself) is reliable;
* k̂ ≤ 0.7   importance-weighted estimates are usable; draws may be importance-resampled;
* k̂ > 0.7   the tail of p/q is too heavy: q is far from the posterior (warned).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psis", "KHAT_THRESHOLD"]

KHAT_THRESHOLD = 0.7


def psis(log_weights) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, self-normalised log weights and k̂.

    ``log_weights`` : (S,) array-like of log p - log q; returns ``(log_w (S,), khat)``
    with logsumexp(log_w) = 0. An entry of -∞ (a draw where p = 0) is a zero weight and
    stays -∞; k̂ comes from the others, and is ∞ when their tail has 4 or fewer draws."""
    full = np.array(log_weights, dtype=np.float64).reshape(-1)
    zero = full == -np.inf
    if np.isnan(full).any() or np.isposinf(full).any() or full.size - zero.sum() < 2:
        raise ValueError(
            "log_weights must hold at least 2 finite values and no NaN or +inf; got "
            f"{full.size} values, {int((~zero & np.isfinite(full)).sum())} finite"
        )
    x = full[~zero]
    s = x.shape[0]
    x = x - x.max()
    tail_len = int(math.ceil(min(0.2 * s, 3 * math.sqrt(s))))
    order = np.argsort(x)
    cutoff = max(x[order[-tail_len - 1]], math.log(np.finfo(float).tiny))
    tail = np.flatnonzero(x > cutoff)
    khat = math.inf
    if tail.size > 4:
        tail = tail[np.argsort(x[tail])]
        exceed = np.exp(x[tail]) - math.exp(cutoff)
        khat, sigma = _gpd_fit(exceed)
        if math.isfinite(khat):
            probs = (np.arange(tail.size) + 0.5) / tail.size
            x[tail] = np.log(_gpd_quantile(probs, khat, sigma) + math.exp(cutoff))
            x[x > 0] = 0.0
    m = x.max()
    full[~zero] = x - (m + math.log(np.exp(x - m).sum()))
    return full, float(khat)


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """(k, σ) of a generalized Pareto fitted to sorted exceedances ``x`` > 0: the posterior
    mean over a grid of b = -k/σ (Zhang and Stephens 2009), then k shrunk towards 0.5
    by a prior worth 10 observations."""
    n = x.shape[0]
    m = 30 + int(math.sqrt(n))
    b = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    b = b / (3.0 * x[int(n / 4 + 0.5) - 1]) + 1.0 / x[-1]
    k = np.log1p(-b[:, None] * x).mean(axis=1)
    profile = n * (np.log(-b / k) - k - 1.0)
    with np.errstate(over="ignore"):  # an overflow is a weight of 1/∞ = 0, as it should be
        weights = 1.0 / np.exp(profile - profile[:, None]).sum(axis=1)
    keep = weights >= 10 * np.finfo(float).eps
    weights, b = weights[keep], b[keep]
    weights = weights / weights.sum()
    b_post = float((b * weights).sum())
    k_post = float(np.log1p(-b_post * x).mean())
    sigma = -k_post / b_post
    k_post = (n * k_post + 10 * 0.5) / (n + 10)
    return k_post, sigma


def _gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    """Quantiles of the generalized Pareto (location 0, scale σ, shape k)."""
    if sigma <= 0:
        return np.full_like(p, np.nan)
    if abs(k) < np.finfo(float).eps:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k
