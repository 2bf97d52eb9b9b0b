"""scikit-learn's ``sklearn/mixture/tests/test_bayesian_mixture.py`` run on varbayes's
``BayesianGaussianMixture`` (see :mod:`._adapter`)."""

from sklearn_suite._adapter import load_sklearn_tests

NOT_APPLICABLE = {
    "test_log_dirichlet_norm": "calls the scikit-learn-private _log_dirichlet_norm",
    "test_log_wishart_norm": "calls the scikit-learn-private _log_wishart_norm",
    "test_compare_covar_type": (
        "calls the private BayesianGaussianMixture._check_parameters and ._initialize_parameters"
    ),
}

globals().update(load_sklearn_tests("test_bayesian_mixture.py", NOT_APPLICABLE))
