"""Evaluation metrics and figures of a VAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from test_vae_model import FixedEncoder, exact_log_px, linear_gaussian_vae

from varbayes.vae import VAE, VAEConfig
from varbayes.vae.evaluate import evaluate, format_table
from varbayes.vae.plot import (
    manifold_grid,
    plot_latent_scatter,
    plot_manifold,
    plot_reconstructions,
    plot_samples,
    plot_training_curves,
    principal_axes,
    tile_images,
)


def test_evaluate_nll_matches_exact_log_likelihood_of_linear_gaussian_model():
    """evaluate's NLL (IWAE k=2000) is within 0.03 nats of −mean log N(x; b, WWᵀ+σ²I)."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 2, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    m = linear_gaussian_vae(w, b, 0.6, var_scale=1.5)
    x = (torch.randn(20, 2, generator=g, dtype=torch.float64) @ w.T + b).reshape(20, 1, 5)
    res = evaluate(m, x, k=2000, batch_size=7)
    exact = exact_log_px(x.reshape(20, 5), w, b, 0.6).mean()
    assert abs(res["nll"] + exact) < 0.03
    # its standard error is the spread of the exact per-image log p(x) over the images
    per_image = exact_log_px(x.reshape(20, 5), w, b, 0.6)
    assert res["nll_se"] == pytest.approx(float(per_image.std()) / np.sqrt(20), rel=0.05)
    assert sum(res["kl_per_dim"]) == pytest.approx(res["kl"], rel=1e-9)
    assert "NLL, IWAE k=2000" in format_table(res)


def test_active_units_count_dimensions_whose_posterior_mean_varies():
    """A latent whose μφ(x) ignores x is inactive (Var < 0.01); one tracking x is; MSE by hand."""
    d, L = 4, 2
    a = torch.zeros(L, d, dtype=torch.float64)
    a[0, 0] = 1.0  # z_1 follows pixel 1; z_2 is constant
    enc = FixedEncoder(a, torch.zeros(d, dtype=torch.float64), torch.ones(L, dtype=torch.float64))
    cfg = VAEConfig(image_shape=(1, d), hidden=(), latent_dim=L, likelihood="gaussian")
    m = VAE(cfg, encoder=enc).double()
    x = torch.rand(200, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = evaluate(m, x, k=0)
    assert res["active_units"] == 1 and res["nll"] is None and res["nll_se"] is None
    np.testing.assert_allclose(res["au_variance"][0], x[:, 0].var().item(), rtol=1e-9)
    assert res["au_variance"][1] == 0
    mse = ((m.reconstruct(x).reshape(200, d) - x) ** 2).mean().item()
    assert res["mse"] == pytest.approx(mse, rel=1e-9)


def test_evaluate_arguments_checked():
    """k < 0 and batch_size < 1 raise ValueError naming them."""
    m = VAE(VAEConfig(image_shape=(2, 2), hidden=(3,)))
    with pytest.raises(ValueError, match="k must be >= 0"):
        evaluate(m, torch.rand(3, 4), k=-1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate(m, torch.rand(3, 4), batch_size=0)


def test_manifold_grid_is_the_gaussian_inverse_cdf_of_a_regular_grid():
    """Φ(z) of the grid is an evenly spaced grid in [0.05, 0.95]², z₂ decreasing down rows."""
    z = manifold_grid(5)
    u = stats.norm.cdf(z.numpy())
    np.testing.assert_allclose(u[:5, 0], np.linspace(0.05, 0.95, 5), atol=1e-12)
    np.testing.assert_allclose(u[::5, 1], np.linspace(0.95, 0.05, 5), atol=1e-12)
    with pytest.raises(ValueError, match="low and high must satisfy"):
        manifold_grid(5, low=0.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        manifold_grid(0)


def test_principal_axes_capture_the_largest_variances():
    """The variances of the 2 projections equal the 2 largest covariance eigenvalues (numpy)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 4, generator=g, dtype=torch.float64) * torch.tensor([3.0, 0.5, 2.0, 1.0])
    p = principal_axes(z)
    eig = np.sort(np.linalg.eigvalsh(np.cov(z.numpy().T)))[::-1][:2]
    np.testing.assert_allclose(p.var(0).numpy(), eig, rtol=1e-9)


def test_tile_images_places_each_image_and_checks_count():
    """Image i lands at row i//cols, column i%cols; a wrong count raises naming images."""
    imgs = torch.arange(6).float().reshape(6, 1, 1).expand(6, 2, 2)
    t = tile_images(imgs, 2, 3, pad=1)
    assert t.shape == (5, 8) and t[3, 6] == 5 and t[0, 3] == 1
    with pytest.raises(ValueError, match="images must hold rows"):
        tile_images(imgs, 2, 2)


def test_every_figure_is_written(tmp_path):
    """manifold, reconstructions, samples, scatter (L=2 and L>2) and curves write PNG files."""
    torch.manual_seed(0)
    x = torch.rand(30, 8, 8)
    labels = torch.arange(30) % 10
    for L in (2, 3):
        m = VAE(VAEConfig(image_shape=(8, 8), hidden=(8,), latent_dim=L))
        paths = [
            plot_manifold(m, tmp_path / f"m{L}.png", n=4),
            plot_reconstructions(m, x, tmp_path / f"r{L}.png", n=5),
            plot_samples(m, tmp_path / f"s{L}.png", n=3),
            plot_latent_scatter(m, x, tmp_path / f"l{L}.png", labels if L == 2 else None),
        ]
        for p in paths:
            assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    hist = [
        {"epoch": 1, "train_bound": -3.0, "train_kl": 1.0, "val_elbo": -3.5, "val_kl": 1.0},
        {"epoch": 2, "train_bound": -2.0, "train_kl": 1.5, "val_elbo": -2.5, "val_kl": 1.2},
    ]
    assert plot_training_curves(hist, tmp_path / "c.png").endswith("c.png")


def test_figure_errors_name_the_argument(tmp_path):
    """A 1-D latent has no manifold plot; empty history has no curves."""
    m = VAE(VAEConfig(image_shape=(4, 4), hidden=(4,), latent_dim=1))
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        plot_manifold(m, tmp_path / "m.png")
    with pytest.raises(ValueError, match="history must hold at least one epoch"):
        plot_training_curves([], tmp_path / "c.png")
    assert plot_latent_scatter(m, torch.rand(5, 4, 4), tmp_path / "l.png")


@pytest.mark.parametrize(
    "extra",
    [dict(prior="vampprior", num_pseudo_inputs=3), dict(stochastic_layers=2, top_latent_dim=2)],
    ids=["vampprior", "two-layers"],
)
def test_evaluate_models_without_a_closed_form_kl(extra):
    """VampPrior and two-layer models: ELBO with the Monte Carlo KL, no per-dimension KL,
    NLL ≤ ELBO-based −log p bound on average, and a table that prints."""
    torch.manual_seed(0)
    cfg = VAEConfig(image_shape=(4, 4), hidden=(8,), latent_dim=3, kl="mc", **extra)
    m = VAE(cfg).double()
    x = (torch.rand(40, 16, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    res = evaluate(m, x, k=200, batch_size=16)
    assert res["kl_per_dim"] is None and len(res["au_variance"]) == 3
    assert res["nll"] < -res["elbo"]  # IWAE_200 is a tighter bound than one ELBO draw
    table = format_table(res)
    assert "NLL, IWAE k=200" in table and "KL per latent dim" not in table
