"""The post's four modes of inference, side by side, on Bayesian linear regression.

Model (known noise σ): y | X, θ ~ N(Xθ, σ² I), θ ~ N(0, s² I). Everything is known
exactly, so each approximation can be scored against the truth:

    posterior   p(θ | y) = N(m, Λ⁻¹),  Λ = XᵀX/σ² + I/s²,  m = Λ⁻¹ Xᵀy/σ²
    evidence    log p(y) = log N(y | 0, σ² I + s² XXᵀ)
    bound       ELBO(q) = log p(y) - KL(q || p(θ | y))

| mode              | q                                   | how                               |
|-------------------|-------------------------------------|-----------------------------------|
| exact             | N(m, Λ⁻¹)                           | closed form (KL = 0)              |
| MAP               | point mass at argmax p(θ | y)       | L-BFGS on log p(y, θ)             |
| mean-field VI     | Π_d N(θ_d | m_d, v_d)               | CAVI (closed-form factor updates) |
| full-rank SVI     | N(μ, LLᵀ)                           | stochastic VI, pathwise gradients |

Mean-field VI finds the exact mean with v_d = 1/Λ_dd ≤ (Λ⁻¹)_dd: it underestimates
the marginal variances. A point mass has no density, so the MAP row reports
log p(y, θ_MAP) in place of an ELBO (its ELBO is -∞).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from varbayes.vi.cavi import cavi_gaussian
from varbayes.vi.elbo import elbo as elbo_estimate
from varbayes.vi.guides import FullRankNormal
from varbayes.vi.models import LinearRegression
from varbayes.vi.svi import fit

__all__ = [
    "ModeResult",
    "ModeComparison",
    "compare_modes",
    "exact_linear_posterior",
    "plot_marginals",
    "synthetic_linear_data",
]


@dataclass
class ModeResult:
    """One row: ``mean`` and ``std`` (D,) of q's marginals, ``elbo`` (log p(y, θ_MAP) for
    MAP), ``kl`` = KL(q || p(θ | y)) (∞ for the point mass) and ``seconds`` taken."""

    name: str
    mean: torch.Tensor
    std: torch.Tensor
    elbo: float
    kl: float
    seconds: float = 0.0
    q: object = None


@dataclass
class ModeComparison:
    """The four modes on one data set; ``log_evidence`` = log p(y) exactly."""

    rows: list[ModeResult]
    log_evidence: float
    posterior: MultivariateNormal
    extra: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> ModeResult:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_string(self, max_dims: int = 3) -> str:
        """A plain-text table: mode, ELBO, KL(q || p), and the first marginals as mean ± std."""
        d = min(max_dims, self.rows[0].mean.shape[0])
        head = f"{'mode':<15}{'ELBO':>12}{'KL(q||p)':>11}" + "".join(
            f"{f'theta[{i}] mean±std':>22}" for i in range(d)
        )
        lines = [f"log evidence log p(y) = {self.log_evidence:.4f}", head, "-" * len(head)]
        for r in self.rows:
            cells = "".join(f"{f'{r.mean[i]:.4f} ± {r.std[i]:.4f}':>22}" for i in range(d))
            lines.append(f"{r.name:<15}{r.elbo:>12.4f}{r.kl:>11.2e}{cells}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_string()


def synthetic_linear_data(
    n: int = 50,
    d: int = 3,
    *,
    noise_scale: float = 1.0,
    correlation: float = 0.8,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Data for the four-modes demo: X (n, d) with neighbouring columns correlated
    (corr(x_j, x_{j+1}) = ``correlation``, which makes mean-field VI visibly too narrow),
    θ_true ~ N(0, I) and y = Xθ_true + σ ε. Returns ``(X, y, theta_true)`` in float64."""
    if not (isinstance(correlation, (int, float)) and -1 < correlation < 1):
        raise ValueError(f"correlation must be in (-1, 1); got {correlation!r}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    X = z.clone()
    for j in range(1, d):
        X[:, j] = correlation * X[:, j - 1] + math.sqrt(1 - correlation**2) * z[:, j]
    theta = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ theta + noise_scale * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y, theta


def exact_linear_posterior(X, y, noise_scale: float, prior_scale: float):
    """Closed-form posterior N(m, Λ⁻¹) and log evidence of linear regression with known noise
    (from :class:`varbayes.conjugate.BayesianLinearRegression`).

    X (N, D), y (N,); returns ``(MultivariateNormal, log p(y))``.
    """
    from varbayes.conjugate import BayesianLinearRegression

    prior = BayesianLinearRegression(prior_scale**-2, noise_scale**2)
    post = prior.update(X, y).posterior
    log_z = float(prior.log_marginal_likelihood(X, y))
    return MultivariateNormal(post.loc.to(X.dtype), scale_tril=post.scale_tril.to(X.dtype)), log_z


def compare_modes(
    X,
    y,
    *,
    noise_scale: float = 1.0,
    prior_scale: float = 1.0,
    num_steps: int = 2500,
    num_particles: int = 4,
    lr: float = 0.05,
    seed: int = 0,
    num_eval_particles: int = 4096,
) -> ModeComparison:
    """Exact posterior, MAP, mean-field VI and full-rank SVI for Bayesian linear regression.

    Parameters
    ----------
    X : (N, D) design; y : (N,) targets (NumPy or torch; computed in float64).
    noise_scale : σ; prior_scale : s (θ ~ N(0, s² I)).
    num_steps, num_particles, lr, seed : settings of the full-rank SVI fit (Adam, the
        pathwise estimator with "sticking the landing", which has zero variance at
        the exact posterior).
    num_eval_particles : particles for the Monte Carlo ELBO of the SVI row.

    Returns
    -------
    ModeComparison whose rows are named "exact", "MAP", "mean-field VI", "full-rank SVI".
    """
    import time

    model = LinearRegression(
        X, y, noise_scale=noise_scale, prior_scale=prior_scale, dtype=torch.float64
    )
    X, y = model.data["X"], model.data["y"]
    d = X.shape[1]
    post, log_z = exact_linear_posterior(X, y, model.noise_scale, model.prior_scale)
    rows = []

    t = time.perf_counter()
    rows.append(
        ModeResult(
            "exact",
            post.mean,
            post.variance.sqrt(),
            log_z,
            0.0,
            time.perf_counter() - t,
            post,
        )
    )

    t = time.perf_counter()
    theta = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = -model(theta[None])[0]
        loss.backward()
        return loss

    opt.step(closure)
    theta = theta.detach()
    rows.append(
        ModeResult(
            "MAP",
            theta,
            torch.zeros(d, dtype=torch.float64),
            float(model(theta[None])[0]),
            math.inf,
            time.perf_counter() - t,
            None,
        )
    )

    t = time.perf_counter()
    mf = cavi_gaussian(post.precision_matrix, shift=X.T @ y / model.noise_scale**2)
    q_mf = mf.factors["theta"]
    kl_mf = float(kl_divergence(_as_mvn(q_mf), post))
    rows.append(
        ModeResult(
            "mean-field VI",
            q_mf.mean,
            q_mf.stddev,
            log_z - kl_mf,
            kl_mf,
            time.perf_counter() - t,
            q_mf,
        )
    )

    t = time.perf_counter()
    guide = FullRankNormal(d, init_scale=1.0, dtype=torch.float64)
    res = fit(
        model,
        guide,
        num_steps=num_steps,
        num_particles=num_particles,
        lr=lr,
        stl=True,
        seed=seed,
        rtol=0.0,
    )
    q = MultivariateNormal(guide.loc.detach(), scale_tril=guide.scale_tril.detach())
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        e = float(elbo_estimate(model, q, num_eval_particles, generator=gen))
    rows.append(
        ModeResult(
            "full-rank SVI",
            q.mean,
            q.variance.sqrt(),
            e,
            float(kl_divergence(q, post)),
            time.perf_counter() - t,
            q,
        )
    )
    return ModeComparison(rows, log_z, post, {"svi_history": res.history})


def _as_mvn(q: Independent) -> MultivariateNormal:
    base: Normal = q.base_dist
    return MultivariateNormal(base.loc, scale_tril=torch.diag_embed(base.scale))


def plot_marginals(comparison: ModeComparison, path, *, max_dims: int = 4) -> None:
    """Write a PNG: for the first ``max_dims`` coordinates, the marginal densities of the
    exact posterior, mean-field VI and full-rank SVI, and the MAP as a vertical line."""
    import matplotlib.pyplot as plt

    from varbayes.plot import save_figure  # also selects the Agg backend

    d = min(max_dims, comparison.rows[0].mean.shape[0])
    fig, axes = plt.subplots(1, d, figsize=(3.2 * d, 3.0), squeeze=False)
    styles = {"exact": "k-", "mean-field VI": "C0--", "full-rank SVI": "C1:"}
    for i, ax in enumerate(axes[0]):
        ex = comparison["exact"]
        lo = float(ex.mean[i] - 4 * ex.std[i])
        hi = float(ex.mean[i] + 4 * ex.std[i])
        grid = torch.linspace(lo, hi, 400, dtype=torch.float64)
        for r in comparison.rows:
            if r.name == "MAP":
                ax.axvline(float(r.mean[i]), color="C3", lw=1, label="MAP")
                continue
            dens = Normal(r.mean[i], r.std[i]).log_prob(grid).exp()
            ax.plot(grid.numpy(), dens.numpy(), styles.get(r.name, "-"), label=r.name)
        ax.set_xlabel(f"theta[{i}]")
        if i == 0:
            ax.set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Posterior marginals: exact vs MAP vs mean-field VI vs full-rank SVI")
    fig.tight_layout()
    save_figure(fig, path)
