"""Diamond prices, a brms regression on 24 centred predictors (posteriordb diamonds-diamonds).

Stan (transformed data): Xc = X without its intercept column, each column centred.
b (24) ~ N(0, 1); Intercept ~ student_t(3, 8, 10); sigma ~ student_t(3, 0, 10) truncated
to sigma > 0 (``- student_t_lccdf(0 | 3, 0, 10)`` = + log 2); Y ~ N(Intercept + Xc b, sigma).
The 26 coefficients are strongly correlated: mean-field q cannot be right here.

Run: python examples/posteriordb/diamonds.py [--guide meanfield]
"""

import math

import torch
from torch import distributions as dist
from torch.distributions import constraints


def diamonds(m, data):
    """data: ``Y`` (N,), ``XcT`` (24, N) the centred predictors transposed (see
    ``_data.transformed_data``)."""
    b = m.latent("b", dist.Normal(0.0, 1.0).expand([data["Xc"].shape[1]]))
    intercept = m.latent("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = m.latent("sigma", dist.StudentT(3.0, 0.0, 10.0), support=constraints.positive)
    # - student_t_lccdf(0 | 3, 0, 10) = log 2 (a tensor: m.factor rejects a float when batched)
    m.factor("sigma_truncation", torch.tensor(math.log(2.0)))
    loc = intercept[..., None] + b @ data["XcT"]
    m.observe("Y", dist.Normal(loc, sigma[..., None]), data["Y"])


if __name__ == "__main__":
    import sys

    import posteriordb_models

    raise SystemExit(posteriordb_models.main(["diamonds", *sys.argv[1:]]))
