"""The varbayes translations of the eight posteriordb posteriors (examples/posteriordb/).

Log densities: each translation's ``Model.log_density`` (unconstrained z, log-Jacobians
included) against the hand-written scipy oracle of its Stan program plus Stan's log-Jacobian
(tests/posteriordb_oracles.py), as differences between random points of the support.
"""

import pathlib
import sys

import numpy as np
import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "posteriordb"))
import _data  # noqa: E402
import posteriordb_models  # noqa: E402
import posteriordb_oracles as oracles  # noqa: E402

NAMES = sorted(posteriordb_models.MODELS)


def load_or_skip(name):
    """The raw data.json of ``name``; skip when ../shared/posteriordb is absent."""
    try:
        return _data.load_data(name)
    except FileNotFoundError as e:
        pytest.skip(f"posteriordb not available ({e})")


def test_registry_covers_the_eight_posteriors():
    """One translation per posterior of the posteriordb folder, under the same short names."""
    assert sorted(posteriordb_models.MODELS) == sorted(_data.POSTERIORS)


@pytest.mark.parametrize("name", NAMES)
def test_log_density_differences_equal_the_scipy_oracle(name):
    """At 6 random θ in the support: log p(z_a) − log p(z_b) from the Model equals the oracle's
    [log p(θ_a) + log|J(θ_a)|] − [log p(θ_b) + log|J(θ_b)|] (float64, rtol 1e-9), and
    Model.constrain(z) gives back θ and Stan's transformed parameters (atol 1e-9, or the
    conditioning bound of ``oracles.DERIVED_ATOL``)."""
    data = load_or_skip(name)
    model = posteriordb_models.model(name, data)
    assert model.names == tuple(oracles.SUPPORTS[name])  # Stan's parameters, in order
    rng = np.random.default_rng(1)
    ours, theirs = [], []
    for _ in range(6):
        p = oracles.random_point(name, rng)
        u, log_jac = oracles.unconstrain(name, p)
        z = torch.zeros(model.dim, dtype=torch.float64)
        for site in model.latents:
            z[site.start : site.stop] = torch.as_tensor(u[site.name]).reshape(-1)
        ours.append(float(model.log_density(z[None])[0]))
        theirs.append(oracles.ORACLES[name](data, p) + log_jac)
        values = model.constrain(z[None])
        for key, want in {**p, **oracles.derived(name, data, p)}.items():
            got = values[key][0].numpy()
            atol = oracles.DERIVED_ATOL.get((name, key), 1e-9)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=atol, err_msg=key)
    d_ours, d_theirs = np.diff(ours), np.diff(theirs)
    assert np.abs(d_theirs).max() > 1.0  # the points differ enough for the check to bite
    np.testing.assert_allclose(d_ours, d_theirs, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_log_density_is_vectorised_over_particles(name):
    """log_density on S = 5 stacked points equals its value at each point alone."""
    model = posteriordb_models.model(name, load_or_skip(name))
    z = 0.1 * torch.randn(
        5, model.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    batched = model.log_density(z)
    single = torch.stack([model.log_density(z[i : i + 1])[0] for i in range(5)])
    assert batched.shape == (5,)
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-9)
