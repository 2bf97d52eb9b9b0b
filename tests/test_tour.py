"""``varbayes tour``: every number the report states, against an independent computation.

One `--quick` tour runs once (the session fixture ``quick_tour`` in conftest.py, reusing a
small digits VAE); each test takes one section's ``facts`` and recomputes them with
SciPy, scikit-learn, NumPy closed forms or hand-written estimators.
"""

from __future__ import annotations

import math
import re
from html import escape as html_escape

import numpy as np
import pytest
import torch
from scipy import optimize, special, stats

from varbayes import __version__
from varbayes.cli import main
from varbayes.heights import heights_data
from varbayes.tour import basics, deep, inference
from varbayes.vi.compare import synthetic_linear_data

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def sections(quick_tour):
    return {s.key: s for s in quick_tour.sections}


def test_every_check_of_the_quick_tour_holds(quick_tour):
    assert [s.key for s in quick_tour.sections] == [
        "bayes",
        "conjugacy",
        "map",
        "vi",
        "latent",
        "vae",
    ]
    assert quick_tour.failed_checks == []
    assert sum(len(s.checks) for s in quick_tour.sections) >= 13


def test_heights_posterior_mle_and_evidence_match_the_closed_form(sections):
    f, h = sections["bayes"].facts, basics.HEIGHTS
    x = heights_data(h["n"], h["true_mean"], h["noise_std"], seed=0).numpy()
    s2, t2, m0 = h["noise_std"] ** 2, h["prior_std"] ** 2, h["prior_mean"]
    prec = 1 / t2 + len(x) / s2
    mean = (m0 / t2 + x.sum() / s2) / prec
    assert f["mle"] == pytest.approx(x.mean(), abs=1e-10)
    assert f["posterior_mean"] == pytest.approx(mean, abs=1e-10)
    assert f["posterior_std"] == pytest.approx(prec**-0.5, abs=1e-10)
    np.testing.assert_allclose(f["posterior_interval"], stats.norm.interval(0.95, mean, prec**-0.5))
    cov = s2 * np.eye(len(x)) + t2 * np.ones((len(x), len(x)))
    evidence = stats.multivariate_normal(np.full(len(x), m0), cov).logpdf(x)
    assert f["log_evidence"] == pytest.approx(evidence, abs=1e-8)
    assert f["above_180"] == int((x > 180).sum()) >= 5  # "many people above 180 cm"
    assert 172 < f["posterior_mean"] < 178 and 182 < f["mle"] < 188  # the post's numbers


def test_conjugate_posteriors_and_predictive_match_scipy(sections):
    f = sections["conjugacy"].facts
    flips, counts = (v.numpy() for v in basics.conjugacy_data(0))
    for j, n in enumerate(basics.CONJUGACY["sizes"]):
        k = flips[:n].sum()
        assert f["beta_params"][j] == [1 + k, 1 + n - k]
        assert f["beta_std"][j] == pytest.approx(stats.beta(1 + k, 1 + n - k).std(), rel=1e-10)
        a, b = 2 + counts[:n].sum(), 1 + n
        assert f["gamma_params"][j] == [a, b]
        assert f["gamma_std"][j] == pytest.approx(stats.gamma(a, scale=1 / b).std(), rel=1e-10)
    n = basics.CONJUGACY["n_predictive"]
    a, b = 2 + counts[:n].sum(), 1 + n
    ks = np.arange(13)
    np.testing.assert_allclose(f["predictive_pmf"], stats.nbinom(a, b / (b + 1)).pmf(ks), rtol=1e-9)
    np.testing.assert_allclose(f["plugin_pmf"], stats.poisson(counts[:n].mean()).pmf(ks), rtol=1e-9)
    assert f["predictive_var"] == pytest.approx(stats.nbinom(a, b / (b + 1)).var(), rel=1e-10)
    assert f["plugin_var"] == pytest.approx(counts[:n].mean(), rel=1e-12)


