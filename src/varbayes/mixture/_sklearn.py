"""scikit-learn interoperability, with scikit-learn optional at run time.

* :func:`not_fitted_error` and :func:`convergence_warning`: the exception and warning
  classes the mixtures raise. When scikit-learn is installed they subclass
  ``sklearn.exceptions.NotFittedError`` / ``ConvergenceWarning`` (so
  ``except sklearn.exceptions.NotFittedError`` catches them); otherwise they are plain
  ``ValueError``/``AttributeError`` and :class:`varbayes.monitor.ConvergenceWarning`.
  scikit-learn is imported on first use, never at ``import varbayes``.
* :func:`sklearn_tags`: the estimator tags of a density estimator, built with
  scikit-learn's public ``sklearn.utils.Tags`` (only called by scikit-learn itself).
* :func:`torch_generator`: a ``torch.Generator`` from any scikit-learn ``random_state``.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np
import torch

from varbayes.monitor import ConvergenceWarning as _MonitorWarning

__all__ = ["convergence_warning", "not_fitted_error", "sklearn_tags", "torch_generator"]


@functools.cache
def not_fitted_error() -> type:
    """The class ``varbayes.mixture.NotFittedError`` (created once, on first use)."""
    try:
        from sklearn.exceptions import NotFittedError as base

        bases: tuple = (base,)
    except ImportError:
        bases = (ValueError, AttributeError)
    doc = "A method that needs a fitted model was called before ``fit``."
    return type("NotFittedError", bases, {"__doc__": doc, "__module__": "varbayes.mixture"})


@functools.cache
def convergence_warning() -> type:
    """The class ``varbayes.mixture.ConvergenceWarning`` (created once, on first use)."""
    try:
        from sklearn.exceptions import ConvergenceWarning as base

        bases: tuple = (_MonitorWarning, base)
    except ImportError:
        bases = (_MonitorWarning,)
    doc = "A mixture fit stopped at ``max_iter`` before its ELBO converged."
    return type("ConvergenceWarning", bases, {"__doc__": doc, "__module__": "varbayes.mixture"})


def sklearn_tags():
    """Tags of a density estimator on dense 2-D float input, no target (scikit-learn API)."""
    from sklearn.utils import InputTags, Tags, TargetTags

    return Tags(
        estimator_type="density_estimator",
        target_tags=TargetTags(required=False),
        transformer_tags=None,
        classifier_tags=None,
        regressor_tags=None,
        input_tags=InputTags(),
    )


def is_random_state(value) -> bool:
    """Whether ``value`` is an accepted ``random_state``."""
    if value is None or isinstance(
        value, (torch.Generator, np.random.RandomState, np.random.Generator)
    ):
        return True
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def torch_generator(random_state) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``random_state``.

    None: a fresh random seed; an int: that seed; a ``torch.Generator``: itself; a NumPy
    ``RandomState`` or ``Generator``: seeded by one draw from it, so (as in scikit-learn)
    every call advances it and successive fits differ while the sequence stays
    reproducible.
    """
    if isinstance(random_state, torch.Generator):
        return random_state
    g = torch.Generator(device="cpu")
    if random_state is None:
        g.seed()
    elif isinstance(random_state, np.random.RandomState):
        g.manual_seed(int(random_state.randint(0, 2**31 - 1)))
    elif isinstance(random_state, np.random.Generator):
        g.manual_seed(int(random_state.integers(0, 2**63 - 1)))
    else:
        g.manual_seed(int(random_state))
    return g
