"""varbayes.distributions against scipy.stats and Monte Carlo moments."""

import numpy as np
import pytest
import torch
from scipy import stats

from varbayes.distributions import BetaBinomial, DirichletMultinomial, NormalGamma


@pytest.mark.parametrize("a, b, n", [(0.5, 0.7, 1), (2.0, 3.0, 10), (40.0, 1.5, 25)])
def test_beta_binomial_log_prob_and_moments_match_scipy(a, b, n):
    """log_prob over the whole support, mean and variance equal scipy.stats.betabinom."""
    d = BetaBinomial(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), n)
    k = torch.arange(n + 1, dtype=torch.float64)
    np.testing.assert_allclose(
        d.log_prob(k).numpy(), stats.betabinom.logpmf(k.numpy(), n, a, b), rtol=1e-12, atol=1e-12
    )
    assert float(d.mean) == pytest.approx(stats.betabinom.mean(n, a, b), rel=1e-12)
    assert float(d.variance) == pytest.approx(stats.betabinom.var(n, a, b), rel=1e-12)


def test_beta_binomial_samples_have_the_right_mean():
    """The mean of 200,000 draws is within 5 standard errors of the exact mean."""
    torch.manual_seed(0)
    d = BetaBinomial(torch.tensor(2.0), torch.tensor(5.0), 12)
    x = d.sample((200_000,))
    se = float(d.variance.sqrt()) / np.sqrt(x.numel())
    assert abs(float(x.mean()) - float(d.mean)) < 5 * se
    assert float(x.min()) >= 0 and float(x.max()) <= 12


def test_beta_binomial_rejects_values_outside_support():
    """With validate_args, k > n is rejected by torch's support check."""
    d = BetaBinomial(torch.tensor(1.0), torch.tensor(1.0), 3, validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor(4.0))
    with pytest.raises(ValueError, match="concentration1"):
        BetaBinomial(torch.tensor(-1.0), torch.tensor(1.0), 3, validate_args=True)


def test_dirichlet_multinomial_matches_scipy():
    """log_prob equals scipy.stats.dirichlet_multinomial on several count vectors."""
    alpha = np.array([0.5, 2.0, 3.5])
    d = DirichletMultinomial(torch.tensor(alpha), 6)
    for x in ([6, 0, 0], [1, 2, 3], [0, 4, 2]):
        got = float(d.log_prob(torch.tensor(x, dtype=torch.float64)))
        assert got == pytest.approx(stats.dirichlet_multinomial.logpmf(x, alpha, 6), abs=1e-12)
    np.testing.assert_allclose(d.mean.numpy(), 6 * alpha / alpha.sum())
    draws = d.sample((50_000,))
    assert torch.all(draws.sum(-1) == 6)
    np.testing.assert_allclose(draws.mean(0).numpy(), d.mean.numpy(), atol=0.06)


def test_normal_gamma_log_prob_and_sampling():
    """log p(μ, τ) = Gamma(τ) + N(μ | m, 1/(κτ)) (scipy); sample means match (α/β, m)."""
    d = NormalGamma(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), torch.tensor(1.5))
    v = torch.tensor([0.4, 1.7], dtype=torch.float32)
    expected = stats.gamma.logpdf(1.7, 3.0, scale=1 / 1.5) + stats.norm.logpdf(
        0.4, 1.0, 1 / np.sqrt(2.0 * 1.7)
    )
    assert float(d.log_prob(v)) == pytest.approx(expected, rel=1e-5)
    assert float(d.log_prob(torch.tensor([0.4, -1.0]))) == -np.inf
    torch.manual_seed(0)
    s = d.rsample((100_000,))
    np.testing.assert_allclose(s.mean(0).numpy(), [1.0, 2.0], atol=0.02)