def test_map_is_ridge_and_the_evidence_matches_scipy(sections):
    from sklearn.linear_model import Ridge

    f, r = sections["map"].facts, basics.RIDGE
    X, y = (v.numpy() for v in basics.ridge_data(0))
    lam = r["noise_std"] ** 2 * r["alpha"]
    ridge = np.linalg.solve(X.T @ X + lam * np.eye(r["d"]), X.T @ y)
    assert f["lambda"] == pytest.approx(lam)
    np.testing.assert_allclose(f["map"], ridge, atol=1e-10)
    sk = Ridge(alpha=lam, fit_intercept=False, tol=1e-12).fit(X, y).coef_
    assert f["max_abs_diff"] == pytest.approx(np.abs(np.asarray(f["map"]) - sk).max(), abs=1e-12)

    def log_ev(alpha, s2):
        cov = s2 * np.eye(len(y)) + X @ X.T / alpha
        return stats.multivariate_normal(np.zeros(len(y)), cov).logpdf(y)

    grid = np.logspace(-3, 3, 31)
    assert f["alpha_grid_best"] == pytest.approx(
        grid[np.argmax([log_ev(a, r["noise_std"] ** 2) for a in grid])]
    )
    best = optimize.minimize(lambda v: -log_ev(*np.exp(v)), [0.0, -1.0], method="Nelder-Mead",
                             options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})  # fmt: skip
    a_ref, s2_ref = np.exp(best.x)
    assert f["evidence_alpha"] == pytest.approx(a_ref, rel=1e-4)
    assert f["evidence_noise_variance"] == pytest.approx(s2_ref, rel=1e-4)
    F, yt = (v.numpy() for v in basics.line_data(0))
    s2 = r["line_noise_std"] ** 2
    cov = np.linalg.inv(np.eye(2) + F.T @ F / s2)
    far = np.array([1.0, 4.0])
    assert f["predictive_std_at_4"] == pytest.approx(np.sqrt(s2 + far @ cov @ far), rel=1e-10)
    assert f["plugin_std"] == pytest.approx(np.sqrt(s2))


def _linear_posterior(X, y):
    """Exact posterior of y ~ N(Xθ, I), θ ~ N(0, I): precision Λ, mean m, log evidence."""
    lam = X.T @ X + np.eye(X.shape[1])
    m = np.linalg.solve(lam, X.T @ y)
    ev = stats.multivariate_normal(np.zeros(len(y)), np.eye(len(y)) + X @ X.T).logpdf(y)
    return lam, m, ev


def _kl_gauss(m0, S0, m1, S1):
    """KL(N(m0, S0) || N(m1, S1)) in closed form."""
    d = len(m0)
    S1inv = np.linalg.inv(S1)
    dm = m1 - m0
    return 0.5 * (np.trace(S1inv @ S0) + dm @ S1inv @ dm - d
                  + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])  # fmt: skip


def test_elbo_plus_kl_equals_the_evidence_with_each_term_computed_independently(sections):
    f = sections["vi"].facts
    X, y, _ = (v.numpy() for v in synthetic_linear_data(40, 2, correlation=0.95, seed=0))
    lam, m, ev = _linear_posterior(X, y)
    assert f["log_evidence"] == pytest.approx(ev, abs=1e-8)
    # q is the mean-field fixed point: the exact mean, variances 1/Λ_ii.
    s = 1 / np.diag(lam)
    kl = _kl_gauss(m, np.diag(s), m, np.linalg.inv(lam))
    assert f["kl"] == pytest.approx(kl, rel=1e-6)
    n, d = X.shape
    sq = np.sum((y - X @ m) ** 2) + np.trace(X.T @ X @ np.diag(s))  # E_q ||y - Xθ||²
    elbo = (-0.5 * n * math.log(2 * math.pi) - 0.5 * sq
            - 0.5 * d * math.log(2 * math.pi) - 0.5 * (m @ m + s.sum())
            + 0.5 * np.sum(np.log(2 * math.pi * math.e * s)))  # fmt: skip
    assert abs(f["elbo"] - elbo) < 4 * f["elbo_se"] and f["elbo_se"] < 0.05
    assert f["identity_gap"] == pytest.approx(f["elbo"] + f["kl"] - f["log_evidence"])
    np.testing.assert_allclose(f["std_exact"], np.sqrt(np.diag(np.linalg.inv(lam))), rtol=1e-8)
    np.testing.assert_allclose(f["std_mean_field"], np.sqrt(s), rtol=1e-6)
    np.testing.assert_allclose(f["std_full_rank"], f["std_exact"], rtol=0.05)
    assert f["kl_full_rank"] < 0.01


