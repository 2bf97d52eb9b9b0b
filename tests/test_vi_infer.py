"""fit(model): the guides, the stopping rule, PSIS k̂, the posterior object, divergences."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import distributions as dist
from torch.distributions import constraints
from vi_examples import EIGHT, eight_schools  # noqa: E402

from varbayes import vi
from varbayes.monitor import ConvergenceWarning, NonFiniteObjectiveError
from varbayes.vi.infer import _maximise

D64 = torch.float64


def regression(m, data):
    """y ~ N(a + X b, σ²) with flat priors on a, b and σ > 0 (kidiq-like scaling)."""
    X = data["X"]
    a = m.latent("a", support=constraints.real)
    b = m.latent("b", support=constraints.real, shape=(X.shape[1],))
    sigma = m.latent("sigma", support=constraints.positive)
    m.observe("y", dist.Normal(a[..., None] + b @ X.T, sigma[..., None]), data["y"])


def badly_scaled_data(n=200, seed=0):
    """Predictors on scales 1, 100 and 10⁴ with a large intercept: a posterior whose
    sds span six orders of magnitude and whose coefficients are strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1.0, 100.0, 1e4], dtype=D64)
    X = torch.randn(n, 3, generator=g, dtype=D64) * scales + 50.0
    coef = torch.tensor([2.0, 0.03, -1e-4], dtype=D64)
    y = 300.0 + X @ coef + 5.0 * torch.randn(n, generator=g, dtype=D64)
    return {"X": X, "y": y}


def exact_regression_posterior(data):
    """With flat priors on (a, b) and on σ > 0 (density 1 on σ), the marginal posterior
    of β = (a, b) is a multivariate t: ν = n - p - 1, location β̂ (least squares),
    scale s²(XᵀX)⁻¹ with s² = RSS/ν (the flat prior on σ adds one to the usual n - p)."""
    X1 = torch.cat([torch.ones(data["X"].shape[0], 1, dtype=D64), data["X"]], 1)
    y = data["y"]
    n, p = X1.shape
    beta = torch.linalg.lstsq(X1, y[:, None]).solution[:, 0]
    rss = float(((y - X1 @ beta) ** 2).sum())
    nu = n - p - 1
    scale2 = rss / nu * torch.linalg.inv(X1.T @ X1)
    sd = (scale2.diagonal() * nu / (nu - 2)).sqrt()
    return beta, sd


@pytest.mark.parametrize("guide", ["fullrank", "block", "meanfield", "lowrank"])
def test_badly_scaled_regression_means_are_exact_for_every_guide(guide):
    """On a regression whose coefficient sds differ by 10⁶ and are correlated, every
    family finds the exact posterior means (within 0.05 sd) with the default settings;
    full rank also gets the sds (within 3%: the t marginals are nearly Gaussian)."""
    data = badly_scaled_data()
    beta, sd = exact_regression_posterior(data)
    post = vi.fit(vi.Model(regression, data), guide)
    assert post.converged, post.message
    loc = post.q.mean[:4]
    assert bool(((loc - beta).abs() / sd < 0.05).all()), (loc - beta) / sd
    if guide in ("fullrank", "block"):
        draws = post.sample(4000, resample=False)
        got_sd = torch.cat([draws["a"].std()[None], draws["b"].std(0)])
        if guide == "fullrank":
            assert torch.allclose(got_sd / sd, torch.ones(4, dtype=D64), atol=0.06)


def test_converged_means_converged_more_iterations_change_nothing():
    """The stopping rule (max |∇ ELBO_M| ≤ gtol in whitened units) on eight schools: a
    fit run 10⁴ times tighter moves no mean by more than 0.001 posterior sd, and the
    objective by less than 1e-6."""
    model = vi.Model(eight_schools, EIGHT)
    post = vi.fit(model)
    tight = vi.fit(model, gtol=1e-8)
    assert post.converged and tight.converged
    sd = tight.q.stddev
    assert bool(((post.q.mean - tight.q.mean).abs() / sd < 1e-3).all())
    assert abs(post.trace[-1] - tight.trace[-1]) < 1e-6
    assert len(post.trace) == post.steps


def test_a_run_cut_short_is_not_converged():
    """max_iter too small: converged is False, the message says so, and fit warns."""
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        post = vi.fit(vi.Model(eight_schools, EIGHT), max_iter=3)
    assert not post.converged and "not converged" in post.message


def test_psis_khat_and_weights_equal_arviz_on_the_same_log_weights():
    """Our PSIS equals ArviZ's psislw (the oracle) on light and heavy tails."""
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(0)
    for df in (50.0, 4.0, 1.0):
        log_w = rng.standard_t(df, size=3000)
        ours, k = vi.psis(log_w)
        theirs, k_az = az.psislw(log_w.copy())
        assert k == pytest.approx(float(k_az), rel=1e-10)
        np.testing.assert_allclose(ours, np.asarray(theirs), atol=1e-10)


