"""Conjugate models against independent oracles: numerical integration and scipy.stats."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, stats

from varbayes.conjugate import (
    BetaBernoulli,
    BetaBinomial,
    DirichletCategorical,
    DirichletMultinomial,
    GammaPoisson,
    NormalKnownVariance,
    NormalUnknownVariance,
)

RNG = np.random.default_rng(0)

# One row per scalar-parameter family:
# (id, model, data, scipy log prior(θ), scipy log lik(x, θ), support of θ, new-x values,
#  scipy predictive log p(x_new) for the closed-form check)
X_NORMAL = RNG.normal(183.0, 7.0, size=12)
X_BERN = np.array([1, 0, 1, 1, 1, 0, 1, 1])
X_BINOM = np.array([3, 7, 5, 6])
X_POIS = np.array([4, 2, 7, 3, 5, 3])

SCALAR_CASES = [
    (
        "normal",
        NormalKnownVariance(prior_mean=160.0, prior_std=10.0, noise_std=7.0),
        X_NORMAL,
        lambda t: stats.norm.logpdf(t, 160.0, 10.0),
        lambda x, t: stats.norm.logpdf(x, t, 7.0).sum(),
        (100.0, 260.0),
        [150.0, 183.0, 200.0],
    ),
    (
        "beta-bernoulli",
        BetaBernoulli(prior_alpha=2.0, prior_beta=3.0),
        X_BERN,
        lambda t: stats.beta.logpdf(t, 2.0, 3.0),
        lambda x, t: stats.bernoulli.logpmf(x, t).sum(),
        (0.0, 1.0),
        [0, 1],
    ),
    (
        "beta-binomial",
        BetaBinomial(prior_alpha=1.5, prior_beta=0.7, total_count=10),
        X_BINOM,
        lambda t: stats.beta.logpdf(t, 1.5, 0.7),
        lambda x, t: stats.binom.logpmf(x, 10, t).sum(),
        (0.0, 1.0),
        [0, 4, 10],
    ),
    (
        "gamma-poisson",
        GammaPoisson(prior_shape=2.0, prior_rate=0.5),
        X_POIS,
        lambda t: stats.gamma.logpdf(t, 2.0, scale=1 / 0.5),
        lambda x, t: stats.poisson.logpmf(x, t).sum(),
        (0.0, 60.0),
        [0, 4, 15],
    ),
]
SCALAR_IDS = [c[0] for c in SCALAR_CASES]


def _quad(f, lo, hi):
    value, err = integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-12, limit=500)
    return value


@pytest.mark.parametrize("case", SCALAR_CASES, ids=SCALAR_IDS)
def test_evidence_equals_numerical_integration(case):
    """log p(x) = log ∫ p(x|θ) p(θ) dθ computed by scipy.integrate.quad."""
    _, model, x, log_prior, log_lik, (lo, hi), _ = case
    ours = float(model.log_marginal_likelihood(x))
    shift = ours  # integrate the rescaled integrand to keep it O(1)
    z = _quad(lambda t: math.exp(log_prior(t) + log_lik(x, t) - shift), lo, hi)
    assert ours == pytest.approx(shift + math.log(z), abs=1e-8)


@pytest.mark.parametrize("case", SCALAR_CASES, ids=SCALAR_IDS)
def test_posterior_density_equals_prior_times_likelihood_over_evidence(case):
    """p(θ|x) = p(x|θ) p(θ) / ∫ p(x|θ') p(θ') dθ' at several θ (quadrature oracle)."""
    _, model, x, log_prior, log_lik, (lo, hi), _ = case
    post = model.update(x).posterior
    log_z = math.log(_quad(lambda t: math.exp(log_prior(t) + log_lik(x, t)), lo, hi))
    m, s = float(post.mean), float(post.stddev)
    for t in (m - s, m, m + 0.5 * s):
        expected = log_prior(t) + log_lik(x, t) - log_z
        got = float(post.log_prob(torch.tensor(t, dtype=torch.float64)))
        assert got == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("case", SCALAR_CASES, ids=SCALAR_IDS)
