"""VariationalGaussianMixture (CAVI): parity with scikit-learn's BayesianGaussianMixture,
the closed-form ELBO against Monte Carlo, monotonicity, effective components, errors."""

import shutil
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.mixture import BayesianGaussianMixture
from torch.distributions import Beta, Dirichlet, MultivariateNormal, Wishart

from varbayes.mixture import VariationalGaussianMixture, load
from varbayes.mixture._estep import use_blocks
from varbayes.monitor import ConvergenceWarning

PRIORS = ["dirichlet_process", "dirichlet_distribution"]


COV_TYPES = ["full", "diag", "spherical"]  # scikit-learn's tied update is another model


class _SkFromResp(BayesianGaussianMixture):
    """scikit-learn's estimator started from given responsibilities (test oracle only)."""

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, self.resp0)


def _fit_both(x, r0, kw):
    """scikit-learn's and varbayes' fits of x from the same responsibilities r0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = _SkFromResp(**kw)
        sk.resp0 = r0
        sk.fit(x)
        vb = VariationalGaussianMixture(resp_init=r0, **kw).fit(x)
    return sk, vb


def blobs(seed=0, d=3):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.normal(size=(250, d)) + 5,
            rng.normal(size=(150, d)) * 0.5 - 2,
            rng.normal(size=(100, d)) @ np.diag(np.linspace(0.3, 2, d)),
        ]
    )


def random_resp(n, k, seed=1):
    r = np.random.default_rng(seed).uniform(size=(n, k))
    return r / r.sum(1, keepdims=True)


def rel_err(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.max(np.abs(a - b)) / np.max(np.abs(a))


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_posteriors_match_sklearn_from_same_responsibilities(prior, cov_type):
    """From the same r_ik, q(π), q(μ, Λ) match BayesianGaussianMixture to 1e-8 (40 iterations)."""
    x = blobs()
    r0 = random_resp(len(x), 5)
    kw = dict(
        n_components=5,
        covariance_type=cov_type,
        weight_concentration_prior_type=prior,
        max_iter=40,
        tol=0.0,
    )
    sk, vb = _fit_both(x, r0, kw)
    if prior == "dirichlet_process":
        for a, b in zip(sk.weight_concentration_, vb.weight_concentration_, strict=True):
            assert rel_err(a, b) < 1e-8
    else:
        assert rel_err(sk.weight_concentration_, vb.weight_concentration_) < 1e-8
    for name in [
        "mean_precision_",
        "means_",
        "degrees_of_freedom_",
        "covariances_",
        "precisions_cholesky_",
        "weights_",
    ]:
        assert rel_err(getattr(sk, name), getattr(vb, name)) < 1e-8, name
    np.testing.assert_array_equal(sk.predict(x), vb.predict(x))


@pytest.mark.parametrize("prior", PRIORS)
def test_per_component_e_step_matches_sklearn(prior):
    """With K < (D + 1)/4 (per-component E-step) the posteriors still match sklearn to 1e-8."""
    x = blobs(seed=7, d=9)
    r0 = random_resp(len(x), 2, seed=3)
    kw = dict(n_components=2, weight_concentration_prior_type=prior, max_iter=20, tol=0.0)
    sk, vb = _fit_both(x, r0, kw)
    assert use_blocks("full", 2, 9)  # this size takes the per-component form
    for name in ["mean_precision_", "means_", "degrees_of_freedom_", "covariances_"]:
        assert rel_err(getattr(sk, name), getattr(vb, name)) < 1e-8, name


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("cov_type", [*COV_TYPES, "tied"])
def test_elbo_never_decreases(prior, cov_type):
    """The full ELBO after each CAVI iteration never falls (beyond float64 rounding)."""
    x = blobs(seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        vb = VariationalGaussianMixture(
            6,
            covariance_type=cov_type,
            weight_concentration_prior_type=prior,
            # tied from random r_ik sits near the symmetric saddle: start from data rows
            init_params="random_from_data" if cov_type == "tied" else "random",
            random_state=0,
            max_iter=60,
            tol=0.0,
        ).fit(x)
    h = np.asarray(vb.lower_bounds_)
    assert h[-1] - h[0] > 0.1  # it started far from the optimum
    assert np.all(np.diff(h) >= -1e-10 * np.maximum(1.0, np.abs(h[1:]))), np.diff(h)
    assert vb.monitor_.state.decreases == []


def _monte_carlo_elbo(vb, x, n_draws, gen):
    """E_q[log p(x, z, π, μ, Λ) - log q(z, π, μ, Λ)] by sampling θ ~ q(θ) (r_ik exact)."""
    x = torch.as_tensor(x)
    n, d = x.shape
    k = vb.n_components
    r = torch.as_tensor(vb.predict_proba(x.numpy()))
    nu, beta = torch.as_tensor(vb.degrees_of_freedom_), torch.as_tensor(vb.mean_precision_)
    m = torch.as_tensor(vb.means_)
    w_scale = (
        torch.linalg.inv(torch.as_tensor(vb.covariances_)) / nu[..., None, None]
    )  # W_k (tied: one W)
    w0 = torch.linalg.inv(torch.as_tensor(vb.covariance_prior_))
    m0 = torch.as_tensor(vb.mean_prior_)
    nu0 = torch.tensor(vb.degrees_of_freedom_prior_, dtype=x.dtype)
    beta0, alpha0 = vb.mean_precision_prior_, vb.weight_concentration_prior_
    torch.manual_seed(int(torch.randint(1 << 30, (1,), generator=gen)))
    q_lam, p_lam = Wishart(nu, covariance_matrix=w_scale), Wishart(nu0, covariance_matrix=w0)
    lam = q_lam.sample((n_draws,))  # (S, K, D, D), or (S, D, D) shared by all k (tied)
    log_q, log_p = q_lam.log_prob(lam), p_lam.log_prob(lam)
    if vb.covariance_type == "tied":
        lam = lam[:, None].expand(n_draws, k, d, d)
    else:
        log_q, log_p = log_q.sum(-1), log_p.sum(-1)
    mu = MultivariateNormal(m, precision_matrix=beta[:, None, None] * lam).sample()
    log_q = log_q + MultivariateNormal(m, precision_matrix=beta[:, None, None] * lam).log_prob(
        mu
    ).sum(-1)
    log_p = log_p + MultivariateNormal(m0.expand(k, d), precision_matrix=beta0 * lam).log_prob(
        mu
    ).sum(-1)
    if vb.weight_concentration_prior_type == "dirichlet_process":
        a, b = (torch.as_tensor(v) for v in vb.weight_concentration_)
        q_v = Beta(a, b)
        p_v = Beta(torch.ones(k, dtype=x.dtype), torch.full((k,), alpha0, dtype=x.dtype))
        v = q_v.sample((n_draws,)).clamp(1e-300, 1 - 1e-16)
        log_pi = v.log() + torch.cumsum(torch.log1p(-v), -1) - torch.log1p(-v)
        log_q = log_q + q_v.log_prob(v).sum(-1)
        log_p = log_p + p_v.log_prob(v).sum(-1)
    else:
        wc = torch.as_tensor(vb.weight_concentration_)
        q_pi, p_pi = Dirichlet(wc), Dirichlet(torch.full((k,), alpha0, dtype=x.dtype))
        pi = q_pi.sample((n_draws,)).clamp_min(1e-300)
        log_pi = pi.log()
        log_q = log_q + q_pi.log_prob(pi)
        log_p = log_p + p_pi.log_prob(pi)
    comp = MultivariateNormal(mu[:, None], precision_matrix=lam[:, None])  # (S, 1, K)
    log_lik = comp.log_prob(x[None, :, None, :])  # (S, N, K)
    joint = (r[None] * (log_pi[:, None, :] + log_lik)).sum((1, 2))
    entropy_z = -(r * r.clamp_min(1e-300).log()).sum()
    values = joint + entropy_z + log_p - log_q
    return float(values.mean()), float(values.std() / np.sqrt(n_draws))


@pytest.mark.filterwarnings("ignore:Singular sample detected")
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("cov_type", ["full", "tied"])
def test_closed_form_elbo_matches_monte_carlo(prior, cov_type):
    """The closed-form ELBO (expected log-weights, E log|Λ|, Wishart/Normal/Dirichlet/Beta KLs)
    equals a Monte Carlo estimate over q(θ) within 4 standard errors (fixed seed)."""
    x = blobs(seed=3, d=2)[::4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        vb = VariationalGaussianMixture(
            3,
            covariance_type=cov_type,
            weight_concentration_prior_type=prior,
            random_state=0,
            max_iter=3,
            tol=0,
        ).fit(x)
    closed = vb.elbo(x) * len(x)  # the closed form for the fitted q(θ)
    gen = torch.Generator().manual_seed(0)
    mc, se = _monte_carlo_elbo(vb, x, 4000, gen)
    assert abs(mc - closed) < 4 * se + 1e-9 * abs(closed), (mc, se, closed)


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_elbo_is_the_recorded_bound_of_each_iterate_and_the_score_minus_a_kl(cov_type):
    """elbo(x) of the model after t CAVI steps is lower_bounds_[t] of a longer fit (the
    bound recorded at the next E-step), and falls short of score(x) by KL(q(θ)||p(θ)) / N
    > 0; on held-out rows it is finite and below the score too."""
    x = blobs(seed=3, d=2)
    kw = dict(n_components=3, covariance_type=cov_type, random_state=0, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        h = VariationalGaussianMixture(max_iter=6, **kw).fit(x).lower_bounds_
        for t in (1, 4):
            vb = VariationalGaussianMixture(max_iter=t, **kw).fit(x)
            assert vb.elbo(x) == pytest.approx(h[t], rel=1e-12)
            assert (vb.score(x) - vb.elbo(x)) * len(x) > 1.0  # the KL of q(θ) from p(θ)
    held_out = blobs(seed=9, d=2)
    assert np.isfinite(vb.elbo(held_out)) and vb.elbo(held_out) < vb.score(held_out)


def test_tied_with_one_component_is_the_full_model():
    """K = 1: one shared Λ is the component's own Λ; tied and full agree to 1e-12."""
    x = blobs(seed=4)
    tied = VariationalGaussianMixture(1, covariance_type="tied", max_iter=20, tol=0).fit(x)
    full = VariationalGaussianMixture(1, covariance_type="full", max_iter=20, tol=0).fit(x)
    np.testing.assert_allclose(tied.covariances_, full.covariances_[0], rtol=1e-12)
    np.testing.assert_allclose(tied.means_, full.means_, rtol=1e-12)
    np.testing.assert_allclose(tied.degrees_of_freedom_, full.degrees_of_freedom_[0], rtol=1e-12)
    np.testing.assert_allclose(tied.lower_bounds_, full.lower_bounds_, rtol=1e-12)


