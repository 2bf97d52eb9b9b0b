"""The "flow" family: its log density (against autograd Jacobians), its start at the
full-rank fit, and its fit on a curved posterior with known moments."""

import math

import pytest
import torch
from torch import distributions as dist

from varbayes import vi
from varbayes.monitor import NonFiniteObjectiveError
from varbayes.vi.flow import Flow, build_layers, fit_flow, masks

D64 = torch.float64


def _random_flow(d=5, layers=4, seed=0):
    """A flow with every weight random (also the last layers, which a fit starts at 0)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = [(0, 2), (2, d)]
    mods = build_layers(d, blocks, layers, 7, gen, D64)
    with torch.no_grad():
        for p in mods.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=D64))
    loc = torch.randn(d, generator=gen, dtype=D64)
    a = torch.randn(d, d, generator=gen, dtype=D64)
    tril = torch.linalg.cholesky(a @ a.T + d * torch.eye(d, dtype=D64))
    return Flow(loc, tril, mods)


def test_log_q_equals_the_change_of_variables_with_an_autograd_jacobian():
    """log q(z) = log N(ε) - log|det ∂z/∂ε|, the Jacobian of the whole map ε ↦ z taken by
    autograd; and log_prob (by the inverse map) gives the same at the drawn z."""
    q = _random_flow()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z, log_q = q.draw(6, gen)
    eps = torch.randn((6, 5), generator=torch.Generator().manual_seed(1), dtype=D64)

    def forward(e):
        x = e[None]
        for layer in q.layers:
            x, _ = layer(x)
        return (q.loc + x @ q.scale_tril.T)[0]

    for i in range(6):
        jac = torch.autograd.functional.jacobian(forward, eps[i])
        expected = dist.Normal(0.0, 1.0).log_prob(eps[i]).sum() - torch.linalg.slogdet(jac)[1]
        assert float(log_q[i]) == pytest.approx(float(expected), abs=1e-10)
        assert torch.allclose(forward(eps[i]), z[i], atol=1e-12)
    assert torch.allclose(q.log_prob(z.detach()), log_q.detach(), atol=1e-10)


def test_the_masks_split_at_site_boundaries_and_at_random_halves():
    gen = torch.Generator().manual_seed(0)
    bs = masks(6, [(0, 1), (1, 2), (2, 6)], 8, gen, D64)
    assert bs[0].tolist() == [1, 0, 0, 0, 0, 0] and bs[1].tolist() == [0, 1, 1, 1, 1, 1]
    assert bs[4].tolist() == [1, 1, 0, 0, 0, 0] and bs[5].tolist() == [0, 0, 1, 1, 1, 1]
    assert all(int(b.sum()) == 3 for b in bs[2:4] + bs[6:8])
    assert all(int(b.sum()) == 3 for b in masks(6, [(0, 6)], 4, gen, D64))


def banana(m, data):
    """x₁ ~ N(0, 1), x₂ | x₁ ~ N(b x₁², σ²): E x₂ = b, Var x₂ = 2b² + σ²."""
    x1 = m.latent("x1", dist.Normal(torch.tensor(0.0, dtype=D64), 1.0))
    m.latent("x2", dist.Normal(data["b"] * x1**2, data["sigma"]))


BANANA = {"b": torch.tensor(1.0, dtype=D64), "sigma": torch.tensor(0.5, dtype=D64)}


def test_a_flow_fits_a_banana_the_full_rank_gaussian_cannot():
    """On the banana the full-rank Gaussian is far off (k̂ > 0.7, sd of x₂ too small); the
    flow (the default fit's fallback after the nested family) brings k̂ under 0.7 and the
    ELBO to within 0.02 of log p(x) = 0, and its (importance-resampled) draws have the
    exact moments: E x₂ = 1, sd x₂ = √2.25 = 1.5, sd x₁ = 1."""
    model = vi.Model(banana, BANANA)
    with pytest.warns(vi.PSISWarning, match="try guide='flow'"):
        full = vi.fit(model, "fullrank")
    assert full.khat > 0.7
    post = vi.fit(model, "flow")
    assert post.guide == "flow" and post.info["fullrank_khat"] == full.khat
    assert post.khat <= 0.7 and post.resamples and post.converged, post.message
    # p is normalised (log p(x) = 0), so ELBO = -KL(q || p): near 0 for the flow
    assert post.elbo > full.elbo + 0.1
    assert -0.02 < post.elbo < 3 * post.elbo_se
    assert post.info["fullrank_elbo"] == pytest.approx(full.elbo, abs=5 * full.elbo_se)
    draws = post.sample(20_000)
    assert float(draws["x2"].mean()) == pytest.approx(1.0, abs=0.05)
    assert float(draws["x2"].std()) == pytest.approx(1.5, rel=0.05)
    assert float(draws["x1"].std()) == pytest.approx(1.0, rel=0.05)
    assert len(post.trace) == post.steps > 1500
    # the fitted posterior warm starts a new fit of the same family
    again = vi.fit(model, post, num_steps=200)
    assert again.guide == "flow"
    assert float(post.q.log_prob(post.q.mean[None])[0]) > -10


def test_a_flow_starts_as_the_full_rank_fit():
    """λ = 0 (the zeroed last layers): q is N(m, LLᵀ) exactly."""
    gen = torch.Generator().manual_seed(0)
    loc, tril = (
        torch.tensor([1.0, -2.0, 0.5], dtype=D64),
        torch.tensor([[1.0, 0, 0], [0.3, 2.0, 0], [-0.2, 0.1, 0.5]], dtype=D64),
    )
    layers = build_layers(3, [(0, 3)], 4, 8, gen, D64)
    q = Flow(loc, tril, layers)
    z = torch.randn(10, 3, generator=gen, dtype=D64)
    mvn = dist.MultivariateNormal(loc, scale_tril=tril)
    assert torch.allclose(q.log_prob(z), mvn.log_prob(z), atol=1e-12)


def test_a_flow_whose_elbo_stays_infinite_stops_with_the_step():
    """log p = -∞ everywhere but at z = 0, so at every draw: 20 steps in a row, then
    NonFiniteObjectiveError naming the step; nothing is returned."""

    def broken(m):
        x = m.latent("x", dist.Normal(torch.tensor(0.0, dtype=D64), 1.0).expand([2]))
        m.factor("off", torch.where(x.abs().sum(-1) > 0, -math.inf, 0.0))

    model = vi.Model(broken)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(NonFiniteObjectiveError, match="20 steps in a row") as err:
        fit_flow(model, torch.zeros(2, dtype=D64), torch.eye(2, dtype=D64), gen, num_steps=50)
    assert err.value.step == 20


def test_the_sinh_arcsinh_layers_fit_a_skewed_marginal_a_coupling_cannot():
    """One latent s ~ Gamma(2, 1), fitted on u = log s (there is nothing for a coupling
    layer to condition on): the flow's ELBO is within 0.01 of log p(x) = 0, k̂ ≤ 0.7, and
    the draws have the exact mean 2 and variance 2 (the Gaussian on u misses them)."""

    def skewed(m):
        m.latent("s", dist.Gamma(torch.tensor(2.0, dtype=D64), 1.0))

    model = vi.Model(skewed)
    with pytest.warns(vi.PSISWarning):
        full = vi.fit(model, "fullrank")
    post = vi.fit(model, "flow", num_steps=1000)
    assert post.khat <= 0.7 and -0.01 < post.elbo < 3 * post.elbo_se
    s = post.sample(40_000)["s"]
    assert float(s.mean()) == pytest.approx(2.0, abs=0.04)
    assert float(s.var()) == pytest.approx(2.0, rel=0.06)
    assert abs(float(full.sample(40_000, resample=False)["s"].var()) - 2.0) > 0.3
