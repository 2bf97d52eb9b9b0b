"""The model API: named latents, supports and their Jacobians, particles, bad input."""

import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from torch import distributions as dist
from torch.distributions import constraints
from vi_examples import EIGHT, eight_schools  # noqa: E402

from varbayes import vi
from varbayes.vi.supports import bijection

D64 = torch.float64


def test_eight_schools_log_density_equals_scipy_on_particles():
    """log p(x, z) with the log-Jacobian of τ = exp(u) matches a scipy sum, per particle."""
    model = vi.Model(eight_schools, EIGHT)
    assert model.dim == 10 and model.names == ("mu", "tau", "theta_tilde")
    z = torch.randn(5, 10, generator=torch.Generator().manual_seed(0), dtype=D64) * 2
    got = model.log_density(z)
    assert got.shape == (5,)
    y, sigma = np.array(EIGHT["y"]), np.array(EIGHT["sigma"])
    for s in range(5):
        mu, u, tt = z[s, 0].item(), z[s, 1].item(), z[s, 2:].numpy()
        tau = math.exp(u)
        want = (
            st.norm(0, 5).logpdf(mu)
            + st.halfcauchy(scale=5).logpdf(tau)
            + u
            + st.norm().logpdf(tt).sum()
            + st.norm(mu + tau * tt, sigma).logpdf(y).sum()
        )
        assert got[s].item() == pytest.approx(want, rel=1e-12)
    values = model.constrain(z)
    assert torch.allclose(values["theta"], z[:, :1] + z[:, 1:2].exp() * z[:, 2:])


def test_ordered_transforms_are_cumulative_sums_on_particles():
    """The ordered bijections (a masked sum for K ≤ 32, cumsum above) equal
    cumsum(u₁, exp u₂, …) and cumsum(exp u) over a leading particle dimension."""
    g = torch.Generator().manual_seed(2)
    for k in (2, 5, 32, 33):
        u = torch.randn(6, k, generator=g, dtype=D64)
        ordered = torch.cat([u[:, :1], u[:, 1:].exp()], -1).cumsum(-1)
        torch.testing.assert_close(bijection(vi.ordered_vector)(u), ordered)
        torch.testing.assert_close(bijection(vi.positive_ordered_vector)(u), u.exp().cumsum(-1))


@pytest.mark.parametrize(
    "support, shape",
    [
        (vi.ordered_vector, (4,)),
        (vi.positive_ordered_vector, (4,)),
        (vi.ordered_vector, (40,)),  # K > 32: cumsum, not the masked sum
        (vi.positive_ordered_vector, (40,)),
        (constraints.lower_cholesky, (3, 3)),
        (constraints.simplex, (4,)),
        (constraints.corr_cholesky, (3, 3)),
        (constraints.interval(-1.0, 2.0), (2,)),
    ],
)
def test_bijections_invert_and_their_log_jacobian_equals_autograd(support, shape):
    """T⁻¹(T(u)) = u, T(u) in the support, and log|det J| = slogdet of autograd's Jacobian
    restricted to the free coordinates."""
    transform = bijection(support)
    ushape = transform.inverse_shape(torch.Size(shape))
    u = torch.randn(ushape, generator=torch.Generator().manual_seed(1), dtype=D64)
    theta = transform(u)
    assert bool(support.check(theta).all())
    assert torch.allclose(transform.inv(theta), u, atol=1e-10)
    jac = torch.autograd.functional.jacobian(lambda v: transform(v).reshape(-1), u)
    jac = jac.reshape(-1, u.numel())
    if jac.shape[0] != jac.shape[1]:  # keep the free coordinates of the output
        if support in (constraints.lower_cholesky, constraints.corr_cholesky):
            k = shape[-1]
            offset = 0 if support is constraints.lower_cholesky else -1
            i, j = torch.tril_indices(k, k, offset=offset)
            jac = jac[i * k + j]
        else:  # simplex: the first K-1 coordinates
            jac = jac[: u.numel()]
    want = torch.linalg.slogdet(jac)[1]
    assert transform.log_abs_det_jacobian(u, theta).sum().item() == pytest.approx(
        want.item(), abs=1e-9
    )


