"""The tour's first three sections: the Bayesian framework, conjugacy, and MAP = L2.

Each function takes the :class:`~varbayes.tour.run.TourSettings` and a ``tick()`` that
advances the section's progress bar, and returns a :class:`~varbayes.tour.report.Section`
whose ``facts`` hold every number its text states.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from varbayes.conjugate import (  # noqa: E402
    BayesianLinearRegression,
    BetaBernoulli,
    GammaPoisson,
)
from varbayes.heights import heights_data, heights_example  # noqa: E402
from varbayes.tour.report import Figure, Section, Table, figure_png  # noqa: E402

__all__ = [
    "CONJUGACY",
    "HEIGHTS",
    "RIDGE",
    "bayesian_framework",
    "conjugacy",
    "conjugacy_data",
    "line_data",
    "map_is_l2",
    "ridge_data",
]

# The heights example: a believer in small heights, and data with many people above 180 cm.
HEIGHTS = {"prior_mean": 160.0, "prior_std": 3.0, "noise_std": 7.0, "n": 8, "true_mean": 185.0}
CONJUGACY = {"p_true": 0.7, "rate_true": 3.0, "sizes": (0, 1, 5, 20, 100), "n_predictive": 5}
RIDGE = {"n": 60, "d": 8, "noise_std": 0.5, "alpha": 3.0, "line_noise_std": 0.3}
STEPS_BAYES, STEPS_CONJUGACY, STEPS_MAP = 2, 3, 3


def conjugacy_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """100 coin flips ~ Bernoulli(0.7) and 100 counts ~ Poisson(3) (float64), from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    c = CONJUGACY
    flips = torch.bernoulli(torch.full((100,), c["p_true"], dtype=torch.float64), generator=g)
    counts = torch.poisson(torch.full((100,), c["rate_true"], dtype=torch.float64), generator=g)
    return flips, counts


def ridge_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X (60, 8) ~ N(0, 1), y = X w + 0.5 ε with w ~ N(0, I) (float64), from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    r = RIDGE
    X = torch.randn(r["n"], r["d"], generator=gen, dtype=torch.float64)
    w_true = torch.randn(r["d"], generator=gen, dtype=torch.float64)
    y = X @ w_true + r["noise_std"] * torch.randn(r["n"], generator=gen, dtype=torch.float64)
    return X, y


