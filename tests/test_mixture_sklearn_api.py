"""The mixtures as scikit-learn estimators: types in and out, random_state, protocol
(clone, pickle, Pipeline, GridSearchCV, cross_val_score), exception classes, warm start."""

import pickle
import warnings

import numpy as np
import pytest
import sklearn.exceptions
import torch
from sklearn.base import clone
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from varbayes.mixture import (
    BayesianGaussianMixture,
    ConvergenceWarning,
    GaussianMixture,
    NotFittedError,
    VariationalGaussianMixture,
)

CLASSES = [GaussianMixture, VariationalGaussianMixture]


def data(seed=0, n=150, d=2, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 0.5 + 4.0])
    return x.astype(dtype)


@pytest.mark.parametrize("cls", CLASSES)
def test_numpy_in_numpy_out_and_float32_stays_float32(cls):
    for dtype in (np.float64, np.float32):
        m = cls(2, random_state=0).fit(data(dtype=dtype))
        for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
            a = getattr(m, name)
            assert isinstance(a, np.ndarray) and a.dtype == dtype, name
        for out in (m.predict_proba(data()), m.score_samples(data()), m.sample(5)[0]):
            assert isinstance(out, np.ndarray)
    ints = cls(2, random_state=0).fit((data() * 10).astype(np.int64))
    assert ints.means_.dtype == np.float64


@pytest.mark.parametrize("cls", CLASSES)
def test_torch_in_torch_out(cls):
    x = torch.as_tensor(data(dtype=np.float32))
    m = cls(2, random_state=0).fit(x)
    assert isinstance(m.means_, torch.Tensor) and m.means_.dtype == torch.float32
    assert m.means_.device == x.device
    out = m.predict(x)
    assert isinstance(out, torch.Tensor) and out.device == x.device
    assert isinstance(m.predict(x.numpy()), np.ndarray)  # per call: the type of that input
    xs, labels = m.sample(4)
    assert isinstance(xs, torch.Tensor) and isinstance(labels, torch.Tensor)


def test_object_dtype_numbers_are_accepted_and_other_objects_refused():
    x = data()
    a = GaussianMixture(2, random_state=0).fit(x)
    b = GaussianMixture(2, random_state=0).fit(x.astype(object))
    np.testing.assert_array_equal(a.means_, b.means_)
    bad = x.astype(object)
    bad[0, 0] = {"a": 1}
    with pytest.raises(TypeError, match="X must be numeric"):
        GaussianMixture(2).fit(bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: 3,
        lambda: np.int64(3),
        lambda: np.random.RandomState(3),
        lambda: np.random.default_rng(3),
        lambda: torch.Generator().manual_seed(3),
    ],
)
def test_every_random_state_type_is_reproducible(make):
    x = data(1)
    a = GaussianMixture(2, init_params="random", random_state=make(), max_iter=3).fit(x)
    b = GaussianMixture(2, init_params="random", random_state=make(), max_iter=3).fit(x)
    np.testing.assert_array_equal(a.means_, b.means_)


