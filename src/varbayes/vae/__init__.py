"""Variational autoencoders: amortized stochastic VI on images (the post's last section).

q_φ(z|x) = N(μφ(x), diag σφ²(x)), z = μ + σ ⊙ ε, ELBO = E_q[log p(x|z)] − KL(q(z|x) || p(z)).

``train(config, run_dir)`` trains (checkpoints in ``run_dir``) and ``load_model(run_dir)``
loads the trained model. ``varbayes.vae.train`` is that function; the module that defines
it is ``importlib.import_module("varbayes.vae.train")``.
"""

from varbayes.vae.checkpoint import load_checkpoint, load_model
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
from varbayes.vae.train import Trainer, TrainResult, train  # `train` shadows its module

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
    "TrainResult",
    "Trainer",
    "VAEConfig",
    "load_checkpoint",
    "load_model",
    "make_likelihood",
    "train",
]
