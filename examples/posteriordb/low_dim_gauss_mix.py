"""A two-component Gaussian mixture (posteriordb low_dim_gauss_mix-low_dim_gauss_mix).

Stan: mu ordered[2] ~ N(0, 2); sigma (2) > 0 ~ N(0, 2); theta in (0, 1) ~ Beta(5, 5);
target += Σ_n log_mix(theta, N(y_n | mu1, sigma1), N(y_n | mu2, sigma2)).

Run: python examples/posteriordb/low_dim_gauss_mix.py [--guide meanfield]
"""

import torch
from torch import distributions as dist
from torch.distributions import constraints

from varbayes import vi


def low_dim_gauss_mix(m, data):
    """data: ``y`` (N,)."""
    mu = m.latent("mu", dist.Normal(0.0, 2.0).expand([2]), support=vi.ordered_vector)
    sigma = m.latent("sigma", dist.Normal(0.0, 2.0).expand([2]), support=constraints.positive)
    theta = m.latent("theta", dist.Beta(5.0, 5.0))
    y = data["y"]
    # log_mix as logaddexp of the two components (S, N): twice as fast as a logsumexp
    # over a stacked last dimension of size 2
    a = theta.log()[..., None] + dist.Normal(mu[..., 0:1], sigma[..., 0:1]).log_prob(y)
    b = torch.log1p(-theta)[..., None] + dist.Normal(mu[..., 1:2], sigma[..., 1:2]).log_prob(y)
    m.factor("y", torch.logaddexp(a, b).sum(-1))


if __name__ == "__main__":
    import sys

    import posteriordb_models

    raise SystemExit(posteriordb_models.main(["low_dim_gauss_mix", *sys.argv[1:]]))