def test_random_state_instance_advances_like_sklearn():
    """A RandomState instance is consumed: two fits with the same instance differ."""
    rs = np.random.RandomState(0)
    m = GaussianMixture(2, init_params="random", random_state=rs, max_iter=2, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = m.fit(data()).means_.copy()
        second = m.fit(data()).means_
    assert not np.array_equal(first, second)


def blobs(seed=0, k=5, n=120, d=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    return np.concatenate([c + rng.normal(size=(n, d)) for c in centres])


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("init_params", ["kmeans", "random"])
@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_the_same_random_state_gives_sklearns_fit(seed, init_params, cov):
    """An int random_state draws scikit-learn's numbers in scikit-learn's order, so the
    initial clusters, hence the whole EM path, are scikit-learn's (components in the
    same order); sample() then returns scikit-learn's draws."""
    x = blobs(seed)
    kw = dict(covariance_type=cov, init_params=init_params, random_state=seed, max_iter=500)
    sk = SkGaussianMixture(5, **kw).fit(x)
    vb = GaussianMixture(5, **kw).fit(x)
    assert vb.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(vb.means_, sk.means_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(vb.weights_, sk.weights_, rtol=0, atol=1e-11)
    xs_vb, ys_vb = vb.sample(50)
    xs_sk, ys_sk = sk.sample(50)
    np.testing.assert_array_equal(ys_vb, ys_sk)
    np.testing.assert_allclose(xs_vb, xs_sk, rtol=0, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("k", [2, 6, 17])
def test_kmeans_plusplus_chooses_sklearns_centres(seed, k):
    """Greedy k-means++ (2 + ⌊log K⌋ candidates a centre) from a RandomState: the rows
    that sklearn.cluster.kmeans_plusplus picks, in its order."""
    from sklearn.cluster import kmeans_plusplus as sk_kpp

    from varbayes.mixture._init import Draws, kmeans_plusplus

    x = blobs(seed, k=8, n=60)
    _, idx = sk_kpp(x, k, random_state=np.random.RandomState(seed))
    xt = torch.as_tensor(x)
    got = kmeans_plusplus(xt, k, Draws(np.random.RandomState(seed)), chunk=37)
    np.testing.assert_array_equal(got.numpy(), x[idx])


def test_a_torch_generator_draws_its_own_numbers():
    """A torch.Generator random_state is used as given (reproducible, not sklearn's)."""
    x = blobs(2)
    fits = [
        GaussianMixture(5, random_state=torch.Generator().manual_seed(2)).fit(x).means_
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*fits)


def test_exceptions_are_sklearns():
    assert issubclass(NotFittedError, sklearn.exceptions.NotFittedError)
    assert issubclass(ConvergenceWarning, sklearn.exceptions.ConvergenceWarning)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        GaussianMixture(2).predict(data())
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="did not converge"):
        GaussianMixture(2, max_iter=1, random_state=0).fit(data())
    assert pickle.loads(pickle.dumps(NotFittedError("x"))).args == ("x",)


@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
def test_clone_pickle_pipeline_grid_search_cross_val(cls):
    x = data(2)
    m = cls(2, random_state=0).fit(x)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(back.score_samples(x), m.score_samples(x))
    c = clone(m)
    assert c.get_params() == cls(2, random_state=0).get_params() and not hasattr(c, "means_")
    pipe = make_pipeline(StandardScaler(), cls(2, random_state=0)).fit(x)
    assert pipe.predict(x).shape == (len(x),)
    scores = cross_val_score(cls(2, random_state=0), x, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    grid = GridSearchCV(cls(random_state=0), {"n_components": [1, 2, 3]}, cv=3).fit(x)
    assert grid.best_params_["n_components"] >= 2


def test_warm_start_converges_like_sklearn():
    """warm_start with max_iter=1 from the same θ_0: both libraries converge after the same
    number of fits, with the same lower_bound_."""
    x = data(3)
    counts, bounds = [], []
    for cls in (SkGaussianMixture, GaussianMixture):
        kw = dict(
            init_params="random_from_data",
            weights_init=[0.5, 0.5],
            means_init=x[[0, -1]],
            precisions_init=np.stack([np.eye(2)] * 2),
            max_iter=1,
        )
        m = cls(2, warm_start=True, random_state=0, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(1, 200):  # noqa: B007
                if m.fit(x).converged_:
                    break
        counts.append(i)
        bounds.append(m.lower_bound_)
    assert counts[1] == counts[0] < 199
    assert bounds[1] == pytest.approx(bounds[0], rel=1e-10)


def test_max_iter_zero_returns_the_initialisation():
    x = data(4)
    means = x[[0, -1]]
    m = GaussianMixture(2, means_init=means, max_iter=0).fit(x)
    np.testing.assert_allclose(m.means_, means, rtol=1e-14)
    assert m.n_iter_ == 0 and not m.converged_ and m.lower_bounds_ == []


def test_prior_attributes():
    x = data(5)
    vb = VariationalGaussianMixture(3, random_state=0).fit(x)
    assert vb.weight_concentration_prior_ == pytest.approx(1 / 3)
    assert vb.mean_precision_prior_ == 1.0 and vb.degrees_of_freedom_prior_ == 2.0
    np.testing.assert_allclose(vb.mean_prior_, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(vb.covariance_prior_, np.cov(x.T), rtol=1e-12)


def test_unusable_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="device='cuda' is not usable"):
        GaussianMixture(2, device="cuda").fit(data())


def test_partial_fit_refuses_n_samples_below_the_batch():
    x = data(6)
    vb = VariationalGaussianMixture(2, random_state=0)
    with pytest.raises(ValueError, match="n_samples .* at least the batch size 300"):
        vb.partial_fit(x, n_samples=10)
    assert not hasattr(vb, "means_")
    vb.partial_fit(x[:100]).partial_fit(x[100:200])  # N: the rows seen so far
    assert vb.n_iter_ == 2
