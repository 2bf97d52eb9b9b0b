"""Figures of fitted mixtures (matplotlib, Agg backend): data with component ellipses,
1-D fitted densities over a histogram, and the ELBO trace."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

__all__ = ["plot_mixture", "plot_elbo", "plot_density_1d", "full_covariances"]


def _np(a) -> np.ndarray:
    """A fitted attribute (NumPy array or tensor) as a float NumPy array."""
    return np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=float)


def full_covariances(model) -> np.ndarray:
    """Σ_k of any covariance type as a (K, D, D) NumPy array."""
    cov = _np(model.covariances_)
    k, d = model.n_components, model.n_features_in_
    ct = model.covariance_type
    if ct == "full":
        return cov
    if ct == "tied":
        return np.broadcast_to(cov, (k, d, d)).copy()
    if ct == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)[None]


def _projection(x: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and the first two principal axes (D, 2) of ``x`` (identity when D <= 2)."""
    d = x.shape[1]
    centre = x.mean(0)
    if d <= 2:
        return centre * 0, np.eye(d)
    _, _, vt = np.linalg.svd(x - centre, full_matrices=False)
    return centre, vt[:2].T


def plot_mixture(model, X, ax=None, *, n_std: float = 2.0, max_points: int = 20000, seed: int = 0):
    """Scatter X (N, D) coloured by component, with an ellipse of ``n_std`` standard
    deviations per component. For D > 2 the data and the Gaussians are projected on
    the first two principal axes of X (the projection of N(μ, Σ) is N(Aᵀμ, AᵀΣA))."""
    x = _np(X)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    labels = np.asarray(model.predict(x))
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))[:max_points]
    means = _np(model.means_)
    centre, a = _projection(x, means)
    px = (x - centre) @ a
    if px.shape[1] == 1:
        px = np.column_stack([px[:, 0], np.zeros(len(px))])
    ax.scatter(px[idx, 0], px[idx, 1], c=labels[idx], s=4, cmap="tab10", alpha=0.5)
    covs = full_covariances(model)
    weights = _np(model.weights_)
    for k in range(model.n_components):  # drawing only: one patch per component
        m = (means[k] - centre) @ a
        c = a.T @ covs[k] @ a
        if c.shape == (1, 1):
            m, c = np.array([m[0], 0.0]), np.diag([c[0, 0], 1e-12])
        vals, vecs = np.linalg.eigh(c)
        vals = np.clip(vals, 0, None)
        angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
        ell = Ellipse(
            m,
            2 * n_std * math.sqrt(vals[1]),
            2 * n_std * math.sqrt(vals[0]),
            angle=angle,
            fill=False,
            lw=1.5,
            alpha=0.3 + 0.7 * min(1.0, weights[k] * model.n_components),
            color="k",
        )
        ax.add_patch(ell)
        ax.plot(*m, "k+")
    ax.set_title(f"{type(model).__name__}: K={model.n_components}, {model.covariance_type}")
    ax.set_xlabel("x1" if x.shape[1] <= 2 else "principal axis 1")
    ax.set_ylabel("x2" if x.shape[1] <= 2 else "principal axis 2")
    return ax


def plot_elbo(model, ax=None):
    """The ELBO per datum after every iteration (``lower_bounds_``)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    h = np.asarray(model.lower_bounds_)
    ax.plot(np.arange(1, len(h) + 1), h, marker=".")
    ax.set_xlabel("iteration")
    ax.set_ylabel("ELBO per datum")
    ax.set_title("ELBO trace")
    return ax


def plot_density_1d(model, x, ax=None, *, bins: int = 60, labels=None):
    """Histogram of 1-D data with the weighted component densities π_k N(x | μ_k, σ_k²)
    and the mixture density p(x | θ) on top."""
    x = np.asarray(x, dtype=float).reshape(-1)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    ax.hist(x, bins=bins, density=True, color="0.8", edgecolor="0.6", label="data")
    grid = np.linspace(x.min() - 0.1 * np.ptp(x), x.max() + 0.1 * np.ptp(x), 600)
    w = _np(model.weights_)
    mu = _np(model.means_)[:, 0]
    var = full_covariances(model)[:, 0, 0]
    dens = w[:, None] * np.exp(-0.5 * (grid[None] - mu[:, None]) ** 2 / var[:, None])
    dens /= np.sqrt(2 * np.pi * var)[:, None]
    order = np.argsort(mu)
    for j, k in enumerate(order):
        name = labels[j] if labels is not None and j < len(labels) else f"component {k}"
        ax.plot(grid, dens[k], lw=1.5, label=f"{name}: μ={mu[k]:.1f}, σ={np.sqrt(var[k]):.1f}")
    ax.plot(grid, dens.sum(0), "k--", lw=2, label="mixture p(x)")
    ax.legend(fontsize=8)
    return ax
