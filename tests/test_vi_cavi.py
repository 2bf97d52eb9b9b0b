"""CAVI: monotone closed-form ELBO, bounded by the exact log evidence, known fixed points."""

import math

import pytest
import torch
from scipy import optimize, stats
from torch.distributions import Gamma, MultivariateNormal

from varbayes.vi.cavi import cavi_gaussian, cavi_linear_regression, cavi_normal

D64 = torch.float64


def _normal_gamma_log_evidence(x, mu0, lam0, a0, b0):
    """log p(x) for x_n ~ N(μ, 1/τ), μ|τ ~ N(μ0, 1/(λ0τ)), τ ~ Gamma(a0, b0): marginally
    x ~ multivariate t with 2a0 dof, location μ0·1, shape (b0/a0)(I + 11ᵀ/λ0) (scipy)."""
    n = len(x)
    shape = (b0 / a0) * (torch.eye(n, dtype=D64) + torch.ones(n, n, dtype=D64) / lam0)
    return stats.multivariate_t(loc=[mu0] * n, shape=shape.numpy(), df=2 * a0).logpdf(x.numpy())


def _nig_log_evidence(X, y, m0, L0, a0, b0):
    """log p(y) for y = Xw + ε, w|τ ~ N(m0, (τΛ0)⁻¹), τ ~ Gamma(a0, b0): multivariate t (scipy)."""
    n = X.shape[0]
    shape = (b0 / a0) * (torch.eye(n, dtype=D64) + X @ torch.linalg.solve(L0, X.T))
    return stats.multivariate_t(loc=(X @ m0).numpy(), shape=shape.numpy(), df=2 * a0).logpdf(
        y.numpy()
    )


@pytest.mark.parametrize("init_tau", [1e-4, 1e4])
def test_cavi_normal_elbo_never_decreases_and_stays_below_log_evidence(init_tau):
    """From a far start (E[τ] off by 10⁴) the ELBO rises every iteration and ends below log p(x)."""
    x = 3.0 + 2.0 * torch.randn(25, generator=torch.Generator().manual_seed(0), dtype=D64)
    res = cavi_normal(x, mu0=0.0, lambda0=0.5, a0=2.0, b0=1.0, init_tau=init_tau)
    h = res.history
    assert all(b >= a - 1e-12 * abs(a) for a, b in zip(h, h[1:], strict=False))
    assert h[-1] - h[0] > 1.0  # it did climb from far away
    assert res.converged
    log_z = _normal_gamma_log_evidence(x, 0.0, 0.5, 2.0, 1.0)
    assert res.elbo <= log_z
    assert log_z - res.elbo < 0.5  # but mean-field is a good approximation here


def test_cavi_normal_fixed_point_matches_bishop():
    """μ_N = (λ0μ0 + N x̄)/(λ0 + N), a_N = a0 + (N+1)/2, and E[τ] solves the scalar fixed point."""
    x = torch.tensor([1.2, 0.3, 2.5, 1.9, 0.7, 1.1], dtype=D64)
    mu0, lam0, a0, b0 = 0.5, 2.0, 1.5, 0.8
    res = cavi_normal(x, mu0=mu0, lambda0=lam0, a0=a0, b0=b0, tol=1e-14)
    n, xbar = len(x), float(x.mean())
    mu_n = (lam0 * mu0 + n * xbar) / (lam0 + n)
    a_n = a0 + (n + 1) / 2

    def gap(e_tau):  # E[τ] = a_N / b_N(E[τ]) with b_N from Bishop eq. 10.30
        var_mu = 1 / ((lam0 + n) * e_tau)
        b_n = b0 + 0.5 * (
            float(((x - mu_n) ** 2).sum()) + n * var_mu + lam0 * ((mu_n - mu0) ** 2 + var_mu)
        )
        return a_n / b_n - e_tau

    e_tau = optimize.brentq(gap, 1e-6, 1e6, xtol=1e-14)
    q_mu, q_tau = res.factors["mu"], res.factors["tau"]
    assert float(q_mu.mean) == pytest.approx(mu_n, rel=1e-12)
    assert float(q_tau.concentration) == pytest.approx(a_n)
    # the ELBO is flat at its maximum: a change below tol=1e-14 leaves a ~1e-7 parameter error
    assert float(q_tau.mean) == pytest.approx(e_tau, rel=1e-6)
    assert float(q_mu.variance) == pytest.approx(1 / ((lam0 + n) * e_tau), rel=1e-6)


def _regression(n=40, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=D64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=D64) + 0.7 * torch.randn(n, generator=g, dtype=D64)
    return X, y


def test_cavi_regression_elbo_monotone_and_below_exact_log_evidence():
    """Linear regression, unknown noise: ELBO rises every iteration, ends below the NIG evidence."""
    X, y = _regression()
    m0 = torch.tensor([0.5, 0.0, -0.5], dtype=D64)
    L0 = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 0.5]], dtype=D64)
    res = cavi_linear_regression(
        X, y, prior_mean=m0, prior_precision=L0, a0=2.0, b0=3.0, init_tau=1e3
    )
    h = res.history
    assert len(h) > 3
    assert all(b >= a - 1e-12 * abs(a) for a, b in zip(h, h[1:], strict=False))
    log_z = _nig_log_evidence(X, y, m0, L0, 2.0, 3.0)
    assert res.elbo <= log_z
    assert log_z - res.elbo < 1.0


