"""Eight schools, non-centred (posteriordb eight_schools-eight_schools_noncentered).

Stan: theta_trans ~ N(0, 1) (8); mu ~ N(0, 5); tau ~ Cauchy(0, 5), tau > 0;
theta = theta_trans * tau + mu (transformed parameter); y ~ N(theta, sigma).

Run: python examples/posteriordb/eight_schools.py [--guide meanfield]
"""

from torch import distributions as dist


def eight_schools(m, data):
    """data: ``y`` (8,), ``sigma`` (8,). Latents as Stan's parameters block declares them."""
    theta_trans = m.latent("theta_trans", dist.Normal(0.0, 1.0).expand([8]))
    mu = m.latent("mu", dist.Normal(0.0, 5.0))
    tau = m.latent("tau", dist.HalfCauchy(5.0))
    theta = m.derived("theta", theta_trans * tau[..., None] + mu[..., None])
    m.observe("y", dist.Normal(theta, data["sigma"]), data["y"])


if __name__ == "__main__":
    import sys

    import posteriordb_models

    raise SystemExit(posteriordb_models.main(["eight_schools", *sys.argv[1:]]))
