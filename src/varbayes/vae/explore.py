"""``explore.html``: one self-contained page to move through a trained VAE's latent space.

The page holds everything it needs (no network, works from ``file://``):

* the decoder p_θ(x|z) of a one-layer MLP VAE: every ``Linear`` layer's weight W (out, in)
  and bias b as base64 little-endian float32, the hidden activation, and the link from
  the last layer's output to the image E[x|z] (sigmoid: the Bernoulli mean, or the
  Gaussian mean of varbayes's sigmoid-link Gaussian);
* the posterior means μφ(x) of test images (N, L), their digit labels and the images
  themselves (uint8 grey levels), drawn as the latent plane coloured by digit;
* the plane: for L = 2 the axes z₁, z₂; for L > 2 the first two principal axes of the
  means (z = c + a·u₁ + b·u₂), with one slider per latent dimension besides.

The forward pass h ← act(W h + b), …, E[x|z] = sigmoid(W h + b) runs in plain
JavaScript on every animation frame the pointer moves in (a 2-512-256-784 decoder is
about 0.5 M multiply-adds, a millisecond or two). Clicking two test digits draws the
decoded line z = (1 − t)·μ_A + t·μ_B between their codes.

The template (``explore.html`` beside this module) holds the page's HTML, CSS and
JavaScript; :func:`write_explore` fills in the data and writes the page atomically.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from varbayes import __version__
from varbayes._io import atomic_write
from varbayes._validation import check_int
from varbayes.vae.model import VAE
from varbayes.vae.networks import _ACTIVATION_CLASSES, MLPDecoder

__all__ = ["EXPLORE_LIKELIHOODS", "ExploreData", "explore_data", "render_explore", "write_explore"]

EXPLORE_LIKELIHOODS = {"bernoulli": "sigmoid", "gaussian": "sigmoid"}
"""Likelihoods the page can draw, and the link from decoder output to E[x|z]."""

_PLACEHOLDER = "/*__VARBAYES_EXPLORE_DATA__*/null"


def _b64(array: np.ndarray, dtype) -> str:
    return base64.b64encode(
        np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    ).decode("ascii")


@dataclass
class ExploreData:
    """What the page embeds (all plain data, see :meth:`to_json`).

    ``layers``: [(W (out, in), b (out,))] float32 arrays of the decoder's Linear layers in
    order; ``activation``: the hidden activation's name; ``link``: ``"sigmoid"``;
    ``means`` (N, L) float32 posterior means μφ(x); ``labels`` (N,) ints or None;
    ``images`` (N, D) uint8 grey levels of the test images; ``center`` (L,) and ``axes``
    (2, L): the plane z = center + a·axes[0] + b·axes[1]; ``extent``: the half-width of
    the plane's square, in plane coordinates.
    """

    image_shape: tuple[int, int]
    layers: list[tuple[np.ndarray, np.ndarray]]
    activation: str
    link: str
    means: np.ndarray
    labels: np.ndarray | None
    images: np.ndarray
    center: np.ndarray
    axes: np.ndarray
    extent: float
    title: str

    @property
    def latent_dim(self) -> int:
        """L, the size of z."""
        return int(self.layers[0][0].shape[1])

    def to_json(self) -> str:
        """The page's data as JSON, arrays base64-encoded (float32 or uint8, little-endian)."""
        h, w = self.image_shape
        payload = {
            "version": __version__,
            "title": self.title,
            "imageShape": [h, w],
            "latentDim": self.latent_dim,
            "activation": self.activation,
            "link": self.link,
            "layers": [
                {
                    "in": int(W.shape[1]),
                    "out": int(W.shape[0]),
                    "W": _b64(W, "f4"),
                    "b": _b64(b, "f4"),
                }
                for W, b in self.layers
            ],
            "n": int(self.means.shape[0]),
            "means": _b64(self.means, "f4"),
            "labels": None if self.labels is None else _b64(self.labels, "u1"),
            "images": _b64(self.images, "u1"),
            "center": [float(v) for v in self.center],
            "axes": [[float(v) for v in row] for row in self.axes],
            "extent": float(self.extent),
        }
        return json.dumps(payload, separators=(",", ":"))


