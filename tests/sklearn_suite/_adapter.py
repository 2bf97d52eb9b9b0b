"""Run the installed scikit-learn's own mixture tests against varbayes.

:func:`load_sklearn_tests` reads a test file from the installed ``sklearn`` package
(never a copy in this repository), rewrites only the imports of the estimator classes
so that ``GaussianMixture`` and ``BayesianGaussianMixture`` are varbayes's, executes the
result as a module and returns its ``test_*`` functions (with their pytest marks), minus
those listed as not applicable. Everything else (data, assertions, messages,
tolerances) is scikit-learn's, unchanged.
"""

from __future__ import annotations

import importlib.util
import re
import types
from pathlib import Path

import pytest

# the only rewrites: scikit-learn's estimator classes -> varbayes's
SWAPS = {
    "from sklearn.mixture import GaussianMixture\n": (
        "from varbayes.mixture import GaussianMixture\n"
    ),
    "from sklearn.mixture import BayesianGaussianMixture\n": (
        "from varbayes.mixture import BayesianGaussianMixture\n"
    ),
    "from sklearn.mixture import BayesianGaussianMixture, GaussianMixture\n": (
        "from varbayes.mixture import BayesianGaussianMixture, GaussianMixture\n"
    ),
}


def sklearn_test_file(name: str) -> Path:
    """Path of ``sklearn/mixture/tests/<name>`` in the installed scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-learn is not installed", allow_module_level=True)
    path = Path(spec.origin).parent / "mixture" / "tests" / name
    if not path.is_file():
        pytest.skip(f"the installed scikit-learn has no {name}", allow_module_level=True)
    return path


def adapted_source(name: str) -> str:
    """The test file's source with the estimator imports swapped (and nothing else)."""
    src = sklearn_test_file(name).read_text(encoding="utf-8")
    swapped = 0
    for old, new in SWAPS.items():
        swapped += src.count(old)
        src = src.replace(old, new)
    if swapped == 0 or re.search(r"^from sklearn\.mixture import", src, re.M):
        raise AssertionError(f"{name}: the estimator imports were not all swapped")
    return src


def load_sklearn_tests(
    name: str, not_applicable: dict[str, str], known_failures: dict[str, str] | None = None
) -> dict:
    """The ``test_*`` functions of the adapted ``name``, minus ``not_applicable``.

    ``not_applicable`` maps a test name to the reason it cannot apply to varbayes (it
    calls a scikit-learn-private helper or machinery). A listed name that no longer
    exists in the installed file is an error, so the list follows the installed version.
    """
    module = types.ModuleType(f"sklearn_suite_{Path(name).stem}")
    module.__file__ = str(sklearn_test_file(name))
    exec(compile(adapted_source(name), module.__file__, "exec"), module.__dict__)
    tests = {k: v for k, v in vars(module).items() if k.startswith("test_") and callable(v)}
    known_failures = known_failures or {}
    stale = sorted((set(not_applicable) | set(known_failures)) - set(tests))
    if stale:
        raise AssertionError(f"{name}: not-applicable tests no longer exist: {stale}")
    for k, reason in known_failures.items():
        tests[k] = pytest.mark.xfail(strict=True, reason=reason)(tests[k])
    return {k: v for k, v in tests.items() if k not in not_applicable}
