"""The shipped models (LinearRegression, LogisticRegression, LogJoint) are vi.Models:
vi.fit gives a named Posterior, checked against independent oracles."""

import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import torch
from torch.distributions import Gamma, Independent, Normal

from varbayes import vi
from varbayes.conjugate import BayesianLinearRegression
from varbayes.vi.models import LinearRegression, LogisticRegression, LogJoint

D64 = torch.float64


def _linear_data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=D64)
    X[:, 1] += 0.8 * X[:, 0]  # correlated columns: a non-diagonal posterior
    y = X @ torch.tensor([1.5, -1.0, 0.5], dtype=D64) + 0.7 * torch.randn(n, generator=g, dtype=D64)
    return X, y


def _logistic_data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g, dtype=D64)
    y = torch.bernoulli(torch.sigmoid(X @ torch.tensor([1.5, -1.0], dtype=D64)), generator=g)
    return X, y


def test_linear_regression_fit_is_the_exact_conjugate_posterior():
    """vi.fit(LinearRegression) is a Posterior over the named latent theta whose q is the
    conjugate posterior N(m_N, S_N) and whose ELBO is the log evidence (q is exact)."""
    X, y = _linear_data()
    model = LinearRegression(X, y, noise_scale=0.7, prior_scale=2.0)
    assert isinstance(model, vi.Model) and model.names == ("theta",) and model.dim == 3
    post = vi.fit(model)
    exact = BayesianLinearRegression(prior_precision=0.25, noise_variance=0.49)
    ref = exact.update(X, y)
    torch.testing.assert_close(post.q.mean, ref.posterior_mean, rtol=1e-6, atol=1e-8)
    cov = ref.posterior_covariance
    torch.testing.assert_close(post.q.covariance_matrix, cov, rtol=1e-5, atol=1e-9)
    log_z = float(exact.log_marginal_likelihood(X, y))
    assert abs(post.elbo - log_z) < 1e-6 + 4 * post.elbo_se
    summary = post.summary(4000)
    assert summary.names == ["theta[0]", "theta[1]", "theta[2]"]
    sd = ref.posterior_covariance.diagonal().sqrt()
    for i in range(3):
        row = summary[f"theta[{i}]"]
        assert abs(row["mean"] - float(ref.posterior_mean[i])) < 5 * float(sd[i]) / math.sqrt(4000)
        assert abs(row["sd"] / float(sd[i]) - 1) < 0.06


def test_linear_regression_predictive_on_new_inputs_matches_the_closed_form():
    """post.predictive({"X": X_new, "y": None}) draws y_new with the conjugate predictive
    mean x_newᵀ m_N and sd (x_newᵀ S_N x_new + σ²)^{1/2}."""
    X, y = _linear_data()
    post = vi.fit(LinearRegression(X, y, noise_scale=0.7, prior_scale=2.0))
    X_new = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, -1.0]], dtype=D64)
    draws = post.predictive({"X": X_new, "y": None}, n=20000, seed=3)["y"]
    assert draws.shape == (20000, 2)
    ref = BayesianLinearRegression(0.25, 0.49).update(X, y).posterior_predictive(X_new)
    se = ref.stddev / math.sqrt(20000)
    assert ((draws.mean(0) - ref.mean).abs() < 5 * se).all()
    assert ((draws.std(0) / ref.stddev - 1).abs() < 0.03).all()


def _logistic_posterior_on_a_grid(X, y, prior_scale):
    """Posterior mean and sd of θ (D = 2) by numerical integration on a 401² grid."""
    Xn, yn = X.numpy(), y.numpy()
    grid = np.linspace(-6, 6, 401)
    t0, t1 = np.meshgrid(grid, grid, indexing="ij")
    logits = t0[..., None] * Xn[:, 0] + t1[..., None] * Xn[:, 1]
    log_p = (yn * logits - np.logaddexp(0, logits)).sum(-1) - (t0**2 + t1**2) / (2 * prior_scale**2)
    w = np.exp(log_p - log_p.max())
    w /= w.sum()
    mean = np.array([(w * t0).sum(), (w * t1).sum()])
    sd = np.sqrt(np.array([(w * t0**2).sum(), (w * t1**2).sum()]) - mean**2)
    return mean, sd


def test_logistic_regression_fit_matches_numerical_integration():
    """vi.fit(LogisticRegression) (full rank): every posterior mean within 0.05 sd and
    every sd within 5% of a grid integration."""
    X, y = _logistic_data()
    with warnings.catch_warnings():  # k̂ > 0.7 here: p's tails are heavier than q's
        warnings.simplefilter("ignore", vi.PSISWarning)
        post = vi.fit(LogisticRegression(X, y, prior_scale=1.5))
    assert post.converged
    mean, sd = _logistic_posterior_on_a_grid(X, y, 1.5)
    summary = post.summary(8000)
    for i in range(2):
        row = summary[f"theta[{i}]"]
        assert abs(row["mean"] - mean[i]) < 0.05 * sd[i], (i, row, mean, sd)
        assert abs(row["sd"] / sd[i] - 1) < 0.05, (i, row, sd)


