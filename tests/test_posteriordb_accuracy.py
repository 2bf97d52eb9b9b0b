"""Accuracy of ``vi.fit`` with its DEFAULT settings on the eight posteriordb posteriors,
against the reference NUTS summaries in tests/data/posteriordb_reference.json (issue 9's
acceptance criteria; do not loosen them).

Per reference parameter, in the constrained space, from 10,000 draws of the fitted
posterior (``Posterior.sample``: importance-resampled when k̂ ≤ 0.7):

* the default fit (``guide="auto"``: full rank, continued as the nested Laplace family
  when the full-rank k̂ > 0.7, and as a flow if that one's k̂ is above 0.7 too):
  |mean − ref mean| ≤ 0.1 ref sd and sd / ref sd in [0.8, 1.25], on every
  posterior but low_dim_gauss_mix;
* mean-field: |mean − ref mean| ≤ 0.25 ref sd;
* low_dim_gauss_mix, full rank: either the criteria above hold, or the fit says it cannot be
  trusted (k̂ > 0.7, with a PSISWarning).

Monte Carlo error of the checks: 10,000 draws put the sample mean within about 0.01 sd and
the sd ratio within about 1% of the fitted q's (and the 10,000 reference draws are as
close to the posterior's), well inside the tolerances. Each fit takes seconds, but the
flow on gp_pois_regr (about a minute; slow).

gp_pois_regr is where no Gaussian can pass, so the default fit goes on to the nested
Laplace family there (``vi/nested.py``; the flow, its fallback, is checked too, slow);
a full-rank or mean-field Gaussian alone is a known failure (kept strict, and slow): the
fitted q's sds of rho and alpha are about 0.4 of the reference's; the fit says so with
k̂ ≈ 0.86 > 0.7. The reference marginals of log rho and log alpha are close to Gaussian
(symmetric 5/50/95% quantiles), so the cause is the dependence between f_tilde and
(rho, alpha) in the non-centred parameterization (f = L(rho, alpha) f_tilde with f well
determined by the counts): the KL(q || p)-optimal Gaussian is short along that curved
ridge. Measured (issue 9 notes): the deterministic ELBO with 64, 256 or 1024 fixed draws
gives the same sd ratios (0.40-0.45), so it is not the fixed draws (stochastic
full-rank ADVI, 6,000 Adam steps of 16 particles, ends narrower still, log rho sd 0.043
against 0.049, at a lower ELBO, -52.3 against -49.9); importance
resampling 40,000 draws from heavier-tailed proposals (multivariate Student-t with q's
location and scale, nu 3-50; q's covariance inflated 1.5-3x; mixtures of q with the
Laplace fit) leaves k̂ at 0.73-0.95, an effective sample size of 50-1,500 and rho sd
ratios of 0.54-0.78; a fixed-draw importance-weighted ELBO (K = 8, 32) overfits its draws.
The flow (``vi/flow.py``) bends q along the ridge: k̂ 0.56, sd ratios 0.97-1.03.
"""

import json
import pathlib
import sys
import warnings

import pytest

from varbayes import vi

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "posteriordb"))
import _data  # noqa: E402
import posteriordb_models  # noqa: E402

REFERENCE = json.loads((REPO / "tests" / "data" / "posteriordb_reference.json").read_text())
NAMES = sorted(posteriordb_models.MODELS)
#: Posteriors where the default fit is known to miss the criteria, with the reason.
KNOWN_FAILURES = {
    "gp_pois_regr": "rho, alpha: the Gaussian q's sd ratios are ~0.4 (k-hat 0.86 warns)",
}


def _param(name):
    if name in KNOWN_FAILURES:
        marks = [pytest.mark.slow, pytest.mark.xfail(reason=KNOWN_FAILURES[name], strict=True)]
        return pytest.param(name, marks=marks)
    return name


def fit_and_compare(name, guide):
    """Fit posterior ``name`` with ``vi.fit(model, guide)`` (defaults otherwise); return the
    posterior and {Stan name: (|mean err| / ref sd, sd / ref sd)}."""
    try:
        data = _data.load_data(name)
    except FileNotFoundError as e:
        pytest.skip(f"posteriordb not available ({e})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vi.PSISWarning)  # judged below, by the reference
        post = vi.fit(posteriordb_models.model(name, data), guide)
    return post, _data.compare(REFERENCE[name]["summary"], post.sample(10_000))


def _report(post, acc, bad):
    rows = [f"{k}: mean err {e:.3f} sd, sd ratio {r:.3f}" for k, (e, r) in acc.items()]
    return f"{post!r} ({post.message}); failing {sorted(bad)}:\n" + "\n".join(rows)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "low_dim_gauss_mix"])
def test_the_default_fit_matches_the_reference(name):
    """The default fit: every mean within 0.1 ref sd, every sd ratio in [0.8, 1.25]. It is
    the full-rank Gaussian wherever that one's k̂ ≤ 0.7, and the nested Laplace family
    (on gp_pois_regr) where it is not."""
    post, acc = fit_and_compare(name, None)
    assert post.guide == ("nested" if post.info.get("fullrank_khat", 0) > 0.7 else "fullrank")
    assert post.khat <= 0.7 and post.converged, _report(post, acc, set())
    bad = {k for k, (e, r) in acc.items() if not (e <= 0.1 and 0.8 <= r <= 1.25)}
    assert not bad, _report(post, acc, bad)


@pytest.mark.slow
def test_the_flow_matches_the_reference_on_gp_pois_regr():
    """guide="flow" (the default's fallback when the nested family's k̂ > 0.7): the same
    criteria on the one posterior no Gaussian fits."""
    post, acc = fit_and_compare("gp_pois_regr", "flow")
    assert post.guide == "flow" and post.khat <= 0.7 and post.converged
    bad = {k for k, (e, r) in acc.items() if not (e <= 0.1 and 0.8 <= r <= 1.25)}
    assert not bad, _report(post, acc, bad)


@pytest.mark.parametrize("name", [_param("gp_pois_regr")])
def test_a_fullrank_gaussian_alone_matches_the_reference(name):
    """guide="fullrank" (no flow): the same criteria; gp_pois_regr is a known failure."""
    post, acc = fit_and_compare(name, "fullrank")
    bad = {k for k, (e, r) in acc.items() if not (e <= 0.1 and 0.8 <= r <= 1.25)}
    assert not bad, _report(post, acc, bad)


@pytest.mark.parametrize("name", [_param(n) for n in NAMES])
def test_meanfield_default_fit_means_match_the_reference(name):
    """Mean-field: every mean within 0.25 ref sd."""
    post, acc = fit_and_compare(name, "meanfield")
    bad = {k for k, (e, _) in acc.items() if e > 0.25}
    assert not bad, _report(post, acc, bad)


@pytest.mark.slow
def test_fullrank_on_the_mixture_is_right_or_says_it_cannot_be_trusted():
    """low_dim_gauss_mix, full rank: the criteria hold, or k̂ > 0.7 flags the fit."""
    post, acc = fit_and_compare("low_dim_gauss_mix", "fullrank")
    bad = {k for k, (e, r) in acc.items() if not (e <= 0.1 and 0.8 <= r <= 1.25)}
    assert not bad or post.khat > 0.7, _report(post, acc, bad)
