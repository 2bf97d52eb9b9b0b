"""GaussianMixture (EM): parity with scikit-learn, the ELBO, log-densities, degenerate data,
persistence and errors."""

import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from varbayes.mixture import DegenerateMixtureWarning, GaussianMixture, NotFittedError, load
from varbayes.mixture._estep import use_blocks
from varbayes.monitor import ConvergenceWarning

COV_TYPES = ["full", "tied", "diag", "spherical"]


def blobs(seed=0, n=(300, 200, 150), d=3):
    """Three anisotropic Gaussian clusters in d dimensions, with their true labels."""
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for j, nj in enumerate(n):
        a = rng.normal(size=(d, d)) * (0.3 + 0.4 * j)
        parts.append(rng.normal(size=(nj, d)) @ a + 6.0 * rng.normal(size=d))
        labels.append(np.full(nj, j))
    return np.concatenate(parts), np.concatenate(labels)


def initial_params(x, k, cov_type, seed=1):
    """Deliberately poor but valid starting values: random rows, unit precisions."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    means = x[rng.choice(len(x), k, replace=False)]
    prec = {
        "full": np.stack([np.eye(d)] * k),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[cov_type]
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means, "precisions_init": prec}


def rel_err(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_parity_with_sklearn_from_same_init(cov_type):
    """From the same θ_0, EM matches sklearn's parameters, n_iter_ and log-likelihood to 1e-8."""
    x, _ = blobs()
    init = initial_params(x, 3, cov_type)
    kw = dict(n_components=3, covariance_type=cov_type, max_iter=200, tol=1e-6, **init)
    sk = SkGaussianMixture(init_params="random_from_data", **kw).fit(x)
    vb = GaussianMixture(**kw).fit(x)
    assert vb.n_iter_ == sk.n_iter_ and vb.converged_ == sk.converged_
    for name in ["weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"]:
        assert rel_err(getattr(sk, name), getattr(vb, name)) < 1e-8, name
    assert abs(vb.score(x) - sk.score(x)) < 1e-8 * abs(sk.score(x))
    assert abs(vb.lower_bound_ - sk.lower_bound_) < 1e-8 * abs(sk.lower_bound_)
    np.testing.assert_allclose(vb.lower_bounds_, sk.lower_bounds_, rtol=1e-8)
    assert vb.bic(x) == pytest.approx(sk.bic(x), rel=1e-8)
    assert vb.aic(x) == pytest.approx(sk.aic(x), rel=1e-8)
    np.testing.assert_array_equal(vb.predict(x), sk.predict(x))


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_parity_with_sklearn_fixed_iterations_float64(cov_type):
    """With tol=0 and 25 iterations from the same init, all parameters agree to 1e-8 relative."""
    x, _ = blobs(seed=3, d=4)
    init = initial_params(x, 4, cov_type, seed=5)
    kw = dict(n_components=4, covariance_type=cov_type, max_iter=25, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(init_params="random_from_data", **kw).fit(x)
        vb = GaussianMixture(**kw).fit(x)
    assert vb.n_iter_ == 25
    for name in ["weights_", "means_", "covariances_"]:
        assert rel_err(getattr(sk, name), getattr(vb, name)) < 1e-8, name
    assert vb.score(x) == pytest.approx(sk.score(x), rel=1e-8)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_elbo_after_e_step_is_log_likelihood_and_never_decreases(cov_type):
    """lower_bounds_[t] equals log p(x | θ_t) of the t-th iterate; the trace never falls."""
    x, _ = blobs(seed=2)
    init = initial_params(x, 3, cov_type, seed=2)
    kw = dict(n_components=3, covariance_type=cov_type, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = GaussianMixture(max_iter=12, **kw).fit(x)
        h = np.asarray(full.lower_bounds_)
        assert len(h) == 12
        # "never" up to float64 rounding: scikit-learn shows the same ~1e-12 wiggles at the optimum
        assert np.all(np.diff(h) >= -1e-10 * np.maximum(1.0, np.abs(h[1:]))), np.diff(h)
        assert full.monitor_.state.decreases == []
        for t in (1, 4, 11):  # θ_t = the parameters after t M-steps
            partial = GaussianMixture(max_iter=t, **kw).fit(x)
            assert h[t] == pytest.approx(partial.score(x), rel=1e-12, abs=1e-12)
            assert partial.elbo(x) == pytest.approx(partial.score(x), rel=1e-14)  # no KL term
    # the 0-th entry is the log-likelihood of the initial parameters themselves
    w, m, p = (init[k] for k in ("weights_init", "means_init", "precisions_init"))
    if cov_type == "full":
        dens = sum(w[k] * multivariate_normal(m[k], np.linalg.inv(p[k])).pdf(x) for k in range(3))
        assert h[0] == pytest.approx(np.mean(np.log(dens)), rel=1e-12)


def _full_cov(model):
    from varbayes.mixture.plot import full_covariances

    return full_covariances(model)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_log_density_matches_naive_scipy_loop(cov_type):
    """score_samples and predict_proba equal a naive loop over scipy multivariate_normal."""
    x, _ = blobs(seed=4)
    gm = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(x)
    w = np.asarray(gm.weights_)
    mu = np.asarray(gm.means_)
    cov = _full_cov(gm)
    logp = np.stack(
        [np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(x) for k in range(3)], 1
    )
    lse = np.logaddexp.reduce(logp, axis=1)
    np.testing.assert_allclose(gm.score_samples(x), lse, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.predict_proba(x), np.exp(logp - lse[:, None]), atol=1e-10)


def test_fit_predict_equals_fit_then_predict():
    """The final E-step makes fit_predict(X) equal fit(X).predict(X), even when stopped early."""
    x, _ = blobs(seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = GaussianMixture(3, max_iter=2, random_state=1, init_params="random").fit_predict(x)
        b = GaussianMixture(3, max_iter=2, random_state=1, init_params="random").fit(x).predict(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_initialisations_recover_separated_clusters_and_are_seeded(init):
    """Every init_params recovers three separated clusters; one seed gives one fit."""
    x, y = blobs(seed=6)
    a = GaussianMixture(3, init_params=init, random_state=7, n_init=2, max_iter=300).fit(x)
    b = GaussianMixture(3, init_params=init, random_state=7, n_init=2, max_iter=300).fit(x)
    assert adjusted_rand_score(y, a.predict(x)) > 0.95
    np.testing.assert_array_equal(np.asarray(a.means_), np.asarray(b.means_))


def test_n_init_keeps_the_best_bound():
    """With the same seed, n_init=4 ends at a bound at least as high as its first run alone."""
    x, _ = blobs(seed=8)
    one = GaussianMixture(5, init_params="random", random_state=3, max_iter=500).fit(x)
    four = GaussianMixture(5, init_params="random", random_state=3, max_iter=500, n_init=4).fit(x)
    assert four.lower_bound_ >= one.lower_bound_ - 1e-12


def test_warm_start_continues_from_previous_solution():
    """warm_start=True resumes: a converged model converges again in at most two iterations."""
    x, _ = blobs(seed=9)
    gm = GaussianMixture(3, random_state=0, warm_start=True, tol=1e-8, max_iter=500).fit(x)
    before = np.asarray(gm.means_).copy()
    gm.fit(x)
    assert gm.n_iter_ <= 2
    np.testing.assert_allclose(np.asarray(gm.means_), before, atol=1e-5)


def test_chunk_size_does_not_change_the_result():
    """Chunking the E-step over rows changes only the order of additions."""
    x, _ = blobs(seed=10)
    init = initial_params(x, 3, "full")
    a = GaussianMixture(3, max_iter=20, tol=0, **init)
    b = GaussianMixture(3, max_iter=20, tol=0, chunk_size=7, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a.fit(x)
        b.fit(x)
    assert rel_err(a.covariances_, b.covariances_) < 1e-10


def test_tensor_in_tensor_out_numpy_in_numpy_out_and_float32():
    """Tensors give tensors, arrays give arrays; dtype=float32 fits in float32 close to float64."""
    x, _ = blobs(seed=11)
    init = initial_params(x, 3, "full")
    g64 = GaussianMixture(3, **init).fit(x)
    g32 = GaussianMixture(3, dtype="float32", **init).fit(torch.as_tensor(x))
    assert isinstance(g64.predict(x), np.ndarray)
    out = g32.predict_proba(torch.as_tensor(x))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert g32.means_.dtype == torch.float32
    np.testing.assert_allclose(g32.means_.double().numpy(), g64.means_, atol=1e-3)
    assert isinstance(g64.means_, np.ndarray) and g64.means_.dtype == np.float64


def test_sample_moments_match_the_mixture():
    """sample() draws from p(x | θ): the sample mean is within 5 standard errors of Σ_k π_k μ_k
    (fixed seed; false-failure rate below 1e-6 per coordinate)."""
    x, _ = blobs(seed=12)
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(x)
    xs, labels = gm.sample(20000)
    assert xs.shape == (20000, 3) and bool((labels[1:] >= labels[:-1]).all())
    w, mu = gm.weights_, gm.means_
    mean = w @ mu
    second = sum(w[k] * (np.diag(_full_cov(gm)[k]) + mu[k] ** 2) for k in range(3))
    se = np.sqrt((second - mean**2) / 20000)
    assert np.all(np.abs(xs.mean(0) - mean) < 5 * se)


# ----------------------------------------------------------------------------- degenerate data
# A component collapsed onto duplicates has precision 1/reg_covar = 1e6: the expanded quadratic
# form then carries ~1e-9 rounding noise, which the monitor may flag as a tiny "decrease".
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_duplicated_points_give_finite_fit_and_a_warning():
    """A component collapsing on duplicated points gets reg_covar, a warning, and no NaN."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.tile([[3.0, 3.0]], (40, 1)), rng.normal(size=(200, 2))])
    means = np.array([[3.0, 3.0], [0.0, 0.0]])
    with pytest.warns(DegenerateMixtureWarning, match="zero variance"):
        gm = GaussianMixture(2, means_init=means, max_iter=50).fit(x)
    assert np.all(np.isfinite(gm.covariances_))
    assert np.isfinite(gm.score(x))
    assert gm.covariances_[0, 0, 0] == pytest.approx(gm.reg_covar, rel=1e-3)


def test_constant_feature_is_reported_and_regularised():
    """A constant column is named in a warning; its variance is reg_covar; nothing is NaN."""
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(size=300), np.full(300, 7.5), rng.normal(size=300) * 2])
    with pytest.warns(DegenerateMixtureWarning, match=r"feature\(s\) \[1\]"):
        gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(x)
    np.testing.assert_allclose(gm.covariances_[:, 1], gm.reg_covar, rtol=1e-6)
    assert np.all(np.isfinite(gm.predict_proba(x)))


@pytest.mark.filterwarnings("ignore::varbayes.monitor.ConvergenceWarning")
def test_empty_component_is_revived_without_nan():
    """A component started far from all data gets no responsibility: a warning, no NaN."""
    x, _ = blobs(seed=13)
    means = np.vstack([x[:2], [[1e6, 1e6, 1e6]]])
    with pytest.warns(DegenerateMixtureWarning, match="received no data"):
        gm = GaussianMixture(3, means_init=means, max_iter=30, tol=0).fit(x)
    for name in ["weights_", "means_", "covariances_"]:
        assert np.all(np.isfinite(getattr(gm, name)))
    assert np.isfinite(gm.score(x))


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::varbayes.monitor.ConvergenceWarning")
def test_collinear_features_need_reg_covar():
    """Collinear features with reg_covar=0 give scikit-learn's ill-defined-covariance error
    (naming reg_covar); the default reg_covar fits them with finite scores."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 1))
    x = np.hstack([a, 2 * a, rng.normal(size=(200, 1))])
    with pytest.raises(ValueError, match="ill-defined empirical covariance.*increase reg_covar"):
        GaussianMixture(2, reg_covar=0.0, random_state=0, max_iter=5).fit(x)
    gm = GaussianMixture(2, random_state=0, max_iter=5).fit(x)
    assert np.isfinite(gm.score(x))


# ----------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path):
    """A reloaded model scores exactly as the original; no temporary file remains."""
    x, _ = blobs(seed=14)
    gm = GaussianMixture(3, covariance_type="tied", random_state=0).fit(x)
    gm.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert isinstance(back, GaussianMixture) and back.covariance_type == "tied"
    np.testing.assert_array_equal(back.score_samples(x), gm.score_samples(x))
    assert back.lower_bounds_ == gm.lower_bounds_ and back.n_iter_ == gm.n_iter_
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]


def test_load_rejects_unknown_class_and_missing_files(tmp_path):
    """load names `path` when the files are missing or name a class outside the fixed list."""
    with pytest.raises(ValueError, match="path"):
        load(tmp_path / "nothing")
    x, _ = blobs(seed=15)
    GaussianMixture(2, random_state=0).fit(x).save(tmp_path / "m")
    cfg = (tmp_path / "m" / "config.json").read_text().replace("GaussianMixture", "os.system")
    (tmp_path / "m" / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match=r"path: '.*config.json': names class 'os.system'"):
        load(tmp_path / "m")


def test_save_refuses_unfitted_model_and_file_path(tmp_path):
    """save raises NotFittedError when unfitted and names `path` when it is an existing file."""
    with pytest.raises(NotFittedError, match="not fitted yet"):
        GaussianMixture(2).save(tmp_path / "m")
    x, _ = blobs(seed=15)
    gm = GaussianMixture(2, random_state=0).fit(x)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="path must be a directory"):
        gm.save(tmp_path / "f")


# ----------------------------------------------------------------------------- errors
def test_bad_data_errors_name_the_argument():
    """NaN/inf, non-2-D, empty, too few samples and a wrong feature count are named errors."""
    x, _ = blobs(seed=16)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="X must be finite"):
        GaussianMixture(2).fit(bad)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="X must be finite"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(ValueError, match="X must be a 2-D array.*Reshape"):
        GaussianMixture(2).fit(x[:, 0])
    with pytest.raises(ValueError, match="X must be a 2-D array"):
        GaussianMixture(2).fit(x[None])
    with pytest.raises(ValueError, match=r"X: found array with 0 sample\(s\)"):
        GaussianMixture(2).fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"X: found array with 0 feature\(s\)"):
        GaussianMixture(2).fit(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="n_components = 5, n_samples = 4"):
        GaussianMixture(5).fit(x[:4])
    with pytest.raises(ValueError, match=r"X: found array with 1 sample\(s\).*minimum of 2"):
        GaussianMixture(1).fit(x[:1])
    with pytest.raises(TypeError, match="X must be"):
        GaussianMixture(2).fit("data.csv")
    gm = GaussianMixture(2, random_state=0).fit(x)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.predict(x[:, :2])


def test_methods_before_fit_raise_not_fitted():
    """predict/score/sample before fit raise NotFittedError naming fit."""
    for call in (
        lambda g: g.predict(np.zeros((3, 2))),
        lambda g: g.score(np.zeros((3, 2))),
        lambda g: g.sample(3),
        lambda g: g.bic(np.zeros((3, 2))),
    ):
        with pytest.raises(NotFittedError, match="Call 'fit'"):
            call(GaussianMixture(2))


@pytest.mark.parametrize(
    ("name", "value", "exc"),
    [
        ("n_components", 0, ValueError),
        ("n_components", 2.5, TypeError),
        ("covariance_type", "banded", ValueError),
        ("tol", -1.0, ValueError),
        ("tol", "small", TypeError),
        ("reg_covar", -1e-6, ValueError),
        ("max_iter", -1, ValueError),
        ("n_init", 0, ValueError),
        ("init_params", "kmedoids", ValueError),
        ("random_state", "seed", TypeError),
        ("random_state", -1, TypeError),
        ("warm_start", "yes", TypeError),
        ("verbose", -1, ValueError),
        ("chunk_size", 0, ValueError),
        ("distributed", 1, TypeError),
        ("dtype", "int64", ValueError),
        ("device", "toaster", ValueError),
        ("learning_decay", 0.5, ValueError),
        ("learning_offset", -1.0, ValueError),
    ],
)
def test_invalid_hyper_parameters_name_the_argument(name, value, exc):
    """Every entry of the validation table rejects a bad value with an error naming it."""
    x, _ = blobs(seed=17)
    with pytest.raises(exc, match=name):
        GaussianMixture(2).set_params(**{name: value}).fit(x)


def test_set_params_rejects_unknown_name():
    """set_params names an unknown parameter."""
    with pytest.raises(ValueError, match="n_clusters"):
        GaussianMixture(2).set_params(n_clusters=3)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"weights_init": np.ones(3) / 3}, r"'weights' should have the shape of \(2,\)"),
        ({"weights_init": np.array([0.7, 0.7])}, "'weights' should be normalized"),
        ({"weights_init": np.array([1.5, -0.5])}, r"'weights' should be in the range \[0, 1\]"),
        ({"weights_init": np.array([np.nan, 1.0])}, "weights must be finite"),
        ({"means_init": np.zeros((2, 2))}, r"'means' should have the shape of \(2, 3\)"),
        (
            {"precisions_init": np.ones((2, 3))},
            r"'full precision' should have the shape of \(2, 3, 3\)",
        ),
        (
            {"precisions_init": -np.stack([np.eye(3)] * 2)},
            "'full precision' should be symmetric, positive-definite",
        ),
        (
            {"precisions_init": np.array([[1.0, -2.0, 0.5], [1.0, 1.0, 1.0]]), "cov": "diag"},
            "'diag precision' should be positive",
        ),
    ],
)
def test_invalid_initial_parameters_name_the_argument(kw, match):
    """Initial weights, means and precisions are checked for shape, range and definiteness."""
    x, _ = blobs(seed=18)
    kw = dict(kw)
    cov = kw.pop("cov", "full")
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2, covariance_type=cov, **kw).fit(x)


