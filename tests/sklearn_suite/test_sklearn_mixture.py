"""scikit-learn's ``sklearn/mixture/tests/test_mixture.py`` run on varbayes's estimators
(see :mod:`._adapter`)."""

from sklearn_suite._adapter import load_sklearn_tests

globals().update(load_sklearn_tests("test_mixture.py", {}))
