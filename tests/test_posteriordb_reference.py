"""The stored posteriordb reference summaries match the reference draws they came from."""

import json
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "posteriordb"))
import _data  # noqa: E402

REFERENCE = json.loads((REPO / "tests" / "data" / "posteriordb_reference.json").read_text())


def _folder_or_skip(name):
    try:
        return _data.folder(name)
    except FileNotFoundError as e:
        pytest.skip(f"posteriordb not available ({e})")


@pytest.mark.parametrize("name", sorted(_data.POSTERIORS))
def test_stored_summaries_equal_a_fresh_summary_of_the_draws(name):
    """tests/data/posteriordb_reference.json is what make_reference.py computes from the
    zipped draws now: same Stan names, mean, sd and quantiles to 1e-12."""
    _folder_or_skip(name)
    fresh = _data.summarise(_data.load_reference_draws(name))
    stored = REFERENCE[name]["summary"]
    assert list(stored) == list(fresh)
    for k, s in stored.items():
        for stat, v in s.items():
            assert v == pytest.approx(fresh[k][stat], rel=1e-12, abs=1e-12), (k, stat)
    assert REFERENCE[name]["ndraws"] == 10_000


def test_summarise_matches_numpy_on_known_draws():
    """summarise: mean, ddof-1 sd and linear-interpolation quantiles of 0..100."""
    s = _data.summarise({"x": np.arange(101.0)})["x"]
    assert s == {
        "mean": 50.0,
        "sd": pytest.approx(np.sqrt(101 * 102 / 12)),  # discrete uniform, ddof 1
        "q5": 5.0,
        "q50": 50.0,
        "q95": 95.0,
    }


def test_stan_names_are_one_based():
    """stan_names flattens a vector to name[1], name[2], ... and keeps a scalar's name."""
    assert _data.stan_names("theta", np.array([3.0, 4.0])) == {"theta[1]": 3.0, "theta[2]": 4.0}
    assert _data.stan_names("tau", 2.5) == {"tau": 2.5}
    assert list(_data.stan_names("L", np.zeros((2, 2)))) == ["L[1,1]", "L[1,2]", "L[2,1]", "L[2,2]"]


def test_unknown_posterior_name_is_a_clear_error():
    """folder() names the argument and the known posteriors."""
    with pytest.raises(ValueError, match="name: expected one of"):
        _data.folder("eight_school")
