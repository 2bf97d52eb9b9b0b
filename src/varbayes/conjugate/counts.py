"""Conjugate models for counts.

Beta-Bernoulli/Binomial, Gamma-Poisson and Dirichlet-Categorical/Multinomial.

Each is the same recipe: the prior's pseudo-counts plus the observed counts.

    Beta(α, β)  + k successes in m trials      -> Beta(α + k, β + m - k)
    Gamma(α, β) + counts x_1..x_n (Poisson)    -> Gamma(α + Σx, β + n)
    Dir(α)      + category counts c_k           -> Dir(α + c)
"""

from __future__ import annotations

import torch
from torch.distributions import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Dirichlet,
    Gamma,
    NegativeBinomial,
    Poisson,
)

from varbayes._validation import as_tensor, check_finite, check_int
from varbayes.conjugate._base import ConjugateModel, scalar_param
from varbayes.distributions import BetaBinomial as BetaBinomialDistribution
from varbayes.distributions import DirichletMultinomial as DirichletMultinomialDistribution

__all__ = [
    "BetaBernoulli",
    "BetaBinomial",
    "GammaPoisson",
    "DirichletCategorical",
    "DirichletMultinomial",
]


def _check_integers(x: torch.Tensor, name: str, what: str) -> None:
    if not bool((x == torch.round(x)).all()):
        bad = x[x != torch.round(x)][0].item()
        raise ValueError(f"{name} must hold {what}; got the non-integer value {bad!r}")
    if not bool((x >= 0).all()):
        raise ValueError(f"{name} must hold {what}; got the negative value {x[x < 0][0].item()!r}")


