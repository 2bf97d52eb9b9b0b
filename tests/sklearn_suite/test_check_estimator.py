"""scikit-learn's ``check_estimator`` on varbayes's mixtures.

The checks that must pass are computed at test time from scikit-learn's own
``GaussianMixture`` and ``BayesianGaussianMixture``: every check that passes for
scikit-learn's estimator must pass for varbayes's, so the test follows the installed
version of scikit-learn.
"""

import functools
import warnings

import pytest

pytest.importorskip("sklearn")

from sklearn import mixture as sk_mixture  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from varbayes import mixture  # noqa: E402


def _statuses(estimator) -> dict:
    """{(check name, occurrence): (status, exception)} for every check of ``estimator``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    out, seen = {}, {}
    for r in results:
        i = seen[r["check_name"]] = seen.get(r["check_name"], -1) + 1
        out[(r["check_name"], i)] = (r["status"], r["exception"])
    return out


@functools.cache
def _passed_by_sklearn(name: str) -> frozenset:
    statuses = _statuses(getattr(sk_mixture, name)())
    return frozenset(k for k, (status, _) in statuses.items() if status == "passed")


# BayesianGaussianMixture is VariationalGaussianMixture under scikit-learn's name
@pytest.mark.parametrize("name", ["GaussianMixture", "BayesianGaussianMixture"])
def test_passes_every_check_that_sklearn_passes(name):
    required = _passed_by_sklearn(name)
    assert len(required) > 30  # check_estimator ran its checks on scikit-learn's estimator
    ours = _statuses(getattr(mixture, name)())
    failed = {
        k: f"{ours.get(k, ('missing', None))[0]}: {ours.get(k, (None, None))[1]!r}"
        for k in sorted(required)
        if ours.get(k, ("missing",))[0] != "passed"
    }
    assert not failed, failed
