"""Variational inference: one ELBO, its estimators, guides q(θ | λ), stochastic VI and CAVI.

    log p(x) = ELBO(q) + KL(q(θ) || p(θ | x)),
    ELBO(q)  = E_q[log p(x | θ)] - KL(q(θ) || p(θ)).

* :mod:`~varbayes.vi.elbo`    — :func:`elbo` (pathwise, score, analytic, IWAE) and
  :func:`log_evidence` (importance sampling with a standard error);
* :mod:`~varbayes.vi.guides`  — :class:`MeanFieldNormal`, :class:`FullRankNormal`,
  :class:`LowRankNormal`, on any support ``biject_to`` knows;
* :mod:`~varbayes.vi.svi`     — :func:`fit`, stochastic VI with exact resume;
* :mod:`~varbayes.vi.cavi`    — closed-form coordinate ascent (Normal, linear regression,
  Gaussian targets);
* :mod:`~varbayes.vi.models`  — log joints: :class:`LogJoint`, :class:`LinearRegression`,
  :class:`LogisticRegression`;
* :mod:`~varbayes.vi.compare` — :func:`compare_modes`: exact, MAP, mean-field, full-rank.
"""

from varbayes.vi.cavi import CAVIResult, cavi_gaussian, cavi_linear_regression, cavi_normal
from varbayes.vi.compare import ModeComparison, compare_modes, plot_marginals
from varbayes.vi.elbo import ESTIMATORS, EvidenceEstimate, elbo, log_evidence, loss
from varbayes.vi.guides import FullRankNormal, Guide, LowRankNormal, MeanFieldNormal
from varbayes.vi.models import LinearRegression, LogisticRegression, LogJoint
from varbayes.vi.svi import SVIResult, SVIState, fit

__all__ = [
    "ESTIMATORS",
    "CAVIResult",
    "EvidenceEstimate",
    "FullRankNormal",
    "Guide",
    "LinearRegression",
    "LogJoint",
    "LogisticRegression",
    "LowRankNormal",
    "MeanFieldNormal",
    "ModeComparison",
    "SVIResult",
    "SVIState",
    "cavi_gaussian",
    "cavi_linear_regression",
    "cavi_normal",
    "compare_modes",
    "elbo",
    "fit",
    "log_evidence",
    "loss",
    "plot_marginals",
]
