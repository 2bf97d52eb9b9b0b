"""ELBO estimators: closed-form oracles (Gaussian linear regression), Pyro, and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import (
    Bernoulli,
    Gamma,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from varbayes.vi.compare import exact_linear_posterior
from varbayes.vi.elbo import draw, elbo, log_evidence, loss
from varbayes.vi.guides import MeanFieldNormal
from varbayes.vi.models import LinearRegression, LogisticRegression

D64 = torch.float64


def _linreg(n=30, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=D64)
    y = X @ torch.linspace(-1, 1, d, dtype=D64) + 0.5 * torch.randn(n, generator=g, dtype=D64)
    model = LinearRegression(X, y, noise_scale=0.5, prior_scale=2.0, dtype=D64)
    post, log_z = exact_linear_posterior(X, y, 0.5, 2.0)
    return model, post, log_z


def _some_q(d, seed=1):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(d, generator=g, dtype=D64).requires_grad_()
    log_scale = (0.3 * torch.randn(d, generator=g, dtype=D64) - 1.5).requires_grad_()
    return loc, log_scale


def test_pathwise_elbo_of_exact_posterior_equals_log_evidence_for_every_sample():
    """With q = p(θ|y), log p(y, θ) - log q(θ) = log p(y) for every θ: the estimate is exact."""
    model, post, log_z = _linreg()
    gen = torch.Generator().manual_seed(3)
    for est in ("pathwise", "iwae"):
        value = elbo(model, post, 5, estimator=est, generator=gen)
        assert float(value) == pytest.approx(log_z, abs=1e-9)
    ev = log_evidence(model, post, 100, generator=gen)
    assert ev.log_evidence == pytest.approx(log_z, abs=1e-9)
    assert ev.stderr < 1e-9


@pytest.mark.parametrize("estimator", ["pathwise", "score", "analytic"])
def test_elbo_estimate_is_unbiased_and_below_log_evidence(estimator):
    """Mean of the estimator ≈ log p(y) - KL(q||p(θ|y)) (closed form) within 4 standard errors."""
    model, post, log_z = _linreg()
    loc, log_scale = _some_q(3)
    q = Independent(Normal(loc, log_scale.exp()), 1)
    qm = MultivariateNormal(loc.detach(), scale_tril=torch.diag(log_scale.detach().exp()))
    exact = log_z - float(kl_divergence(qm, post))
    assert exact < log_z
    gen = torch.Generator().manual_seed(5)
    reps = torch.stack(
        [elbo(model, q, 50, estimator=estimator, generator=gen).detach() for _ in range(40)]
    )
    se = float(reps.std()) / math.sqrt(reps.numel())
    assert abs(float(reps.mean()) - exact) < 4 * se + 1e-9


@pytest.mark.parametrize(
    "estimator,control_variate", [("pathwise", True), ("score", True), ("score", False)]
)
def test_gradient_estimators_match_the_closed_form_gradient(estimator, control_variate):
    """Mean gradients of each estimator match ∇λ[log p(y) - KL(q||p)] within 5 standard errors."""
    model, post, log_z = _linreg()
    loc, log_scale = _some_q(3)

    def closed_form():
        qm = MultivariateNormal(loc, scale_tril=torch.diag(log_scale.exp()))
        return log_z - kl_divergence(qm, post)

    g_exact = torch.cat(torch.autograd.grad(closed_form(), (loc, log_scale)))
    gen = torch.Generator().manual_seed(7)
    grads = []
    for _ in range(300):
        q = Independent(Normal(loc, log_scale.exp()), 1)
        value = elbo(
            model, q, 20, estimator=estimator, control_variate=control_variate, generator=gen
        )
        grads.append(torch.cat(torch.autograd.grad(value, (loc, log_scale))))
    grads = torch.stack(grads)
    se = grads.std(0) / math.sqrt(grads.shape[0])
    assert ((grads.mean(0) - g_exact).abs() < 5 * se + 1e-8).all()


@settings(max_examples=25, deadline=None)
@given(
    loc=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
    log_scale=st.lists(st.floats(-3, 1), min_size=3, max_size=3),
)
def test_elbo_estimate_is_log_evidence_minus_kl_for_any_gaussian_q(loc, log_scale):
    """For any mean-field q the estimate ≈ log p(y) - KL(q||p(θ|y)) <= log p(y) (5 s.e., S=2000)."""
    model, post, log_z = _linreg()
    loc = torch.tensor(loc, dtype=D64)
    scale = torch.tensor(log_scale, dtype=D64).exp()
    q = Independent(Normal(loc, scale), 1)
    exact = log_z - float(
        kl_divergence(MultivariateNormal(loc, scale_tril=torch.diag(scale)), post)
    )
    assert exact <= log_z
    gen = torch.Generator().manual_seed(0)
    theta = draw(q, 2000, generator=gen)
    log_w = model(theta) - q.log_prob(theta)
    est = float(elbo(model, q, 2000, generator=torch.Generator().manual_seed(0)))
    assert est == pytest.approx(float(log_w.mean()), rel=1e-12)
    se = float(log_w.std()) / math.sqrt(2000)
    assert abs(est - exact) < 5 * se + 1e-9


def test_iwae_bound_lies_between_elbo_and_log_evidence_and_grows_with_k():
    """E[IWAE_k] increases with k from the ELBO (k=1) towards log p(y)."""
    model, post, log_z = _linreg()
    loc, log_scale = _some_q(3)
    q = Independent(Normal(loc.detach(), log_scale.detach().exp()), 1)
    gen = torch.Generator().manual_seed(11)
    means = []
    for k in (1, 10, 100):
        reps = torch.stack([elbo(model, q, k, estimator="iwae", generator=gen) for _ in range(200)])
        means.append(float(reps.mean()))
    assert means[0] < means[1] < means[2] < log_z


def test_log_evidence_importance_sampling_covers_the_truth():
    """IS estimate of log p(y) with a broad q lies within 4 standard errors of the closed form."""
    model, post, log_z = _linreg()
    q = MultivariateNormal(post.mean, covariance_matrix=2.0 * post.covariance_matrix)
    ev = log_evidence(model, q, 20_000, generator=torch.Generator().manual_seed(2))
    assert ev.ess > 1000
    assert abs(ev.log_evidence - log_z) < 4 * ev.stderr + 1e-6


def test_same_generator_state_gives_the_same_estimate_and_leaves_global_rng_alone():
    """A caller's generator makes the estimate reproducible, also for families drawn via a fork."""
    model, _, _ = _linreg()
    q = Independent(Normal(torch.zeros(3, dtype=D64), torch.ones(3, dtype=D64)), 1)
    a = elbo(model, q, 4, generator=torch.Generator().manual_seed(1))
    b = elbo(model, q, 4, generator=torch.Generator().manual_seed(1))
    c = elbo(model, q, 4, generator=torch.Generator().manual_seed(2))
    assert float(a) == float(b) != float(c)
    gam = Independent(Gamma(torch.full((3,), 2.0), torch.ones(3)), 1)
    state = torch.get_rng_state()
    x1 = draw(gam, 5, generator=torch.Generator().manual_seed(3))
    x2 = draw(gam, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2)
    assert torch.equal(torch.get_rng_state(), state)


