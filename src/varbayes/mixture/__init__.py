"""Latent variable models: Gaussian mixtures by EM and by mean-field variational inference.

* :class:`GaussianMixture`: θ = (π, μ, Σ) by EM; the ELBO after each E-step is the
  log-likelihood log p(x | θ).
* :class:`VariationalGaussianMixture`: q(π) q(μ, Λ) q(z) by CAVI with Dirichlet or
  truncated Dirichlet-process weights and Normal-Wishart components; ``partial_fit``
  takes stochastic (natural-gradient) VI steps on minibatches.

Both share one loop (:mod:`._base`), one chunked E-step and one convergence monitor;
:func:`load` restores a model saved with ``model.save(path)``.
"""

from varbayes.mixture import _sklearn
from varbayes.mixture._base import load
from varbayes.mixture._covariance import DegenerateMixtureWarning
from varbayes.mixture.gaussian import GaussianMixture
from varbayes.mixture.variational import BayesianGaussianMixture, VariationalGaussianMixture

__all__ = [
    "BayesianGaussianMixture",
    "ConvergenceWarning",
    "DegenerateMixtureWarning",
    "GaussianMixture",
    "NotFittedError",
    "VariationalGaussianMixture",
    "load",
]


def __getattr__(name: str):
    # created on first use: subclasses of scikit-learn's classes when it is installed
    if name == "NotFittedError":
        return _sklearn.not_fitted_error()
    if name == "ConvergenceWarning":
        return _sklearn.convergence_warning()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