def test_four_modes_table_matches_the_closed_forms(sections):
    f = sections["vi"].facts
    X, y, _ = (v.numpy() for v in synthetic_linear_data(seed=0))
    lam, m, ev = _linear_posterior(X, y)
    rows = f["four_modes"]
    assert f["four_log_evidence"] == pytest.approx(ev, abs=1e-8)
    assert rows["exact"]["elbo"] == pytest.approx(ev, abs=1e-8) and rows["exact"]["kl"] == 0
    np.testing.assert_allclose(rows["exact"]["mean"], m, atol=1e-10)
    np.testing.assert_allclose(rows["MAP"]["mean"], m, atol=1e-6)  # Gaussian: mode = mean
    log_joint = (stats.multivariate_normal(X @ m, np.eye(len(y))).logpdf(y)
                 + stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(m))  # fmt: skip
    assert rows["MAP"]["elbo"] == pytest.approx(log_joint, abs=1e-6)
    s = 1 / np.diag(lam)
    kl = _kl_gauss(m, np.diag(s), m, np.linalg.inv(lam))
    assert rows["mean-field VI"]["kl"] == pytest.approx(kl, rel=1e-6)
    assert rows["mean-field VI"]["elbo"] == pytest.approx(ev - kl, abs=1e-6)
    assert rows["full-rank SVI"]["kl"] < 0.01
    assert ev - 0.02 < rows["full-rank SVI"]["elbo"] < ev + 0.02


def test_em_fit_matches_sklearn_and_the_log_likelihood_matches_scipy(sections):
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    f = sections["latent"].facts
    x, _ = inference.height_mixture_data(0)
    X = x.reshape(-1, 1)
    sk = GaussianMixture(3, tol=1e-10, max_iter=2000, n_init=3, random_state=0).fit(X)
    order = np.argsort(sk.means_[:, 0])
    np.testing.assert_allclose(f["means"], sk.means_[order, 0], atol=0.05)
    np.testing.assert_allclose(f["weights"], sk.weights_[order], atol=2e-3)
    np.testing.assert_allclose(f["stds"], np.sqrt(sk.covariances_[order, 0, 0]), atol=0.05)
    comp = np.log(f["weights"]) + stats.norm.logpdf(x[:, None], f["means"], f["stds"])
    loglik = special.logsumexp(comp, axis=1).mean()
    assert f["log_likelihood"] == pytest.approx(loglik, abs=1e-8)
    assert f["log_likelihood"] == pytest.approx(sk.score(X), abs=1e-4)
    assert f["elbo_trace"][-1] == pytest.approx(loglik, abs=1e-6)
    assert (
        f["min_increase"] == pytest.approx(np.diff(f["elbo_trace"]).min())
        and f["min_increase"] >= 0
    )
    assert f["n_iter"] == len(f["elbo_trace"])
    # Variational mixture: an unused component keeps only its prior share of the weight,
    # E_q[π_k] = α₀ / (K α₀ + N); scikit-learn's variational mixture agrees on the count.
    n, k, a0 = len(x), 8, 1e-3
    np.testing.assert_allclose(f["vb_weights"][f["vb_effective"] :], a0 / (k * a0 + n), rtol=1e-6)
    bgm = BayesianGaussianMixture(
        n_components=k, weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=a0, max_iter=1000, tol=1e-8, random_state=0,
    ).fit(X)  # fmt: skip
    nk = bgm.weights_ * (k * a0 + n) - a0
    assert f["vb_effective"] == int((nk >= 1).sum()) == 3


def _hand_gradients(X, y, reps, particles, seed, score: bool) -> float:
    """tr Cov of a hand-written ELBO gradient at q = N(0, I) (pathwise, or REINFORCE)."""
    d = X.shape[1]
    mu = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    rho = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(seed + 12345)
    out = []
    for _ in range(reps):
        eps = torch.randn(particles, d, generator=g, dtype=torch.float64)
        theta = mu + rho.exp() * eps
        if score:
            theta = theta.detach()
        logits = theta @ X.T
        log_p = (y * logits - torch.nn.functional.softplus(logits)).sum(-1) - 0.5 * (theta**2).sum(
            -1
        )
        log_q = (-0.5 * ((theta - mu) / rho.exp()) ** 2 - rho).sum(-1)
        if score:
            value = ((log_p - log_q).detach() * log_q).mean() - log_q.mean()
        else:
            value = (log_p - log_q).mean()
        out.append(torch.cat(torch.autograd.grad(value, (mu, rho))))
    return float(torch.stack(out).var(0).sum())


