"""Small models shared by the tests of varbayes.vi (the README's eight schools)."""

from torch import distributions as dist

EIGHT = {"y": [28.0, 8, -3, 7, -1, 1, 18, 12], "sigma": [15.0, 10, 16, 11, 9, 11, 10, 18]}


def eight_schools(m, data):
    """Non-centred eight schools: θ = μ + τ θ̃, y_j ~ N(θ_j, σ_j)."""
    mu = m.latent("mu", dist.Normal(0.0, 5.0))
    tau = m.latent("tau", dist.HalfCauchy(5.0))
    theta_tilde = m.latent("theta_tilde", dist.Normal(0.0, 1.0).expand([8]))
    theta = m.derived("theta", mu[..., None] + tau[..., None] * theta_tilde)
    m.observe("y", dist.Normal(theta, data["sigma"]), data["y"])
