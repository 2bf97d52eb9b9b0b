"""Guides q(θ | λ): families, flat parameters, constrained supports and initialisation."""

import math

import pytest
import torch
from torch.distributions import (
    Dirichlet,
    Independent,
    LogNormal,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    constraints,
)

from varbayes.vi.elbo import elbo
from varbayes.vi.guides import FullRankNormal, LowRankNormal, MeanFieldNormal

D64 = torch.float64


FAMILIES = [
    (MeanFieldNormal, {}, Independent, lambda d: 2 * d),
    (FullRankNormal, {}, MultivariateNormal, lambda d: d + d * (d + 1) // 2),
    (LowRankNormal, {"rank": 2}, LowRankMultivariateNormal, lambda d: d * 4),
]


@pytest.mark.parametrize("cls,kw,dist_type,n_params", FAMILIES)
def test_guide_returns_its_family_with_one_flat_parameter(cls, kw, dist_type, n_params):
    """Each guide returns its torch family over θ of shape (D,) from one flat parameter vector."""
    g = cls(4, init_scale=0.5, dtype=D64, **kw)
    q = g()
    assert isinstance(q, dist_type)
    assert q.event_shape == (4,) and q.batch_shape == ()
    assert [p.shape for p in g.parameters()] == [torch.Size([n_params(4)])]
    x = q.rsample((7,))
    assert x.shape == (7, 4) and q.log_prob(x).shape == (7,)
    torch.testing.assert_close(q.variance, torch.full((4,), 0.25, dtype=D64), rtol=1e-4, atol=0)
    # gradients reach the flat vector through every block
    q.log_prob(x.detach()).sum().backward()
    assert g.flat.grad is not None and torch.isfinite(g.flat.grad).all()


def test_full_rank_scale_tril_round_trips_through_the_flat_vector():
    """Setting a Cholesky factor and reading it back gives the same lower-triangular matrix."""
    g = FullRankNormal(3, dtype=D64)
    L = torch.tensor([[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [-0.3, 0.2, 0.7]], dtype=D64)
    with torch.no_grad():
        g._set_tril(L)
    torch.testing.assert_close(g.scale_tril, L)


@pytest.mark.parametrize(
    "support,check",
    [
        (constraints.positive, lambda x: (x > 0).all()),
        (constraints.unit_interval, lambda x: ((x > 0) & (x < 1)).all()),
        (
            constraints.simplex,
            lambda x: (x > 0).all() and torch.allclose(x.sum(-1), torch.ones(())),
        ),
    ],
)
def test_constrained_guides_sample_inside_the_support(support, check):
    """Samples of a guide on a constrained support lie in it (simplex: positive, summing to 1)."""
    g = MeanFieldNormal(4, support=support)
    q = g()
    assert isinstance(q, TransformedDistribution)
    x = q.rsample((50,))
    assert x.shape == (50, 4)
    assert check(x)
    assert torch.isfinite(q.log_prob(x)).all()
    assert g.udim == (3 if support is constraints.simplex else 4)


def test_positive_guide_density_includes_the_log_det_jacobian():
    """log q(θ) = log N(log θ | μ, σ²) - Σ log θ for the positive support (change of variables)."""
    g = MeanFieldNormal(3, support=constraints.positive, init_scale=0.7, dtype=D64)
    with torch.no_grad():
        g.loc.copy_(torch.tensor([0.1, -0.5, 1.0], dtype=D64))
    theta = torch.tensor([[0.5, 2.0, 1.5]], dtype=D64)
    expected = Normal(g.loc, 0.7).log_prob(theta.log()).sum(-1) - theta.log().sum(-1)
    torch.testing.assert_close(g().log_prob(theta), expected.detach())


def test_elbo_is_exact_for_a_constrained_guide_that_matches_the_target():
    """Target LogNormal (log Z = 0); a positive guide equal to it has ELBO = 0 for any sample."""
    loc = torch.tensor([0.3, -1.0], dtype=D64)
    scale = torch.tensor([0.5, 1.2], dtype=D64)
    target = Independent(LogNormal(loc, scale), 1)
    g = MeanFieldNormal(2, support=constraints.positive, dtype=D64)
    with torch.no_grad():
        g.loc.copy_(loc)
        g._view("log_scale").copy_(scale.log())
    value = elbo(target.log_prob, g, 16, generator=torch.Generator().manual_seed(0))
    assert abs(float(value.detach())) < 1e-12
    # a guide away from the target has ELBO = -KL < 0
    with torch.no_grad():
        g.loc.add_(0.5)
    value = elbo(target.log_prob, g, 2000, generator=torch.Generator().manual_seed(0))
    assert float(value.detach()) < -0.05


@pytest.mark.parametrize(
    "cls,kw", [(MeanFieldNormal, {}), (FullRankNormal, {}), (LowRankNormal, {"rank": 1})]
)
def test_init_to_point_centres_q_there(cls, kw):
    """init_to_point puts the unconstrained mean at T⁻¹(θ) (here log θ for the positive support)."""
    g = cls(3, support=constraints.positive, dtype=D64, **kw)
    theta = torch.tensor([0.5, 1.0, 3.0], dtype=D64)
    g.init_to_point(theta, scale=0.2)
    torch.testing.assert_close(g.loc, theta.log())
    torch.testing.assert_close(
        g.base_distribution().stddev, torch.full((3,), 0.2, dtype=D64), rtol=1e-3, atol=0
    )


def test_init_from_prior_matches_the_prior_moments():
    """Moment matching to N(m, Σ) from 20000 draws: mean within 0.05, covariance within 0.1."""
    m = torch.tensor([1.0, -2.0, 0.5], dtype=D64)
    cov = torch.tensor([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=D64)
    prior = MultivariateNormal(m, cov)
    gen = torch.Generator().manual_seed(0)
    full = FullRankNormal(3, dtype=D64).init_from_prior(prior, 20_000, generator=gen)
    # standard error of a mean is sd/sqrt(n) <= 1.5/141 ≈ 0.01; of a covariance about 0.02
    torch.testing.assert_close(full.loc, m, atol=0.05, rtol=0)
    torch.testing.assert_close(full().covariance_matrix.detach(), cov, atol=0.1, rtol=0)
    mf = MeanFieldNormal(3, dtype=D64).init_from_prior(prior, 20_000, generator=gen)
    torch.testing.assert_close(mf.scale.detach(), cov.diagonal().sqrt(), atol=0.05, rtol=0)
    lr = LowRankNormal(3, dtype=D64).init_from_prior(prior, 20_000, generator=gen)
    torch.testing.assert_close(lr.loc, m, atol=0.05, rtol=0)
    simplex = MeanFieldNormal(4, support=constraints.simplex, dtype=D64)
    simplex.init_from_prior(Dirichlet(torch.ones(4, dtype=D64)), 5000, generator=gen)
    assert torch.isfinite(simplex.flat).all()


# --------------------------------------------------------------------------- bad input
def test_guide_arguments_are_validated():
    """dim < 1, a non-constraint support, init_scale <= 0 and rank < 1 name their argument."""
    with pytest.raises(ValueError, match="dim"):
        MeanFieldNormal(0)
    with pytest.raises(TypeError, match="support"):
        MeanFieldNormal(2, support="positive")
    with pytest.raises(ValueError, match="init_scale"):
        MeanFieldNormal(2, init_scale=0.0)
    with pytest.raises(ValueError, match="rank"):
        LowRankNormal(2, rank=0)
    with pytest.raises(ValueError, match="support"):
        MeanFieldNormal(2, support=constraints.integer_interval(0, 3))


def test_init_arguments_are_validated():
    """Wrong shapes or a point outside the support name theta or prior."""
    g = MeanFieldNormal(3, support=constraints.positive, dtype=D64)
    with pytest.raises(ValueError, match="theta must have shape"):
        g.init_to_point(torch.ones(2))
    with pytest.raises(ValueError, match="theta must lie"):
        g.init_to_point(torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="theta must be finite"):
        g.init_to_point(torch.tensor([1.0, math.nan, 1.0]))
    with pytest.raises(ValueError, match="prior must be over"):
        g.init_from_prior(Independent(Normal(torch.zeros(2), torch.ones(2)), 1))
    with pytest.raises(TypeError, match="prior must be a Distribution"):
        g.init_from_prior(torch.zeros(3))


def test_full_rank_log_q_is_right_in_float32_when_the_scale_factor_is_ill_conditioned():
    """log q comes from ε, not a triangular solve: with scales spanning 10⁻⁴…10³ and
    strong correlations (D = 26), the float32 log q of each draw equals torch's float64
    MultivariateNormal.log_prob of the same draw (the same ε) to 1e-4 relative, and the
    float32 ELBO estimates on a standard-normal target stay below log Z = 0."""
    d = 26
    g = FullRankNormal(d, dtype=torch.float32)
    with torch.no_grad():
        g._view("log_scale").copy_(torch.linspace(math.log(1e-4), math.log(1e3), d))
        gen = torch.Generator().manual_seed(0)
        g._view("unit_tril").copy_(3 * torch.randn(d * (d - 1) // 2, generator=gen))
    theta, log_q = g.rsample_with_log_q(64, torch.Generator().manual_seed(1))
    eps = torch.randn((64, d), generator=torch.Generator().manual_seed(1)).double()
    q64 = MultivariateNormal(g.loc.double(), scale_tril=g.scale_tril.double())
    exact = q64.log_prob(q64.loc + eps @ q64.scale_tril.T)  # the same draws, in float64
    torch.testing.assert_close(log_q.double(), exact, rtol=1e-4, atol=0)
    target = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(d), torch.ones(d)), 1
    )
    gen = torch.Generator().manual_seed(2)
    values = torch.stack([elbo(target.log_prob, g, 8, generator=gen) for _ in range(20)])
    assert bool((values < 0).all()), values.max()


def test_low_rank_log_q_from_noise_is_the_gaussian_density():
    """from_noise on a low-rank q: z = μ + √d ε₁ + W ε₂ and log q(z) by Woodbury and the
    determinant lemma equal scipy's multivariate normal density with Σ = WWᵀ + diag d
    (and torch's LowRankMultivariateNormal.log_prob), in float64."""
    from scipy.stats import multivariate_normal

    from varbayes.vi.posterior import from_noise

    g = torch.Generator().manual_seed(3)
    D, r = 6, 2
    loc = torch.randn(D, generator=g, dtype=torch.float64)
    W = torch.randn(D, r, generator=g, dtype=torch.float64)
    d = torch.rand(D, generator=g, dtype=torch.float64) + 0.1
    q = LowRankMultivariateNormal(loc, W, d)
    eps = torch.randn(5, D + r, generator=g, dtype=torch.float64)
    z, log_q = from_noise(q, eps)
    torch.testing.assert_close(z, loc + eps[:, :D] * d.sqrt() + eps[:, D:] @ W.T)
    cov = (W @ W.T + torch.diag(d)).numpy()
    ref = multivariate_normal(loc.numpy(), cov).logpdf(z.numpy())
    torch.testing.assert_close(log_q, torch.as_tensor(ref), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(log_q, q.log_prob(z), rtol=1e-12, atol=1e-10)