def line_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features F (8, 2) = (1, t) for t evenly in [-1, 1], y = 0.5 + 1.2 t + 0.3 ε."""
    gen = torch.Generator().manual_seed(seed + 1)
    t = torch.linspace(-1, 1, 8, dtype=torch.float64)
    y = 0.5 + 1.2 * t + RIDGE["line_noise_std"] * torch.randn(8, generator=gen, dtype=torch.float64)
    return torch.stack([torch.ones_like(t), t], 1), y


def bayesian_framework(settings, tick) -> Section:
    """Heights: prior N(160, 3²) on the mean μ, n = 8 heights x_i ~ N(μ, 7²) near 185 cm.

    Posterior N(μ_n, τ_n²) with 1/τ_n² = 1/τ² + n/σ², μ_n = τ_n² (μ₀/τ² + Σx/σ²); the
    MLE is x̄; the evidence log p(x) = log N(x; μ₀1, σ²I + τ²11ᵀ).
    """
    h = HEIGHTS
    x = heights_data(h["n"], h["true_mean"], h["noise_std"], seed=settings.seed)
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "heights.png"
        res = heights_example(
            x,
            prior_mean=h["prior_mean"],
            prior_std=h["prior_std"],
            noise_std=h["noise_std"],
            plot=png,
        )
        tick()
        figure = png.read_bytes()
    post = res.model.posterior
    s = Section(
        "bayes",
        "Bayesian framework",
        "A Bayesian combines a prior belief with the data. Believing that people are short "
        "(a prior centred at 160 cm) and then seeing many people above 180 cm, the posterior "
        "lands near 175 cm, between the prior and the frequentist's MLE near 185 cm.",
    )
    f = s.facts
    f["n"] = len(x)
    f["above_180"] = int((x > 180).sum())
    f["mle"] = res.mle[0]
    f["posterior_mean"] = float(post.mean)
    f["posterior_std"] = float(post.stddev)
    f["posterior_interval"] = list(res.posterior[1])
    f["log_evidence"] = res.log_evidence
    s.text.append(
        f"Model: x_i ~ N(μ, {h['noise_std']:g}²), prior μ ~ N({h['prior_mean']:g}, "
        f"{h['prior_std']:g}²). Data: n = {f['n']} heights (synthetic, N({h['true_mean']:g}, "
        f"{h['noise_std']:g}²), seed {settings.seed}), {f['above_180']} of them above 180 cm."
    )
    s.text.append(
        f"MLE (the sample mean) {f['mle']:.2f} cm; posterior N({f['posterior_mean']:.2f}, "
        f"{f['posterior_std']:.2f}²), 95% credible interval [{f['posterior_interval'][0]:.2f}, "
        f"{f['posterior_interval'][1]:.2f}] cm; the evidence log p(x) = "
        f"{f['log_evidence']:.4f}, the normaliser of Bayes' rule p(μ|x) = p(x|μ)p(μ)/p(x)."
    )
    s.figures.append(Figure("Prior, likelihood (normalised in μ) and posterior of μ", figure))
    s.check(
        "the posterior mean lies between the prior mean and the MLE",
        h["prior_mean"] < f["posterior_mean"] < f["mle"],
    )
    tick()
    return s


def conjugacy(settings, tick) -> Section:
    """Beta-Bernoulli and Gamma-Poisson: prior + sufficient statistics = posterior.

    Beta(α, β) + k successes in n → Beta(α + k, β + n − k); Gamma(a, b) + counts x_1..x_n →
    Gamma(a + Σx, b + n). The posterior predictive of a new count is NegativeBinomial(a_n,
    1/(b_n + 1)), wider than the plug-in Poisson(x̄).
    """
    p_true, rate_true = CONJUGACY["p_true"], CONJUGACY["rate_true"]
    flips, counts = conjugacy_data(settings.seed)
    sizes = list(CONJUGACY["sizes"])
    coin0, rate0 = BetaBernoulli(1.0, 1.0), GammaPoisson(2.0, 1.0)
    coins = [coin0 if n == 0 else coin0.update(flips[:n]) for n in sizes]
    rates = [rate0 if n == 0 else rate0.update(counts[:n]) for n in sizes]
    tick()
    s = Section(
        "conjugacy",
        "Conjugacy",
        "When prior and likelihood are conjugate the posterior has the prior's form, and "
        "updating is adding the data's sufficient statistics to the prior's parameters "
        "(Beta-Binomial, Gamma-Poisson). The posterior tightens as data arrive.",
    )
    f = s.facts
    f["beta_params"] = [
        [float(m.posterior.concentration1), float(m.posterior.concentration0)] for m in coins
    ]
    f["gamma_params"] = [[float(m.posterior.concentration), float(m.posterior.rate)] for m in rates]
    f["beta_std"] = [float(m.posterior.stddev) for m in coins]
    f["gamma_std"] = [float(m.posterior.stddev) for m in rates]
    fig, axes = plt.subplots(2, len(sizes), figsize=(15, 5.2), sharey="row")
    grid_p = torch.linspace(0.001, 0.999, 500, dtype=torch.float64)
    grid_r = torch.linspace(0.01, 8, 500, dtype=torch.float64)
    for j, n in enumerate(sizes):
        axes[0, j].plot(grid_p, coins[j].posterior.log_prob(grid_p).exp(), "C0")
        axes[0, j].axvline(p_true, color="k", lw=0.8, ls=":")
        a, b = f["beta_params"][j]
        axes[0, j].set_title(f"n = {n}: Beta({a:g}, {b:g})", fontsize=10)
        axes[1, j].plot(grid_r, rates[j].posterior.log_prob(grid_r).exp(), "C1")
        axes[1, j].axvline(rate_true, color="k", lw=0.8, ls=":")
        a, b = f["gamma_params"][j]
        axes[1, j].set_title(f"n = {n}: Gamma({a:g}, {b:g})", fontsize=10)
    axes[0, 0].set_ylabel("p(θ | flips)")
    axes[1, 0].set_ylabel("p(λ | counts)")
    fig.suptitle("Posteriors after n observations (dotted: the true value)")
    fig.tight_layout()
    s.figures.append(
        Figure(
            f"Top: a coin with P(heads) = {p_true}, prior Beta(1, 1). Bottom: Poisson counts "
            f"with rate {rate_true}, prior Gamma(2, 1).",
            figure_png(fig),
        )
    )
    tick()
    s.tables.append(
        Table(
            "Posterior standard deviation after n observations",
            ["n", *map(str, sizes)],
            [
                ["coin θ", *(f"{v:.4f}" for v in f["beta_std"])],
                ["rate λ", *(f"{v:.4f}" for v in f["gamma_std"])],
            ],
        )
    )
    s.check(
        "the posterior standard deviation shrinks with every batch of data (both models)",
        all(np.diff(f["beta_std"]) < 0) and all(np.diff(f["gamma_std"]) < 0),
    )
    # Posterior predictive of a new count after 5 observations, against the plug-in.
    n_pred = CONJUGACY["n_predictive"]
    pred = rates[sizes.index(n_pred)].posterior_predictive()
    plug = torch.distributions.Poisson(rates[sizes.index(n_pred)].mle())
    k = torch.arange(0, 13, dtype=torch.float64)
    f["predictive_var"] = float(pred.variance)
    f["plugin_var"] = float(plug.variance)
    f["predictive_pmf"] = pred.log_prob(k).exp().tolist()
    f["plugin_pmf"] = plug.log_prob(k).exp().tolist()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar(k - 0.2, f["predictive_pmf"], width=0.4, label="posterior predictive (neg. binomial)")
    ax.bar(k + 0.2, f["plugin_pmf"], width=0.4, label="plug-in Poisson(x̄)")
    ax.set_xlabel("next count")
    ax.legend()
    s.figures.append(
        Figure(
            f"p(x_new | {n_pred} counts) = ∫ Poisson(x_new | λ) p(λ | counts) dλ against "
            "Poisson(x_new | λ = x̄)",
            figure_png(fig),
        )
    )
    s.text.append(
        f"After n = {n_pred} counts the posterior predictive has variance "
        f"{f['predictive_var']:.3f}, the plug-in Poisson(x̄) {f['plugin_var']:.3f}: "
        "integrating over λ keeps the uncertainty about the rate."
    )
    s.check("the posterior predictive is wider than the plug-in", pred.variance > plug.variance)
    tick()
    return s


def _ridge(X: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, str]:
    """Ridge regression without intercept: scikit-learn's Ridge when installed."""
    try:
        from sklearn.linear_model import Ridge
    except ImportError:
        d = X.shape[1]
        return np.linalg.solve(X.T @ X + lam * np.eye(d), X.T @ y), "numpy.linalg.solve"
    return Ridge(alpha=lam, fit_intercept=False, tol=1e-12).fit(X, y).coef_, "sklearn Ridge"