def _decoder_layers(model: VAE) -> list[tuple[np.ndarray, np.ndarray]]:
    """The decoder's Linear layers as float32 (W, b), refusing what the page cannot run."""
    cfg = model.config
    if cfg.likelihood not in EXPLORE_LIKELIHOODS:
        raise ValueError(
            f"the explore page draws E[x|z] = sigmoid(decoder output), so likelihood must be "
            f"one of {sorted(EXPLORE_LIKELIHOODS)}; this run has likelihood={cfg.likelihood!r}"
        )
    if cfg.stochastic_layers != 1:
        raise ValueError(
            "the explore page draws the decoder p(x|z) of a VAE with one stochastic layer; "
            f"this run has stochastic_layers={cfg.stochastic_layers}"
        )
    link = getattr(model.likelihood, "link", "sigmoid")
    if link != "sigmoid":
        raise ValueError(f"the explore page needs the sigmoid link; this likelihood has {link!r}")
    if cfg.architecture != "mlp" or not isinstance(model.decoder, MLPDecoder):
        raise ValueError(
            "the explore page runs a one-layer MLP decoder p(x|z) in JavaScript; this run has "
            f"architecture={cfg.architecture!r}, decoder {type(model.decoder).__name__} "
            "(train with --arch mlp)"
        )
    act = _ACTIVATION_CLASSES[cfg.activation]
    layers, expect_linear = [], True
    for module in model.decoder.net:
        if expect_linear and isinstance(module, nn.Linear):
            W = module.weight.detach().cpu().float().numpy()
            b = module.bias.detach().cpu().float().numpy()
            layers.append((W, b))
        elif not expect_linear and type(module) is act and _default_activation(module):
            pass
        else:
            raise ValueError(
                "the explore page runs Linear layers and the configured activation "
                f"{cfg.activation!r} (default settings) alternating; the decoder holds {module!r}"
            )
        expect_linear = not expect_linear
    if (
        not layers
        or layers[0][0].shape[1] != cfg.latent_dim
        or layers[-1][0].shape[0] != cfg.data_dim
    ):
        raise ValueError(
            f"the decoder must map z ({cfg.latent_dim}) to the {cfg.data_dim} pixels; its layers "
            f"have shapes {[tuple(W.shape) for W, _ in layers]}"
        )
    return layers


def _default_activation(module: nn.Module) -> bool:
    """Whether an activation module has the constants the page's JavaScript uses."""
    if isinstance(module, nn.LeakyReLU):
        return module.negative_slope == 0.01
    if isinstance(module, nn.ELU):
        return module.alpha == 1.0
    if isinstance(module, nn.Softplus):
        return module.beta == 1.0 and module.threshold == 20.0
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return True


@torch.no_grad()
def explore_data(
    model: VAE, x: torch.Tensor, labels: torch.Tensor | None = None, *, title: str = ""
) -> ExploreData:
    """Collect what :func:`render_explore` embeds: decoder weights, μφ(x) of x (N, D), plane.

    The plane is z₁, z₂ for L ≤ 2 (L = 1: the second axis is 0); for L > 2 it is spanned by
    the first two principal axes u₁, u₂ of the means, centred at their mean c. Its extent
    covers the prior (±3) and every test mean.
    """
    model = model.eval()
    layers = _decoder_layers(model)
    flat = model.flatten(x, "x")
    if labels is not None and (labels.dim() != 1 or labels.shape[0] != flat.shape[0]):
        raise ValueError(
            f"labels must have shape ({flat.shape[0]},) like x; got {tuple(labels.shape)}"
        )
    mu = torch.cat([model.encode(xb).mean for xb in flat.split(1000)]).double().cpu()
    L = model.latent_dim
    if L > 2:
        center = mu.mean(0)
        _, _, vh = torch.linalg.svd(mu - center, full_matrices=False)
        axes = vh[:2]
    else:
        center = torch.zeros(L, dtype=torch.float64)
        axes = torch.eye(2, L, dtype=torch.float64)
    coords = (mu - center) @ axes.T
    extent = max(3.0, 1.05 * float(coords.abs().max())) if coords.numel() else 3.0
    images = torch.round(flat.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    return ExploreData(
        image_shape=tuple(model.config.image_shape),
        layers=layers,
        activation=model.config.activation,
        link=EXPLORE_LIKELIHOODS[model.config.likelihood],
        means=mu.float().numpy(),
        labels=None if labels is None else labels.cpu().numpy().astype(np.uint8),
        images=images,
        center=center.numpy(),
        axes=axes.numpy(),
        extent=extent,
        title=title,
    )


def render_explore(data: ExploreData) -> str:
    """The page's HTML: the template with ``data`` embedded as JSON."""
    template = resources.files("varbayes.vae").joinpath("explore.html").read_text("utf-8")
    if template.count(_PLACEHOLDER) != 1:
        raise RuntimeError("explore.html template lacks its data placeholder")
    return template.replace(_PLACEHOLDER, data.to_json().replace("</", "<\\/"))


def write_explore(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    test_size: int = 1000,
    data_root: str | os.PathLike | None = None,
) -> Path:
    """Write ``explore.html`` for the VAE run (or checkpoint) ``run``; return its path.

    The latent plane shows the first ``test_size`` test images of the run's data set
    (``config.dataset``). ``out`` defaults to ``RUN/explore.html`` (the checkpoint's
    folder when ``run`` is a checkpoint directory). Written atomically.
    """
    from varbayes.vae.checkpoint import load_model, resolve_checkpoint
    from varbayes.vae.data import load_test_data

    test_size = check_int(test_size, "test_size", minimum=1)
    run = Path(run)
    model = load_model(run)
    _decoder_layers(model)  # refuse before reading any data
    x, labels = load_test_data(model.config, data_root, test_size)
    ckpt = resolve_checkpoint(run)
    cfg = model.config
    title = (
        f"{cfg.dataset}, L = {cfg.latent_dim}, hidden {list(cfg.hidden)}, {cfg.activation}, "
        f"{cfg.likelihood} ({ckpt.name})"
    )
    html = render_explore(explore_data(model, x, labels, title=title))
    path = Path(out) if out is not None else (run if run.is_dir() else run.parent) / "explore.html"
    with atomic_write(path) as f:
        f.write(html.encode("utf-8"))
    return path
