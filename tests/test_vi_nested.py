"""The "nested" family (an embedded Laplace approximation): Newton's conditional modes and
curvatures against closed forms, its log density against its own draws, its posterior
against quadrature, and the models it refuses."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import distributions as dist

from varbayes import vi
from varbayes.vi.model import no_validation
from varbayes.vi.nested import MAX_GLOBAL, NestedLaplace, nested_split, newton

D64 = torch.float64
Y = [2.0, -1.0, 3.5]


def hierarchy(m):
    """s ~ LogNormal(0, 0.5); x_i | s ~ N(0, s²); y_i | x_i ~ N(x_i, 1): p(x | s, y) is
    Gaussian, so the Laplace step is exact and only q(s) needs importance weights."""
    s = m.latent("s", dist.LogNormal(torch.tensor(0.0, dtype=D64), 0.5))
    x = m.latent("x", dist.Normal(torch.zeros(3, dtype=D64), s[..., None]))
    m.observe("y", dist.Normal(x, 1.0), torch.tensor(Y, dtype=D64))


def _joint(s):
    """p(s, y) = LogNormal(s; 0, 0.5) Π N(y_i; 0, s² + 1) (x integrated out)."""
    prior = stats.lognorm.pdf(s, 0.5)
    return prior * np.prod([stats.norm.pdf(y, 0, math.sqrt(s * s + 1)) for y in Y])


def _assert_the_global_matches_quadrature(post, khat_below):
    """E[s | y] and sd(s | y) of 20,000 draws of ``post`` against quadrature of p(s, y)."""
    z = integrate.quad(_joint, 0, np.inf)[0]
    mean = integrate.quad(lambda s: s * _joint(s), 0, np.inf)[0] / z
    sd = math.sqrt(integrate.quad(lambda s: s * s * _joint(s), 0, np.inf)[0] / z - mean**2)
    s = post.sample(20_000)["s"]
    assert post.khat < khat_below
    assert float(s.mean()) == pytest.approx(mean, abs=0.03 * sd)
    assert float(s.std()) == pytest.approx(sd, rel=0.03)


def test_newton_finds_the_closed_form_conditional_mode_and_curvature():
    """Given g = log s: x̂_i = y_i s²/(s² + 1) and P = (1/s² + 1) I."""
    model = vi.Model(hierarchy)
    g = torch.tensor([[-1.0], [0.0], [0.7]], dtype=D64)
    z0 = torch.cat([g, torch.zeros(3, 3, dtype=D64)], 1)
    with torch.enable_grad(), no_validation():
        z, lp, neg_h = newton(model, z0, 1)
    s2 = torch.exp(2 * g)
    y = torch.tensor(Y, dtype=D64)
    assert torch.allclose(z[:, 1:], y * s2 / (s2 + 1), atol=1e-8)
    assert torch.equal(z[:, :1], g)  # the global coordinates are held
    expected = (1 / s2 + 1)[:, :, None] * torch.eye(3, dtype=D64)
    assert torch.allclose(neg_h, expected, atol=1e-5)
    assert torch.allclose(lp, model.log_density(z), atol=1e-12)


def test_log_prob_agrees_with_the_draws_and_integrates_to_one():
    post = vi.fit(vi.Model(hierarchy), "nested")
    q = post.q
    assert isinstance(q, NestedLaplace) and post.guide == "nested"
    z, log_q = q.draw(200, torch.Generator().manual_seed(3))
    assert torch.allclose(q.log_prob(z), log_q, atol=1e-9)
    # E_q[p(x, z) / q(z)] = p(x); with p := q the estimate of ∫ q is exactly 1, so check
    # instead that the normalising constant of the Laplace marginal matches quadrature:
    # log p(y) = log ∫ p(s) Π N(y_i; 0, s² + 1) ds.
    z, log_q = q.draw(20_000, torch.Generator().manual_seed(4))
    log_w = post.model.log_density(z) - log_q
    log_py = float(torch.logsumexp(log_w, 0) - math.log(z.shape[0]))
    assert log_py == pytest.approx(math.log(integrate.quad(_joint, 0, np.inf)[0]), abs=0.01)


def test_the_posterior_of_the_global_matches_quadrature():
    _assert_the_global_matches_quadrature(vi.fit(vi.Model(hierarchy), "nested"), 0.5)


def test_the_local_site_is_the_largest_wherever_it_is_declared():
    """The same posterior non-centred, its local site declared first (as posteriordb's
    eight schools does): x̃ ~ N(0, I), s ~ LogNormal(0, 0.5), y ~ N(s x̃, 1). The split
    takes x̃ as local (the largest site), and the posterior of s is the quadrature's."""

    def non_centred(m):
        x_tilde = m.latent("x_tilde", dist.Normal(torch.zeros(3, dtype=D64), 1.0))
        s = m.latent("s", dist.LogNormal(torch.tensor(0.0, dtype=D64), 0.5))
        m.observe("y", dist.Normal(s[..., None] * x_tilde, 1.0), torch.tensor(Y, dtype=D64))

    model = vi.Model(non_centred)
    order, d_g, _ = nested_split(model)
    assert order.tolist() == [3, 0, 1, 2] and d_g == 1
    post = vi.fit(model, "nested")
    z, log_q = post.q.draw(100, torch.Generator().manual_seed(5))
    assert torch.allclose(post.q.log_prob(z), log_q, atol=1e-9)
    _assert_the_global_matches_quadrature(post, 0.7)