def test_sample_rejects_non_positive_count():
    """sample names n_samples when it is below 1."""
    x, _ = blobs(seed=19)
    gm = GaussianMixture(2, random_state=0).fit(x)
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


def test_per_component_e_step_matches_sklearn():
    """With K < (D + 1)/4 the per-component E-step (x P - μ P) runs; it matches sklearn to 1e-8."""
    x, _ = blobs(seed=20, d=9)
    init = initial_params(x, 2, "full", seed=3)
    kw = dict(n_components=2, covariance_type="full", max_iter=20, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(init_params="random_from_data", **kw).fit(x)
        vb = GaussianMixture(**kw).fit(x)
        chunked = GaussianMixture(chunk_size=13, **kw).fit(x)
    assert use_blocks("full", 2, 9)  # this size takes the per-component form
    for name in ["weights_", "means_", "covariances_"]:
        assert rel_err(getattr(sk, name), getattr(vb, name)) < 1e-8, name
        assert rel_err(getattr(vb, name), getattr(chunked, name)) < 1e-10, name
    np.testing.assert_allclose(vb.lower_bounds_, sk.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(vb.score_samples(x), sk.score_samples(x), rtol=1e-10)


def test_warm_start_rejects_other_feature_count():
    """warm_start with data of another dimension names X and suggests warm_start=False."""
    x, _ = blobs(seed=21)
    gm = GaussianMixture(2, warm_start=True, random_state=0).fit(x)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.fit(x[:, :2])


def test_load_rejects_corrupt_config(tmp_path):
    """A config.json that is not JSON is reported naming `path`."""
    x, _ = blobs(seed=22)
    GaussianMixture(2, random_state=0).fit(x).save(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="path: .* is not valid JSON"):
        load(tmp_path / "m")


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 4),
    d=st.integers(1, 4),
    cov_type=st.sampled_from(COV_TYPES),
)
def test_properties_permutation_invariance_and_normalised_responsibilities(seed, k, d, cov_type):
    """For random data and inits: r_ik sum to 1; permuting the initial components permutes the
    fitted ones and leaves the ELBO trace unchanged; the trace never falls."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40 + 10 * k, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
    init = initial_params(x, k, cov_type, seed=seed)
    perm = rng.permutation(k)
    permuted = {
        "weights_init": init["weights_init"][perm],
        "means_init": init["means_init"][perm],
        "precisions_init": init["precisions_init"]
        if cov_type == "tied"
        else init["precisions_init"][perm],
    }
    kw = dict(n_components=k, covariance_type=cov_type, max_iter=8, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = GaussianMixture(**kw, **init).fit(x)
        b = GaussianMixture(**kw, **permuted).fit(x)
    np.testing.assert_allclose(a.predict_proba(x).sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.means_[perm], b.means_, rtol=1e-7, atol=1e-7)
    h = np.asarray(a.lower_bounds_)
    assert np.all(np.diff(h) >= -1e-9 * np.maximum(1.0, np.abs(h[1:])))


def test_save_keeps_array_hyper_parameters(tmp_path):
    """Priors and *_init given as arrays survive save/load: a refit of the loaded model
    equals a refit of the original (nothing the user set is silently lost)."""
    from varbayes.mixture import VariationalGaussianMixture

    x, _ = blobs(seed=16)
    d = x.shape[1]
    kw = dict(
        mean_prior=np.linspace(-2.0, 1.0, d),
        covariance_prior=np.eye(d) * 2.0 + 0.3,
        weight_concentration_prior=0.5,
        random_state=torch.Generator().manual_seed(0),
    )
    vb = VariationalGaussianMixture(3, max_iter=40, tol=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        vb.fit(x)
        vb.save(tmp_path / "v")
        back = load(tmp_path / "v")
        np.testing.assert_array_equal(np.asarray(back.mean_prior), kw["mean_prior"])
        np.testing.assert_array_equal(np.asarray(back.covariance_prior), kw["covariance_prior"])
        assert back.random_state is None
        back.set_params(random_state=5).fit(x)
        vb.set_params(random_state=5).fit(x)
    np.testing.assert_array_equal(back.means_, vb.means_)

    means = x[:2].copy()
    gm = GaussianMixture(2, means_init=means, max_iter=5, tol=0, random_state=1).fit(x)
    gm.save(tmp_path / "g")
    back = load(tmp_path / "g")
    np.testing.assert_array_equal(np.asarray(back.means_init), means)
    np.testing.assert_array_equal(back.fit(x).means_, gm.fit(x).means_)
