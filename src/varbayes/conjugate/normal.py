"""Normal observations: unknown mean with known variance, and unknown mean and precision.

The post's heights example is :class:`NormalKnownVariance`: heights x_i ~ N(μ, σ²)
with a prior belief μ ~ N(μ₀, σ₀²) (e.g. N(160, 10²)); after seeing data the
belief moves towards the data, p(μ | x) = N(μ_n, σ_n²) with

    1/σ_n² = 1/σ₀² + n/σ²,    μ_n = σ_n² (μ₀/σ₀² + Σ_i x_i/σ²).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal, StudentT

from varbayes.conjugate._base import ConjugateModel, convex, scalar_param, stable_mean
from varbayes.distributions import NormalGamma

__all__ = ["NormalKnownVariance", "NormalUnknownVariance"]


class NormalKnownVariance(ConjugateModel):
    """x_i ~ N(μ, σ²) with σ known; prior μ ~ N(μ₀, σ₀²). Posterior N(μ_n, σ_n²).

    Args:
        prior_mean: μ₀.
        prior_std: σ₀ > 0.
        noise_std: σ > 0, the known standard deviation of one observation.

    The posterior predictive of a new x is N(μ_n, σ_n² + σ²); the MAP is μ_n and the
    MLE is the sample mean x̄.
    """

    def __init__(self, prior_mean=0.0, prior_std=1.0, noise_std=1.0):
        super().__init__(
            {
                "loc": scalar_param(prior_mean, "prior_mean"),
                "scale": scalar_param(prior_std, "prior_std", positive=True),
            }
        )
        self.noise_std = scalar_param(noise_std, "noise_std", positive=True)

    def _sufficient_stats(self, x):
        # (n, x̄) rather than (n, Σx): Σx overflows for data near the float64 limit.
        return {"n": torch.tensor(float(x.shape[0]), dtype=x.dtype), "mean": stable_mean(x)}

    def _merge_stats(self, a, b):
        n = a["n"] + b["n"]
        return {"n": n, "mean": convex(a["n"] / n, a["mean"], b["mean"])}

    def _posterior_params(self):
        # μ_n = w μ₀ + (1 - w) x̄ with w = (1/σ₀²) / (1/σ₀² + n/σ²): a weighted average
        # of two finite numbers, so it cannot overflow where μ₀/σ₀² + Σx/σ² would.
        s = self._stats
        prec0 = self._prior["scale"] ** -2
        prec = prec0 + s["n"] / self.noise_std**2
        return {"loc": convex(prec0 / prec, self._prior["loc"], s["mean"]), "scale": prec.rsqrt()}

    def log_marginal_likelihood(self, data) -> torch.Tensor:
        """log p(x) in closed form, for the current belief N(μ_p, σ_p²) on μ:

            log p(x) = -n/2 log 2πσ² - M/(2σ²) + ½ log(2πσ²/n) + log N(x̄ | μ_p, σ_p² + σ²/n),

        with M = Σ_i (x_i - x̄)². Computed from x̄ and scaled deviations, so data near
        the float64 limit give the right answer when it is a float64 number; when it is
        not (log p(x) below -1.8e308), a ``ValueError`` says so. Returns a 0-d tensor.
        """
        x = self._check_data(data)
        n = torch.tensor(float(x.shape[0]), dtype=x.dtype)
        xbar = stable_mean(x)
        sigma = self.noise_std
        half_m = 0.5 * (((x - xbar) / sigma) ** 2).sum()  # M / (2σ²)
        p = self.posterior
        sd = torch.sqrt(p.scale**2 + sigma**2 / n)
        z = xbar / sd - p.loc / sd  # (x̄ - μ_p)/sd without forming x̄ - μ_p
        result = (
            -0.5 * n * torch.log(2 * math.pi * sigma**2)
            - half_m
            + 0.5 * torch.log(2 * math.pi * sigma**2 / n)
            - 0.5 * z**2
            - torch.log(sd)
            - 0.5 * math.log(2 * math.pi)
        )
        if not bool(torch.isfinite(result)):
            log10_z = float(torch.log10(xbar.abs() / sd + p.loc.abs() / sd))
            raise ValueError(
                f"data: log p(data) is about -10^{2 * log10_z - math.log10(2):.1f}, below the "
                "float64 range (the data mean is 10^"
                f"{log10_z:.1f} predictive standard deviations from the prior mean); rescale "
                "the data (other units) or widen the prior"
            )
        return result

    def _distribution(self, loc, scale):
        return Normal(loc, scale)

    def _log_likelihood(self, x, theta):
        return Normal(theta, self.noise_std).log_prob(x).sum()

    def posterior_predictive(self) -> Normal:
        """p(x_new | x) = N(μ_n, σ_n² + σ²)."""
        p = self.posterior
        return Normal(p.loc, torch.sqrt(p.scale**2 + self.noise_std**2))

    def map(self) -> torch.Tensor:
        """θ_MP = μ_n (the posterior is symmetric, so mode = mean)."""
        return self.posterior.mean

    def mle(self) -> torch.Tensor:
        """θ_ML = x̄."""
        s = self._require_data("mle()")
        return s["mean"]

    def credible_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Central interval of the posterior of μ holding probability ``level``."""
        return _normal_interval(self.posterior, level)

    def mle_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Frequentist confidence interval x̄ ± z σ/√n for μ."""
        s = self._require_data("mle_interval()")
        return _normal_interval(Normal(s["mean"], self.noise_std / s["n"].sqrt()), level)


def _normal_interval(dist: Normal, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    tail = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=dist.loc.dtype)
    lo, hi = dist.icdf(tail).tolist()
    return lo, hi


class NormalUnknownVariance(ConjugateModel):
    """x_i ~ N(μ, 1/τ) with μ and the precision τ unknown; Normal-Gamma prior.

    Prior: τ ~ Gamma(α₀, β₀) (rate β₀), μ | τ ~ N(μ₀, 1/(κ₀ τ)). With n observations,
    sample mean x̄ and M = Σ_i (x_i - x̄)², the posterior is Normal-Gamma with

        κ_n = κ₀ + n,  μ_n = (κ₀ μ₀ + n x̄)/κ_n,  α_n = α₀ + n/2,
        β_n = β₀ + M/2 + κ₀ n (x̄ - μ₀)² / (2 κ_n).

    θ = (μ, τ) is a length-2 tensor everywhere (posterior samples, ``map()``, ``mle()``).
    The posterior predictive is StudentT(2α_n, μ_n, sqrt(β_n (κ_n + 1)/(α_n κ_n))).
    """

    def __init__(self, prior_mean=0.0, prior_kappa=1.0, prior_shape=1.0, prior_rate=1.0):
        super().__init__(
            {
                "loc": scalar_param(prior_mean, "prior_mean"),
                "kappa": scalar_param(prior_kappa, "prior_kappa", positive=True),
                "concentration": scalar_param(prior_shape, "prior_shape", positive=True),
                "rate": scalar_param(prior_rate, "prior_rate", positive=True),
            }
        )

    def _sufficient_stats(self, x):
        mean = stable_mean(x)
        return {
            "n": torch.tensor(float(x.shape[0]), dtype=x.dtype),
            "mean": mean,
            "m2": ((x - mean) ** 2).sum(),
        }

    def _merge_stats(self, a, b):
        # Chan et al.'s pairwise combination of (n, mean, M2): exact and stable.
        n = a["n"] + b["n"]
        delta = b["mean"] - a["mean"]
        return {
            "n": n,
            "mean": convex(a["n"] / n, a["mean"], b["mean"]),
            "m2": a["m2"] + b["m2"] + delta**2 * a["n"] * b["n"] / n,
        }

    def _posterior_params(self):
        p, s = self._prior, self._stats
        n, xbar = s["n"], s["mean"]
        kappa = p["kappa"] + n
        return {
            "loc": convex(p["kappa"] / kappa, p["loc"], xbar),  # (κ₀μ₀ + n x̄)/κ_n
            "kappa": kappa,
            "concentration": p["concentration"] + n / 2,
            "rate": p["rate"] + s["m2"] / 2 + p["kappa"] * n * (xbar - p["loc"]) ** 2 / (2 * kappa),
        }

    def _distribution(self, loc, kappa, concentration, rate):
        return NormalGamma(loc, kappa, concentration, rate)

    def _log_likelihood(self, x, theta):
        return Normal(theta[0], theta[1].rsqrt()).log_prob(x).sum()

    def posterior_predictive(self) -> StudentT:
        """p(x_new | x) = StudentT(2α_n, μ_n, sqrt(β_n (κ_n + 1) / (α_n κ_n)))."""
        q = self.posterior_params
        a, b, k = q["concentration"], q["rate"], q["kappa"]
        return StudentT(2 * a, q["loc"], torch.sqrt(b * (k + 1) / (a * k)))

    def map(self) -> torch.Tensor:
        """Joint mode (μ_n, (α_n - 1/2)/β_n); needs α_n > 1/2."""
        q = self.posterior_params
        if not bool(q["concentration"] > 0.5):
            raise ValueError(
                "the joint posterior mode of the precision is at 0 when the shape "
                f"alpha_n = {float(q['concentration']):.4g} <= 1/2; observe more data or "
                "raise prior_shape"
            )
        return self.posterior.mode

    def mle(self) -> torch.Tensor:
        """(x̄, n / M): the sample mean and the inverse of the biased sample variance."""
        s = self._require_data("mle()")
        if not bool(s["m2"] > 0):
            raise ValueError("mle() of the precision is infinite: all observations are equal")
        return torch.stack([s["mean"], s["n"] / s["m2"]])
