"""Variational inference: models over named latents, guides q(θ | λ), ELBOs, fits.

    log p(x) = ELBO(q) + KL(q(θ) || p(θ | x)),
    ELBO(q)  = E_q[log p(x | θ)] - KL(q(θ) || p(θ)).

A model is a plain Python function over named latent variables (values carry a
leading particle dimension S; write them with ``...`` indexing)::

    >>> import torch
    >>> from torch import distributions as dist
    >>> from varbayes import vi
    >>> def eight_schools(m, data):
    ...     mu = m.latent("mu", dist.Normal(0.0, 5.0))
    ...     tau = m.latent("tau", dist.HalfCauchy(5.0))
    ...     theta_tilde = m.latent("theta_tilde", dist.Normal(0.0, 1.0).expand([8]))
    ...     theta = m.derived("theta", mu[..., None] + tau[..., None] * theta_tilde)
    ...     m.observe("y", dist.Normal(theta, data["sigma"]), data["y"])
    >>> data = {"y": [28.0, 8, -3, 7, -1, 1, 18, 12], "sigma": [15.0, 10, 16, 11, 9, 11, 10, 18]}
    >>> model = vi.Model(eight_schools, data)   # checks names, supports, shapes once
    >>> post = vi.fit(model)                    # full rank: MAP, Laplace, deterministic ELBO
    ...                                         # (nested Laplace or a flow if k̂ > 0.7)
    >>> draws = post.sample(1000)               # {"mu": (1000,), "tau": (1000,), ...}
    >>> draws["theta"].shape
    torch.Size([1000, 8])
    >>> print(post.summary())                   # doctest: +SKIP
    >>> post.khat, post.converged, post.steps   # doctest: +SKIP

Other sites: ``m.latent("x", support=constraints.positive, shape=(3,))`` (a flat prior
on a support), ``m.factor("name", log_density)`` (shape ``(S,)``, Stan's
``target +=``). Supports: anything ``torch.distributions.biject_to`` knows (bounds may
be tensors depending on other latents), plus :data:`ordered_vector`,
:data:`positive_ordered_vector` and ``constraints.lower_cholesky``.

* :mod:`~varbayes.vi.model`     — :class:`Model`: the log density on the unconstrained
  z (S, D) with log-Jacobians, named constrained values, minibatches (N/B);
* :mod:`~varbayes.vi.infer`     — :func:`fit` (guides ``"auto"``, ``"fullrank"``,
  ``"meanfield"``, ``"block"``, ``"lowrank"``, ``"laplace"``, ``"map"``, ``"nested"``,
  ``"flow"``), :func:`find_map`, :func:`laplace`;
* :mod:`~varbayes.vi.nested`    — :class:`~varbayes.vi.nested.NestedLaplace`: the global
  latents importance-sampled, the largest site by a Laplace approximation at each draw;
* :mod:`~varbayes.vi.drawn`     — the protocol both of those follow (``draw(n, generator)``
  returns the draws and their log q), and the noise every fit draws;
* :mod:`~varbayes.vi.flow`      — :class:`~varbayes.vi.flow.Flow`: the full-rank fit bent
  by affine coupling layers, fitted by stochastic gradient ascent;
* :mod:`~varbayes.vi.spec`      — :func:`guide`: a family bound to a model's sites
  (``vi.fit(model, vi.guide(model, "lowrank", rank=3))``; ``vi.fit(model, post)`` warm
  starts from a Posterior); a guide of another model is a ValueError naming the sites;
* :mod:`~varbayes.vi.posterior` — :class:`Posterior`: ``sample``, ``summary``,
  ``predictive``, ``to_arviz``, ``khat``, ``trace``, ``steps``, ``converged``;
* :mod:`~varbayes.vi.psis`      — :func:`psis`: Pareto-smoothed importance weights and k̂;
* :mod:`~varbayes.vi.recurrence` — :func:`linear_recurrence`: s_t = a s_{t−1} + c_t as a
  parallel scan with its gradient written out (AR, GARCH, local-level models);
* :mod:`~varbayes.vi.elbo`      — :func:`elbo` (pathwise, score, analytic, IWAE) and
  :func:`log_evidence` (importance sampling with a standard error);
* :mod:`~varbayes.vi.guides`    — :class:`MeanFieldNormal`, :class:`FullRankNormal`,
  :class:`LowRankNormal` modules, on any support ``biject_to`` knows;
* :mod:`~varbayes.vi.svi`       — stochastic VI of a guide module with exact resume
  (``fit(log_joint, guide_module, ...)``);
* :mod:`~varbayes.vi.fastpath`  — its hand-derived mean-field gradient and the model protocol;
* :mod:`~varbayes.vi.compiled`  — its gradient for any model and guide, the ELBO compiled
  as one graph (``fit(..., compile=True)``);
* :mod:`~varbayes.vi.cavi`      — closed-form coordinate ascent (Normal, linear regression,
  Gaussian targets);
* :mod:`~varbayes.vi.models`    — the shipped models, Models over one latent ``theta``
  with a fixed prior: :class:`LogJoint`, :class:`LinearRegression`,
  :class:`LogisticRegression`;
* :mod:`~varbayes.vi.compare`   — :func:`compare_modes`: exact, MAP, mean-field, full-rank.
"""

from varbayes.vi.cavi import CAVIResult, cavi_gaussian, cavi_linear_regression, cavi_normal
from varbayes.vi.compare import ModeComparison, compare_modes, plot_marginals
from varbayes.vi.elbo import ESTIMATORS, EvidenceEstimate, elbo, log_evidence, loss
from varbayes.vi.guides import FullRankNormal, Guide, LowRankNormal, MeanFieldNormal
from varbayes.vi.infer import GUIDES, ModelError, PSISWarning, find_map, fit, laplace
from varbayes.vi.model import Model, Site
from varbayes.vi.models import LinearRegression, LogisticRegression, LogJoint
from varbayes.vi.posterior import Posterior, Summary
from varbayes.vi.psis import psis
from varbayes.vi.recurrence import linear_recurrence
from varbayes.vi.spec import ModelGuide, guide
from varbayes.vi.supports import bijection, ordered_vector, positive_ordered_vector
from varbayes.vi.svi import SVIResult, SVIState

__all__ = [
    "GUIDES",
    "Model",
    "ModelError",
    "ModelGuide",
    "PSISWarning",
    "Posterior",
    "Site",
    "Summary",
    "bijection",
    "find_map",
    "guide",
    "laplace",
    "linear_recurrence",
    "ordered_vector",
    "positive_ordered_vector",
    "psis",
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
