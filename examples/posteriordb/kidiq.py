"""Kid IQ on mother's IQ (posteriordb kidiq-kidscore_momiq).

Stan: beta (2) flat; sigma ~ Cauchy(0, 2.5), sigma > 0;
kid_score ~ N(beta1 + beta2 mom_iq, sigma).

Run: python examples/posteriordb/kidiq.py [--guide meanfield]
"""

from torch import distributions as dist
from torch.distributions import constraints


def kidiq(m, data):
    """data: ``kid_score`` (N,), ``mom_iq`` (N,)."""
    beta = m.latent("beta", support=constraints.real, shape=(2,))  # flat prior
    sigma = m.latent("sigma", dist.HalfCauchy(2.5))
    loc = beta[..., 0:1] + beta[..., 1:2] * data["mom_iq"]
    m.observe("kid_score", dist.Normal(loc, sigma[..., None]), data["kid_score"])


if __name__ == "__main__":
    import sys

    import posteriordb_models

    raise SystemExit(posteriordb_models.main(["kidiq", *sys.argv[1:]]))