def test_gradient_variances_match_hand_written_estimators(sections):
    f = sections["vae"].facts
    X, y = deep.gradient_data(0)
    path = _hand_gradients(X, y, 400, 4, 0, score=False)
    score = _hand_gradients(X, y, 400, 4, 0, score=True)
    var = f["gradient_variance"]
    assert var["pathwise (reparameterization)"] == pytest.approx(path, rel=0.3)
    assert var["score function (REINFORCE)"] == pytest.approx(score, rel=0.4)
    assert f["variance_ratio_score"] == pytest.approx(score / path, rel=0.5)
    assert (
        f["variance_ratio_score"] > 50 and 1 < f["variance_ratio_loo"] < f["variance_ratio_score"]
    )


@torch.no_grad()
def test_vae_numbers_match_a_direct_computation(sections, quick_tour):
    """ELBO, KL, reconstruction error and NLL recomputed from the encoder and decoder."""
    from varbayes.vae.checkpoint import load_model
    from varbayes.vae.data import load_test_data

    f = sections["vae"].facts
    model = load_model(quick_tour.settings.vae_run)
    x, _ = load_test_data(model.config, test_size=f["vae_n"])
    loc, log_var = model.encoder(x)
    var = log_var.exp()
    kl = 0.5 * (loc**2 + var - 1 - log_var).sum(-1)
    assert f["vae_kl"] == pytest.approx(float(kl.mean()), rel=1e-4)
    mean_img = torch.sigmoid(model.decoder(loc))
    assert f["vae_mse"] == pytest.approx(float(((mean_img - x) ** 2).mean()), rel=1e-4)
    g = torch.Generator().manual_seed(99)
    eps = torch.randn(200, *loc.shape, generator=g)
    z = loc + var.sqrt() * eps  # (S, N, L)
    logits = model.decoder(z)
    log_px = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none"
    ).sum(-1)  # (S, N)
    assert f["vae_recon"] == pytest.approx(float(-log_px.mean()), abs=0.3)
    assert f["vae_elbo"] == pytest.approx(float((log_px.mean(0) - kl).mean()), abs=0.3)
    log_w = (
        log_px[: f["vae_k"]]
        - 0.5 * (z[: f["vae_k"]] ** 2).sum(-1)
        + 0.5 * (eps[: f["vae_k"]] ** 2).sum(-1)
        + 0.5 * log_var.sum(-1)
    )
    nll = -float((torch.logsumexp(log_w, 0) - math.log(f["vae_k"])).mean())
    assert f["vae_nll"] == pytest.approx(nll, abs=0.15)
    assert f["explore"] == "explore.html" and (quick_tour.report.parent / "explore.html").is_file()


def test_report_is_self_contained_and_states_version_seed_and_timings(quick_tour):
    html = quick_tour.report.read_text()
    assert quick_tour.report.name == "index.html"
    assert (
        "http://" not in html and "https://" not in html and ' src="data:image/png;base64,' in html
    )
    assert re.findall(r'<img src="([^"]{0,22})', html) == ["data:image/png;base64,"] * html.count(
        "<img"
    )
    assert html.count("<img") >= 12
    assert f"<td>varbayes</td><td>{__version__}</td>" in html
    assert "<td>seed</td><td>0 (data" in html and "total time" in html
    for s in quick_tour.sections:
        assert f"section time {s.seconds:.1f} s" in html
        for check in s.checks:
            assert html_escape(check.statement) in html
    f = quick_tour.sections[0].facts
    assert f"{f['posterior_mean']:.2f}" in html and f"{f['mle']:.2f}" in html


def test_cli_tour_refuses_a_missing_vae_run_at_once(tmp_path, capsys):
    assert main(["tour", "--quick", "--vae", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    assert not (tmp_path / "index.html").exists()


def test_quick_tour_without_mnist_trains_on_digits_and_says_so(tmp_path, monkeypatch):
    from varbayes.tour import TourSettings
    from varbayes.tour.report import Section

    monkeypatch.setenv("VARBAYES_DATA", str(tmp_path / "no-data"))
    settings = TourSettings(out=tmp_path, quick=True, progress=False,
                            vae_config={"epochs": 1, "hidden": (8,)})  # fmt: skip
    s = Section("vae", "t", "c")
    model, run = deep._vae(settings, s)
    assert model.config.dataset == "digits" and (run / "latest.json").is_file()
    assert "MNIST is not available" in s.text[0] and "8×8 digits" in s.text[0]
    assert deep.tour_vae_config("digits", quick=True).epochs == 100
    assert deep.tour_vae_config("mnist", quick=True).train_size == 10_000
