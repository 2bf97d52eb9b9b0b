"""Guides built for a model (vi.guide, a Posterior as warm start), scalar factors over
particles, and errors raised inside the user's model during vi.fit."""

import math

import pytest
import torch
from torch import distributions as dist
from vi_examples import EIGHT, eight_schools  # noqa: E402

from varbayes import vi
from varbayes.monitor import NonFiniteObjectiveError

D64 = torch.float64


class _Counted:
    """A model function that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls, self.__name__ = fn, 0, fn.__name__

    def __call__(self, m, data):
        self.calls += 1
        return self.fn(m, data)


def seven_schools(m, data):
    mu = m.latent("mu", dist.Normal(0.0, 5.0))
    tau = m.latent("tau", dist.Normal(0.0, 5.0))  # real support: not the guide's positive
    theta_tilde = m.latent("theta_tilde", dist.Normal(0.0, 1.0).expand([7]))
    m.latent("nu", dist.Normal(0.0, 1.0))
    theta = mu[..., None] + tau[..., None] * theta_tilde
    m.observe("y", dist.Normal(theta, data["sigma"][:7]), data["y"][:7])


def test_a_guide_built_for_the_model_fits_as_its_family_name_does():
    """vi.fit(model, vi.guide(model, "lowrank", rank=2)) is vi.fit(model, "lowrank", rank=2)."""
    model = vi.Model(eight_schools, EIGHT)
    g = vi.guide(model, "lowrank", rank=2)
    assert g.family == "lowrank" and g.rank == 2 and g.sites[1][0] == "tau"
    post = vi.fit(model, g, num_check=200)
    ref = vi.fit(model, "lowrank", rank=2, num_check=200)
    assert post.guide == "lowrank" and post.q.cov_factor.shape == (10, 2)
    torch.testing.assert_close(post.q.mean, ref.q.mean)
    torch.testing.assert_close(post.q.cov_factor, ref.q.cov_factor)


def test_a_guide_built_for_another_model_names_every_differing_site_and_fits_nothing():
    """A guide of eight schools on a model with theta_tilde (7,), tau real and a new nu:
    ValueError naming the three sites, raised before the model function runs again."""
    g = vi.guide(vi.Model(eight_schools, EIGHT), "fullrank")
    fn = _Counted(seven_schools)
    other = vi.Model(fn, EIGHT)
    calls = fn.calls
    with pytest.raises(ValueError, match="eight_schools") as info:
        vi.fit(other, g)
    message = str(info.value)
    assert "seven_schools" in message
    assert "'theta_tilde' has shape (8,) in the guide but (7,) in the model" in message
    assert "'tau' has support GreaterThanEq(lower_bound=0.0) in the guide but Real()" in message
    assert "'nu' is not in the guide" in message and "'mu'" not in message
    assert fn.calls == calls


def test_a_posterior_of_another_model_is_refused_naming_the_sites():
    """The Posterior of eight schools passed to vi.fit on a logistic regression."""
    post = vi.fit(vi.Model(eight_schools, EIGHT), "laplace", num_check=100)
    X = torch.randn(20, 2, dtype=D64)
    logistic = vi.LogisticRegression(X, (X[:, 0] > 0).to(D64))
    with pytest.raises(ValueError, match="'mu' is not in the model") as info:
        vi.fit(logistic, post)
    assert "'theta' is not in the guide" in str(info.value)
    with pytest.raises(TypeError, match="guide must be one of"):
        vi.fit(logistic, 42)
    with pytest.raises(ValueError, match="rank is for the 'lowrank' family"):
        vi.guide(logistic, "fullrank", rank=2)


def test_a_posterior_warm_starts_the_fit_with_its_family():
    """vi.fit(model, post) keeps post's family and gets its answer with fewer calls of the
    model function (the MAP search starts at post's mean)."""
    cold_fn = _Counted(eight_schools)
    model = vi.Model(cold_fn, EIGHT)
    post = vi.fit(model, "meanfield", num_check=200)
    cold = cold_fn.calls
    warm_fn = _Counted(eight_schools)
    again = vi.Model(warm_fn, EIGHT)
    start = warm_fn.calls
    warm = vi.fit(again, post, num_check=200)
    assert warm.guide == "meanfield"
    assert warm_fn.calls - start < cold - 1  # the cold count includes its construction trace
    sd = post.q.stddev
    assert ((warm.q.mean - post.q.mean).abs() < 1e-3 * sd).all()
    assert ((warm.q.stddev / sd - 1).abs() < 1e-3).all()


def test_a_python_number_factor_is_one_term_for_every_particle():
    """m.factor("c", 1.5) adds 1.5 to log p for each of S particles (and fit runs)."""

    def shifted(m):
        x = m.latent("x", dist.Normal(0.0, 1.0).expand([2]))
        m.factor("c", 1.5)
        return x

    model = vi.Model(shifted)
    z = torch.randn(5, 2, dtype=D64)
    ref = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + 1.5
    torch.testing.assert_close(model.log_density(z), ref)
    torch.testing.assert_close(model.log_density(z[0]), ref[0])
    post = vi.fit(model, num_check=200)
    assert abs(post.elbo - (1.5 + 0.0)) < 5 * post.elbo_se + 1e-6  # log Z = 1.5: q exact


def _fails_when(condition, error):
    def flaky(m):
        x = m.latent("x", dist.Normal(0.0, 1.0))
        if condition(x):
            raise error
        m.factor("f", -0.5 * x * x)

    return flaky


@pytest.mark.parametrize(
    ("condition", "error", "phase"),
    [
        (lambda x: x.ndim == 0, KeyError("no such column"), "MAP"),
        (lambda x: x.ndim == 1, IndexError("row 9 of 8"), "ADVI"),
        (lambda x: x.ndim == 0, RuntimeError("shape mismatch"), "MAP"),
    ],
)
def test_an_error_inside_the_model_names_the_function_and_the_phase(condition, error, phase):
    """The model raising in the MAP search (unbatched) or in ADVI (S particles): ModelError
    naming 'flaky' and the phase, with the original exception as its cause."""
    calls = {"n": 0}
    base = _fails_when(condition, error)

    def flaky(m):
        calls["n"] += 1
        if calls["n"] == 1:  # the construction trace
            x = m.latent("x", dist.Normal(0.0, 1.0))
            m.factor("f", -0.5 * x * x)
            return
        base(m)

    flaky_model = vi.Model(flaky)
    expected = rf"'flaky' raised {type(error).__name__} during"
    with pytest.raises(vi.ModelError, match=expected) as info:
        vi.fit(flaky_model, num_check=100)
    assert phase in str(info.value) and str(error.args[0]) in str(info.value)
    assert info.value.__cause__ is error


def test_an_objective_that_is_nan_from_the_start_is_still_a_non_finite_error():
    """A model whose density is NaN at z = 0 after construction: NonFiniteObjectiveError."""
    calls = {"n": 0}

    def nan_later(m):
        x = m.latent("x", dist.Normal(0.0, 1.0))
        calls["n"] += 1
        m.factor("f", x * (math.nan if calls["n"] > 1 else 0.0))

    with pytest.raises(NonFiniteObjectiveError, match="start"):
        vi.fit(vi.Model(nan_later))
