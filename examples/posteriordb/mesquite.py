"""Mesquite bush weights, a regression on logs (posteriordb mesquite-logmesquite_logvas).

Stan (transformed data): the log weight and six log/indicator predictors (see
``_data.transformed_data``); beta (7) and sigma > 0 flat;
log_weight ~ N(X beta, sigma) with X's first column the intercept.

Run: python examples/posteriordb/mesquite.py [--guide meanfield]
"""

from torch import distributions as dist
from torch.distributions import constraints


def mesquite(m, data):
    """data: ``log_weight`` (N,), ``XT`` (7, N) the design matrix transposed."""
    beta = m.latent("beta", support=constraints.real, shape=(7,))
    sigma = m.latent("sigma", support=constraints.positive)
    loc = beta @ data["XT"]
    m.observe("log_weight", dist.Normal(loc, sigma[..., None]), data["log_weight"])


if __name__ == "__main__":
    import sys

    import posteriordb_models

    raise SystemExit(posteriordb_models.main(["mesquite", *sys.argv[1:]]))