def test_posterior_predictive_equals_integral_over_posterior(case):
    """p(x_new|x) = ∫ p(x_new|θ) p(θ|x) dθ (quadrature), for several x_new."""
    _, model, x, log_prior, log_lik, (lo, hi), new = case
    pred = model.update(x).posterior_predictive()
    log_z = math.log(_quad(lambda t: math.exp(log_prior(t) + log_lik(x, t)), lo, hi))
    for xn in new:
        num = _quad(
            lambda t, xn=xn: math.exp(log_prior(t) + log_lik(x, t) + log_lik(np.array([xn]), t)),
            lo,
            hi,
        )
        got = float(pred.log_prob(torch.tensor(float(xn), dtype=torch.float64)))
        assert got == pytest.approx(math.log(num) - log_z, abs=1e-7)


@pytest.mark.parametrize("case", SCALAR_CASES, ids=SCALAR_IDS)
def test_map_and_mle_maximise_posterior_and_likelihood(case):
    """map() maximises log p(x|θ) + log p(θ) and mle() maximises log p(x|θ) (scipy.optimize)."""
    _, model, x, log_prior, log_lik, (lo, hi), _ = case
    post = model.update(x)
    eps = 1e-9 * (hi - lo)
    bounds = (lo + eps, hi - eps)
    opt_map = optimize.minimize_scalar(
        lambda t: -(log_prior(t) + log_lik(x, t)),
        bounds=bounds,
        method="bounded",
        options={"xatol": 1e-10},
    )
    opt_mle = optimize.minimize_scalar(
        lambda t: -log_lik(x, t), bounds=bounds, method="bounded", options={"xatol": 1e-10}
    )
    assert float(post.map()) == pytest.approx(opt_map.x, rel=1e-6, abs=1e-7)
    assert float(post.mle()) == pytest.approx(opt_mle.x, rel=1e-6, abs=1e-7)


def test_heights_posterior_lies_between_prior_and_data():
    """The post's example: prior N(160, 10²), data around 183 → posterior mean in between."""
    post = NormalKnownVariance(160.0, 10.0, 7.0).update(X_NORMAL)
    assert 160.0 < float(post.posterior.mean) < float(post.mle())
    lo, hi = post.credible_interval(0.95)
    sd = float(post.posterior.stddev)
    assert (hi - lo) == pytest.approx(2 * stats.norm.ppf(0.975) * sd, rel=1e-12)


# ----------------------------------------------------------- Normal-Gamma (2-D θ)
NG = NormalUnknownVariance(prior_mean=1.0, prior_kappa=2.0, prior_shape=3.0, prior_rate=2.0)
X_NG = RNG.normal(1.5, 0.8, size=7)


def _ng_log_prior(mu, tau):
    # Gamma(τ; 3, rate 2) · N(μ; 1, 1/(2τ)), written with math for fast quadrature
    log_gamma = 3.0 * math.log(2.0) - math.lgamma(3.0) + 2.0 * math.log(tau) - 2.0 * tau
    return log_gamma + 0.5 * math.log(2.0 * tau / (2 * math.pi)) - tau * (mu - 1.0) ** 2


def _ng_log_lik(x, mu, tau):
    n, s1, s2 = len(x), float(np.sum(x)), float(np.sum(np.square(x)))
    return 0.5 * n * math.log(tau / (2 * math.pi)) - 0.5 * tau * (s2 - 2 * mu * s1 + n * mu * mu)


def test_ng_helpers_agree_with_scipy():
    """The hand-written oracle densities equal scipy.stats' gamma and norm."""
    mu, tau = 0.7, 1.9
    assert _ng_log_prior(mu, tau) == pytest.approx(
        stats.gamma.logpdf(tau, 3.0, scale=0.5) + stats.norm.logpdf(mu, 1.0, (2 * tau) ** -0.5)
    )
    assert _ng_log_lik(X_NG, mu, tau) == pytest.approx(stats.norm.logpdf(X_NG, mu, tau**-0.5).sum())


