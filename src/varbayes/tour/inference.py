"""The tour's sections 4 and 5: variational inference, and latent variable models by EM.

Section 4 shows log p(x) = ELBO(q) + KL(q || p(θ|x)) with all three numbers computed
separately on Bayesian linear regression (exact evidence), the mean-field ellipse and the
post's four modes. Section 5 fits the heights mixture (men, women, children) by EM and a
variational mixture that switches off the components it does not need.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.distributions import MultivariateNormal, kl_divergence  # noqa: E402

from varbayes.mixture import GaussianMixture, VariationalGaussianMixture  # noqa: E402
from varbayes.mixture.plot import plot_density_1d, plot_elbo  # noqa: E402
from varbayes.tour.report import Figure, Section, Table, figure_png  # noqa: E402
from varbayes.vi import LinearRegression, compare_modes, elbo  # noqa: E402
from varbayes.vi.compare import synthetic_linear_data  # noqa: E402

__all__ = ["HEIGHT_GROUPS", "height_mixture_data", "latent_variables", "variational_inference"]

STEPS_VI, STEPS_LATENT = 3, 2

HEIGHT_GROUPS = [
    ("children", 600, 120.0, 10.0),
    ("women", 1000, 161.0, 6.0),
    ("men", 1000, 178.0, 7.0),
]
"""(group, count, mean cm, sd cm) of the synthetic population of section 5."""


def _mvn(q) -> MultivariateNormal:
    """Any Gaussian q (mean-field Independent(Normal) or full-rank) as a MultivariateNormal."""
    if isinstance(q, MultivariateNormal):
        return q
    return MultivariateNormal(q.mean, scale_tril=torch.diag_embed(q.stddev))


def _ellipse(ax, q: MultivariateNormal, style: str, label: str) -> None:
    t = torch.linspace(0, 2 * math.pi, 200, dtype=torch.float64)
    circle = torch.stack([t.cos(), t.sin()])
    for r in (1, 2):
        pts = q.mean[:, None] + r * q.scale_tril @ circle
        ax.plot(pts[0], pts[1], style, label=label if r == 1 else None)


def variational_inference(settings, tick) -> Section:
    """ELBO + KL = log p(y) on linear regression; mean-field vs full-rank; four modes."""
    steps = 2500 if settings.quick else 3000  # full-rank L = diag(s)(I + N) needs ~2500
    particles = 20_000 if settings.quick else 200_000
    X, y, _ = synthetic_linear_data(40, 2, correlation=0.95, seed=settings.seed)
    two = compare_modes(X, y, num_steps=steps, seed=settings.seed)
    model = LinearRegression(X, y, noise_scale=1.0, prior_scale=1.0, dtype=torch.float64)
    q = two["mean-field VI"].q
    gen = torch.Generator().manual_seed(settings.seed)
    batches = torch.stack(
        [elbo(model, q, particles // 10, generator=gen).detach() for _ in range(10)]
    )
    s = Section(
        "vi",
        "Variational inference",
        "The evidence splits into the ELBO and the KL to the posterior, log p(x) = ELBO(q) + "
        "KL(q(θ) || p(θ|x)); log p(x) does not depend on q, so maximising the ELBO minimises "
        "the KL, without knowing the posterior. A mean-field q gets the means right but is "
        "too narrow when the posterior is correlated.",
    )
    f = s.facts
    f["log_evidence"] = two.log_evidence
    f["elbo"] = float(batches.mean())
    f["elbo_se"] = float(batches.std() / math.sqrt(len(batches)))
    f["kl"] = float(kl_divergence(_mvn(q), two.posterior))
    f["identity_gap"] = f["elbo"] + f["kl"] - f["log_evidence"]
    s.text.append(
        "Bayesian linear regression y ~ N(Xθ, I), θ ~ N(0, I), n = 40, two features with "
        f"correlation 0.95 (seed {settings.seed}); q = the mean-field (CAVI) fit. Exact "
        f"log p(y) = {f['log_evidence']:.4f} (closed form); ELBO(q) = {f['elbo']:.4f} ± "
        f"{f['elbo_se']:.4f} (Monte Carlo, {particles} draws of θ ~ q); KL(q || p(θ|y)) = "
        f"{f['kl']:.4f} (closed form). ELBO + KL − log p(y) = {f['identity_gap']:+.4f}."
    )
    s.check(
        "ELBO + KL = log p(y) within 4 Monte Carlo standard errors",
        abs(f["identity_gap"]) <= 4 * f["elbo_se"],
    )
    tick()
    exact, mf, fr = (_mvn(two[name].q) for name in ("exact", "mean-field VI", "full-rank SVI"))
    f["std_exact"] = exact.stddev.tolist()
    f["std_mean_field"] = mf.stddev.tolist()
    f["std_full_rank"] = fr.stddev.tolist()
    f["kl_full_rank"] = two["full-rank SVI"].kl
    fig, ax = plt.subplots(figsize=(5.5, 5))
    _ellipse(ax, exact, "k-", "exact posterior")
    _ellipse(ax, mf, "C0--", "mean-field q (CAVI)")
    _ellipse(ax, fr, "C1:", "full-rank q (SVI)")
    m = two["MAP"].mean
    ax.plot(float(m[0]), float(m[1]), "C3x", ms=10, label="MAP")
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=8)
    ax.set_title("1 and 2 sd ellipses")
    s.figures.append(
        Figure("Mean-field against full-rank q on a correlated posterior", figure_png(fig))
    )
    s.text.append(
        f"Marginal sd of θ₁: exact {f['std_exact'][0]:.4f}, mean-field {f['std_mean_field'][0]:.4f}"
        f" (too narrow: 1/Λ₁₁ instead of (Λ⁻¹)₁₁), full-rank SVI {f['std_full_rank'][0]:.4f} "
        f"(KL to the posterior {f['kl_full_rank']:.1e})."
    )
    s.check(
        "mean-field sd < exact sd for both coordinates",
        all(a < b for a, b in zip(f["std_mean_field"], f["std_exact"], strict=True)),
    )
    tick()
    X3, y3, _ = synthetic_linear_data(seed=settings.seed)
    four = compare_modes(X3, y3, num_steps=steps, seed=settings.seed)
    f["four_log_evidence"] = four.log_evidence
    f["four_modes"] = {
        r.name: {"elbo": r.elbo, "kl": r.kl, "mean": r.mean.tolist(), "std": r.std.tolist()}
        for r in four.rows
    }
    rows = []
    for r in four.rows:
        kl = "∞" if math.isinf(r.kl) else f"{r.kl:.2e}"
        cells = [f"{r.mean[i]:.4f} ± {r.std[i]:.4f}" for i in range(3)]
        rows.append([r.name, f"{r.elbo:.4f}", kl, *cells])
    s.tables.append(
        Table(
            f"The post's four modes on linear regression (n = 50, D = 3), log p(y) = "
            f"{four.log_evidence:.4f}; for MAP the ELBO column is log p(y, θ_MP)",
            ["mode", "ELBO", "KL(q || p)", "θ₁ mean ± sd", "θ₂ mean ± sd", "θ₃ mean ± sd"],
            rows,
        )
    )
    slack = {"full-rank SVI": 0.01}  # a Monte Carlo estimate of the ELBO
    s.check(
        "every q's ELBO ≤ log p(y) (the Monte Carlo SVI estimate within 0.01), equal for "
        "the exact posterior",
        all(r.elbo <= four.log_evidence + slack.get(r.name, 1e-9) for r in four.rows
            if r.name != "MAP")
        and abs(four["exact"].elbo - four.log_evidence) < 1e-9,
    )  # fmt: skip
    tick()
    return s


def height_mixture_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Heights (N,) in cm of :data:`HEIGHT_GROUPS` and their hidden group labels (N,)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(m, sd, size=n) for _, n, m, sd in HEIGHT_GROUPS])
    z = np.concatenate([np.full(n, j) for j, (_, n, _, _) in enumerate(HEIGHT_GROUPS)])
    return x, z


def latent_variables(settings, tick) -> Section:
    """EM on the heights mixture (responsibilities, monotone ELBO); VB switches off."""
    x, _ = height_mixture_data(settings.seed)
    X = x.reshape(-1, 1)
    gm = GaussianMixture(3, tol=1e-8, max_iter=1000, random_state=settings.seed).fit(X)
    means, weights = np.asarray(gm.means_)[:, 0], np.asarray(gm.weights_)  # NumPy in, NumPy out
    order = np.argsort(means)
    s = Section(
        "latent",
        "Latent variable models",
        "With a latent variable z per datum (here: is this person a man, a woman or a "
        "child?), EM alternates an E-step, q(z) = p(z | x, θ) (which makes the KL zero), and "
        "an M-step that maximises the ELBO in θ: the ELBO rises monotonically to the "
        "log-likelihood. Mean-field VI with a sparse prior on the weights switches off the "
        "components it does not need.",
    )
    f = s.facts
    f["weights"] = weights[order].tolist()
    f["means"] = means[order].tolist()
    f["stds"] = np.sqrt(np.asarray(gm.covariances_)[order, 0, 0]).tolist()
    f["n_iter"] = int(gm.n_iter_)
    f["elbo_trace"] = [float(v) for v in gm.lower_bounds_]
    f["log_likelihood"] = float(gm.score(X))
    f["min_increase"] = float(np.diff(f["elbo_trace"]).min()) if len(f["elbo_trace"]) > 1 else 0
    s.tables.append(
        Table(
            f"EM fit of a 3-component mixture to n = {len(x)} heights (seed {settings.seed})",
            ["group", "true π", "true μ", "true σ", "fitted π", "fitted μ", "fitted σ"],
            [
                [
                    g,
                    f"{n / len(x):.3f}",
                    f"{m:.1f}",
                    f"{sd:.1f}",
                    f"{w:.3f}",
                    f"{mu:.2f}",
                    f"{sg:.2f}",
                ]  # fmt: skip
                for (g, n, m, sd), w, mu, sg in zip(
                    HEIGHT_GROUPS, f["weights"], f["means"], f["stds"], strict=True
                )
            ],
        )
    )
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    plot_density_1d(gm, x, ax=axes[0])
    axes[0].set_xlabel("height (cm)")
    axes[0].set_title("data and fitted mixture")
    grid = np.linspace(x.min() - 5, x.max() + 5, 400).reshape(-1, 1)
    resp = np.asarray(gm.predict_proba(grid))[:, order]
    for j, (name, *_rest) in enumerate(HEIGHT_GROUPS):
        axes[1].plot(grid[:, 0], resp[:, j], label=f"r(z = {name})")
    axes[1].set_xlabel("height (cm)")
    axes[1].set_title("E-step: responsibilities q(z | x)")
    axes[1].legend(fontsize=8)
    plot_elbo(gm, ax=axes[2])
    axes[2].axhline(f["log_likelihood"], color="C3", ls="--", label="final log-likelihood / n")
    axes[2].legend(fontsize=8)
    axes[2].set_title("ELBO per datum by iteration")
    fig.tight_layout()
    s.figures.append(Figure("EM on the heights of men, women and children", figure_png(fig)))
    s.text.append(
        f"EM ran {f['n_iter']} iterations; the ELBO per datum rose from "
        f"{f['elbo_trace'][0]:.4f} to {f['elbo_trace'][-1]:.4f} (smallest step "
        f"{f['min_increase']:.2e}), reaching the mean log-likelihood "
        f"{f['log_likelihood']:.4f} of the fitted mixture."
    )
    s.check("the EM ELBO never decreases", f["min_increase"] >= -1e-10)
    s.check(
        "the final ELBO equals the log-likelihood (the E-step makes the KL zero)",
        abs(f["elbo_trace"][-1] - f["log_likelihood"]) < 1e-6,
    )
    tick()
    vb = VariationalGaussianMixture(
        8,
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=1e-3,
        max_iter=1000,
        tol=1e-8,
        random_state=settings.seed,
    ).fit(X)
    w = np.asarray(vb.weights_)
    f["vb_weights"] = sorted(w.tolist(), reverse=True)
    f["vb_effective"] = int(vb.n_effective_components_)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(range(1, 9), f["vb_weights"])
    ax.set_yscale("log")
    ax.set_xlabel("component (sorted)")
    ax.set_ylabel("E_q[π_k]")
    s.figures.append(
        Figure(
            "Mean-field VI mixture with K = 8 and a Dirichlet(10⁻³) prior on π: weights",
            figure_png(fig),
        )
    )
    s.text.append(
        f"The variational mixture started with 8 components and kept "
        f"{f['vb_effective']} (holding at least one person in expectation); the other "
        "weights are "
        f"{', '.join(f'{v:.1e}' for v in f['vb_weights'][f['vb_effective'] :])}."
    )
    s.check("the variational mixture keeps 3 components", f["vb_effective"] == 3)
    tick()
    return s
