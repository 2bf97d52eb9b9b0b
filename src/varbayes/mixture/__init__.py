"""Latent variable models: Gaussian mixtures by EM and by mean-field variational inference.

* :class:`GaussianMixture`: θ = (π, μ, Σ) by EM; the ELBO after each E-step is the
  log-likelihood log p(x | θ).
* :class:`VariationalGaussianMixture`: q(π) q(μ, Λ) q(z) by CAVI with Dirichlet or
  truncated Dirichlet-process weights and Normal-Wishart components; ``partial_fit``
  takes stochastic (natural-gradient) VI steps on minibatches.

Both share one loop (:mod:`._base`), one chunked E-step and one convergence monitor;
:func:`load` restores a model saved with ``model.save(path)``.
"""

from varbayes.mixture._base import NotFittedError
from varbayes.mixture._covariance import DegenerateMixtureWarning
from varbayes.mixture.gaussian import GaussianMixture
from varbayes.mixture.io import load
from varbayes.mixture.variational import VariationalGaussianMixture

__all__ = [
    "DegenerateMixtureWarning",
    "GaussianMixture",
    "NotFittedError",
    "VariationalGaussianMixture",
    "load",
]