def _ng_integral(log_f):
    """∫∫ exp(log_f(μ, τ)) dμ dτ over τ ∈ (0, 20], μ ∈ [-4, 6] (scipy dblquad, tight tolerances)."""
    value, _ = integrate.dblquad(
        lambda mu, tau: math.exp(log_f(mu, tau)), 1e-9, 20.0, -4.0, 6.0, epsabs=1e-12, epsrel=1e-10
    )
    return value


def test_normal_gamma_evidence_equals_double_integral():
    """Normal-Gamma evidence equals scipy.integrate.dblquad over (μ, τ)."""
    ours = float(NG.log_marginal_likelihood(X_NG))
    z = _ng_integral(lambda mu, tau: _ng_log_prior(mu, tau) + _ng_log_lik(X_NG, mu, tau) - ours)
    assert math.log(z) == pytest.approx(0.0, abs=1e-7)


def test_normal_gamma_posterior_and_predictive_match_scipy():
    """Posterior density = prior·lik/evidence; predictive = scipy Student t; marginals agree."""
    post = NG.update(X_NG)
    log_z = float(NG.log_marginal_likelihood(X_NG))
    for mu, tau in [(1.2, 1.0), (1.6, 2.5), (0.5, 0.3)]:
        expected = _ng_log_prior(mu, tau) + _ng_log_lik(X_NG, mu, tau) - log_z
        got = float(post.posterior.log_prob(torch.tensor([mu, tau], dtype=torch.float64)))
        assert got == pytest.approx(expected, abs=1e-9)
    # predictive: integrate the likelihood of a new point against the posterior
    xn = 2.0
    num = _ng_integral(
        lambda mu, tau: _ng_log_prior(mu, tau) + _ng_log_lik(np.append(X_NG, xn), mu, tau) - log_z
    )
    pred = post.posterior_predictive()
    assert float(pred.log_prob(torch.tensor(xn, dtype=torch.float64))) == pytest.approx(
        math.log(num), abs=1e-7
    )
    # marginal of μ integrates the joint over τ
    mu0 = 1.4
    marg = integrate.quad(
        lambda tau: math.exp(
            float(post.posterior.log_prob(torch.tensor([mu0, tau], dtype=torch.float64)))
        ),
        1e-12,
        40.0,
        epsrel=1e-11,
    )[0]
    got = float(post.posterior.marginal_loc().log_prob(torch.tensor(mu0, dtype=torch.float64)))
    assert got == pytest.approx(math.log(marg), abs=1e-8)


def test_normal_gamma_map_and_mle_maximise_their_objectives():
    """map() maximises the joint posterior density and mle() the likelihood (scipy.optimize)."""
    post = NG.update(X_NG)

    def neg_post(v):
        return -(_ng_log_prior(v[0], math.exp(v[1])) + _ng_log_lik(X_NG, v[0], math.exp(v[1])))

    def neg_lik(v):
        return -_ng_log_lik(X_NG, v[0], math.exp(v[1]))

    for fn, got in ((neg_post, post.map()), (neg_lik, post.mle())):
        res = optimize.minimize(
            fn,
            x0=[0.0, 0.0],
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000},
        )
        assert float(got[0]) == pytest.approx(res.x[0], abs=1e-6)
        assert float(got[1]) == pytest.approx(math.exp(res.x[1]), rel=1e-6)


