"""Exact Bayesian updating with conjugate priors: posteriors, predictives, evidence, MAP/MLE.

With a conjugate prior the posterior p(θ | x) ∝ p(x | θ) p(θ) stays in the prior's
family, so the ELBO's gap KL(q || p(θ | x)) can be closed exactly: q *is* the
posterior. Every model here has

* ``update(data)`` -> a new model holding the posterior (sequential == batch),
* ``prior`` / ``posterior`` as ``torch.distributions`` objects,
* ``posterior_predictive()``, ``log_marginal_likelihood(data)`` (the evidence),
* ``map()`` (θ_MP, "poor Bayes") and ``mle()``.
"""

from varbayes.conjugate._base import ConjugateModel
from varbayes.conjugate.counts import (
    BetaBernoulli,
    BetaBinomial,
    DirichletCategorical,
    DirichletMultinomial,
    GammaPoisson,
)
from varbayes.conjugate.linear import BayesianLinearRegression
from varbayes.conjugate.normal import NormalKnownVariance, NormalUnknownVariance

__all__ = [
    "ConjugateModel",
    "NormalKnownVariance",
    "NormalUnknownVariance",
    "BetaBernoulli",
    "BetaBinomial",
    "GammaPoisson",
    "DirichletCategorical",
    "DirichletMultinomial",
    "BayesianLinearRegression",
]