def test_the_default_fit_takes_the_nested_family_on_a_banana():
    """x₂ | x₁ ~ N(x₁², 0.5²): the full-rank k̂ is above 0.7; the nested family is exact
    in x₂ given x₁, so "auto" returns it, with the exact moments E x₂ = 1, sd x₂ = 1.5."""

    def banana(m):
        x1 = m.latent("x1", dist.Normal(torch.tensor(0.0, dtype=D64), 1.0))
        m.latent("x2", dist.Normal(x1**2, 0.5))

    post = vi.fit(vi.Model(banana))
    assert post.info["fullrank_khat"] > 0.7
    assert post.guide == "nested" and post.khat < 0.5
    assert "full-rank k̂" in post.message and post.info["nested_khat"] == post.khat
    x2 = post.sample(20_000)["x2"]
    assert float(x2.mean()) == pytest.approx(1.0, abs=0.04)
    assert float(x2.std()) == pytest.approx(1.5, rel=0.03)


def test_models_without_a_small_global_part_are_refused():
    def one_site(m):
        m.latent("x", dist.Normal(torch.zeros(3, dtype=D64), 1.0))

    def wide(m):  # the largest site, x, leaves 10 global coordinates
        m.latent("a", dist.Normal(torch.zeros(5, dtype=D64), 1.0))
        m.latent("x", dist.Normal(torch.zeros(6, dtype=D64), 1.0))
        m.latent("b", dist.Normal(torch.zeros(5, dtype=D64), 1.0))

    assert 10 > MAX_GLOBAL
    for fn, why in ((one_site, "one latent site"), (wide, "'x'\\) hold 10 coordinates")):
        model = vi.Model(fn)
        assert nested_split(model)[0] is None
        with pytest.raises(ValueError, match=why):
            vi.fit(model, "nested")
        # "auto" does not try it: a Gaussian posterior stays full rank
        assert vi.fit(model).guide == "fullrank"


def test_psis_gives_minus_infinite_log_weights_zero_weight():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    ours, k = vi.psis(np.concatenate([x[:100], [-np.inf] * 5, x[100:]]))
    alone, k_alone = vi.psis(x)
    assert k == k_alone
    assert np.all(ours[100:105] == -np.inf)
    assert np.allclose(np.concatenate([ours[:100], ours[105:]]), alone)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN"):
            vi.psis(np.concatenate([x, [bad]]))