def _with_state(saved, path, **state):
    """A copy of the saved model ``saved`` at ``path`` with some ``state.<name>`` tensors
    replaced (the file format of :mod:`varbayes.mixture.io`), loaded."""
    shutil.copytree(saved, path)
    tensors = load_file(path / "model.safetensors")
    tensors.update({f"state.{k}": v.contiguous() for k, v in state.items()})
    save_file(tensors, path / "model.safetensors")
    return load(path)


@pytest.mark.parametrize("prior", PRIORS)
def test_tied_fixed_point_is_a_local_maximum_of_the_elbo(prior, tmp_path):
    """At convergence no small change of q(Λ) (ν, W) or of the q(μ_k) means raises the
    ELBO: the tied update is a true coordinate step of the one objective. The nearby
    q(θ) are saved models with edited parameters, scored by the public ``elbo``."""
    x = blobs(seed=5)
    vb = VariationalGaussianMixture(
        3, covariance_type="tied", weight_concentration_prior_type=prior, random_state=0,
        tol=1e-12, max_iter=2000,
    ).fit(x)  # fmt: skip
    vb.save(tmp_path / "fit")
    saved = load_file(tmp_path / "fit" / "model.safetensors")
    st = {k.removeprefix("state."): v for k, v in saved.items()}
    base = vb.elbo(x) * len(x)
    rng = np.random.default_rng(0)
    eye = torch.eye(3, dtype=torch.float64)
    for i in range(6):
        h = 1e-3
        a = torch.as_tensor(rng.normal(size=(3, 3)))
        cov = st["cov"] @ torch.linalg.matrix_exp(h * (a + a.T))  # SPD nearby
        cov = 0.5 * (cov + cov.T)
        pchol = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), eye, upper=False).mT
        near = _with_state(
            tmp_path / "fit",
            tmp_path / f"near{i}",
            cov=cov,
            prec=pchol @ pchol.mT,
            pchol=pchol,
            nu=st["nu"] * (1 + h * rng.normal()),
            means=st["means"] + h * torch.as_tensor(rng.normal(size=st["means"].shape)),
        )
        assert near.elbo(x) * len(x) < base
    assert base == pytest.approx(vb.lower_bound_ * len(x), rel=1e-9)