def test_bounds_that_depend_on_another_latent_broadcast_over_particles():
    """garch's β₁ ∈ (0, 1 - α₁): every particle's draw respects its own bound, and the
    density includes both log-Jacobians (checked against the closed form)."""

    def model_fn(m):
        a = m.latent("alpha1", support=constraints.unit_interval)
        m.latent("beta1", support=constraints.interval(0.0, 1 - a))

    model = vi.Model(model_fn)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(2), dtype=D64) * 3
    v = model.constrain(z)
    assert bool(((v["beta1"] > 0) & (v["beta1"] < 1 - v["alpha1"])).all())
    sig = torch.sigmoid
    want = (sig(z[:, 0]) * (1 - sig(z[:, 0]))).log() + (
        (1 - v["alpha1"]) * sig(z[:, 1]) * (1 - sig(z[:, 1]))
    ).log()
    assert torch.allclose(model.log_density(z), want, atol=1e-10)


def test_flat_latent_and_factor_and_declared_support_with_a_prior():
    """A flat latent adds only its Jacobian, a factor adds its value, and a prior with a
    declared support (Stan's ``sigma ~ normal(0, 2)`` with ``sigma > 0``) is the prior's
    log density on that support."""

    def model_fn(m):
        x = m.latent("x", support=constraints.positive, shape=(3,))
        s = m.latent("s", dist.Normal(0.0, 2.0), support=constraints.positive)
        m.factor("f", -(x * x).sum(-1) - s)

    model = vi.Model(model_fn)
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(3), dtype=D64)
    x, s = z[:, :3].exp(), z[:, 3].exp()
    prior = torch.as_tensor(st.norm(0, 2).logpdf(s.numpy()))
    want = z.sum(-1) + prior - (x * x).sum(-1) - s
    assert torch.allclose(model.log_density(z), want, atol=1e-12)


def test_minibatch_scales_the_likelihood_by_n_over_b():
    """The average of (N/B)-scaled minibatch densities over a partition equals the full."""
    g = torch.Generator().manual_seed(4)
    data = {"x": torch.randn(12, generator=g)}

    def model_fn(m, d):
        mu = m.latent("mu", dist.Normal(0.0, 1.0))
        m.observe("x", dist.Normal(mu[..., None], 1.0), d["x"])

    model = vi.Model(model_fn, data, rows=["x"])
    z = torch.randn(3, 1, generator=g, dtype=D64)
    parts = [model.subsample(torch.arange(i, i + 4)).log_density(z) for i in (0, 4, 8)]
    assert torch.allclose(sum(parts) / 3, model.log_density(z), atol=1e-10)


def test_rebind_reads_the_given_tensors_and_keeps_the_rest():
    """Model.rebind(tensors) evaluates the same model on other data tensors of the same
    shapes (what the compiled SVI loop passes in): its log density equals scipy's on the
    new values and with_data's; the model itself is unchanged, and data it was not given
    (a non-tensor entry) are kept."""
    g = torch.Generator().manual_seed(5)
    data = {"x": torch.randn(6, generator=g, dtype=D64), "label": "heights"}

    def model_fn(m, d):
        assert d["label"] == "heights"
        mu = m.latent("mu", dist.Normal(0.0, 1.0))
        m.observe("x", dist.Normal(mu[..., None], 2.0), d["x"])

    model = vi.Model(model_fn, data)
    new_x = torch.randn(6, generator=g, dtype=D64)
    z = torch.randn(3, 1, generator=g, dtype=D64)
    view = model.rebind({"x": new_x})
    ref = st.norm(0, 1).logpdf(z[:, 0].numpy()) + st.norm(z.numpy(), 2.0).logpdf(
        new_x.numpy()[None, :]
    ).sum(-1)
    torch.testing.assert_close(view.log_density(z), torch.as_tensor(ref))
    torch.testing.assert_close(view.log_density(z), model.with_data({**data, "x": new_x})(z))
    assert torch.equal(model.data["x"], data["x"])  # the model itself reads its own data
    assert not torch.allclose(model.log_density(z), view.log_density(z))


