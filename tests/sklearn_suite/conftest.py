"""Fixtures that scikit-learn's own test files expect (defined in sklearn's conftest)."""

import os

import numpy as np
import pytest


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def global_dtype(request):
    """Both float dtypes (scikit-learn runs float32 only with SKLEARN_RUN_FLOAT32_TESTS=1;
    varbayes keeps float32 input in float32, so it is always checked here)."""
    return request.param


def pytest_generate_tests(metafunc):
    """``global_random_seed`` as in scikit-learn: SKLEARN_TESTS_GLOBAL_RANDOM_SEED, default 42."""
    if "global_random_seed" in metafunc.fixturenames:
        spec = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED", "42")
        if spec == "all":
            seeds = list(range(100))
        elif "-" in spec:
            lo, hi = (int(s) for s in spec.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(s) for s in spec.split(",")]
        metafunc.parametrize("global_random_seed", seeds)
