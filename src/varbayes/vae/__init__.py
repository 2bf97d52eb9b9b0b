"""Variational autoencoders: amortized stochastic VI on images (the post's last section).

q_φ(z|x) = N(μφ(x), diag σφ²(x)), z = μ + σ ⊙ ε, ELBO = E_q[log p(x|z)] − KL(q(z|x) || p(z)).
"""

from varbayes.vae.config import VAEConfig
from varbayes.vae.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
)
from varbayes.vae.model import VAE, ELBOTerms
from varbayes.vae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

__all__ = [
    "VAE",
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "ConvDecoder",
    "ConvEncoder",
    "ELBOTerms",
    "GaussianLikelihood",
    "Likelihood",
    "MLPDecoder",
    "MLPEncoder",
    "VAEConfig",
    "make_likelihood",
]
