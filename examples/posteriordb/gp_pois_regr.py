"""Poisson regression on a Gaussian process (posteriordb gp_pois_regr-gp_pois_regr).

Stan: rho ~ Gamma(25, 4) (rate), rho > 0; alpha ~ N(0, 2), alpha > 0; f_tilde (11) ~ N(0, 1);
f = L f_tilde with L the Cholesky factor of alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I
(a transformed parameter); k ~ Poisson(exp(f)) (poisson_log).

Run: python examples/posteriordb/gp_pois_regr.py [--guide meanfield]
"""

import torch
from torch import distributions as dist
from torch.distributions import constraints


def gp_pois_regr(m, data):
    """data: ``x`` (N,), ``k`` (N,) counts (as floats)."""
    x = data["x"]
    rho = m.latent("rho", dist.Gamma(25.0, 4.0))
    alpha = m.latent("alpha", dist.Normal(0.0, 2.0), support=constraints.positive)
    f_tilde = m.latent("f_tilde", dist.Normal(0.0, 1.0).expand([len(x)]))
    d2 = (x[:, None] - x[None, :]) ** 2
    rho2, alpha2 = (rho**2)[..., None, None], (alpha**2)[..., None, None]
    cov = alpha2 * torch.exp(-d2 / (2 * rho2)) + 1e-10 * torch.eye(len(x), dtype=x.dtype)
    chol, info = torch.linalg.cholesky_ex(cov)
    # Stan rejects a point where cholesky_decompose fails (a far rho makes cov singular in
    # floating point): log p = -inf there, as a factor, instead of an exception.
    m.factor("cholesky_failed", torch.where(info == 0, 0.0, -torch.inf).to(x.dtype))
    f = m.derived("f", (chol @ f_tilde[..., None])[..., 0])
    m.observe("k", dist.Poisson(f.exp()), data["k"])


if __name__ == "__main__":
    import sys

    import posteriordb_models

    raise SystemExit(posteriordb_models.main(["gp_pois_regr", *sys.argv[1:]]))