# --------------------------------------------------------------------- Dirichlet
def test_dirichlet_categorical_evidence_and_posterior_by_integration_over_simplex():
    """K = 3: evidence and posterior density against dblquad over the 2-simplex."""
    alpha = np.array([1.5, 2.0, 0.8])
    x = np.array([0, 2, 1, 1, 0, 1])
    model = DirichletCategorical(alpha)
    counts = np.bincount(x, minlength=3)

    def integrand(p1, p0):
        p = np.array([p0, p1, 1 - p0 - p1])
        return math.exp(stats.dirichlet.logpdf(p, alpha) + (counts * np.log(p)).sum())

    z, _ = integrate.dblquad(integrand, 0, 1, 0, lambda p0: 1 - p0, epsabs=1e-13, epsrel=1e-10)
    assert float(model.log_marginal_likelihood(x)) == pytest.approx(math.log(z), abs=1e-7)
    p = np.array([0.3, 0.5, 0.2])
    got = float(model.update(x).posterior.log_prob(torch.tensor(p)))
    expected = stats.dirichlet.logpdf(p, alpha) + (counts * np.log(p)).sum() - math.log(z)
    assert got == pytest.approx(expected, abs=1e-7)
    pred = model.update(x).posterior_predictive()
    np.testing.assert_allclose(pred.probs.numpy(), (alpha + counts) / (alpha + counts).sum())


def test_dirichlet_multinomial_matches_scipy():
    """Evidence and predictive equal scipy.stats.dirichlet_multinomial; MAP/MLE closed forms."""
    alpha = np.array([2.0, 1.0, 3.0, 1.5])
    rows = np.array([[1, 0, 3, 2], [0, 2, 2, 1], [4, 0, 0, 1]])
    model = DirichletMultinomial(alpha)
    # evidence: the rows arrive one at a time, each a Dirichlet-multinomial of the updated α
    expected, a = 0.0, alpha.copy()
    for r in rows:
        expected += stats.dirichlet_multinomial.logpmf(r, a, r.sum())
        a = a + r
    assert float(model.log_marginal_likelihood(rows)) == pytest.approx(expected, abs=1e-10)
    post = model.update(rows)
    new = np.array([1, 1, 2, 1])
    assert float(post.posterior_predictive(5).log_prob(torch.tensor(new, dtype=torch.float64))) == (
        pytest.approx(stats.dirichlet_multinomial.logpmf(new, a, 5), abs=1e-10)
    )
    np.testing.assert_allclose(post.map().numpy(), (a - 1) / (a.sum() - 4), rtol=1e-12)
    np.testing.assert_allclose(post.mle().numpy(), rows.sum(0) / rows.sum(), rtol=1e-12)


# ---------------------------------------------------------- generic properties
def _make(family):
    return {
        "normal": (lambda: NormalKnownVariance(0.0, 2.0, 1.0), st.floats(-50, 50)),
        "normal-gamma": (lambda: NormalUnknownVariance(0.0, 1.0, 2.0, 1.0), st.floats(-50, 50)),
        "bernoulli": (lambda: BetaBernoulli(1.0, 1.0), st.integers(0, 1)),
        "binomial": (lambda: BetaBinomial(2.0, 2.0, total_count=7), st.integers(0, 7)),
        "poisson": (lambda: GammaPoisson(1.0, 1.0), st.integers(0, 1000)),
        "categorical": (lambda: DirichletCategorical([1.0, 1.0, 2.0]), st.integers(0, 2)),
    }[family]


FAMILIES = ["normal", "normal-gamma", "bernoulli", "binomial", "poisson", "categorical"]


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_sequential_updates_equal_one_batch_update(family, data):
    """Updating on x then on y gives the same posterior as updating on x and y together."""
    make, elem = _make(family)
    x = data.draw(st.lists(elem, min_size=1, max_size=20))
    y = data.draw(st.lists(elem, min_size=1, max_size=20))
    seq = make().update(x).update(y)
    batch = make().update(x + y)
    assert seq.n_observations == batch.n_observations == len(x) + len(y)
    for key, value in batch.posterior_params.items():
        torch.testing.assert_close(seq.posterior_params[key], value, rtol=1e-10, atol=1e-9)
    # the evidence chains the same way: log p(x, y) = log p(x) + log p(y | x)
    joint = make().log_marginal_likelihood(x + y)
    chained = make().log_marginal_likelihood(x) + make().update(x).log_marginal_likelihood(y)
    torch.testing.assert_close(joint, chained, rtol=1e-9, atol=1e-8)


