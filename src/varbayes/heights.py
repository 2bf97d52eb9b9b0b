"""The post's first example: Bayesian updating of the mean height μ.

A Bayesian who believes heights are small puts the prior μ ~ N(160, 10²) on the mean
height; the data (heights around 183 cm, noise σ = 7 cm known) move the belief to a
posterior near 183, while the frequentist MLE is the sample mean itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.distributions import Normal

from varbayes._validation import as_tensor, check_int
from varbayes.conjugate import NormalKnownVariance

__all__ = ["HeightsResult", "format_value", "heights_data", "heights_example"]


def heights_data(n: int = 20, mean: float = 183.0, std: float = 7.0, seed: int = 0) -> torch.Tensor:
    """n synthetic heights x_i ~ N(mean, std²) in cm (float64, shape (n,)), from ``seed``."""
    n = check_int(n, "n", minimum=1)
    if not std > 0:
        raise ValueError(f"std must be > 0; got {std!r}")
    gen = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(n, generator=gen, dtype=torch.float64)


@dataclass
class HeightsResult:
    """Prior, MLE and posterior summaries of μ: (mean, (lower, upper)) at ``level``."""

    data: torch.Tensor
    model: NormalKnownVariance
    level: float
    prior: tuple[float, tuple[float, float]]
    mle: tuple[float, tuple[float, float]]
    posterior: tuple[float, tuple[float, float]]
    log_evidence: float

    def table(self) -> str:
        """A plain-text table of the three estimates."""
        pct = f"{100 * self.level:g}%"
        rows = [f"{'estimate':<10} {'mean':>9}   {pct + ' interval':>22}"]
        for name, (m, (lo, hi)) in (
            ("prior", self.prior),
            ("MLE", self.mle),
            ("posterior", self.posterior),
        ):
            lo, hi = format_value(lo), format_value(hi)
            rows.append(f"{name:<10} {format_value(m):>9}   [{lo:>9}, {hi:>9}]")
        return "\n".join(rows)


def format_value(v: float, decimals: int = 2) -> str:
    """``v`` with ``decimals`` decimals when |v| < 1e7, else with 6 significant digits."""
    return f"{v:.{decimals}f}" if abs(v) < 1e7 else f"{v:.6g}"


def heights_example(
    data=None,
    *,
    prior_mean: float = 160.0,
    prior_std: float = 10.0,
    noise_std: float = 7.0,
    level: float = 0.95,
    plot: str | os.PathLike | None = None,
) -> HeightsResult:
    """Update N(prior_mean, prior_std²) on μ with heights ``data`` (default: 20 synthetic ones).

    Returns the prior, the MLE (x̄ with its confidence interval x̄ ± z σ/√n) and the
    posterior N(μ_n, σ_n²) with its credible interval; writes the figure of prior,
    likelihood (normalised in μ) and posterior to ``plot`` when given.
    """
    x = heights_data() if data is None else as_tensor(data, "data")
    prior = NormalKnownVariance(prior_mean, prior_std, noise_std)
    post = prior.update(x)
    result = HeightsResult(
        data=x,
        model=post,
        level=level,
        prior=(float(prior.posterior.mean), prior.credible_interval(level)),
        mle=(float(post.mle()), post.mle_interval(level)),
        posterior=(float(post.posterior.mean), post.credible_interval(level)),
        log_evidence=float(prior.log_marginal_likelihood(x)),
    )
    if plot is not None:
        from varbayes.plot import plot_densities

        lik = Normal(post.mle(), noise_std / len(x) ** 0.5)  # p(x | μ) normalised over μ
        lo = min(result.prior[1][0], result.mle[1][0]) - 5
        hi = max(result.prior[1][1], result.mle[1][1], float(x.max())) + 5
        plot_densities(
            {
                f"prior N({prior_mean:g}, {prior_std:g}²)": prior.posterior,
                "likelihood p(x | μ) (normalised)": lik,
                "posterior p(μ | x)": post.posterior,
            },
            plot,
            grid=torch.linspace(lo, hi, 800, dtype=torch.float64),
            xlabel="mean height μ (cm)",
            title=f"Bayesian updating of the mean height (n = {len(x)})",
            markers={"MLE": result.mle[0], "posterior mean": result.posterior[0]},
            data=x,
        )
    return result
