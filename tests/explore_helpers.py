"""Shared by the explore tests (with and without a browser): small VAEs and their pages."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import torch

from varbayes.data import load_digits
from varbayes.vae import VAE, VAEConfig
from varbayes.vae.explore import explore_data, render_explore


def digits_test_images(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n digits test images (n, 64) in [0, 1] and their labels."""
    t = load_digits("test")
    return t.images[:n].reshape(n, 64), t.labels[:n]


def random_vae(seed: int = 0, /, **config) -> VAE:
    """An untrained VAE with weights from ``seed`` and biases spread out (visible pictures)."""
    torch.manual_seed(seed)
    model = VAE(VAEConfig(**config)).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.0)
    return model


def page_for(model: VAE, x: torch.Tensor, labels=None) -> str:
    """The explore page of ``model`` with x as its test points."""
    return render_explore(explore_data(model, x, labels, title="test"))


def page_payload(html: str) -> dict:
    """The JSON the page embeds, parsed back."""
    m = re.search(r'<script type="application/json" id="explore-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def unb64(text: str, dtype) -> np.ndarray:
    """A base64 little-endian array back as NumPy."""
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


@torch.no_grad()
def torch_mean_image(model: VAE, z) -> np.ndarray:
    """E[x|z] (D,) by torch: the decoder then the likelihood's mean."""
    zt = torch.as_tensor(z, dtype=torch.float32).reshape(1, -1)
    return model.likelihood.mean(model.decoder(zt))[0].double().numpy()
