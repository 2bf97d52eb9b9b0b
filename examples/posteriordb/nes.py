"""Party identification in the 1980 National Election Study (posteriordb nes1980-nes).

Stan (transformed data): age dummies from age_discrete; beta (9) and sigma > 0 flat;
partyid7 ~ N(X beta, sigma), X = (1, real_ideo, race_adj, age30_44, age45_64, age65up,
educ1, gender, income).

Run: python examples/posteriordb/nes.py [--guide meanfield]
"""

from torch import distributions as dist
from torch.distributions import constraints


def nes(m, data):
    """data: ``partyid7`` (N,), ``XT`` (9, N) the design matrix transposed."""
    beta = m.latent("beta", support=constraints.real, shape=(9,))
    sigma = m.latent("sigma", support=constraints.positive)
    loc = beta @ data["XT"]
    m.observe("partyid7", dist.Normal(loc, sigma[..., None]), data["partyid7"])


if __name__ == "__main__":
    import sys

    import posteriordb_models

    raise SystemExit(posteriordb_models.main(["nes", *sys.argv[1:]]))