def map_is_l2(settings, tick) -> Section:
    """MAP of Bayesian linear regression = ridge; regularisation path; predictive bands.

    With w ~ N(0, α⁻¹I), y ~ N(Xw, σ²I): θ_MP = argmin ‖y − Xw‖² + λ‖w‖², λ = σ²α. The
    posterior predictive N(xᵀm, σ² + xᵀΣx) widens away from the data; the plug-in
    N(xᵀθ_MP, σ²) does not.
    """
    n, d, noise_std, alpha = (RIDGE[k] for k in ("n", "d", "noise_std", "alpha"))
    X, y = ridge_data(settings.seed)
    post = BayesianLinearRegression(prior_precision=alpha, noise_variance=noise_std**2)
    post = post.update(X, y)
    lam = float(post.ridge_penalty)
    ridge, how = _ridge(X.numpy(), y.numpy(), lam)
    s = Section(
        "map",
        'MAP ("poor Bayes") = L2 regularisation',
        "Without conjugacy one falls back on a point estimate, the posterior mode θ_MP: "
        '"poor Bayes". With a Gaussian prior it is exactly L2-regularised least squares '
        "(ridge regression), so the frequentist's regularisation is a prior in disguise.",
    )
    f = s.facts
    f["lambda"] = lam
    f["map"] = post.map().tolist()
    f["ridge"] = np.asarray(ridge).tolist()
    f["max_abs_diff"] = float(np.abs(post.map().numpy() - ridge).max())
    s.text.append(
        f"Bayesian linear regression, n = {n}, D = {d}, σ = {noise_std}, prior w ~ N(0, "
        f"{alpha:g}⁻¹ I): the MAP equals ridge regression ({how}) with λ = σ²α = {lam:.4f}; "
        f"max_j |w_MAP − w_ridge| = {f['max_abs_diff']:.2e}."
    )
    s.check("MAP and ridge agree to 1e-8", f["max_abs_diff"] < 1e-8)
    tick()
    alphas = np.logspace(-3, 3, 31)
    path, evidence = [], []
    for a in alphas:
        m = BayesianLinearRegression(prior_precision=float(a), noise_variance=noise_std**2)
        path.append(m.update(X, y).map().numpy())
        evidence.append(float(m.log_marginal_likelihood(X, y)))
    best = BayesianLinearRegression.fit_evidence(X, y)
    f["alpha_grid_best"] = float(alphas[int(np.argmax(evidence))])
    f["evidence_alpha"] = float(best.prior_precision)
    f["evidence_noise_variance"] = float(best.noise_variance)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    axes[0].semilogx(alphas, np.array(path))
    axes[0].set_xlabel("prior precision α (λ = σ²α)")
    axes[0].set_ylabel("MAP coefficients w_j")
    axes[0].set_title("Regularisation path: the prior shrinks w to 0")
    axes[1].semilogx(alphas, evidence, "k")
    axes[1].axvline(f["alpha_grid_best"], color="C3", ls="--", label="best α on the grid")
    axes[1].set_xlabel("prior precision α")
    axes[1].set_ylabel("log p(y | X, α)")
    axes[1].set_title("The evidence chooses α")
    axes[1].legend()
    fig.tight_layout()
    s.figures.append(Figure("MAP coefficients and the evidence against α", figure_png(fig)))
    s.text.append(
        f"The evidence log p(y | X, α) (σ² known) peaks on the grid at α = "
        f"{f['alpha_grid_best']:.3g}; maximising it over α and σ² together (MacKay's fixed "
        f"point) gives α = {f['evidence_alpha']:.3f}, σ² = {f['evidence_noise_variance']:.4f} "
        f"(true σ² = {noise_std**2:g})."
    )
    tick()
    # Predictive bands on a 1-D problem: features (1, t), few data in t ∈ [-1, 1].
    F, yt = line_data(settings.seed)
    t = F[:, 1]
    s2 = RIDGE["line_noise_std"] ** 2
    blr = BayesianLinearRegression(prior_precision=1.0, noise_variance=s2).update(F, yt)
    grid = torch.linspace(-4, 4, 200, dtype=torch.float64)
    G = torch.stack([torch.ones_like(grid), grid], 1)
    mean, std = blr.predict(G, return_std=True)
    plug_mean, plug_std = G @ blr.map(), math.sqrt(s2)
    far = torch.tensor([[1.0, 4.0]], dtype=torch.float64)
    f["predictive_std_at_4"] = float(blr.predict(far, return_std=True)[1][0])
    f["plugin_std"] = plug_std
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.fill_between(
        grid, mean - 2 * std, mean + 2 * std, alpha=0.3, label="posterior predictive ±2 sd"
    )
    ax.fill_between(
        grid, plug_mean - 2 * plug_std, plug_mean + 2 * plug_std, alpha=0.3,
        label="plug-in p(y | x, θ_MP) ±2 sd",
    )  # fmt: skip
    ax.plot(grid, mean, "C0")
    ax.plot(t, yt, "ko", label="data")
    ax.set_xlabel("x")
    ax.legend(fontsize=8, loc="upper left")
    s.figures.append(
        Figure("Plug-in predictive against the full posterior predictive", figure_png(fig))
    )
    s.text.append(
        f"Far from the data (x = 4) the posterior predictive has sd {f['predictive_std_at_4']:.3f}"
        f"; the plug-in keeps sd σ = {plug_std:.3f} everywhere: the point estimate forgets "
        "the uncertainty of w."
    )
    s.check("the full predictive is wider than the plug-in far from the data",
            f["predictive_std_at_4"] > plug_std)  # fmt: skip
    tick()
    return s