@settings(max_examples=25, deadline=None)
@given(
    theta=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31 - 1),
)
def test_beta_bernoulli_posterior_concentrates_on_the_true_value(theta, seed):
    """With n = 20,000 flips the posterior sd is ≤ 0.0036 and the mean is within 5 sd of θ.

    The posterior mean differs from θ by O(sqrt(θ(1-θ)/n)); 5 sd makes a failure a ~1e-6 event.
    """
    rng = np.random.default_rng(seed)
    sds = []
    model = BetaBernoulli(1.0, 1.0)
    for n in (200, 2000, 20000):
        post = model.update(rng.random(n) < theta)
        sds.append(float(post.posterior.stddev))
    assert sds[0] > sds[1] > sds[2]
    assert sds[2] <= 0.5 / math.sqrt(20000)
    assert abs(float(post.posterior.mean) - theta) < 5 * sds[2]


@settings(max_examples=25, deadline=None)
@given(mu=st.floats(-100, 100), sigma=st.floats(0.5, 20), seed=st.integers(0, 2**31 - 1))
def test_normal_gamma_posterior_concentrates_on_the_true_values(mu, sigma, seed):
    """μ and τ posteriors narrow around the truth as n grows (5-sd tolerance, n = 50,000)."""
    rng = np.random.default_rng(seed)
    post = NormalUnknownVariance(0.0, 0.01, 1.0, 1.0).update(rng.normal(mu, sigma, 50000))
    m = post.posterior.marginal_loc()
    t = post.posterior.marginal_precision()
    assert abs(float(m.mean) - mu) < 5 * float(m.stddev)
    assert abs(float(t.mean) - sigma**-2) < 5 * float(t.stddev)


# ------------------------------------------------------------------- bad input
BAD_DATA = [
    (lambda: NormalKnownVariance(), [1.0, float("nan")], "data must be finite"),
    (lambda: NormalKnownVariance(), [1.0, float("inf")], "data must be finite"),
    (lambda: NormalKnownVariance(), [], "data must not be empty"),
    (lambda: NormalKnownVariance(), [[1.0, 2.0]], "data must be a 1-D"),
    (lambda: NormalUnknownVariance(), np.ones((2, 2)), "data must be a 1-D"),
    (lambda: GammaPoisson(), [1, -2], "data must hold Poisson counts.*negative"),
    (lambda: GammaPoisson(), [1, 2.5], "data must hold Poisson counts.*non-integer"),
    (lambda: BetaBernoulli(), [0, 1, 2], r"data must hold Bernoulli outcomes in \{0, 1\}"),
    (lambda: BetaBernoulli(), [0.5], r"data must hold Bernoulli outcomes"),
    (lambda: BetaBinomial(total_count=5), [3, 6], "data must hold success counts k <= total_count"),
    (lambda: BetaBinomial(total_count=5), [-1], "data must hold success counts.*negative"),
    (lambda: DirichletCategorical([1, 1]), [0, 2], r"data must hold category labels in \[0, 1\]"),
    (lambda: DirichletMultinomial([1, 1, 1]), [[1, 2]], "data must have K = 3 columns"),
    (lambda: DirichletMultinomial([1, 1, 1]), np.ones((2, 2, 3)), "data must be a 2-D"),
    (lambda: NormalKnownVariance(), "abc", "data must be a number"),
]


@pytest.mark.parametrize("make, data, message", BAD_DATA)
def test_bad_data_raises_naming_the_argument_and_leaves_model_unchanged(make, data, message):
    """Invalid observations raise ValueError/TypeError naming `data`; the belief is untouched."""
    model = make().update(_valid_data(make()))
    before = {k: v.clone() for k, v in model.posterior_params.items()}
    with pytest.raises((ValueError, TypeError), match=message):
        model.update(data)
    with pytest.raises((ValueError, TypeError), match=message):
        model.log_marginal_likelihood(data)
    for k, v in model.posterior_params.items():
        assert torch.equal(v, before[k])
    assert model.n_observations == 1


def _valid_data(model):
    if isinstance(model, DirichletMultinomial):
        return [[1] * model.n_categories]
    return [1]