def _n(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(float(x.shape[0]), dtype=torch.float64)


def _beta_mode(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if bool(a > 1) and bool(b > 1):
        return (a - 1) / (a + b - 2)
    if bool(a <= 1) and bool(b > 1):
        return torch.zeros_like(a)
    if bool(a > 1) and bool(b <= 1):
        return torch.ones_like(a)
    raise ValueError(
        f"the posterior Beta({float(a):.4g}, {float(b):.4g}) has no unique mode "
        "(both concentrations <= 1); use the posterior mean instead"
    )


_MAX_EXACT = 2**53  # the largest integer up to which every integer is a float64


class BetaBinomial(ConjugateModel):
    """k_i ~ Binomial(m, θ) for each observation; prior θ ~ Beta(α, β).

    Args:
        prior_alpha: α > 0 (pseudo-successes).
        prior_beta: β > 0 (pseudo-failures).
        total_count: m, the number of trials of every observation (integer >= 1).

    Data: success counts k_i, integers in [0, m]. Posterior Beta(α + Σk, β + Σ(m - k));
    predictive of a new observation BetaBinomial(α_n, β_n, m); MAP (α_n - 1)/(α_n + β_n - 2);
    MLE Σk / (n m).
    """

    def __init__(self, prior_alpha=1.0, prior_beta=1.0, total_count=1):
        super().__init__(
            {
                "concentration1": scalar_param(prior_alpha, "prior_alpha", positive=True),
                "concentration0": scalar_param(prior_beta, "prior_beta", positive=True),
            }
        )
        self.total_count = check_int(total_count, "total_count", minimum=1)
        if self.total_count > _MAX_EXACT:
            raise ValueError(
                f"total_count must be <= 2**53 = {_MAX_EXACT} (counts are float64, exact only "
                f"up to 2**53); got {self.total_count}"
            )

    def _validate(self, x, name):
        _check_integers(x, name, "success counts (integers >= 0)")
        if bool((x > self.total_count).any()):
            raise ValueError(
                f"{name} must hold success counts k <= total_count = {self.total_count}; "
                f"got k = {x[x > self.total_count][0].item():g}"
            )

    def _sufficient_stats(self, x):
        return {"n": _n(x), "successes": x.sum(), "failures": (self.total_count - x).sum()}

    def _posterior_params(self):
        return {
            "concentration1": self._prior["concentration1"] + self._stats["successes"],
            "concentration0": self._prior["concentration0"] + self._stats["failures"],
        }

    def _distribution(self, concentration1, concentration0):
        return Beta(concentration1, concentration0)

    def _log_likelihood(self, x, theta):
        return Binomial(self.total_count, probs=theta).log_prob(x).sum()

    def posterior_predictive(self):
        """p(k_new | data) = BetaBinomial(α_n, β_n, m)."""
        q = self.posterior_params
        return BetaBinomialDistribution(
            q["concentration1"], q["concentration0"], torch.tensor(float(self.total_count))
        )

    def map(self):
        """Mode of Beta(α_n, β_n)."""
        q = self.posterior_params
        return _beta_mode(q["concentration1"], q["concentration0"])

    def mle(self):
        """Σk / Σm: the observed success rate."""
        s = self._require_data("mle()")
        return s["successes"] / (s["successes"] + s["failures"])


class BetaBernoulli(BetaBinomial):
    """x_i ~ Bernoulli(θ), x_i in {0, 1}; prior θ ~ Beta(α, β) (BetaBinomial with m = 1).

    The posterior predictive is Bernoulli(α_n / (α_n + β_n)).
    """

    def __init__(self, prior_alpha=1.0, prior_beta=1.0):
        super().__init__(prior_alpha, prior_beta, total_count=1)

    def _validate(self, x, name):
        if not bool(((x == 0) | (x == 1)).all()):
            bad = x[(x != 0) & (x != 1)][0].item()
            raise ValueError(f"{name} must hold Bernoulli outcomes in {{0, 1}}; got {bad!r}")

    def posterior_predictive(self):
        """p(x_new = 1 | data) = α_n / (α_n + β_n)."""
        return Bernoulli(probs=self.posterior.mean)


class GammaPoisson(ConjugateModel):
    """x_i ~ Poisson(θ); prior θ ~ Gamma(α, β) with rate β.

    Posterior Gamma(α + Σx, β + n); predictive NegativeBinomial(α_n, p = 1/(β_n + 1))
    (mean α_n/β_n); MAP (α_n - 1)/β_n (0 when α_n < 1); MLE x̄.
    """

    def __init__(self, prior_shape=1.0, prior_rate=1.0):
        super().__init__(
            {
                "concentration": scalar_param(prior_shape, "prior_shape", positive=True),
                "rate": scalar_param(prior_rate, "prior_rate", positive=True),
            }
        )

    def _validate(self, x, name):
        _check_integers(x, name, "Poisson counts (integers >= 0)")

    def _sufficient_stats(self, x):
        return {"n": _n(x), "sum": x.sum()}

    def _posterior_params(self):
        return {
            "concentration": self._prior["concentration"] + self._stats["sum"],
            "rate": self._prior["rate"] + self._stats["n"],
        }

    def _distribution(self, concentration, rate):
        return Gamma(concentration, rate)

    def _log_likelihood(self, x, theta):
        return Poisson(theta).log_prob(x).sum()

    def posterior_predictive(self):
        """p(x_new | data) = NegativeBinomial(total_count=α_n, probs=1/(β_n + 1))."""
        q = self.posterior_params
        return NegativeBinomial(q["concentration"], probs=1 / (q["rate"] + 1))

    def map(self):
        """Mode of Gamma(α_n, β_n): (α_n - 1)/β_n, or 0 when α_n < 1."""
        q = self.posterior_params
        return torch.clamp(q["concentration"] - 1, min=0) / q["rate"]

    def mle(self):
        """x̄."""
        s = self._require_data("mle()")
        return s["sum"] / s["n"]


class _DirichletBase(ConjugateModel):
    def __init__(self, prior_concentration):
        alpha = as_tensor(prior_concentration, "prior_concentration")
        if alpha.dim() != 1 or alpha.shape[0] < 2:
            raise ValueError(
                "prior_concentration must be a 1-D vector of K >= 2 values; "
                f"got shape {tuple(alpha.shape)}"
            )
        check_finite(alpha, "prior_concentration")
        if not bool((alpha > 0).all()):
            raise ValueError(
                f"prior_concentration must be > 0; got {alpha[alpha <= 0][0].item()!r}"
            )
        super().__init__({"concentration": alpha})

    @property
    def n_categories(self) -> int:
        """K."""
        return int(self._prior["concentration"].shape[0])

    def _posterior_params(self):
        return {"concentration": self._prior["concentration"] + self._stats["counts"]}

    def _distribution(self, concentration):
        return Dirichlet(concentration)

    def map(self):
        """Mode of Dir(α_n): (α_k - 1)/(Σα - K), defined when every α_k >= 1 and Σα > K."""
        a = self.posterior_params["concentration"]
        if not bool((a >= 1).all()) or not bool(a.sum() > a.shape[0]):
            raise ValueError(
                "the posterior Dirichlet has no interior mode (some concentration < 1); "
                "use the posterior mean instead"
            )
        return (a - 1) / (a.sum() - a.shape[0])

    def mle(self):
        """Observed category frequencies c_k / Σc."""
        s = self._require_data("mle()")
        return s["counts"] / s["counts"].sum()


class DirichletCategorical(_DirichletBase):
    """x_i ~ Categorical(π), x_i in {0..K-1}; prior π ~ Dir(α).

    Posterior Dir(α + c) with c_k = #{i : x_i = k}; predictive Categorical(α_n / Σα_n).
    """

    def _validate(self, x, name):
        _check_integers(x, name, "category labels (integers >= 0)")
        if bool((x >= self.n_categories).any()):
            raise ValueError(
                f"{name} must hold category labels in [0, {self.n_categories - 1}]; "
                f"got {x.max().item():g}"
            )

    def _sufficient_stats(self, x):
        counts = torch.bincount(x.long(), minlength=self.n_categories).to(torch.float64)
        return {"n": _n(x), "counts": counts}

    def _log_likelihood(self, x, theta):
        return torch.log(theta)[x.long()].sum()

    def posterior_predictive(self):
        """p(x_new = k | data) = α_{n,k} / Σ_j α_{n,j}."""
        return Categorical(probs=self.posterior.mean)


class DirichletMultinomial(_DirichletBase):
    """Rows x_i of counts over K categories, x_i ~ Multinomial(Σ_k x_ik, π); prior π ~ Dir(α).

    Data has shape (N, K); rows may have different totals. Posterior Dir(α + Σ_i x_i).
    ``posterior_predictive(total_count)`` is DirichletMultinomial(α_n, total_count).
    """

    event_dim = 1

    def _validate(self, x, name):
        if x.shape[1] != self.n_categories:
            raise ValueError(
                f"{name} must have K = {self.n_categories} columns (one per category); "
                f"got shape {tuple(x.shape)}"
            )
        _check_integers(x, name, "category counts (integers >= 0)")

    def _sufficient_stats(self, x):
        return {"n": _n(x), "counts": x.sum(0)}

    def _log_likelihood(self, x, theta):
        n = x.sum(-1)
        return (torch.lgamma(n + 1) - torch.lgamma(x + 1).sum(-1) + (x * theta.log()).sum(-1)).sum()

    def posterior_predictive(self, total_count: int = 1):
        """p(x_new | data) for a new row of ``total_count`` draws."""
        total_count = check_int(total_count, "total_count", minimum=0)
        return DirichletMultinomialDistribution(
            self.posterior_params["concentration"], float(total_count)
        )
