"""Figures (matplotlib, Agg backend): densities of beliefs about θ.

Every function writes a PNG atomically and returns its path; none needs a screen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from varbayes._io import atomic_path  # noqa: E402

__all__ = ["plot_densities", "save_figure"]


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> str:
    """Save ``fig`` to ``path`` atomically (temporary file, then rename) and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return str(path)


def plot_densities(
    curves: Mapping[str, torch.distributions.Distribution],
    path: str | os.PathLike,
    *,
    grid: torch.Tensor,
    xlabel: str = "θ",
    title: str | None = None,
    markers: Mapping[str, float] | None = None,
    data: torch.Tensor | None = None,
) -> str:
    """Draw the densities p(θ) of several scalar distributions on one axis.

    Args:
        curves: label -> a torch Distribution over a scalar θ (e.g. prior, likelihood,
            posterior), evaluated with ``log_prob`` on ``grid``.
        path: PNG file to write.
        grid: 1-D tensor of θ values.
        markers: label -> a θ value drawn as a vertical line (e.g. MLE, MAP).
        data: observations drawn as a rug along the axis.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    g = grid.to(torch.float64)
    for label, dist in curves.items():
        dens = dist.log_prob(g.to(dist.mean.dtype)).exp().detach().cpu()
        ax.plot(g.numpy(), dens.numpy(), label=label, lw=2)
    for i, (label, value) in enumerate((markers or {}).items()):
        ax.axvline(
            float(value),
            ls=[":", "--", "-."][i % 3],
            lw=1.2,
            color="gray",
            label=f"{label} = {value:.4g}",
        )
    if data is not None:
        ax.plot(data.cpu().numpy(), [0] * len(data), "|", color="k", ms=12, label="data")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)
