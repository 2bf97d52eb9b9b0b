"""Numerically hard data: large offsets, constant features, duplicated rows, far outliers.
Oracles: scikit-learn on the same (or the translated) data, and translation invariance."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.mixture import BayesianGaussianMixture as SkBayesianGaussianMixture
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from varbayes.mixture import DegenerateMixtureWarning, GaussianMixture, VariationalGaussianMixture


def two_blobs(seed=0, n=200, d=2):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 6.0])


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_data_offset_by_1e9_fits_like_centred_data(cov_type):
    """Blobs at +1e9: the log-likelihood per datum is translation invariant, so it must
    equal scikit-learn's fit of the centred blobs (sklearn itself fails on the shifted
    data); both components are found and the fit converges."""
    x = two_blobs()
    sk = SkGaussianMixture(2, covariance_type=cov_type, random_state=0).fit(x)
    vb = GaussianMixture(2, covariance_type=cov_type, random_state=0).fit(x + 1e9)
    assert vb.converged_
    assert vb.score(x + 1e9) == pytest.approx(sk.score(x), abs=1e-6)
    np.testing.assert_allclose(np.sort(vb.means_[:, 0] - 1e9), np.sort(sk.means_[:, 0]), atol=1e-5)


@pytest.mark.parametrize("cov_type", ["full", "diag"])
def test_variational_mixture_fits_a_constant_feature(cov_type):
    """A constant column (where scikit-learn fits): finite ELBO trace, converged, the
    column's mean recovered exactly, clusters found as by scikit-learn."""
    x = np.column_stack([two_blobs(1)[:, 0], np.full(400, 3.0)])
    kw = dict(n_components=2, covariance_type=cov_type, random_state=0, max_iter=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vb = VariationalGaussianMixture(**kw).fit(x)
    sk = SkBayesianGaussianMixture(**kw).fit(x)
    assert vb.converged_ and np.all(np.isfinite(vb.lower_bounds_))
    np.testing.assert_allclose(vb.means_[:, 1], 3.0, rtol=1e-12)
    np.testing.assert_allclose(np.sort(vb.means_[:, 0]), np.sort(sk.means_[:, 0]), atol=1e-2)


def test_elbo_never_falls_on_99_identical_rows_plus_one():
    """99 copies of one row and one other row, reg_covar=0: CAVI's ELBO never decreases
    (the monitor raises on a fall: RuntimeWarnings are errors in this suite)."""
    x = np.concatenate([np.ones((99, 2)), [[5.0, 5.0]]])
    vb = VariationalGaussianMixture(2, covariance_type="diag", reg_covar=0.0, random_state=0)
    vb.fit(x)
    h = np.asarray(vb.lower_bounds_)
    assert vb.converged_ and np.all(np.diff(h) >= -1e-10 * np.abs(h[1:]))


def test_identical_rows_without_reg_covar_raise_sklearns_error():
    """EM with reg_covar=0 on collapsed rows: scikit-learn's ValueError, as scikit-learn."""
    x = np.concatenate([np.ones((99, 2)), [[5.0, 5.0]]])
    for cls in (SkGaussianMixture, GaussianMixture):
        with pytest.raises(ValueError, match="ill-defined empirical covariance"):
            cls(2, reg_covar=0.0, random_state=0).fit(x)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_one_outlier_at_1e8_converges_as_sklearn(k):
    """300 standard normal points and one at 1e8: CAVI converges (as scikit-learn does,
    within 2 iterations of its count) and the ELBO never falls by more than rounding."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(300, 1)), [[1e8]]])
    sk = SkBayesianGaussianMixture(n_components=k, random_state=0, max_iter=300).fit(x)
    vb = VariationalGaussianMixture(k, random_state=0, max_iter=300).fit(x)
    assert vb.converged_ and sk.converged_
    assert abs(vb.n_iter_ - sk.n_iter_) <= 2
    h = np.asarray(vb.lower_bounds_)
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_e_step_softmax_matches_torchs(dtype):
    """The E-step's softmax (ρ - max ρ clamped before exp, for speed) agrees with torch's
    softmax and logsumexp, far tails included; the terms below the clamp are at most e^f."""
    from varbayes.mixture._estep import _normalise, log_floor

    gen = torch.Generator().manual_seed(0)
    rho = torch.randn(5, 400, generator=gen, dtype=torch.float64) * 20
    rho[1, :100] -= 1e4  # far below the clamp in either dtype
    rho[2, 100:200] -= 200  # below float32's clamp only
    rho = rho.to(dtype)
    r = rho.clone()
    total = _normalise(r)
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    torch.testing.assert_close(r, torch.softmax(rho, 0), rtol=4 * eps, atol=1e4 * tiny)
    lse = torch.logsumexp(rho, 0).sum()
    torch.testing.assert_close(total, lse, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0)
    floor = math.exp(log_floor(dtype)) * (1 + 1e-5)
    assert bool((r[1, :100] <= floor).all())
    assert bool((r[2, 100:200] <= floor).all()) == (dtype == torch.float32)
    assert bool((r[2, 100:200] > floor).all()) == (dtype == torch.float64)
    assert float((r.sum(0) - 1).abs().max()) < 10 * eps


def test_a_float32_component_far_from_the_data_is_empty():
    x = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    means = np.vstack([x[:2], [[1e3, 1e3, 1e3]]])
    with pytest.warns(DegenerateMixtureWarning, match="received no data"):
        gm = GaussianMixture(3, means_init=means, max_iter=5, tol=0).fit(x)
    assert gm.means_.dtype == np.float32 and np.all(np.isfinite(gm.means_))
