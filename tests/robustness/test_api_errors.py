"""Bad arguments to the library: the right exception type, a message naming the argument,
and the object or file left as it was."""

from __future__ import annotations

import math

import pytest
import torch

from varbayes.conjugate import (
    BayesianLinearRegression,
    BetaBernoulli,
    BetaBinomial,
    DirichletCategorical,
    DirichletMultinomial,
    GammaPoisson,
    NormalKnownVariance,
    NormalUnknownVariance,
)
from varbayes.vi import cavi_normal

NAN, INF = float("nan"), float("inf")

# (model class, {parameter: kind}); kind "positive" or "real"
SCALAR_PARAMS = [
    (NormalKnownVariance, {"prior_mean": "real", "prior_std": "positive", "noise_std": "positive"}),
    (
        NormalUnknownVariance,
        {
            "prior_mean": "real",
            "prior_kappa": "positive",
            "prior_shape": "positive",
            "prior_rate": "positive",
        },
    ),
    (BetaBinomial, {"prior_alpha": "positive", "prior_beta": "positive"}),
    (BetaBernoulli, {"prior_alpha": "positive", "prior_beta": "positive"}),
    (GammaPoisson, {"prior_shape": "positive", "prior_rate": "positive"}),
    (
        BayesianLinearRegression,
        {
            "prior_precision": "positive",
            "noise_variance": "positive",
            "noise_shape": "positive",
            "noise_rate": "positive",
        },
    ),
]
BAD = {
    "real": [
        (NAN, ValueError),
        (INF, ValueError),
        (-INF, ValueError),
        ("a", TypeError),
        ([1.0, 2.0], ValueError),
        (object(), TypeError),
    ],
    "positive": [
        (0.0, ValueError),
        (-1.0, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        ("a", TypeError),
        ([1.0, 2.0], ValueError),
        (-1e-300, ValueError),
    ],
}
CONSTRUCTOR_CASES = [
    (cls, name, value, exc)
    for cls, params in SCALAR_PARAMS
    for name, kind in params.items()
    for value, exc in BAD[kind]
    # BayesianLinearRegression takes a (D,) prior precision: a list is fine there
    if not (
        cls is BayesianLinearRegression
        and name == "prior_precision"
        and isinstance(value, list)
        and len(value) == 2
    )
]


@pytest.mark.parametrize(
    "cls, name, value, exc",
    CONSTRUCTOR_CASES,
    ids=[f"{c.__name__}-{n}-{v!r:.12}" for c, n, v, _ in CONSTRUCTOR_CASES],
)
def test_constructor_refuses_bad_hyper_parameters_naming_them(cls, name, value, exc):
    """A NaN, infinite, non-positive, non-numeric or wrongly shaped hyper-parameter raises
    ValueError/TypeError whose message names the parameter."""
    with pytest.raises(exc, match=rf"\b{name}\b"):
        cls(**{name: value})


@pytest.mark.parametrize(
    "value, exc",
    [
        (0, ValueError),
        (-3, ValueError),
        (1.5, TypeError),
        ("5", TypeError),
        (True, TypeError),
        (10**20, ValueError),
        (2**53 + 1, ValueError),
        (None, TypeError),
    ],
)
def test_total_count_must_be_a_representable_integer(value, exc):
    """BetaBinomial's total_count: an integer in [1, 2**53], named in the message."""
    with pytest.raises(exc, match="total_count"):
        BetaBinomial(total_count=value)


def _snap(model):
    return {k: v.clone() for k, v in model.posterior_params.items()}


# (model factory, bad data, exception, name in the message)
DATA_CASES = [
    *[
        (lambda: NormalKnownVariance(0, 1, 1), d, e, "data")
        for d, e in [
            ([NAN], ValueError),
            ([1.0, INF], ValueError),
            ([], ValueError),
            ("abc", TypeError),
            ([[1.0, 2.0]], ValueError),
            (None, TypeError),
            ({"a": 1}, TypeError),
            (torch.ones(2, 2), ValueError),
            ([-INF], ValueError),
        ]
    ],
    *[
        (lambda: NormalUnknownVariance(), d, e, "data")
        for d, e in [
            ([NAN], ValueError),
            ([], ValueError),
            ([[1.0]], ValueError),
            ("x", TypeError),
            ([1e200, 1e200, -1e200], ValueError),
        ]
    ],
    *[
        (lambda: BetaBernoulli(), d, ValueError, "data")
        for d in (
            [2],
            [-1],
            [0.5],
            [NAN],
            [1, 0, 3],
            [[1, 0]],
        )
    ],
    *[
        (lambda: BetaBinomial(total_count=5), d, ValueError, "data")
        for d in (
            [6],
            [-1],
            [2.5],
            [NAN],
            [INF],
        )
    ],
    *[(lambda: GammaPoisson(), d, ValueError, "data") for d in ([-1], [1.5], [NAN], [INF])],
    *[
        (lambda: DirichletCategorical([1.0, 1.0, 1.0]), d, ValueError, "data")
        for d in (
            [3],
            [-1],
            [1.5],
            [NAN],
            [[0, 1]],
        )
    ],
    *[
        (lambda: DirichletMultinomial([1.0, 1.0, 1.0]), d, ValueError, "data")
        for d in (
            [[1, 2]],
            [[1, -1, 0]],
            [[0.5, 1, 1]],
            [1, 2, 3, 4],
        )
    ],
]


@pytest.mark.parametrize(
    "make, data, exc, name", DATA_CASES, ids=[f"{i}-{c[1]!r:.20}" for i, c in enumerate(DATA_CASES)]
)
def test_update_refuses_bad_data_and_leaves_the_model_unchanged(make, data, exc, name):
    """update(bad data) raises naming the argument; the model keeps its belief."""
    model = make()
    before = _snap(model)
    with pytest.raises(exc, match=rf"\b{name}\b"):
        model.update(data)
    after = _snap(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.n_observations == 0


def _xy(n=10, d=2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        n, generator=g, dtype=torch.float64
    )


X, Y = _xy()
BLR_CASES = [
    (torch.full_like(X, NAN), Y, "X"),
    (X, torch.full_like(Y, NAN), "y"),
    (X[:, 0], Y, "X"),
    (X, Y[:, None], "y"),
    (X[:5], Y, "X and y"),
    (X, Y[:5], "X and y"),
    (torch.zeros(0, 2, dtype=torch.float64), Y[:0], "X"),
    ("X", Y, "X"),
    (X, "y", "y"),
    (torch.cat([X, X], 1), Y, "X"),
    (1e300 * X, Y, "X"),
    (X, 1e300 * Y, "y"),
]


@pytest.mark.parametrize("noise", [None, 0.5])
@pytest.mark.parametrize(
    "x, y, name", BLR_CASES, ids=[c[2] + str(i) for i, c in enumerate(BLR_CASES)]
)
def test_linear_regression_update_refuses_bad_xy(x, y, name, noise):
    """BayesianLinearRegression.update(bad X, y): ValueError/TypeError naming X or y; the
    model (already updated on good data) keeps its posterior."""
    model = BayesianLinearRegression(1.0, noise).update(X, Y)
    before = model.posterior_mean.clone()
    with pytest.raises((ValueError, TypeError), match=rf"\b{name.split()[0]}\b"):
        model.update(x, y)
    assert torch.equal(model.posterior_mean, before)


@pytest.mark.parametrize("x", [[1.0, NAN], [INF, 2.0], [], [[1.0, 2.0]]])
def test_cavi_normal_names_x(x):
    """cavi_normal(bad x) is a ValueError naming x (not y)."""
    with pytest.raises(ValueError, match=r"^x "):
        cavi_normal(x)


def test_no_result_is_silently_non_finite():
    """Extreme but finite data: every number a conjugate model returns is finite, or the
    call raises ValueError naming data."""
    for data in ([1e308] * 20, [-1e308, 1e308], [1.7e308, 1.7e308]):
        try:
            m = NormalKnownVariance(0, 1, 1).update(data)
        except ValueError as exc:
            assert str(exc).startswith("data")
            continue
        values = [
            float(m.posterior.mean),
            float(m.posterior.stddev),
            float(m.mle()),
            *m.credible_interval(),
            *m.mle_interval(),
        ]
        assert all(math.isfinite(v) for v in values), values