@pytest.mark.parametrize(
    "fn, data, match",
    [
        (lambda m: (m.latent("a", dist.Normal(0.0, 1.0)), m.latent("a", dist.Normal(0.0, 1.0))),
         None, "'a' is used twice"),
        (lambda m: m.latent("a", "normal"), None, "latent 'a': prior must be"),
        (lambda m: m.latent("a", support=constraints.positive_definite, shape=(2, 2)), None,
         "latent 'a': support"),
        (lambda m: (m.latent("a", dist.Normal(0.0, 1.0)), m.factor("f", torch.zeros(3))),
         None, "site 'f'"),
        (lambda m: (m.latent("a", dist.Normal(0.0, 1.0)), m.factor("f", torch.tensor(math.nan))),
         None, "site 'f'.*not finite"),
        (lambda m, d: m.observe("y", dist.Poisson(m.latent("a", dist.LogNormal(0.0, 1.0))),
                                d["y"]), {"y": [-1.0]}, "observed 'y'.*support"),
        (lambda m, d: m.latent("a", dist.Normal(d["x"], 1.0)), {"x": [0.0, math.nan]},
         r"data\['x'\]"),
    ],
)  # fmt: skip
def test_bad_models_raise_naming_the_site(fn, data, match):
    """Each malformed model raises at construction with the site (or data key) named."""
    with pytest.raises((ValueError, TypeError), match=match):
        vi.Model(fn, data)


def test_fit_recovers_an_exact_gaussian_posterior_and_names_its_draws():
    """Conjugate Normal-Normal with known variance: full rank (and mean field, one
    latent) find the exact posterior mean and sd; the draws are named."""
    g = torch.Generator().manual_seed(5)
    x = 3.0 + 2.0 * torch.randn(50, generator=g, dtype=D64)

    def model_fn(m, d):
        mu = m.latent("mu", dist.Normal(0.0, 10.0))
        m.observe("x", dist.Normal(mu[..., None], 2.0), d["x"])

    post_var = 1 / (1 / 100 + 50 / 4)
    post_mean = post_var * x.sum().item() / 4
    for guide in ("fullrank", "meanfield", "laplace"):
        post = vi.fit(vi.Model(model_fn, {"x": x}), guide)
        assert post.converged
        assert post.q.mean.item() == pytest.approx(post_mean, rel=1e-6)
        assert post.q.stddev.item() == pytest.approx(math.sqrt(post_var), rel=1e-6)
        assert post.khat < 0.5
    draws = post.sample(500)
    assert set(draws) == {"mu"} and draws["mu"].shape == (500,)
    se = math.sqrt(post_var / 4000)
    assert post.summary()["mu"]["mean"] == pytest.approx(post_mean, abs=5 * se)


def _validating() -> bool:
    try:
        dist.Normal(torch.zeros(()), -torch.ones(()))
    except ValueError:
        return True
    return False


def test_no_validation_nests_and_restores_the_callers_setting():
    """Argument checking is off inside the block and inside a nested one, back on after;
    ``off=False`` inside turns it on for its own block only."""
    from varbayes.vi.model import no_validation

    before = _validating()
    with no_validation():
        assert not _validating()
        with no_validation():
            assert not _validating()
        assert not _validating()
        with no_validation(off=False):
            assert _validating()
        assert not _validating()
    assert _validating() == before


@pytest.mark.slow
def test_log_density_compiles_in_one_graph_inside_a_no_validation_block():
    """torch.compile(fullgraph=True) of a function calling Model.log_density (eight schools)
    inside an outer no_validation block: no graph break, the eager value."""
    from varbayes.vi.model import no_validation

    model = vi.Model(eight_schools, data=EIGHT)
    z = torch.randn(4, model.dim, dtype=model.dtype, generator=torch.Generator().manual_seed(0))
    with no_validation():
        compiled = torch.compile(lambda u: model.log_density(u).sum(), fullgraph=True)
        assert torch.allclose(compiled(z), model.log_density(z).sum(), rtol=1e-12)
