"""Bayesian linear regression against direct linear algebra, scipy.stats and scikit-learn."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.linear_model import BayesianRidge, Ridge

from varbayes.conjugate import BayesianLinearRegression


def _data(n=40, d=4, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    y = X @ w + noise * rng.normal(size=n)
    return X, y


def test_known_noise_posterior_equals_direct_solve():
    """m_n and Σ_n equal numpy's solve/inv of (αI + XᵀX/σ²) with a nonzero prior mean."""
    X, y = _data()
    alpha, s2, m0 = np.array([0.5, 1.0, 2.0, 4.0]), 0.3, np.array([0.1, -0.2, 0.3, 0.0])
    post = BayesianLinearRegression(alpha, s2, prior_mean=m0).update(X, y)
    prec = np.diag(alpha) + X.T @ X / s2
    cov = np.linalg.inv(prec)
    mean = cov @ (alpha * m0 + X.T @ y / s2)
    np.testing.assert_allclose(post.posterior_mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(post.posterior_covariance.numpy(), cov, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(post.posterior.covariance_matrix.numpy(), cov, rtol=1e-10)


@pytest.mark.parametrize("noise_variance", [0.3, None])
def test_map_equals_sklearn_ridge_with_lambda_noise_times_precision(noise_variance):
    """θ_MP = Ridge(alpha = σ²·α) (known noise) or Ridge(alpha = α) (NIG prior scaled by σ²)."""
    X, y = _data()
    alpha = 2.5
    model = BayesianLinearRegression(alpha, noise_variance).update(X, y)
    lam = alpha * noise_variance if noise_variance is not None else alpha
    assert float(model.ridge_penalty) == pytest.approx(lam)
    ridge = Ridge(alpha=lam, fit_intercept=False, solver="cholesky", tol=1e-14).fit(X, y)
    direct = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ y)
    np.testing.assert_allclose(model.map().numpy(), ridge.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.map().numpy(), direct, rtol=1e-12)


def test_mle_is_least_squares():
    """mle() equals numpy.linalg.lstsq."""
    X, y = _data()
    model = BayesianLinearRegression(1.0, 1.0).update(X, y)
    np.testing.assert_allclose(
        model.mle().numpy(), np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-11
    )
    with pytest.raises(ValueError, match="XᵀX is singular"):
        BayesianLinearRegression(1.0, 1.0).update(X[:2], y[:2]).mle()


def test_known_noise_evidence_equals_scipy_multivariate_normal():
    """log p(y|X) = log N(y; X m₀, σ²I + X A₀⁻¹ Xᵀ) (scipy.stats.multivariate_normal)."""
    X, y = _data(n=25)
    alpha, s2, m0 = 1.7, 0.4, 0.2
    model = BayesianLinearRegression(alpha, s2, prior_mean=m0)
    cov = s2 * np.eye(len(y)) + X @ X.T / alpha
    expected = stats.multivariate_normal.logpdf(y, X @ np.full(4, m0), cov)
    assert float(model.log_marginal_likelihood(X, y)) == pytest.approx(expected, abs=1e-9)


def test_unknown_noise_evidence_equals_scipy_multivariate_t():
    """NIG evidence: y ~ multivariate t(2a₀, X m₀, (b₀/a₀)(I + X A₀⁻¹ Xᵀ)) (scipy)."""
    X, y = _data(n=25)
    alpha, a0, b0 = 0.8, 2.5, 1.5
    model = BayesianLinearRegression(alpha, None, noise_shape=a0, noise_rate=b0)
    shape = b0 / a0 * (np.eye(len(y)) + X @ X.T / alpha)
    expected = stats.multivariate_t.logpdf(y, np.zeros(len(y)), shape, df=2 * a0)
    assert float(model.log_marginal_likelihood(X, y)) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("noise_variance", [0.3, None])
def test_predictive_density_is_the_evidence_ratio(noise_variance):
    """p(y*|x*, data) = p(y, y*) / p(y): the predictive agrees with two evidence evaluations."""
    X, y = _data(n=30)
    model = BayesianLinearRegression(1.3, noise_variance)
    x_new, y_new = np.array([[0.3, -1.0, 2.0, 0.5]]), np.array([1.2])
    post = model.update(X, y)
    got = post.posterior_predictive(x_new).log_prob(torch.tensor(y_new)).sum()
    ratio = model.log_marginal_likelihood(np.vstack([X, x_new]), np.append(y, y_new))
    ratio = ratio - model.log_marginal_likelihood(X, y)
    assert float(got) == pytest.approx(float(ratio), abs=1e-9)


def test_known_noise_predictive_matches_direct_formula():
    """Predictive mean x m_n and variance σ² + x Σ_n xᵀ (numpy)."""
    X, y = _data()
    post = BayesianLinearRegression(2.0, 0.25).update(X, y)
    Xs = np.random.default_rng(1).normal(size=(5, 4))
    cov = np.linalg.inv(2.0 * np.eye(4) + X.T @ X / 0.25)
    mean, std = post.predict(Xs, return_std=True)
    np.testing.assert_allclose(mean.numpy(), Xs @ post.posterior_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(std.numpy() ** 2, 0.25 + np.einsum("ij,jk,ik->i", Xs, cov, Xs))


def test_nig_posterior_matches_prior_times_likelihood():
    """NIG posterior log density at a point = log prior + log lik − log evidence (scipy)."""
    X, y = _data(n=15, d=2)
    a0, b0, alpha = 2.0, 1.0, 0.7
    model = BayesianLinearRegression(alpha, None, noise_shape=a0, noise_rate=b0)
    post = model.update(X, y)
    w, s2 = np.array([0.4, -0.3]), 0.6
    log_prior = stats.invgamma.logpdf(s2, a0, scale=b0) + stats.multivariate_normal.logpdf(
        w, np.zeros(2), s2 / alpha * np.eye(2)
    )
    log_lik = stats.norm.logpdf(y, X @ w, np.sqrt(s2)).sum()
    expected = log_prior + log_lik - float(model.log_marginal_likelihood(X, y))
    got = float(post.posterior.log_prob(torch.tensor(np.append(w, s2))))
    assert got == pytest.approx(expected, abs=1e-9)
    # marginal moments: E[σ²] = b_n/(a_n - 1), Cov[w] from posterior samples (law of large numbers)
    draws = post.posterior.sample((200_000,))
    np.testing.assert_allclose(
        draws.mean(0).numpy(),
        np.append(post.posterior_mean.numpy(), float(post.posterior.marginal_noise().mean)),
        atol=0.01,
    )


@settings(max_examples=20, deadline=None)
@given(split=st.integers(1, 39), noise=st.sampled_from([0.3, None]))
def test_sequential_updates_equal_batch(split, noise):
    """Updating on rows [:k] then [k:] equals one update on all rows."""
    X, y = _data()
    a = (
        BayesianLinearRegression(1.0, noise)
        .update(X[:split], y[:split])
        .update(X[split:], y[split:])
    )
    b = BayesianLinearRegression(1.0, noise).update(X, y)
    torch.testing.assert_close(a.posterior_mean, b.posterior_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        a.posterior_covariance, b.posterior_covariance, rtol=1e-10, atol=1e-12
    )


def test_fit_evidence_matches_sklearn_bayesian_ridge():
    """Type-II ML of (α, σ²) equals sklearn BayesianRidge with flat hyper-priors, and its score."""
    X, y = _data(n=80, d=5, noise=0.7, seed=3)
    ours = BayesianLinearRegression.fit_evidence(X, y)
    ref = BayesianRidge(
        fit_intercept=False,
        alpha_1=0,
        alpha_2=0,
        lambda_1=0,
        lambda_2=0,
        tol=1e-14,
        max_iter=2000,
        compute_score=True,
    ).fit(X, y)
    assert float(ours.prior_precision) == pytest.approx(ref.lambda_, rel=1e-6)
    assert float(ours.noise_variance) == pytest.approx(1 / ref.alpha_, rel=1e-6)
    np.testing.assert_allclose(ours.posterior_mean.numpy(), ref.coef_, rtol=1e-6)
    prior = BayesianLinearRegression(float(ours.prior_precision), float(ours.noise_variance))
    assert float(prior.log_marginal_likelihood(X, y)) == pytest.approx(ref.scores_[-1], abs=1e-6)


def test_evidence_picks_the_prior_precision():
    """On a grid of α the evidence peaks next to fit_evidence's α, and both beat far-off α."""
    X, y = _data(n=200, d=6, noise=0.5, seed=5)
    best = BayesianLinearRegression.fit_evidence(X, y)
    s2, a_star = float(best.noise_variance), float(best.prior_precision)
    grid = a_star * np.logspace(-2, 2, 41)
    ev = [float(BayesianLinearRegression(a, s2).log_marginal_likelihood(X, y)) for a in grid]
    assert abs(int(np.argmax(ev)) - 20) <= 1
    assert ev[20] > ev[0] + 1 and ev[20] > ev[-1] + 1


BAD = [
    (lambda m: m.update(np.ones(5), np.ones(5)), "X must be a 2-D"),
    (lambda m: m.update(np.ones((5, 2)), np.ones((5, 1))), "y must be a 1-D"),
    (lambda m: m.update(np.ones((5, 2)), np.ones(4)), "same number of rows"),
    (lambda m: m.update(np.ones((5, 3)), np.ones(5)), "X must have D = 2 columns"),
    (lambda m: m.update(np.full((5, 2), np.nan), np.ones(5)), "X must be finite"),
    (lambda m: m.update(np.ones((5, 2)), np.array([1, 2, np.inf, 3, 4])), "y must be finite"),
    (lambda m: m.update(np.ones((0, 2)), np.ones(0)), "X must not be empty"),
    (lambda m: m.posterior_predictive(np.ones((3, 5))), r"X must have shape \(N, 2\)"),
]


@pytest.mark.parametrize("call, message", BAD)
def test_bad_input_raises_naming_the_argument(call, message):
    """Shape mismatches and non-finite values raise ValueError naming X or y; model unchanged."""
    model = BayesianLinearRegression(1.0, 1.0).update(np.eye(2), np.ones(2))
    before = model.posterior_mean.clone()
    with pytest.raises(ValueError, match=message):
        call(model)
    assert torch.equal(model.posterior_mean, before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prior_precision": 0.0}, "prior_precision must be > 0"),
        ({"prior_precision": [1.0, -1.0]}, "prior_precision must be > 0"),
        ({"noise_variance": -1.0}, "noise_variance must be > 0"),
        ({"noise_shape": 0.0}, "noise_shape must be > 0"),
        ({"prior_precision": [1.0, 1.0], "prior_mean": [0, 0, 0]}, "disagree on D"),
        ({"prior_precision": np.ones((2, 2))}, "prior_precision must be a scalar or a 1-D"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    """Non-positive precisions/variances and inconsistent sizes raise ValueError naming them."""
    with pytest.raises(ValueError, match=message):
        BayesianLinearRegression(**kwargs)


def _xy(n=20, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:d] + 0.1 * torch.randn(
        n, generator=g, dtype=torch.float64
    )


def test_fit_evidence_without_a_finite_optimum_names_y():
    """y = 0 (α → ∞) and an exact fit (σ² → 0) have no finite evidence maximiser: a
    ValueError naming y says which, instead of blaming prior_precision."""
    X, _ = _xy()
    with pytest.raises(ValueError, match=r"^y: .*prior precision α → ∞"):
        BayesianLinearRegression.fit_evidence(X, torch.zeros(20, dtype=torch.float64))
    X1 = torch.cat([torch.ones(20, 1, dtype=torch.float64), X], 1)
    with pytest.raises(ValueError, match=r"^y: X w reproduces y exactly"):
        BayesianLinearRegression.fit_evidence(X1, torch.full((20,), 3.0, dtype=torch.float64))


@pytest.mark.parametrize("noise", [None, 0.5])
@pytest.mark.parametrize("scale", [1e160, 1e300])
def test_update_with_overflowing_products_names_x_and_leaves_model_unchanged(noise, scale):
    """XᵀX beyond float64 is a ValueError naming X (not a raw linalg error); the model is
    unchanged and still usable."""
    X, y = _xy()
    prior = BayesianLinearRegression(1.0, noise).update(X, y)
    before = prior.posterior_mean.clone()
    with pytest.raises(ValueError, match=r"^X: the sums of squares and products overflow"):
        prior.update(scale * X, y)
    assert torch.equal(prior.posterior_mean, before)