@pytest.mark.parametrize("a", [0.3, 0.8])
def test_psis_khat_agrees_with_numpyro_psis_diagnostic_on_a_known_tail(a):
    """Weights w = exp(a x²/2), x ~ N(0, 1) have Pareto tail index k = a. NumPyro's
    psis_diagnostic (on a model/guide pair with these log weights) and ours (on our own
    draws of the same weights) agree within the Monte Carlo spread of 20,000 draws."""
    numpyro = pytest.importorskip("numpyro")
    import jax
    import numpyro.distributions as ndist
    from numpyro.infer import psis_diagnostic

    def model():
        x = numpyro.sample("x", ndist.Normal(0.0, 1.0))
        numpyro.factor("w", a * x * x / 2)

    def guide():
        numpyro.sample("x", ndist.Normal(0.0, 1.0))

    n = 20_000
    k_numpyro = psis_diagnostic(jax.random.PRNGKey(0), {}, model, guide, num_particles=n)
    x = np.random.default_rng(1).standard_normal(n)
    _, k_ours = vi.psis(a * x * x / 2)
    assert k_ours == pytest.approx(float(k_numpyro), abs=0.1)
    assert k_ours == pytest.approx(a, abs=0.15)


def test_khat_above_threshold_warns_and_draws_are_not_resampled():
    """A mean-field fit of a strongly correlated Gaussian has k̂ > 0.7: it warns, and
    sample() returns q's own draws."""
    cov = torch.tensor([[1.0, 0.99], [0.99, 1.0]], dtype=D64)

    def corr(m):
        m.latent("x", dist.MultivariateNormal(torch.zeros(2, dtype=D64), cov))

    with pytest.warns(vi.PSISWarning, match="k̂"):
        post = vi.fit(vi.Model(corr), "meanfield")
    assert post.khat > 0.7 and not post.resamples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = vi.fit(vi.Model(corr), "fullrank")
    assert full.khat < 0.5 and full.resamples


def test_posterior_summary_predictive_and_arviz():
    """summary names elements as ArviZ does, predictive draws the observed site given θ
    on new data, to_arviz holds every named value."""
    post = vi.fit(vi.Model(eight_schools, EIGHT))
    table = post.summary(2000)
    assert "theta[7]" in table.names and table["tau"]["sd"] > 0
    assert table["mu"]["5%"] < table["mu"]["50%"] < table["mu"]["95%"]
    assert "mean" in str(table).splitlines()[0]
    new = {"y": None, "sigma": torch.full((8,), 1e-6, dtype=D64)}
    pred = post.predictive(new, 300, seed=1)
    assert pred["y"].shape == (300, 8)
    # with a tiny noise sd, y given θ is θ itself
    assert torch.allclose(pred["y"], pred["theta"], atol=1e-4)
    az = pytest.importorskip("arviz")
    idata = post.to_arviz(200)
    assert isinstance(idata, az.InferenceData)
    assert set(idata.posterior.data_vars) == {"mu", "tau", "theta_tilde", "theta"}


def test_map_and_laplace_guides():
    """MAP is a point mass at argmax log p(x, z); Laplace is N(ẑ, (-H)⁻¹): on a Gaussian
    target both are exact (mean; and covariance for Laplace)."""
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=D64)
    mean = torch.tensor([1.0, -3.0], dtype=D64)

    def gauss(m):
        m.latent("x", dist.MultivariateNormal(mean, cov))

    model = vi.Model(gauss)
    point = vi.fit(model, "map")
    assert torch.allclose(point.q.mean, mean, atol=1e-6) and math.isinf(point.khat)
    assert torch.equal(point.sample(3)["x"], point.q.mean.expand(3, 2))
    lap = vi.fit(model, "laplace")
    assert torch.allclose(lap.q.covariance_matrix, cov, atol=1e-8)


def test_divergence_is_raised_never_returned():
    """A non-finite objective at the start raises NonFiniteObjectiveError; later trial
    points that are not finite are rejected by the line search (the ascent continues)."""

    def objective(x):
        return -(x * x).sum()

    with pytest.raises(NonFiniteObjectiveError, match="start"):
        _maximise(lambda x: x.sum() * math.nan, torch.ones(2, dtype=D64), 10, 1e-6)
    x, trace, conv, _ = _maximise(objective, torch.ones(2, dtype=D64) * 3, 100, 1e-8)
    assert conv and float(x.abs().max()) < 1e-8


def test_fit_arguments_are_validated():
    model = vi.Model(eight_schools, EIGHT)
    with pytest.raises(ValueError, match="guide"):
        vi.fit(model, "nuts")
    with pytest.raises(ValueError, match="max_iter"):
        vi.fit(model, max_iter=0)
    with pytest.raises(ValueError, match="gtol"):
        vi.fit(model, gtol=-1.0)
    with pytest.raises(ValueError, match="rank"):
        vi.fit(model, "lowrank", rank=0)
    with pytest.raises(TypeError, match="model"):
        vi.infer.fit_model(lambda z: z.sum(-1))
