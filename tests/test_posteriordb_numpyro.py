"""The NumPyro translations that benchmarks/posteriordb.py fits are the Stan programs: their
log densities agree with the hand-written scipy oracles (tests/posteriordb_oracles.py)."""

import pathlib
import sys

import numpy as np
import pytest

pytest.importorskip("numpyro")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "posteriordb"))
sys.path.insert(0, str(REPO / "benchmarks"))
import _data  # noqa: E402
import posteriordb as bench  # noqa: E402  (benchmarks/posteriordb.py)
import posteriordb_oracles as oracles  # noqa: E402


@pytest.mark.parametrize("name", sorted(_data.POSTERIORS))
def test_numpyro_log_density_differences_equal_the_oracle(name):
    """log p(θ_a) − log p(θ_b) in float64, NumPyro model vs scipy oracle, at 5 random points
    of the support (constrained space on both sides, no Jacobian)."""
    try:
        data = _data.load_data(name)
    except FileNotFoundError as e:
        pytest.skip(f"posteriordb not available ({e})")
    rng = np.random.default_rng(0)
    ours, theirs = [], []
    with jax.enable_x64(True):
        model = bench.numpyro_model(name, _data.transformed_data(name, data), "float64")
        logp = jax.jit(lambda q: log_density(model, (), {}, q)[0])
        for _ in range(5):
            p = oracles.random_point(name, rng)
            q = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in p.items()}
            jac = 0.0
            if name == "garch":  # the benchmark's beta1 = (1 - alpha1) u, with a flat u
                q["beta1_unit"] = q.pop("beta1") / (1 - q["alpha1"])
                jac = np.log1p(-p["alpha1"])
            theirs.append(float(logp(q)) - jac)
            ours.append(oracles.ORACLES[name](data, p))
    d_ours, d_theirs = np.diff(ours), np.diff(theirs)
    assert np.abs(d_ours).max() > 1.0  # the points differ enough for the check to bite
    np.testing.assert_allclose(d_theirs, d_ours, rtol=1e-9, atol=1e-8)
