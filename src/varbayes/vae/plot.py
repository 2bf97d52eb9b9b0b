"""Pictures of a trained VAE (PNG, matplotlib Agg, written atomically).

* :func:`plot_manifold`: the learned 2-D manifold of Kingma & Welling (2014, fig. 4) that
  the post shows: a regular grid of probabilities u ∈ (0, 1)², mapped through the
  Gaussian inverse CDF z = Φ⁻¹(u) (so the grid covers the prior N(0, I) evenly in
  probability), each z decoded to E[x|z]. With L > 2 the other coordinates are 0.
* :func:`plot_reconstructions`: inputs x beside E[x | z = μφ(x)].
* :func:`plot_samples`: E[x|z] for z ~ N(0, I).
* :func:`plot_latent_scatter`: posterior means μφ(x) of test images coloured by digit
  label (the first two principal axes when L > 2).
* :func:`plot_training_curves`: train and validation ELBO (and KL) per epoch.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Normal  # noqa: E402

from varbayes._validation import check_int  # noqa: E402
from varbayes.plot import save_figure  # noqa: E402
from varbayes.vae.model import VAE  # noqa: E402

__all__ = [
    "manifold_grid",
    "plot_latent_scatter",
    "plot_manifold",
    "plot_reconstructions",
    "plot_samples",
    "plot_training_curves",
    "principal_axes",
    "tile_images",
]


def tile_images(images: torch.Tensor, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """Arrange (rows·cols, H, W) images into one (rows·(H+pad), cols·(W+pad)) array."""
    images = images.detach().cpu().float()
    n, h, w = images.shape
    if n != rows * cols:
        raise ValueError(f"images must hold rows*cols = {rows * cols} images; got {n}")
    out = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = images[i]
    return out


def manifold_grid(n: int, *, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """z of shape (n·n, 2): Φ⁻¹ of an n×n grid of probabilities in [low, high]² (row-major,
    z₂ decreasing down the rows, z₁ increasing along them)."""
    n = check_int(n, "n", minimum=1)
    if not (0 < low < high < 1):
        raise ValueError(f"low and high must satisfy 0 < low < high < 1; got {low}, {high}")
    u = torch.linspace(low, high, n, dtype=torch.float64)
    z = Normal(0.0, 1.0).icdf(u)
    z1 = z.repeat(n)
    z2 = z.flip(0).repeat_interleave(n)
    return torch.stack([z1, z2], 1)


@torch.no_grad()
def plot_manifold(model: VAE, path: str | os.PathLike, n: int = 20) -> str:
    """Decode an n×n grid z = Φ⁻¹(u) over the first two latent axes; write the PNG."""
    if model.latent_dim < 2:
        raise ValueError(
            f"the manifold plot needs latent_dim >= 2 (two axes); got {model.latent_dim}"
        )
    p = next(model.parameters())
    z = torch.zeros(n * n, model.latent_dim, dtype=p.dtype, device=p.device)
    z[:, :2] = manifold_grid(n).to(z)
    img = model._images(model.likelihood.mean(model.decoder(z)))
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(tile_images(img, n, n, pad=0), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    extra = "" if model.latent_dim == 2 else f" (z₃..z_{model.latent_dim} = 0)"
    ax.set_title(f"learned manifold: E[x | z], z = Φ⁻¹(u) on a {n}×{n} grid{extra}")
    return save_figure(fig, path)


@torch.no_grad()
def plot_reconstructions(model: VAE, x: torch.Tensor, path: str | os.PathLike, n: int = 10) -> str:
    """Top row: the first n inputs x; bottom row: E[x | z = μφ(x)]."""
    x = x[:n]
    rec = model.reconstruct(x)
    x_img = model._images(model.flatten(x, check_values=False))
    fig, ax = plt.subplots(figsize=(n, 2.3))
    ax.imshow(tile_images(torch.cat([x_img, rec]), 2, x_img.shape[0]), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("inputs (top) and reconstructions E[x | z = μφ(x)] (bottom)")
    return save_figure(fig, path)


@torch.no_grad()
def plot_samples(model: VAE, path: str | os.PathLike, n: int = 10, seed: int = 0) -> str:
    """An n×n grid of E[x|z] for z ~ N(0, I) drawn from ``seed``."""
    p = next(model.parameters())
    g = torch.Generator(device=p.device).manual_seed(seed)
    img = model.sample(n * n, generator=g)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(tile_images(img, n, n), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("samples: E[x | z], z ~ N(0, I)")
    return save_figure(fig, path)


def principal_axes(z: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Project rows of z (N, L) onto their first k principal axes: (N, k)."""
    zc = z - z.mean(0)
    _, _, vh = torch.linalg.svd(zc, full_matrices=False)
    return zc @ vh[:k].T


@torch.no_grad()
def plot_latent_scatter(
    model: VAE,
    x: torch.Tensor,
    path: str | os.PathLike,
    labels: torch.Tensor | None = None,
) -> str:
    """Scatter of posterior means μφ(x), coloured by ``labels`` (PCA to 2-D when L > 2)."""
    mu = torch.cat([model._encode(xb)[0] for xb in model.flatten(x).split(1000)]).double()
    if model.latent_dim > 2:
        pts, xlabel, ylabel = principal_axes(mu), "principal axis 1", "principal axis 2"
    elif model.latent_dim == 2:
        pts, xlabel, ylabel = mu, "z₁", "z₂"
    else:
        pts = torch.cat([mu, torch.zeros_like(mu)], 1)
        xlabel, ylabel = "z₁", ""
    pts = pts.cpu().numpy()
    fig, ax = plt.subplots(figsize=(7, 6))
    if labels is not None:
        sc = ax.scatter(
            pts[:, 0], pts[:, 1], c=labels.cpu().numpy(), cmap="tab10", vmin=-0.5, vmax=9.5, s=3
        )
        fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    else:
        ax.scatter(pts[:, 0], pts[:, 1], s=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("posterior means μφ(x) of test images")
    return save_figure(fig, path)


def plot_training_curves(history: list[dict], path: str | os.PathLike) -> str:
    """Train bound and validation ELBO per epoch (left), KL terms (right)."""
    if not history:
        raise ValueError("history must hold at least one epoch of metrics; got none")
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    obj = history[-1].get("objective", "elbo")
    a1.plot(ep, [h["train_bound"] for h in history], "o-", label=f"train {obj}")
    if history[-1].get("val_elbo") is not None:
        a1.plot(ep, [h["val_elbo"] for h in history], "s-", label="validation ELBO")
    a1.set_xlabel("epoch")
    a1.set_ylabel("nats per image")
    a1.legend()
    a2.plot(ep, [h["train_kl"] for h in history], "o-", label="train KL(q(z|x) || p(z))")
    if history[-1].get("val_kl") is not None:
        a2.plot(ep, [h["val_kl"] for h in history], "s-", label="validation KL")
    a2.set_xlabel("epoch")
    a2.set_ylabel("nats per image")
    a2.legend()
    fig.suptitle("training curves")
    return save_figure(fig, path)
