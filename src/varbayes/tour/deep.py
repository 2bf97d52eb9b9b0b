"""The tour's section 6: stochastic VI (gradient variance) and the variational autoencoder.

Score-function and pathwise (reparameterized) gradients of the same ELBO are both
unbiased; their variances differ by orders of magnitude. The VAE is amortized stochastic
VI: q(z|x) = N(μφ(x), σφ²(x)), trained with the pathwise gradient; the section trains one
(or reuses ``--vae RUN``), draws its 2-D manifold, reconstructions and samples, and
reports its test ELBO and NLL.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from varbayes.data import DataNotFoundError, load_mnist  # noqa: E402
from varbayes.tour.report import Figure, Section, figure_png  # noqa: E402
from varbayes.vi import LogisticRegression, MeanFieldNormal, elbo  # noqa: E402

__all__ = [
    "GRADIENT_ESTIMATORS",
    "gradient_data",
    "gradient_variances",
    "stochastic_vi_and_vae",
    "tour_vae_config",
]

STEPS_DEEP = 5

GRADIENT_ESTIMATORS = {
    "pathwise (reparameterization)": dict(estimator="pathwise"),
    "score function + leave-one-out baseline": dict(estimator="score", control_variate=True),
    "score function (REINFORCE)": dict(estimator="score", control_variate=False),
}
"""The ELBO-gradient estimators compared, as keyword arguments of :func:`varbayes.vi.elbo`."""


def gradient_data(seed: int, n: int = 500, d: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic-regression data: X (n, d) ~ N(0, 1), y ~ Bernoulli(sigmoid(X w)), w linear."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.linspace(-1, 1, d, dtype=torch.float64)
    return X, torch.bernoulli(torch.sigmoid(X @ w), generator=g)


def gradient_variances(model, guide, reps: int, particles: int, seed: int) -> dict[str, float]:
    """tr Cov[∇̂_λ ELBO] of each estimator over ``reps`` independent S-particle estimates.

    λ = (μ, log σ) of the mean-field guide; each estimate is ``torch.autograd.grad`` of
    :func:`varbayes.vi.elbo` with the estimator's options.
    """
    out = {}
    for name, options in GRADIENT_ESTIMATORS.items():
        gen = torch.Generator().manual_seed(seed)
        grads = torch.empty(reps, guide.flat.numel(), dtype=torch.float64)
        for r in range(reps):
            value = elbo(model, guide, particles, generator=gen, **options)
            (grads[r],) = torch.autograd.grad(value, guide.flat)
        out[name] = float(grads.var(0).sum())
    return out


def tour_vae_config(dataset: str, quick: bool):
    """The VAE the tour trains: 2-D latent; a short run with ``quick``."""
    from varbayes.vae import VAEConfig

    if dataset == "digits":
        return VAEConfig.for_dataset("digits", epochs=100 if quick else 300)
    if quick:
        return VAEConfig(train_size=10_000, epochs=3)
    return VAEConfig()


def _mnist_available(settings) -> bool:
    try:
        load_mnist("test", settings.data_root, download=not settings.quick, verify=False)
    except DataNotFoundError:
        return False
    return True


def _vae(settings, s: Section):
    """The trained VAE and its run directory: ``--vae RUN``, or a fresh run in OUT/vae."""
    from varbayes.vae.checkpoint import load_model
    from varbayes.vae.train import train

    if settings.vae_run is not None:
        model = load_model(settings.vae_run)
        s.text.append(
            f"VAE: the run {settings.vae_run} (reused; dataset {model.config.dataset}, "
            f"latent_dim {model.latent_dim})."
        )
        return model, Path(settings.vae_run)
    dataset = "mnist" if _mnist_available(settings) else "digits"
    if dataset == "digits":
        s.text.append(
            "MNIST is not available on this machine (not in the data folder"
            + ("" if settings.quick else ", and the download failed")
            + "), so the VAE is trained on scikit-learn's bundled 8×8 digits instead."
        )
    cfg = tour_vae_config(dataset, settings.quick).replace(**(settings.vae_config or {}))
    run = Path(settings.out) / "vae"
    if (run / "latest.json").is_file():
        shutil.rmtree(run)  # the previous tour's run
    t = time.perf_counter()
    result = train(cfg, run, data_root=settings.data_root, progress=settings.progress)
    s.facts["train_seconds"] = time.perf_counter() - t
    s.facts["epochs"] = cfg.epochs
    s.text.append(
        f"VAE: trained here on {cfg.dataset}"
        + (f" (first {cfg.train_size} training images)" if cfg.train_size else "")
        + f", latent_dim {cfg.latent_dim}, hidden {list(cfg.hidden)}, {cfg.epochs} epochs, "
        f"seed {cfg.seed}, in {s.facts['train_seconds']:.0f} s; the run is {run} "
        f"(varbayes vae explore {run})."
    )
    return result.model.eval(), run


def stochastic_vi_and_vae(settings, tick) -> Section:
    """Gradient variance of score vs pathwise; the VAE's manifold, reconstructions, samples."""
    from varbayes.vae import plot as vplot
    from varbayes.vae.data import load_test_data
    from varbayes.vae.evaluate import evaluate

    s = Section(
        "vae",
        "Stochastic VI and the VAE",
        "Monte Carlo (score-function) gradients of the ELBO are unbiased but so noisy that "
        "they are of little use; writing z = μ + σ·ε (the reparameterization trick) gives "
        "pathwise gradients of far lower variance. The VAE uses them to fit an encoder "
        "q(z|x) and a decoder p(x|z) together: amortized stochastic VI. Its reconstructions "
        "are blurred, since the decoder's mean averages the images a code could stand for.",
    )
    f = s.facts
    reps = 200 if settings.quick else 1000
    X, y = gradient_data(settings.seed)
    model = LogisticRegression(X, y, prior_scale=1.0)  # θ ~ N(0, I)
    guide = MeanFieldNormal(X.shape[1], init_scale=1.0, dtype=torch.float64)  # q = N(0, I)
    var = gradient_variances(model, guide, reps, 4, settings.seed)
    f["gradient_variance"] = var
    path = var["pathwise (reparameterization)"]
    f["variance_ratio_score"] = var["score function (REINFORCE)"] / path
    f["variance_ratio_loo"] = var["score function + leave-one-out baseline"] / path
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(list(var), list(var.values()), color=["C0", "C1", "C3"])
    ax.set_xscale("log")
    ax.set_xlabel("total variance tr Cov[∇̂_λ ELBO]")
    s.figures.append(
        Figure(
            f"Variance of ELBO-gradient estimators ({reps} estimates of 4 particles each; "
            "logistic regression, n = 500, D = 10, q = N(0, I))",
            figure_png(fig),
        )
    )
    s.text.append(
        f"At q = N(0, I) on Bayesian logistic regression the score-function gradient's total "
        f"variance is {f['variance_ratio_score']:.0f} times the pathwise one's "
        f"({f['variance_ratio_loo']:.0f} times with a leave-one-out baseline)."
    )
    s.check("the pathwise gradient has the smallest variance", path == min(var.values()))
    tick()
    vae, run = _vae(settings, s)
    tick()
    n_eval = 500 if settings.quick else 2000
    k = 100 if settings.quick else 1000
    x, labels = load_test_data(vae.config, settings.data_root)
    metrics = evaluate(vae, x[:n_eval], k=k, seed=settings.seed)
    for key in ("n", "k", "elbo", "nll", "nll_se", "recon", "kl", "mse", "active_units"):
        f[f"vae_{key}"] = metrics[key]
    s.text.append(
        f"Test set ({f['vae_n']} images of {vae.config.dataset}): ELBO {f['vae_elbo']:.3f} "
        f"nats (−E_q[log p(x|z)] = {f['vae_recon']:.3f}, KL(q(z|x) || p(z)) = "
        f"{f['vae_kl']:.3f}); NLL −log p(x) ≈ "
        f"{f['vae_nll']:.3f} ± {f['vae_nll_se']:.3f} nats (importance-weighted bound, "
        f"k = {f['vae_k']}); squared error of the reconstructions {f['vae_mse']:.4f} per pixel."
    )
    s.check("the importance-weighted bound is tighter: −NLL ≥ ELBO", -f["vae_nll"] >= f["vae_elbo"])
    tick()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pictures = []
        if vae.latent_dim >= 2:
            pictures.append(
                (
                    vplot.plot_manifold(vae, tmp / "m.png", n=15),
                    "The learned manifold: E[x|z] "
                    "over a grid z = Φ⁻¹(u) of the first two latent axes",
                )  # fmt: skip
            )
        pictures.append(
            (
                vplot.plot_reconstructions(vae, x, tmp / "r.png"),
                "Test inputs (top) and their "
                "reconstructions E[x | z = μφ(x)] (bottom): blurred averages",
            )  # fmt: skip
        )
        pictures.append(
            (
                vplot.plot_samples(vae, tmp / "s.png", seed=settings.seed),
                "Samples E[x|z], z ~ N(0, I)",
            )  # fmt: skip
        )
        pictures.append(
            (
                vplot.plot_latent_scatter(
                    vae, x[:2000], tmp / "l.png", labels[:2000] if labels is not None else None
                ),
                "Posterior means μφ(x) of test images",
            )  # fmt: skip
        )
        for p, caption in pictures:
            s.figures.append(Figure(caption, Path(p).read_bytes()))
    tick()
    f["explore"] = None
    try:
        from varbayes.vae.explore import write_explore

        page = write_explore(run, Path(settings.out) / "explore.html", data_root=settings.data_root)
        f["explore"] = page.name
        s.text.append(
            f"{page.name} (beside this report) lets you move through this VAE's latent space."
        )
    except ValueError as exc:  # an architecture the page cannot draw
        s.text.append(f"No explore page: {exc}")
    tick()
    return s