def test_stl_gradient_is_zero_at_the_exact_posterior():
    """Sticking the landing: with q = p(θ|y) in the family, the pathwise gradient vanishes."""
    model, post, _ = _linreg(d=2)
    guide = MeanFieldNormal(2, dtype=D64)
    # make the posterior diagonal by using orthogonal columns
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]], dtype=D64)
    y = torch.tensor([0.5, -1.0, 1.5, 0.3], dtype=D64)
    model = LinearRegression(X, y, noise_scale=1.0, prior_scale=1.0, dtype=D64)
    post, _ = exact_linear_posterior(X, y, 1.0, 1.0)
    with torch.no_grad():
        guide.loc.copy_(post.mean)
        guide._view("log_scale").copy_(post.variance.sqrt().log())
    value = elbo(model, guide, 8, stl=True, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad(value, guide.flat)
    assert g.abs().max() < 1e-10
    value = elbo(model, guide, 8, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad(value, guide.flat)
    assert g.abs().max() > 1e-3  # the plain estimator is noisy there


def test_kl_registered_for_full_rank_q_and_diagonal_normal_prior():
    """KL(MVN || Independent(Normal)) equals KL against the same prior written as an MVN."""
    q = MultivariateNormal(torch.tensor([0.3, -0.2]), torch.tensor([[1.0, 0.3], [0.3, 0.5]]))
    p = Independent(Normal(torch.tensor([0.1, 0.0]), torch.tensor([2.0, 0.5])), 1)
    p_mvn = MultivariateNormal(p.mean, torch.diag(p.variance))
    assert float(kl_divergence(q, p)) == pytest.approx(float(kl_divergence(q, p_mvn)), rel=1e-6)


def test_loss_is_minus_elbo():
    """loss = -ELBO for the same random stream."""
    model, post, _ = _linreg()
    q = Independent(Normal(torch.zeros(3, dtype=D64), torch.ones(3, dtype=D64)), 1)
    a = elbo(model, q, 3, generator=torch.Generator().manual_seed(4))
    b = loss(model, q, 3, generator=torch.Generator().manual_seed(4))
    assert float(a) == -float(b)


# --------------------------------------------------------------------------- Pyro oracle
pyro = pytest.importorskip("pyro")
import pyro.distributions as pdist  # noqa: E402
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO  # noqa: E402


class _FixedNormal(pdist.Normal):
    """A Normal whose rsample returns loc + scale * eps for a given eps (same samples for both)."""

    def __init__(self, loc, scale, eps):
        super().__init__(loc, scale)
        self.eps = eps

    def rsample(self, sample_shape=()):
        return self.loc + self.scale * self.eps


def _logreg(seed=0, n=40, d=3):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=D64)
    y = torch.bernoulli(torch.sigmoid(X @ torch.tensor([1.0, -2.0, 0.5], dtype=D64)), generator=g)
    return LogisticRegression(X, y, prior_scale=1.5, dtype=D64)


@pytest.mark.parametrize("analytic", [False, True])
def test_elbo_and_gradient_equal_pyro_for_fixed_samples(analytic):
    """varbayes' pathwise (analytic) ELBO equals Pyro's Trace_ELBO (TraceMeanField_ELBO)."""
    model = _logreg()
    S, d = 6, 3
    eps = torch.randn(S, d, generator=torch.Generator().manual_seed(9), dtype=D64)
    loc = torch.tensor([0.2, -0.4, 0.1], dtype=D64, requires_grad=True)
    scale = torch.tensor([0.5, 0.3, 0.8], dtype=D64, requires_grad=True)
    prior = model.prior

    def pyro_model(e):
        theta = pyro.sample(
            "theta", pdist.Normal(prior.base_dist.loc, prior.base_dist.scale).to_event(1)
        )
        pyro.factor("lik", model.log_likelihood(theta[None])[0])

    def pyro_guide(e):
        pyro.sample("theta", _FixedNormal(loc, scale, e).to_event(1))

    pyro.clear_param_store()
    estimator = TraceMeanField_ELBO() if analytic else Trace_ELBO()
    pyro_loss = (
        sum(estimator.differentiable_loss(pyro_model, pyro_guide, eps[s]) for s in range(S)) / S
    )
    g_pyro = torch.autograd.grad(pyro_loss, (loc, scale))

    q = Independent(_FixedNormal(loc, scale, eps), 1)
    value = elbo(model, q, S, estimator="analytic" if analytic else "pathwise")
    g_vb = torch.autograd.grad(-value, (loc, scale))
    assert float(value.detach()) == pytest.approx(-float(pyro_loss.detach()), rel=1e-12, abs=1e-10)
    for a, b in zip(g_vb, g_pyro, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- bad input
class _NoRsampleNormal(Normal):
    has_rsample = False


def _q(d=3):
    return Independent(Normal(torch.zeros(d, dtype=D64), torch.ones(d, dtype=D64)), 1)


def test_num_particles_must_be_positive():
    """num_particles <= 0 is a ValueError naming num_particles."""
    model, _, _ = _linreg()
    with pytest.raises(ValueError, match="num_particles"):
        elbo(model, _q(), 0)
    with pytest.raises(TypeError, match="num_particles"):
        elbo(model, _q(), 2.5)


def test_unknown_estimator_is_rejected():
    """An unknown estimator name is a ValueError naming estimator."""
    model, _, _ = _linreg()
    with pytest.raises(ValueError, match="estimator"):
        elbo(model, _q(), 2, estimator="magic")


def test_pathwise_without_rsample_suggests_score():
    """Pathwise (or IWAE) with a non-reparameterizable q says to use estimator='score'."""
    model, _, _ = _linreg()
    q = Independent(_NoRsampleNormal(torch.zeros(3, dtype=D64), torch.ones(3, dtype=D64)), 1)
    for est in ("pathwise", "iwae"):
        with pytest.raises(ValueError, match="estimator='score'"):
            elbo(model, q, 2, estimator=est)
    # the default then is the score-function estimator
    assert torch.isfinite(elbo(model, q, 4, generator=torch.Generator().manual_seed(0)))


def test_score_control_variate_needs_two_particles():
    """The leave-one-out baseline with one particle is a ValueError naming num_particles."""
    model, _, _ = _linreg()
    with pytest.raises(ValueError, match="num_particles"):
        elbo(model, _q(), 1, estimator="score")
    assert torch.isfinite(elbo(model, _q(), 1, estimator="score", control_variate=False))


def test_q_must_be_a_single_distribution_over_theta():
    """A non-Distribution q is a TypeError, a batched q (batch_shape != ()) a ValueError."""
    model, _, _ = _linreg()
    with pytest.raises(TypeError, match="q must"):
        elbo(model, torch.zeros(3), 2)
    with pytest.raises(ValueError, match="q must"):
        elbo(model, Normal(torch.zeros(3, dtype=D64), torch.ones(3, dtype=D64)), 2)


def test_guide_and_model_shape_mismatch_is_reported():
    """A q over 4 dimensions for a 3-dimensional model: ValueError naming q's event_shape."""
    model, _, _ = _linreg()
    with pytest.raises(ValueError, match="event_shape"):
        elbo(model, _q(4), 2)
    # a plain function without a prior fails inside (the model, a vi.Model, checks z's
    # shape); the error still names the shape problem: expected and given
    with pytest.raises(ValueError, match=r"shape \(S, 3\); got \(2, 4\)"):
        elbo(lambda th: model(th), _q(4), 2)


def test_log_joint_must_return_finite_values_of_shape_S():
    """A wrong output shape or non-finite output is a ValueError naming log_joint."""
    with pytest.raises(ValueError, match="log_joint must return"):
        elbo(lambda th: th.sum(), _q(), 3)
    with pytest.raises(ValueError, match="log_joint returned 3 non-finite"):
        elbo(lambda th: th.sum(-1) * math.nan, _q(), 3)
    with pytest.raises(TypeError, match="log_joint must return a tensor"):
        elbo(lambda th: 1.0, _q(), 3)
    with pytest.raises(TypeError, match="log_joint must be callable"):
        elbo(3.0, _q(), 3)


def test_analytic_needs_registered_kl():
    """analytic with no registered KL(q || prior) is a ValueError naming estimator."""
    model = _logreg()
    q = Independent(Bernoulli(probs=torch.full((3,), 0.5, dtype=D64)), 1)
    with pytest.raises(ValueError, match="estimator='analytic'"):
        elbo(model, q, 2, estimator="analytic")


def test_stl_needs_a_guide_and_a_pathwise_estimator():
    """stl with a plain Distribution (TypeError naming q) or with score (ValueError naming stl)."""
    model, _, _ = _linreg()
    with pytest.raises(TypeError, match="q to be a guide"):
        elbo(model, _q(), 2, stl=True)
    with pytest.raises(ValueError, match="stl"):
        elbo(model, MeanFieldNormal(3, dtype=D64), 2, stl=True, estimator="score")


def test_log_evidence_needs_two_samples():
    """num_samples < 2 is a ValueError naming num_samples; batch_size < 1 names batch_size."""
    model, _, _ = _linreg()
    with pytest.raises(ValueError, match="num_samples"):
        log_evidence(model, _q(), 1)
    with pytest.raises(ValueError, match="batch_size"):
        log_evidence(model, _q(), 10, batch_size=0)