def test_logistic_regression_laplace_is_the_scipy_map_and_hessian():
    """vi.fit(LogisticRegression, "laplace") is N(θ̂, (Xᵀ diag(p(1-p)) X + I/s²)⁻¹) with θ̂
    found by scipy.optimize on a log posterior written in NumPy."""
    X, y = _logistic_data(n=60, seed=2)
    Xn, yn, s2 = X.numpy(), y.numpy(), 1.5**2

    def neg_log_post(t):
        logits = Xn @ t
        return -(yn * logits - np.logaddexp(0, logits)).sum() + t @ t / (2 * s2)

    def grad(t):
        return -Xn.T @ (yn - 1 / (1 + np.exp(-Xn @ t))) + t / s2

    opt = scipy.optimize.minimize(neg_log_post, np.zeros(2), jac=grad, method="BFGS", tol=1e-12)
    p = 1 / (1 + np.exp(-Xn @ opt.x))
    cov = np.linalg.inv(Xn.T @ (Xn * (p * (1 - p))[:, None]) + np.eye(2) / s2)
    post = vi.fit(LogisticRegression(X, y, prior_scale=1.5), "laplace")
    np.testing.assert_allclose(post.q.mean.numpy(), opt.x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(post.q.covariance_matrix.numpy(), cov, rtol=1e-6, atol=1e-10)


def test_log_joint_from_a_callable_is_the_same_model_as_linear_regression():
    """A LogJoint from a hand-written Gaussian log likelihood has the density, the minibatch
    scaling and the fit of LinearRegression on the same data."""
    X, y = _linear_data()

    def log_lik(theta, X, y):
        r = (y - theta @ X.T) / 0.7
        return -0.5 * (r * r).sum(-1) - X.shape[0] * (math.log(0.7) + 0.5 * math.log(2 * math.pi))

    prior = Independent(Normal(torch.zeros(3, dtype=D64), 2.0 * torch.ones(3, dtype=D64)), 1)
    generic = LogJoint(log_lik, prior, (X, y))
    linear = LinearRegression(X, y, noise_scale=0.7, prior_scale=2.0)
    theta = torch.randn(5, 3, dtype=D64)
    torch.testing.assert_close(generic(theta), linear(theta))
    torch.testing.assert_close(generic.log_likelihood(theta), linear.log_likelihood(theta))
    index = torch.arange(0, 30, 3)
    sub_g, sub_l = generic.subsample(index), linear.subsample(index)
    assert sub_g.scale == 3.0 and sub_g.num_data == 10
    torch.testing.assert_close(sub_g(theta), sub_l(theta))
    torch.testing.assert_close(vi.fit(generic).q.mean, vi.fit(linear).q.mean)


def test_log_joint_needs_a_prior_on_the_real_line():
    """θ of a LogJoint is unconstrained: a Gamma prior is a ValueError naming prior."""
    prior = Independent(Gamma(torch.ones(2), torch.ones(2)), 1)
    with pytest.raises(ValueError, match="prior must have real support"):
        LogJoint(lambda theta: theta.sum(-1), prior)


def test_stochastic_vi_of_a_guide_module_on_a_model_and_the_analytic_elbo_needs_a_prior():
    """vi.fit(model, guide module) runs stochastic VI on any Model (here its ELBO is within
    0.5 nats of the exact log evidence of a linear regression); the analytic-KL ELBO needs a
    LogJoint's prior, and a plain Model is a ValueError naming estimator='analytic'."""
    X, y = _linear_data()
    linear = LinearRegression(X, y, noise_scale=0.7, prior_scale=2.0)

    def same(m, data):
        theta = m.latent("theta", linear.prior)
        m.observe("y", Normal(theta @ data["X"].T, 0.7), data["y"])

    plain = vi.Model(same, {"X": X, "y": y})
    log_z = float(BayesianLinearRegression(0.25, 0.49).log_marginal_likelihood(X, y))
    guide = vi.FullRankNormal(3, dtype=D64)
    result = vi.fit(plain, guide, num_steps=800, num_particles=8, lr=0.05, rtol=0, seed=0)
    assert log_z - 0.5 < vi.elbo(plain, guide(), 4000).item() <= log_z + 0.05
    assert isinstance(result, vi.SVIResult) and result.state.step == 800
    with pytest.raises(ValueError, match="estimator='analytic' needs a log joint with a prior"):
        vi.elbo(plain, guide(), 10, estimator="analytic")
    assert vi.elbo(linear, guide(), 10, estimator="analytic").isfinite()
