"""varbayes: Bayesian and variational inference in PyTorch.

Every algorithm in varbayes maximises one objective, the evidence lower bound

    log p(x) = ELBO(q) + KL(q(θ) || p(θ | x)),
    ELBO(q) = E_q[log p(x | θ)] - KL(q(θ) || p(θ)),

and differs only in how the approximating distribution q is chosen: the exact
posterior (conjugate updating, KL = 0), a point mass (MAP), a product of factors
(mean-field CAVI), a parametric family q(θ | λ) (stochastic VI) or an amortized
encoder q(z | x) (the VAE).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