def test_dirichlet_process_switches_off_unneeded_components():
    """With a small α₀, a DP mixture with K=8 keeps as many components as clusters (3)."""
    x = blobs(seed=4, d=2)
    vb = VariationalGaussianMixture(
        8, weight_concentration_prior=1e-3, random_state=0, max_iter=2000, tol=1e-6
    ).fit(x)
    assert vb.n_effective_components_ == 3
    assert float(torch.sort(torch.as_tensor(vb.weights_), descending=True).values[:3].sum()) > 0.97


def test_save_load_round_trip(tmp_path):
    """A saved variational mixture reloads with identical predictions and posteriors."""
    x = blobs(seed=5)
    vb = VariationalGaussianMixture(4, random_state=0, covariance_type="diag").fit(x)
    vb.save(tmp_path / "vb")
    back = load(tmp_path / "vb")
    np.testing.assert_array_equal(back.predict_proba(x), vb.predict_proba(x))
    for a, b in zip(back.weight_concentration_, vb.weight_concentration_, strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.n_effective_components_ == vb.n_effective_components_


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"covariance_type": "banded"}, ValueError, "covariance_type must be one of"),
        (
            {"weight_concentration_prior_type": "pitman_yor"},
            ValueError,
            "weight_concentration_prior_type",
        ),
        ({"weight_concentration_prior": 0.0}, ValueError, "weight_concentration_prior"),
        ({"mean_precision_prior": -1.0}, ValueError, "mean_precision_prior"),
        (
            {"degrees_of_freedom_prior": 1.5},
            ValueError,
            "'degrees_of_freedom_prior' should be greater than 2, but got 1.500",
        ),
        ({"degrees_of_freedom_prior": "many"}, TypeError, "degrees_of_freedom_prior"),
        ({"mean_prior": np.zeros(2)}, ValueError, r"'mean_prior' should have the shape of \(3,\)"),
        (
            {"covariance_prior": np.eye(2)},
            ValueError,
            r"'full covariance_prior' should have the shape of \(3, 3\)",
        ),
        (
            {"covariance_prior": -np.eye(3)},
            ValueError,
            "'full covariance_prior' should be symmetric, positive-definite",
        ),
        (
            {"covariance_prior": np.array([1.0, 0.0, 1.0]), "covariance_type": "diag"},
            ValueError,
            "'diag covariance_prior' should be positive",
        ),
        ({"resp_init": np.ones((5, 2)) / 2}, ValueError, r"resp_init must have shape \(500, 2\)"),
        (
            {"resp_init": np.ones((500, 2))},
            ValueError,
            "resp_init must be >= 0 with rows summing to 1",
        ),
    ],
)
def test_invalid_priors_and_init_name_the_argument(kw, exc, match):
    """Bad priors, covariance types and initial responsibilities are named in the error."""
    x = blobs(seed=6)
    with pytest.raises(exc, match=match):
        VariationalGaussianMixture(2, **kw).fit(x)