def test_cavi_regression_closed_form_elbo_equals_monte_carlo():
    """The closed-form ELBO equals E_q[log p(y, w, τ) - log q(w) - log q(τ)] by 200k draws."""
    X, y = _regression(n=15)
    with pytest.warns(UserWarning, match="did not converge in 3"):  # stopped early on purpose
        res = cavi_linear_regression(X, y, a0=2.0, b0=1.0, max_iter=3, tol=0.0)
    q_w, q_tau = res.factors["w"], res.factors["tau"]
    torch.manual_seed(0)
    w = q_w.sample((200_000,))
    tau = q_tau.sample((200_000,))
    n, d = X.shape
    log_lik = (
        -0.5 * n * math.log(2 * math.pi)
        + 0.5 * n * tau.log()
        - 0.5 * tau * ((y - w @ X.T) ** 2).sum(-1)
    )
    log_prior_w = (
        MultivariateNormal(torch.zeros(d, dtype=D64), torch.eye(d, dtype=D64)).log_prob(
            w * tau.sqrt()[:, None]
        )
        + 0.5 * d * tau.log()
    )
    log_prior_tau = Gamma(torch.tensor(2.0, dtype=D64), torch.tensor(1.0, dtype=D64)).log_prob(tau)
    terms = log_lik + log_prior_w + log_prior_tau - q_w.log_prob(w) - q_tau.log_prob(tau)
    se = float(terms.std()) / math.sqrt(terms.numel())
    assert abs(float(terms.mean()) - res.elbo) < 4 * se


def test_cavi_gaussian_gives_exact_mean_and_inverse_diagonal_precision():
    """Mean-field on N(m, Λ⁻¹): mean m, variances 1/Λ_dd < (Λ⁻¹)_dd; ELBO = -KL rises to it."""
    L = torch.tensor([[2.0, 1.2, 0.0], [1.2, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=D64)
    m = torch.tensor([1.0, -1.0, 2.0], dtype=D64)
    res = cavi_gaussian(L, m, init=torch.tensor([10.0, 10.0, -10.0], dtype=D64))
    q = res.factors["theta"]
    # the ELBO is quadratic at its maximum: a change below tol=1e-12 leaves a mean error ~1e-6
    torch.testing.assert_close(q.mean, m, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.variance, 1 / L.diagonal())
    assert (q.variance < torch.linalg.inv(L).diagonal()).all()
    h = res.history
    assert (
        all(b >= a - 1e-12 for a, b in zip(h, h[1:], strict=False)) and h[0] < -10 and res.elbo < 0
    )


# --------------------------------------------------------------------------- bad input
def test_cavi_arguments_are_validated():
    """Each bad argument is named in the error."""
    X, y = _regression()
    with pytest.raises(ValueError, match="X must be a 2-D"):
        cavi_linear_regression(y, y)
    with pytest.raises(ValueError, match="y must have shape"):
        cavi_linear_regression(X, y[:-1])
    with pytest.raises(ValueError, match="X must be finite"):
        cavi_linear_regression(X * math.nan, y)
    with pytest.raises(ValueError, match="prior_mean"):
        cavi_linear_regression(X, y, prior_mean=[0.0, 0.0])
    with pytest.raises(ValueError, match="prior_precision must have shape"):
        cavi_linear_regression(X, y, prior_precision=torch.eye(2))
    with pytest.raises(ValueError, match="prior_precision must be symmetric positive definite"):
        cavi_linear_regression(X, y, prior_precision=-torch.eye(3))
    with pytest.raises(ValueError, match="a0"):
        cavi_linear_regression(X, y, a0=0.0)
    with pytest.raises(TypeError, match="b0"):
        cavi_linear_regression(X, y, b0="1")
    with pytest.raises(ValueError, match="init_tau"):
        cavi_linear_regression(X, y, init_tau=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        cavi_linear_regression(X, y, max_iter=0)
    with pytest.raises(ValueError, match="x must be a non-empty"):
        cavi_normal(torch.zeros(0))
    with pytest.raises(ValueError, match="lambda0"):
        cavi_normal(y, lambda0=0.0)
    L = torch.eye(2, dtype=D64)
    with pytest.raises(ValueError, match="precision must be a square"):
        cavi_gaussian(torch.ones(2, 3), [0.0, 0.0])
    with pytest.raises(ValueError, match="precision must be symmetric"):
        cavi_gaussian(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), [0.0, 0.0])
    with pytest.raises(ValueError, match="exactly one of mean and shift"):
        cavi_gaussian(L)
    with pytest.raises(ValueError, match="mean must have shape"):
        cavi_gaussian(L, [0.0])
    with pytest.raises(ValueError, match="shift must have shape"):
        cavi_gaussian(L, shift=[0.0])
    with pytest.raises(ValueError, match="init must have shape"):
        cavi_gaussian(L, [0.0, 0.0], init=[1.0])
