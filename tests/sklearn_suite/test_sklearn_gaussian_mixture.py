"""scikit-learn's ``sklearn/mixture/tests/test_gaussian_mixture.py`` run on varbayes's
``GaussianMixture`` (see :mod:`._adapter`)."""

from sklearn_suite._adapter import load_sklearn_tests

PRIVATE = "calls a scikit-learn-private helper"
NOT_APPLICABLE = {
    "test_suffstat_sk_full": f"{PRIVATE} (_estimate_gaussian_covariances_full)",
    "test_suffstat_sk_tied": f"{PRIVATE} (_estimate_gaussian_covariances_tied)",
    "test_suffstat_sk_diag": f"{PRIVATE} (_estimate_gaussian_covariances_diag)",
    "test_gaussian_suffstat_sk_spherical": f"{PRIVATE} (_estimate_gaussian_covariances_spherical)",
    "test_compute_log_det_cholesky": f"{PRIVATE} (_compute_log_det_cholesky)",
    "test_gaussian_mixture_log_probabilities": f"{PRIVATE} (_estimate_log_gaussian_prob)",
    "test_gaussian_mixture_precisions_init": f"{PRIVATE} (GaussianMixture._set_parameters, "
    "._initialize)",
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
        "mocks the scikit-learn-private _estimate_gaussian_parameters"
    ),
    "test_gaussian_mixture_array_api_compliance": (
        "scikit-learn's array-API dispatch (sklearn.config_context(array_api_dispatch=True), "
        "array_api_strict); varbayes takes NumPy and torch natively"
    ),
    "test_gaussian_mixture_raises_where_array_api_not_implemented": (
        "scikit-learn's array-API dispatch: a NotImplementedError of sklearn's own machinery"
    ),
}

KNOWN_FAILURES: dict[str, str] = {}

globals().update(load_sklearn_tests("test_gaussian_mixture.py", NOT_APPLICABLE, KNOWN_FAILURES))