BAD_PARAMS = [
    (lambda: NormalKnownVariance(prior_std=0.0), "prior_std must be > 0"),
    (lambda: NormalKnownVariance(noise_std=-1.0), "noise_std must be > 0"),
    (lambda: NormalKnownVariance(prior_mean=float("nan")), "prior_mean must be finite"),
    (lambda: NormalUnknownVariance(prior_kappa=0), "prior_kappa must be > 0"),
    (lambda: NormalUnknownVariance(prior_shape=-1), "prior_shape must be > 0"),
    (lambda: NormalUnknownVariance(prior_rate=float("inf")), "prior_rate must be finite"),
    (lambda: BetaBernoulli(prior_alpha=0), "prior_alpha must be > 0"),
    (lambda: BetaBinomial(prior_beta=-2), "prior_beta must be > 0"),
    (lambda: BetaBinomial(total_count=0), "total_count must be >= 1"),
    (lambda: BetaBinomial(total_count=2.5), "total_count must be an integer"),
    (lambda: GammaPoisson(prior_rate=0), "prior_rate must be > 0"),
    (lambda: DirichletCategorical([1.0, 0.0]), "prior_concentration must be > 0"),
    (lambda: DirichletCategorical([1.0]), "prior_concentration must be a 1-D vector of K >= 2"),
    (lambda: NormalKnownVariance(prior_mean=[1.0, 2.0]), "prior_mean must be a scalar"),
]


@pytest.mark.parametrize("make, message", BAD_PARAMS)
def test_bad_hyperparameters_raise_naming_the_argument(make, message):
    """Non-positive scales/concentrations and non-finite values raise ValueError naming them."""
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_mle_before_data_and_undefined_modes_raise():
    """mle() without data, and a MAP that does not exist, raise clear errors."""
    with pytest.raises(ValueError, match=r"mle\(\) needs data"):
        GammaPoisson().mle()
    with pytest.raises(ValueError, match="no unique mode"):
        BetaBernoulli(0.5, 0.5).map()
    with pytest.raises(ValueError, match="no interior mode"):
        DirichletCategorical([0.5, 2.0]).map()
    with pytest.raises(ValueError, match="all observations are equal"):
        NormalUnknownVariance().update([2.0, 2.0]).mle()
    with pytest.raises(ValueError, match="level must lie in"):
        NormalKnownVariance().credible_interval(1.5)


def test_map_of_prior_only_equals_prior_mode():
    """Before any data the MAP is the prior's mode (the posterior is the prior)."""
    assert float(GammaPoisson(3.0, 2.0).map()) == pytest.approx(1.0)
    assert float(BetaBernoulli(3.0, 2.0).map()) == pytest.approx(2.0 / 3.0)
    assert float(GammaPoisson(0.5, 2.0).map()) == 0.0


# ------------------------------------------------- data near the float64 limit
def _exact_normal_known_variance(x, mu0, s0, s):
    """Posterior mean and log evidence of NormalKnownVariance in exact rational arithmetic.

    The quadratic forms (where float64 overflows or cancels) are Fractions; only the
    log-determinant terms, which are of ordinary size, use math.log.
    """
    from fractions import Fraction as F

    xs = [F(v) for v in x]
    n = len(xs)
    mu0, s0, s = F(mu0), F(s0), F(s)
    post_mean = (mu0 / s0**2 + sum(xs) / s**2) / (1 / s0**2 + n / s**2)
    xbar = sum(xs) / n
    m2 = sum((v - xbar) ** 2 for v in xs)
    v = s0**2 + s**2 / n
    quad = m2 / (2 * s**2) + (xbar - mu0) ** 2 / (2 * v)  # exact, may exceed float64
    logs = (
        -n / 2 * math.log(2 * math.pi * float(s) ** 2)
        + 0.5 * math.log(2 * math.pi * float(s) ** 2 / n)
        - 0.5 * math.log(2 * math.pi * float(v))
    )
    return post_mean, quad, logs


@pytest.mark.parametrize("scale", [1.0, 1e100, 1e150, 1e153, 1e200, 1e300, 1e307, 1e308])
def test_normal_known_variance_posterior_is_right_near_the_float64_limit(scale):
    """x_i = scale·(1 + small noise): the posterior mean equals the exact rational value,
    also where Σx overflows (scale ≥ 1e307 with n = 20); never inf or nan."""
    g = torch.Generator().manual_seed(1)
    x = (scale * (1 + 1e-3 * torch.randn(20, generator=g, dtype=torch.float64))).tolist()
    model = NormalKnownVariance(160.0, 10.0, 7.0).update(x)
    exact_mean, _, _ = _exact_normal_known_variance(x, 160.0, 10.0, 7.0)
    mean = float(model.posterior.mean)
    assert math.isfinite(mean)
    assert mean == pytest.approx(float(exact_mean), rel=1e-12)
    assert float(model.mle()) == pytest.approx(float(sum(Fraction(v) for v in x) / 20), rel=1e-12)
    lo, hi = model.credible_interval(0.95)
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= mean <= hi


@pytest.mark.parametrize("scale", [1.0, 1e50, 1e100, 1e150, 1e153, 1e155, -1e155])
def test_normal_known_variance_evidence_matches_exact_arithmetic(scale):
    """log p(x) equals the closed form evaluated with exact rationals while it is a float64."""
    g = torch.Generator().manual_seed(2)
    x = (scale + 3.0 * torch.randn(15, generator=g, dtype=torch.float64)).tolist()
    _, quad, logs = _exact_normal_known_variance(x, 160.0, 10.0, 3.0)
    exact = logs - float(quad)
    got = float(NormalKnownVariance(160.0, 10.0, 3.0).log_marginal_likelihood(x))
    assert got == pytest.approx(exact, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("scale", [1e156, 1e200, 1e308, -1e308])
def test_normal_known_variance_evidence_beyond_float64_is_refused(scale):
    """When the exact log p(x) lies below -1.8e308 it is refused, naming data, with its
    order of magnitude (checked against the exact value); never -inf or nan."""
    x = [scale] * 20
    _, quad, _ = _exact_normal_known_variance(x, 160.0, 10.0, 7.0)
    assert quad > Fraction(torch.finfo(torch.float64).max)  # truly not representable
    with pytest.raises(ValueError, match=r"^data: log p\(data\) is about -10\^") as info:
        NormalKnownVariance(160.0, 10.0, 7.0).log_marginal_likelihood(x)
    exponent = float(str(info.value).split("-10^")[1].split(",")[0])
    assert exponent == pytest.approx(
        math.log10(quad.numerator) - math.log10(quad.denominator), abs=0.1
    )


def test_sequential_updates_near_the_limit_stay_finite_and_exact():
    """Merging (n, x̄) of two batches at ±1e308 gives the exact pooled posterior mean."""
    a, b = [1e308] * 10, [-1e308] * 5 + [1.5e308] * 5
    seq = NormalKnownVariance(0.0, 1.0, 1.0).update(a).update(b)
    exact, _, _ = _exact_normal_known_variance(a + b, 0.0, 1.0, 1.0)
    assert float(seq.posterior.mean) == pytest.approx(float(exact), rel=1e-12)


def test_normal_unknown_variance_near_the_limit_is_finite_or_refused():
    """Normal-Gamma: the posterior mean is right at 1e308; a rate that overflows is refused."""
    m = NormalUnknownVariance(0.0, 1.0, 1.0, 1.0).update([1e150] * 20)
    q = m.posterior_params  # κ_n = 21, μ_n = 20/21 x̄, β_n = 1 + 20 x̄² / 42
    assert float(q["loc"]) == pytest.approx(20 / 21 * 1e150, rel=1e-12)
    assert float(q["rate"]) == pytest.approx(1 + 20 * 1e300 / 42, rel=1e-12)
    for x in ([1e308] * 20, [1e308, -1e308], [1e200] * 3):
        with pytest.raises(ValueError, match="^data: the posterior's rate overflow"):
            NormalUnknownVariance(0.0, 1.0, 1.0, 1.0).update(x)
